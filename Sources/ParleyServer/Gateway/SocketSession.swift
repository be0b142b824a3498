import DequeModule
import Foundation
import Logging
import NIOCore
import NIOWebSocket
import ParleyCore
import Synchronization

/// One WebSocket from upgrade to close: authentication, frames handled in arrival order, flow
/// control and teardown.
///
/// `GatewayHandler` calls in on the channel's event loop. Frames that need nothing but memory (a
/// send under an in-process rate limiter, a ping) are handled right there. Frames that must wait for
/// the store or Redis (auth, typing, receipts, sync, a send under the Redis rate limiter) join a
/// queue that a task works through in order; the task ends when the queue is empty, so an idle
/// socket holds no task and no async stack, only this object and its `Connection`.
final class SocketSession: Sendable {
    private enum Phase {
        case awaitingAuth
        case authenticating
        case opening
        case open
        /// The node is shutting down: no new frames are taken.
        case closing
        case closed
    }

    private enum Job {
        case open(Identity)
        case authenticate(token: String)
        case frame(ClientFrame)
    }

    private struct State {
        var phase: Phase
        var connection: Connection?
        var jobs = Deque<Job>()
        var working = false
        var budget: FrameBudget
        var refused = 0
        /// Sends submitted and not yet resolved.
        var inFlight = 0
        var readingPaused = false
        /// Close with 1001 once the sends in flight are acknowledged.
        var goingAway = false
    }

    /// Queued jobs past which the socket stops reading until the queue drains.
    private static let maxQueuedJobs = 256

    private let gateway: Gateway
    private let channel: any Channel
    private var logger: Logger { gateway.logger }
    // Guarded by its Mutex; I/O and callbacks run outside the lock.
    private let state: Mutex<State>

    init(gateway: Gateway, channel: any Channel) {
        self.gateway = gateway
        self.channel = channel
        state = Mutex(State(phase: .awaitingAuth, budget: FrameBudget(perSecond: gateway.framePolicy.perSecond, burst: gateway.framePolicy.burst)))
    }

    // MARK: Events from the channel (on its event loop)

    /// The upgrade completed, with the identity its credentials proved, if any.
    func started(identity: Identity?) {
        gateway.sockets.opened()
        if let identity {
            state.withLock { $0.phase = .opening }
            schedule(.open(identity))
        } else {
            let timeout = TimeAmount.nanoseconds(Int64(gateway.settings.authTimeoutSeconds * 1e9))
            channel.eventLoop.scheduleTask(in: timeout) { [self] in
                let waiting = state.withLock { $0.phase == .awaitingAuth || $0.phase == .authenticating }
                if waiting { closeDirectly(code: CloseCode.policyViolation, reason: "authentication timeout") }
            }
        }
    }

    func received(text: String) {
        Gateway.framesIn.increment()
        enum Step { case handle(ClientFrame, Connection?), reply(ParleyError, ref: String?), overLimit(Connection?), ignore }
        let step: Step = state.withLock { state in
            guard state.phase != .closing, state.phase != .closed else { return .ignore }
            guard state.budget.take() else {
                state.refused += 1
                let limit = Int(min(gateway.framePolicy.burst, 10_000))
                return state.refused > limit ? .overLimit(state.connection) : .reply(.rateLimited(retryAfterSeconds: 1), ref: nil)
            }
            state.refused = 0
            do throws(ClientFrame.Invalid) {
                return .handle(try ClientFrame.decode(text), state.connection)
            } catch {
                // Before authentication, only auth and ping frames get more than "authenticate first".
                if state.phase == .awaitingAuth, !["auth", "ping", nil].contains(error.type) {
                    return .reply(Gateway.authenticateFirst, ref: nil)
                }
                return .reply(error.error, ref: error.ref)
            }
        }
        switch step {
        case .ignore:
            return
        case .reply(let error, let ref):
            reply(ServerFrame.error(error, ref: ref))
        case .overLimit(let connection):
            if let connection {
                connection.close(code: CloseCode.policyViolation, reason: "frame rate limit")
            } else {
                closeDirectly(code: CloseCode.policyViolation, reason: "frame rate limit")
            }
        case .handle(let frame, let connection):
            route(frame, connection)
        }
    }

    func ponged() {
        state.withLock { $0.connection }?.ponged()
    }

    func writable() {
        state.withLock { $0.connection }?.writable()
    }

    /// The socket is being closed for a protocol error: nothing more is written or handled.
    func abandon() {
        let connection: Connection? = state.withLock { state in
            state.phase = .closing
            state.jobs.removeAll()
            return state.connection
        }
        connection?.shutdown()
    }

    func receivedBinary() {
        reply(ServerFrame.error(.invalid("Only JSON text frames are accepted.", code: ParleyError.Code.binaryNotSupported)))
    }

    /// The server is shutting down: acknowledge what is in flight, then close with 1001.
    func goAway() {
        let (connection, idle): (Connection?, Bool) = state.withLock { state in
            guard state.phase != .closed else { return (nil, false) }
            state.phase = .closing
            state.jobs.removeAll()
            state.goingAway = true
            return (state.connection, state.inFlight == 0)
        }
        guard let connection else {
            closeDirectly(code: CloseCode.goingAway, reason: "server shutting down")
            return
        }
        if idle { connection.close(code: CloseCode.goingAway, reason: "server shutting down") }
        // Sends stuck on a wedged store do not hold the shutdown for long.
        channel.eventLoop.scheduleTask(in: .seconds(5)) {
            connection.close(code: CloseCode.goingAway, reason: "server shutting down")
        }
    }

    /// The channel closed, for whatever reason.
    func closed() {
        let connection: Connection? = state.withLock { state in
            state.phase = .closed
            state.jobs.removeAll()
            defer { state.connection = nil }
            return state.connection
        }
        guard let connection else {
            gateway.sockets.closed()
            return
        }
        gateway.registry.remove(connection)
        connection.shutdown()
        let presence = gateway.presence
        let sockets = gateway.sockets
        let logger = self.logger
        // Short-lived: the user's last-seen time and offline presence are written once. The socket
        // counts as open until then, so shutdown waits for the write before the store closes.
        Task {
            do {
                try await presence.disconnected(userID: connection.userID, connectionID: connection.id)
            } catch {
                logger.warning("presence update failed", metadata: ["parley.error": "\(error)"])
            }
            sockets.closed()
        }
        logger.debug("socket closed", metadata: ["parley.connection_id": "\(connection.id.lowercased)"])
    }

    // MARK: Routing

    /// Handles `frame` now when it needs no waiting and nothing is queued before it; queues it otherwise.
    private func route(_ frame: ClientFrame, _ connection: Connection?) {
        enum Route { case now, queue(Job), reply(ParleyError), pong }
        let route: Route = state.withLock { state in
            switch state.phase {
            case .awaitingAuth:
                switch frame {
                case .auth(let token):
                    state.phase = .authenticating
                    return .queue(.authenticate(token: token))
                case .ping: return .pong
                default: return .reply(Gateway.authenticateFirst)
                }
            case .authenticating, .opening:
                return .queue(.frame(frame))
            case .open:
                if state.jobs.isEmpty, !state.working, gateway.canHandleAtOnce(frame) { return .now }
                return .queue(.frame(frame))
            case .closing, .closed:
                return .reply(.shuttingDown)
            }
        }
        switch route {
        case .now:
            if let connection { handleAtOnce(frame, connection) }
        case .queue(let job):
            schedule(job)
        case .reply(let error):
            reply(ServerFrame.error(error))
        case .pong:
            reply(ServerFrame.encode(ServerFrame.Pong()))
        }
    }

    private func schedule(_ job: Job) {
        let (start, reading): (Bool, Bool?) = state.withLock { state in
            state.jobs.append(job)
            let reading = state.jobs.count >= Self.maxQueuedJobs ? pauseReading(&state) : nil
            guard !state.working else { return (false, reading) }
            state.working = true
            return (true, reading)
        }
        setReading(reading)
        if start {
            // Short-lived: works through the queue and ends when it is empty.
            Task { await self.work() }
        }
    }

    private func work() async {
        while let job = nextJob() {
            switch job {
            case .open(let identity):
                await open(identity)
            case .authenticate(let token):
                await authenticate(token)
            case .frame(let frame):
                guard let connection = state.withLock({ $0.connection }) else { continue }
                await gateway.handle(frame, connection, session: self)
            }
        }
    }

    private func nextJob() -> Job? {
        let (job, reading): (Job?, Bool?) = state.withLock { state in
            guard state.phase != .closed, let job = state.jobs.popFirst() else {
                state.working = false
                // Give the storage back rather than keep it for an idle socket.
                state.jobs = Deque()
                return (nil, nil)
            }
            return (job, resumeReadingIfRoom(&state))
        }
        setReading(reading)
        return job
    }

    private func handleAtOnce(_ frame: ClientFrame, _ connection: Connection) {
        switch frame {
        case .ping:
            connection.enqueue(ServerFrame.encode(ServerFrame.Pong()))
        case .send(let outgoing):
            gateway.submit(outgoing, connection, session: self)
        default:
            schedule(.frame(frame))
        }
    }

    // MARK: Sends in flight

    /// A send was handed to the pipeline; past the limit the socket stops reading.
    func sendStarted() {
        let reading: Bool? = state.withLock { state in
            state.inFlight += 1
            return state.inFlight >= gateway.settings.maxInFlightSends ? pauseReading(&state) : nil
        }
        setReading(reading)
    }

    /// A send was acknowledged (or refused).
    func sendFinished() {
        let (goAway, reading): (Connection?, Bool?) = state.withLock { state in
            state.inFlight -= 1
            let reading = resumeReadingIfRoom(&state)
            return (state.goingAway && state.inFlight == 0 ? state.connection : nil, reading)
        }
        setReading(reading)
        goAway?.close(code: CloseCode.goingAway, reason: "server shutting down")
    }

    /// Marks reading paused; returns the change to apply (outside the lock), if any.
    private func pauseReading(_ state: inout State) -> Bool? {
        guard !state.readingPaused else { return nil }
        state.readingPaused = true
        return false
    }

    private func resumeReadingIfRoom(_ state: inout State) -> Bool? {
        guard state.readingPaused, state.inFlight < gateway.settings.maxInFlightSends, state.jobs.count < Self.maxQueuedJobs / 2 else {
            return nil
        }
        state.readingPaused = false
        return true
    }

    /// Applies a change of the reading flag on the event loop; each application reads the flag as it
    /// is then, so changes decided on different threads cannot land out of order.
    private func setReading(_ change: Bool?) {
        guard change != nil else { return }
        let channel = self.channel
        channel.eventLoop.execute { [self] in
            let read = !state.withLock { $0.readingPaused }
            channel.setOption(ChannelOptions.autoRead, value: read).whenFailure { _ in }
        }
    }

    // MARK: Authentication and opening

    private func authenticate(_ token: String) async {
        do {
            let identity = try await gateway.authenticator.authenticate(token: token, viaCookie: false)
            let proceed = state.withLock { state in
                guard state.phase == .authenticating else { return false }
                state.phase = .opening
                return true
            }
            if proceed { await open(identity) }
        } catch let error as ParleyError where error.kind == .unavailable {
            refuseForNow(error)
        } catch let error as ParleyError {
            reply(ServerFrame.error(error))
            closeDirectly(code: CloseCode.policyViolation, reason: "authentication failed")
        } catch {
            logger.error("authentication failed", metadata: ["parley.error": "\(String(reflecting: error))"])
            closeDirectly(code: CloseCode.policyViolation, reason: "authentication failed")
        }
    }

    /// Registers the socket: `hello` is queued first, and frames are written only once the node is
    /// subscribed to the user's events, so a client that has seen `hello` misses nothing.
    private func open(_ identity: Identity) async {
        let connection = Connection(
            userID: identity.userID, sessionID: identity.sessionID, channel: channel, limit: gateway.settings.outboundQueueLimit)
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
        } catch let error as ParleyError where error.kind == .unavailable {
            gateway.registry.remove(connection)
            refuseForNow(error)
            return
        } catch {
            gateway.registry.remove(connection)
            logger.error("socket could not open", metadata: ["parley.error": "\(String(reflecting: error))"])
            closeDirectly(code: CloseCode.tryAgainLater, reason: "try again later")
            return
        }
        let stillOpen = state.withLock { state in
            guard state.phase == .opening else { return false }
            state.phase = .open
            state.connection = connection
            return true
        }
        guard stillOpen else {
            // Closed (or shutting down) while subscribing.
            gateway.registry.remove(connection)
            return
        }
        connection.start()
        do {
            try await gateway.presence.connected(userID: identity.userID, connectionID: connection.id)
        } catch {
            logger.warning("presence update failed", metadata: ["parley.error": "\(error)"])
        }
        logger.debug(
            "socket opened",
            metadata: ["parley.user_id": "\(identity.userID.lowercased)", "parley.connection_id": "\(connection.id.lowercased)"]
        )
    }

    // MARK: Writing outside the connection's queue

    /// A reply: through the connection's queue once open, straight to the channel before.
    func reply(_ frame: ByteBuffer) {
        if let connection = state.withLock({ $0.connection }) {
            connection.enqueue(frame)
        } else {
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: frame), promise: nil)
        }
    }

    /// A dependency (Redis, the database) is down: say so with an `error` frame carrying the
    /// retryable code, and close with 1013 "try again later", so clients back off and reconnect.
    private func refuseForNow(_ error: ParleyError) {
        logger.warning("socket refused: a dependency is unavailable", metadata: ["parley.error": "\(error.code)"])
        reply(ServerFrame.error(error))
        closeDirectly(code: CloseCode.tryAgainLater, reason: "try again later")
    }

    /// Sends a close frame and closes the channel once the peer answers (or after two seconds).
    private func closeDirectly(code: UInt16, reason: String) {
        let channel = self.channel
        channel.writeAndFlush(Connection.closeFrame(code: code, reason: reason, allocator: channel.allocator), promise: nil)
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }
}
