import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A pub/sub connection that keeps itself subscribed: it remembers the channels it should be on,
/// reconnects with backoff when the connection drops, and subscribes to all of them again.
/// Messages reach `onMessage` on the connection's event loop, in the order Redis sent them.
public final class RedisSubscriber: Sendable {
    public typealias MessageHandler = @Sendable (_ channel: String, _ payload: [UInt8]) -> Void

    private struct State {
        var wanted: Set<String> = []
        var connection: RedisConnection?
        /// Callers waiting for Redis to confirm a subscription, by channel.
        var confirmations: [String: [CheckedContinuation<Void, any Error>]] = [:]
        var stopped = false
        var loop: Task<Void, Never>?
    }

    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let onMessage: MessageHandler
    private let state = Mutex(State())

    public init(
        configuration: RedisConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        onMessage: @escaping MessageHandler
    ) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.onMessage = onMessage
    }

    /// Connects and keeps the connection up until `stop()`. Returns after the first connection.
    public func start() async throws {
        let first = try await connect()
        state.withLock { $0.loop = Task { await self.maintain(first) } }
    }

    /// Subscribes and returns once Redis confirmed it. When Redis is unreachable it throws, but the
    /// channel stays wanted and is subscribed as soon as the connection is back.
    public func subscribe(_ channel: String) async throws {
        let connection: RedisConnection? = state.withLock { state in
            state.wanted.insert(channel)
            return state.connection
        }
        guard let connection, connection.isActive else { throw RedisError.connectionClosed }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            state.withLock { $0.confirmations[channel, default: []].append(continuation) }
            connection.fire(["SUBSCRIBE", channel])
        }
    }

    public func unsubscribe(_ channel: String) {
        let connection: RedisConnection? = state.withLock { state in
            state.wanted.remove(channel)
            return state.connection
        }
        connection?.fire(["UNSUBSCRIBE", channel])
    }

    public func stop() {
        let (connection, loop, waiting) = state.withLock { state in
            state.stopped = true
            let waiting = state.confirmations.values.flatMap { $0 }
            state.confirmations = [:]
            return (state.connection, state.loop, waiting)
        }
        loop?.cancel()
        connection?.close()
        for continuation in waiting { continuation.resume(throwing: RedisError.connectionClosed) }
    }

    private func connect() async throws -> RedisConnection {
        let connection = try await RedisConnection.connect(configuration, group: group) { [weak self] value in
            self?.handle(value)
        }
        let channels: [String] = state.withLock { state in
            state.connection = connection
            return Array(state.wanted)
        }
        if !channels.isEmpty { connection.fire(["SUBSCRIBE"] + channels) }
        return connection
    }

    /// Waits for the connection to drop, then reconnects (100 ms doubling to 2 s) and resubscribes.
    private func maintain(_ first: RedisConnection) async {
        var current = first
        while !Task.isCancelled {
            try? await current.closeFuture.get()
            let waiting = state.withLock { state in
                state.connection = nil
                let waiting = state.confirmations.values.flatMap { $0 }
                state.confirmations = [:]
                return waiting
            }
            for continuation in waiting { continuation.resume(throwing: RedisError.connectionClosed) }
            if state.withLock({ $0.stopped }) { return }
            logger.warning("Redis pub/sub connection lost; reconnecting")
            var delay = Duration.milliseconds(100)
            while !Task.isCancelled {
                try? await Task.sleep(for: delay)
                if state.withLock({ $0.stopped }) { return }
                if let connection = try? await connect() {
                    current = connection
                    logger.info("Redis pub/sub connection restored; subscriptions renewed")
                    break
                }
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    private func handle(_ value: RESPValue) {
        guard let parts = value.array, let kind = parts.first?.string?.lowercased() else { return }
        switch kind {
        case "message":
            guard parts.count == 3, let channel = parts[1].string, case .bulkString(let payload?) = parts[2] else { return }
            onMessage(channel, payload)
        case "subscribe":
            guard parts.count >= 2, let channel = parts[1].string else { return }
            let waiting = state.withLock { $0.confirmations.removeValue(forKey: channel) ?? [] }
            for continuation in waiting { continuation.resume() }
        default:
            break
        }
    }
}
