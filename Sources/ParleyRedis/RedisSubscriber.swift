import Logging
import NIOCore
import NIOPosix
import ParleyCore
import ServiceLifecycle
import Synchronization

/// A pub/sub connection that keeps itself subscribed: it remembers the channels it should be on,
/// reconnects with backoff when the connection drops, and subscribes to all of them again.
/// Messages reach `onMessage` on the connection's event loop, in the order Redis sent them.
///
/// A `Service`: `run()` keeps the connection up for the life of the node and closes it on graceful
/// shutdown (or cancellation).
public final class RedisSubscriber: Service, Sendable {
    public typealias MessageHandler = @Sendable (_ channel: String, _ payload: ByteBuffer) -> Void

    private struct State {
        var wanted: Set<String> = []
        var connection: RedisConnection?
        /// Callers waiting for Redis to confirm a subscription, by channel.
        var confirmations: [String: [CheckedContinuation<Void, any Error>]] = [:]
        var stopped = false
    }

    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let onMessage: MessageHandler
    // Guarded by its Mutex; continuations are resumed outside the lock.
    private let state = Mutex(State())
    /// Resolved by the first successful connection.
    private let firstConnection = Promise<Void>()

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

    /// Connects, and reconnects whenever the connection drops, until graceful shutdown.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskCancellationHandler {
                await self.maintain()
            } onCancel: {
                self.stop()
            }
        }
        stop()
    }

    /// Returns once the first connection is up, or throws `connectionClosed` after `timeout`.
    public func waitUntilConnected(timeout: Duration) async throws {
        let firstConnection = self.firstConnection
        do {
            try await withTimeout(timeout) { try await firstConnection.value }
        } catch is TimeoutError {
            throw RedisError.connectionClosed
        }
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

    /// Closes the connection for good; waiting subscribers fail with `connectionClosed`.
    public func stop() {
        let (connection, waiting) = state.withLock { state in
            state.stopped = true
            let waiting = state.confirmations.values.flatMap { $0 }
            state.confirmations = [:]
            return (state.connection, waiting)
        }
        connection?.close()
        for continuation in waiting { continuation.resume(throwing: RedisError.connectionClosed) }
    }

    private func connect() async throws -> RedisConnection {
        let connection = try await RedisConnection.connect(configuration, group: group) { [weak self] value in
            self?.handle(value)
        }
        let (channels, stopped): ([String], Bool) = state.withLock { state in
            if !state.stopped { state.connection = connection }
            return (Array(state.wanted), state.stopped)
        }
        if stopped {
            connection.close()
            throw RedisError.connectionClosed
        }
        if !channels.isEmpty { connection.fire(["SUBSCRIBE"] + channels) }
        firstConnection.resolve(.success(()))
        return connection
    }

    /// Connects (retrying 100 ms doubling to 2 s), waits for the connection to drop, and again,
    /// until stopped.
    private func maintain() async {
        var delay = Duration.milliseconds(100)
        var lost = false
        while !state.withLock({ $0.stopped }) {
            guard let connection = try? await connect() else {
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
                continue
            }
            if lost { logger.info("Redis pub/sub connection restored; subscriptions renewed") }
            delay = .milliseconds(100)
            try? await connection.closeFuture.get()
            let waiting = state.withLock { state in
                state.connection = nil
                let waiting = state.confirmations.values.flatMap { $0 }
                state.confirmations = [:]
                return waiting
            }
            for continuation in waiting { continuation.resume(throwing: RedisError.connectionClosed) }
            if state.withLock({ $0.stopped }) { return }
            logger.warning("Redis pub/sub connection lost; reconnecting")
            lost = true
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
