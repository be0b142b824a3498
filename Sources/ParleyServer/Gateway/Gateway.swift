import Foundation
import Hummingbird
import Logging
import Metrics
import NIOCore
import ParleyCore
import Synchronization

/// The WebSocket gateway at `/api/v1/ws`: who may upgrade, and what each client frame does.
///
/// Each socket is driven by NIO channel handlers (`GatewayServerChannel` upgrades it, `GatewayHandler`
/// and `SocketSession` run it); this type holds what they share and translates frames into
/// `ChatService` / `PresenceService` calls. Events reach sockets only through the Bus (see
/// `ConnectionRegistry.deliver`), never by a shortcut that would break with several nodes.
///
/// A class, shared by reference: every socket's session points at the one gateway instead of
/// carrying a copy of all of this (a copy per socket was a kilobyte of every idle socket's memory).
final class Gateway: Sendable {
    let chat: ChatService
    let presence: PresenceService
    let authenticator: Authenticator
    let registry: ConnectionRegistry
    let limiter: any RateLimiter
    let sendPolicy: RateLimitPolicy
    let framePolicy: RateLimitPolicy
    let ipPolicy: RateLimitPolicy
    let trustProxy: Bool
    let settings: ParleyConfiguration.Gateway
    let sockets = OpenSockets()
    let logger: Logger

    init(
        chat: ChatService, presence: PresenceService, authenticator: Authenticator, registry: ConnectionRegistry, limiter: any RateLimiter,
        sendPolicy: RateLimitPolicy, framePolicy: RateLimitPolicy, ipPolicy: RateLimitPolicy, trustProxy: Bool,
        settings: ParleyConfiguration.Gateway, logger: Logger
    ) {
        self.chat = chat
        self.presence = presence
        self.authenticator = authenticator
        self.registry = registry
        self.limiter = limiter
        self.sendPolicy = sendPolicy
        self.framePolicy = framePolicy
        self.ipPolicy = ipPolicy
        self.trustProxy = trustProxy
        self.settings = settings
        self.logger = logger
    }

    static let framesIn = Counter(label: "parley_ws_frames_in_total")
    static let authenticateFirst = ParleyError.unauthenticated("Send an auth frame first.")

    // MARK: Upgrade

    /// Decides an upgrade to `/api/v1/ws`: the per-IP rate limit, then the credentials if the
    /// request carries any (a cookie only with an allowed Origin). Returns the identity they prove,
    /// or nil when the socket must authenticate with its first frame; throws to refuse the upgrade.
    func admit(_ request: Request, remoteAddress: SocketAddress?) async throws -> Identity? {
        let ip = ClientAddress.of(request, remoteAddress: remoteAddress, trustProxy: trustProxy)
        try await limiter.enforce("ip:" + ip, policy: ipPolicy, now: .now)
        guard authenticator.hasCredentials(request) else { return nil }
        if request.headers[.authorization] == nil {
            try authenticator.csrf.check(request, always: true)
        }
        return try await authenticator.authenticate(request)
    }

    // MARK: Frames

    /// Whether `frame` can be handled on the event loop, without waiting: pings, and sends when the
    /// rate limiter answers from memory.
    func canHandleAtOnce(_ frame: ClientFrame) -> Bool {
        switch frame {
        case .ping: true
        case .send: limiter.answersAtOnce
        default: false
        }
    }

    /// Queues a send in arrival order and moves on. The ack (or error) is queued on the socket the
    /// moment the commit resolves, before the message is published, so the sender hears `ack` first.
    func submit(_ outgoing: OutgoingMessage, _ connection: Connection, session: SocketSession) {
        submit(outgoing, connection, session: session) {
            if case .limited(let retry)? = limiter.acquireAtOnce("user:" + connection.userID.lowercased, policy: sendPolicy, now: .now) {
                throw ParleyError.rateLimited(retryAfterSeconds: retry)
            }
        }
    }

    private func submit(_ outgoing: OutgoingMessage, _ connection: Connection, session: SocketSession, rateLimit: () throws -> Void) {
        let clientMsgID = outgoing.clientMsgID
        session.sendStarted()
        let acknowledge: Promise<SendResult>.Callback = { result in
            switch result {
            case .success(let sent):
                connection.enqueue(ServerFrame.ack(clientMsgID: clientMsgID, sent.message))
            case .failure(let error as ParleyError):
                connection.enqueue(ServerFrame.error(error, ref: clientMsgID))
            case .failure(let error):
                connection.enqueue(ServerFrame.error(.internal(detail: "\(error)"), ref: clientMsgID))
            }
            session.sendFinished()
        }
        do {
            try rateLimit()
        } catch {
            acknowledge(.failure(error))
            return
        }
        chat.enqueueSend(
            caller: connection.userID, conversationID: outgoing.conversationID, body: outgoing.body, clientMsgID: clientMsgID,
            replyToID: outgoing.replyToID, attachmentIDs: outgoing.attachmentIDs, whenResolved: acknowledge)
    }

    /// Handles a frame of an open socket that may wait (the store, Redis).
    func handle(_ frame: ClientFrame, _ connection: Connection, session: SocketSession) async {
        let userID = connection.userID
        var ref: String?
        do {
            switch frame {
            case .send(let outgoing):
                ref = outgoing.clientMsgID
                let decision = await limiter.acquire("user:" + userID.lowercased, policy: sendPolicy, now: .now)
                submit(outgoing, connection, session: session) {
                    if case .limited(let retry) = decision { throw ParleyError.rateLimited(retryAfterSeconds: retry) }
                }
            case .typing(let conversationID, let state):
                ref = conversationID.lowercased
                try await chat.setTyping(caller: userID, conversationID: conversationID, state: state)
            case .receipt(let kind, let conversationID, let seq):
                ref = conversationID.lowercased
                try await chat.advance(kind, caller: userID, conversationID: conversationID, seq: seq)
            case .sync(let cursors, let changes):
                try await sync(cursors, changes: changes, connection)
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

    /// Per conversation: with a change cursor, the changes to messages the client holds (`updated`
    /// frames, in change order); once those are complete, the messages after its seq cursor; then
    /// `synced` with the cursors to send next time.
    private func sync(_ cursors: [String: Int64], changes: [String: Int64], _ connection: Connection) async throws {
        guard cursors.count <= settings.maxSyncCursors else {
            throw ParleyError.invalid("At most \(settings.maxSyncCursors) cursors per sync.", code: ParleyError.Code.tooManyCursors)
        }
        for (key, after) in cursors.sorted(by: { $0.key < $1.key }) {
            do {
                guard let conversationID = UUID(canonical: key) else {
                    throw ParleyError.invalid("Cursor keys must be conversation ids.", code: ParleyError.Code.invalidID)
                }
                var changeCursor: Int64?
                if let changesAfter = changes[key] {
                    let page = try await chat.changes(
                        caller: connection.userID, conversationID: conversationID, after: changesAfter, maxSeq: after, limit: settings.syncPageSize)
                    for (kind, message) in page.changes {
                        connection.enqueue(ServerFrame.updated(kind, message, changeSeq: message.changeSeq))
                    }
                    changeCursor = page.nextCursor
                    if page.hasMore {
                        connection.enqueue(
                            ServerFrame.encode(
                                ServerFrame.Synced(conversationId: key.lowercased(), hasMore: true, lastSeq: nil, changeSeq: changeCursor)))
                        continue
                    }
                }
                let page = try await chat.sync(caller: connection.userID, conversationID: conversationID, after: after, limit: settings.syncPageSize)
                for message in page.messages {
                    connection.enqueue(ServerFrame.message(message))
                }
                connection.enqueue(
                    ServerFrame.encode(
                        ServerFrame.Synced(
                            conversationId: conversationID.lowercased, hasMore: page.hasMore, lastSeq: page.messages.last?.seq,
                            changeSeq: changeCursor)
                    )
                )
            } catch let error as ParleyError {
                connection.enqueue(ServerFrame.error(error, ref: key))
            }
        }
    }
}
