import Foundation
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import NIOWebSocket
import ParleyCore

/// The WebSocket gateway at `/api/v1/ws`: authentication, the per-socket reader and writer, and
/// the translation between frames and `ChatService` / `PresenceService` calls. Events reach sockets
/// only through the Bus (see `ConnectionRegistry.deliver`), never by a shortcut that would break
/// with several nodes.
struct Gateway: Sendable {
    let chat: ChatService
    let presence: PresenceService
    let authenticator: Authenticator
    let registry: ConnectionRegistry
    let limiter: any RateLimiter
    let sendPolicy: RateLimitPolicy
    let framePolicy: RateLimitPolicy
    let settings: ParleyConfiguration.Gateway
    let logger: Logger

    static let framesIn = Counter(label: "parley_ws_frames_in_total")

    func handle(
        inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter,
        context: WebSocketRouterContext<ParleyRequestContext>
    ) async throws {
        let socket = SocketSession(gateway: self, outbound: outbound, channel: context.requestContext.channel, logger: context.logger)
        try await socket.run(inbound: inbound, identity: context.requestContext.identity)
    }
}

/// One socket from upgrade to close.
final class SocketSession: Sendable {
    private let gateway: Gateway
    private let outbound: WebSocketOutboundWriter
    private let channel: any Channel
    private let logger: Logger
    /// Resolved with the connection once authenticated; the writer starts then.
    private let ready = Promise<Connection>()
    private let inFlight: InFlightLimiter

    private enum TaskEnd {
        case reader
        case writer
        case authWatchdog(timedOut: Bool)
    }

    init(gateway: Gateway, outbound: WebSocketOutboundWriter, channel: any Channel, logger: Logger) {
        self.gateway = gateway
        self.outbound = outbound
        self.channel = channel
        self.logger = logger
        inFlight = InFlightLimiter(limit: gateway.settings.maxInFlightSends)
    }

    func run(inbound: WebSocketInboundStream, identity: Identity?) async throws {
        let connection: Connection?
        do {
            connection = if let identity { try await inChildTask { try await self.open(identity) } } else { nil }
        } catch let error as ParleyError where error.kind == .unavailable {
            try await refuseForNow(error)
            return
        }
        // Whatever ends the socket (the peer, an overflow, a write error), the connection is torn down.
        var failure: (any Error)?
        do {
            try await runTasks(inbound: inbound, connection: connection)
        } catch {
            failure = error
        }
        // Settle `ready` so nothing waits on it any more; an open connection is then torn down.
        ready.resolve(.failure(CancellationError()))
        if let connection = (try? ready.resolved?.get()) ?? connection {
            await close(connection)
        }
        if let failure, !(failure is CancellationError) {
            logger.debug("socket ended with an error", metadata: ["parley.error": "\(failure)"])
        }
    }

    private func runTasks(inbound: WebSocketInboundStream, connection: Connection?) async throws {
        try await withThrowingTaskGroup(of: TaskEnd.self) { group in
            group.addTask { try await self.writeLoop() }
            if connection == nil {
                group.addTask { await self.authWatchdog() }
            }
            group.addTask { try await self.readLoop(inbound: inbound, authenticated: connection) }
            while let end = try await group.next() {
                switch end {
                case .authWatchdog(timedOut: false):
                    continue
                case .reader:
                    // Let the writer flush what is queued (replies to the last frames, a close frame),
                    // then stop; `Connection.close` bounds this with a hard close.
                    if case .success(let connection) = ready.resolved {
                        connection.close(code: 1000, reason: "")
                        continue
                    }
                default:
                    break
                }
                break
            }
            group.cancelAll()
        }
    }

    // MARK: Lifecycle

    /// Registers an authenticated socket: `hello` is queued first, and the writer starts only once the
    /// node is subscribed to the user's events, so a client that has seen `hello` misses nothing.
    private func open(_ identity: Identity) async throws -> Connection {
        let connection = Connection(
            userID: identity.userID,
            sessionID: identity.sessionID,
            channel: channel,
            limit: gateway.settings.outboundQueueLimit
        )
        connection.enqueue(
            ServerFrame.encode(
                ServerFrame.Hello(
                    userId: identity.userID.lowercased,
                    sessionId: identity.sessionID.lowercased,
                    heartbeatSeconds: gateway.settings.heartbeatSeconds,
                    node: gateway.settings.nodeID
                )
            )
        )
        do {
            try await gateway.registry.add(connection)
        } catch {
            gateway.registry.remove(connection)
            throw error
        }
        ready.resolve(.success(connection))
        do {
            try await gateway.presence.connected(userID: identity.userID, connectionID: connection.id)
        } catch {
            logger.warning("presence update failed", metadata: ["parley.error": "\(error)"])
        }
        logger.debug(
            "socket opened",
            metadata: ["parley.user_id": "\(identity.userID.lowercased)", "parley.connection_id": "\(connection.id.lowercased)"]
        )
        return connection
    }

    private func close(_ connection: Connection) async {
        gateway.registry.remove(connection)
        connection.shutdown()
        // Not cancelled with the socket's tasks: the user's last-seen time must still be written.
        let presence = gateway.presence
        let logger = self.logger
        await Task {
            do {
                try await presence.disconnected(userID: connection.userID, connectionID: connection.id)
            } catch {
                logger.warning("presence update failed", metadata: ["parley.error": "\(error)"])
            }
        }.value
        logger.debug("socket closed", metadata: ["parley.connection_id": "\(connection.id.lowercased)"])
    }

    // MARK: Tasks

    private func writeLoop() async throws -> TaskEnd {
        let ready = self.ready
        let connection = await withTaskCancellationHandler {
            try? await ready.value
        } onCancel: {
            ready.resolve(.failure(CancellationError()))
        }
        guard let connection else { return .writer }
        let channel = self.channel
        while let batch = await withTaskCancellationHandler(operation: { await connection.nextBatch(max: 64) }, onCancel: { connection.shutdown() }) {
            try Task.checkCancellation()
            // Straight to the channel, one flush per batch. Waiting for the last write keeps the
            // backpressure: while the peer does not read, frames pile up in the connection's bounded
            // queue (which closes it when full), not in the channel.
            try await channel.eventLoop.flatSubmit {
                let written = channel.eventLoop.makePromise(of: Void.self)
                for (index, text) in batch.enumerated() {
                    let frame = WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: text))
                    channel.write(frame, promise: index == batch.count - 1 ? written : nil)
                }
                channel.flush()
                return written.futureResult
            }.get()
        }
        if let close = connection.requestedClose {
            // The peer may already be gone; there is nothing more to tell it then.
            try? await outbound.close(WebSocketErrorCode(codeNumber: Int(close.code)), reason: close.reason)
        }
        return .writer
    }

    private func authWatchdog() async -> TaskEnd {
        try? await Task.sleep(for: .seconds(gateway.settings.authTimeoutSeconds))
        if Task.isCancelled { return .authWatchdog(timedOut: false) }
        if case .success = ready.resolved { return .authWatchdog(timedOut: false) }
        try? await outbound.close(.policyViolation, reason: "authentication timeout")
        return .authWatchdog(timedOut: true)
    }

    private func readLoop(inbound: WebSocketInboundStream, authenticated: Connection?) async throws -> TaskEnd {
        var connection = authenticated
        var budget = FrameBudget(perSecond: gateway.framePolicy.perSecond, burst: gateway.framePolicy.burst)
        var refused = 0
        for try await message in inbound.messages(maxSize: gateway.settings.maxFrameBytes) {
            Gateway.framesIn.increment()
            guard budget.take() else {
                refused += 1
                if refused > Int(min(gateway.framePolicy.burst, 10_000)) {
                    if let connection {
                        connection.close(code: CloseCode.policyViolation, reason: "frame rate limit")
                    } else {
                        try await outbound.close(.policyViolation, reason: "frame rate limit")
                    }
                    return .reader
                }
                try await reply(ServerFrame.error(ParleyError.rateLimited(retryAfterSeconds: 1)), connection)
                continue
            }
            refused = 0
            guard case .text(let text) = message else {
                try await reply(
                    ServerFrame.error(.invalid("Only JSON text frames are accepted.", code: ParleyError.Code.binaryNotSupported)), connection)
                continue
            }
            let frame: ClientFrame
            do {
                frame = try ClientFrame.decode(text)
            } catch {
                // Before authentication, only auth and ping frames get more than "authenticate first".
                if connection == nil, !["auth", "ping", nil].contains(error.type) {
                    try await reply(ServerFrame.error(Self.authenticateFirst), nil)
                } else {
                    try await reply(ServerFrame.error(error.error, ref: error.ref), connection)
                }
                continue
            }
            if let connection {
                await handle(frame, connection)
            } else {
                connection = try await inChildTask { try await self.authenticate(frame) }
            }
        }
        return .reader
    }

    /// Runs `body` in a short-lived child task. A task keeps the high-water mark of its async stack
    /// for as long as it lives, and a socket's reader lives for hours: deep one-off work (opening,
    /// authenticating, syncing) runs in a child whose memory goes back when it ends. (Measured with
    /// heaptrack: task stacks were ~27 KB of the ~45 KB an idle socket cost.)
    private func inChildTask<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            guard let result = try await group.next() else { throw CancellationError() }
            return result
        }
    }

    /// A dependency (Redis, the database) is down: say so with an `error` frame carrying the
    /// retryable code, and close with 1013 "try again later", so clients back off and reconnect.
    private func refuseForNow(_ error: ParleyError) async throws {
        logger.warning("socket refused: a dependency is unavailable", metadata: ["parley.error": "\(error.code)"])
        try? await outbound.write(.text(ServerFrame.error(error)))
        try await outbound.close(WebSocketErrorCode(codeNumber: Int(CloseCode.tryAgainLater)), reason: "try again later")
    }

    /// Replies before authentication go straight to the socket; after, through the queue.
    private func reply(_ frame: String, _ connection: Connection?) async throws {
        if let connection {
            connection.enqueue(frame)
        } else {
            try await outbound.write(.text(frame))
        }
    }

    static let authenticateFirst = ParleyError.unauthenticated("Send an auth frame first.")

    private func authenticate(_ frame: ClientFrame) async throws -> Connection? {
        switch frame {
        case .auth(let token):
            do {
                let identity = try await gateway.authenticator.authenticate(token: token, viaCookie: false)
                return try await open(identity)
            } catch let error as ParleyError where error.kind == .unavailable {
                try await refuseForNow(error)
                return nil
            } catch let error as ParleyError {
                try await reply(ServerFrame.error(error), nil)
                try await outbound.close(.policyViolation, reason: "authentication failed")
                return nil
            }
        case .ping:
            try await reply(ServerFrame.encode(ServerFrame.Pong()), nil)
            return nil
        default:
            try await reply(ServerFrame.error(Self.authenticateFirst), nil)
            return nil
        }
    }

    // MARK: Frames

    private func handle(_ frame: ClientFrame, _ connection: Connection) async {
        let userID = connection.userID
        var ref: String?
        do {
            switch frame {
            case .send(let conversationID, let clientMsgID, let body):
                await send(conversationID: conversationID, clientMsgID: clientMsgID, body: body, connection)
            case .typing(let conversationID, let state):
                ref = conversationID.lowercased
                try await gateway.chat.setTyping(caller: userID, conversationID: conversationID, state: state)
            case .receipt(let kind, let conversationID, let seq):
                ref = conversationID.lowercased
                try await gateway.chat.advance(kind, caller: userID, conversationID: conversationID, seq: seq)
            case .sync(let cursors):
                try await inChildTask { try await self.sync(cursors, connection) }
            case .ping:
                connection.enqueue(ServerFrame.encode(ServerFrame.Pong()))
            case .auth:
                throw ParleyError.invalid("This socket is already authenticated.", code: ParleyError.Code.alreadyAuthenticated)
            }
        } catch let error as ParleyError {
            connection.enqueue(ServerFrame.error(error, ref: ref))
        } catch {
            logger.error("frame failed", metadata: ["parley.error": "\(String(reflecting: error))"])
            connection.enqueue(ServerFrame.error(.internal(detail: "\(error)"), ref: ref))
        }
    }

    /// Queues the send in arrival order and moves on. The ack (or error) is queued on the socket the
    /// moment the commit resolves, before the message is published, so the sender hears `ack` first.
    private func send(conversationID: UUID, clientMsgID: String?, body: String, _ connection: Connection) async {
        let inFlight = self.inFlight
        await withTaskCancellationHandler {
            await inFlight.acquire()
        } onCancel: {
            inFlight.cancelAll()
        }
        let promise: Promise<SendResult>
        do {
            try await gateway.limiter.enforce("user:" + connection.userID.lowercased, policy: gateway.sendPolicy)
            promise = try gateway.chat.enqueueSend(caller: connection.userID, conversationID: conversationID, body: body, clientMsgID: clientMsgID)
        } catch {
            promise = Promise()
            promise.resolve(.failure(error))
        }
        promise.whenResolved { result in
            inFlight.release()
            switch result {
            case .success(let sent):
                connection.enqueue(ServerFrame.encode(ServerFrame.Ack(clientMsgId: clientMsgID, message: MessageDTO(message: sent.message))))
            case .failure(let error as ParleyError):
                connection.enqueue(ServerFrame.error(error, ref: clientMsgID))
            case .failure(let error):
                connection.enqueue(ServerFrame.error(.internal(detail: "\(error)"), ref: clientMsgID))
            }
        }
    }

    private func sync(_ cursors: [String: Int64], _ connection: Connection) async throws {
        guard cursors.count <= gateway.settings.maxSyncCursors else {
            throw ParleyError.invalid("At most \(gateway.settings.maxSyncCursors) cursors per sync.", code: ParleyError.Code.tooManyCursors)
        }
        for (key, after) in cursors.sorted(by: { $0.key < $1.key }) {
            do {
                guard let conversationID = UUID(canonical: key) else {
                    throw ParleyError.invalid("Cursor keys must be conversation ids.", code: ParleyError.Code.invalidID)
                }
                let page = try await gateway.chat.sync(
                    caller: connection.userID,
                    conversationID: conversationID,
                    after: after,
                    limit: gateway.settings.syncPageSize
                )
                for message in page.messages {
                    connection.enqueue(ServerFrame.encode(ServerFrame.MessageFrame(message: MessageDTO(message: message))))
                }
                connection.enqueue(
                    ServerFrame.encode(
                        ServerFrame.Synced(conversationId: conversationID.lowercased, hasMore: page.hasMore, lastSeq: page.messages.last?.seq)
                    )
                )
            } catch let error as ParleyError {
                connection.enqueue(ServerFrame.error(error, ref: key))
            }
        }
    }
}
