import Foundation
import Logging
import Metrics
import NIOCore
import NIOFoundationCompat
import NIOPosix
import ParleyCore
import ServiceLifecycle
import Synchronization

/// The cluster `Bus`: Redis pub/sub over a fixed set of shard channels.
///
/// A user belongs to one shard (a hash of their id). A node subscribes to the shards of the users
/// connected to it; `publish` sends one message per shard among the recipients, carrying the event
/// and the recipients, and each receiving node keeps the recipients it holds sockets for. A
/// 1,000-member group therefore costs at most `shardCount` PUBLISHes, not 1,000.
///
/// Publishes go out in call order on one pipelined connection, so events from one node reach each
/// subscriber in the order they were published. When Redis is unreachable, events are dropped and
/// counted (`publish` never blocks); clients catch up with `sync`, which reads the store.
///
/// `run()` owns the publishing connection (its flush loop) and the subscriber; on graceful shutdown
/// it sends what is queued, then closes both.
public final class RedisBus: Bus {
    public static let shardCount = 64

    private struct State {
        var handler: (@Sendable (BusDelivery) -> Void)?
        var users: Set<UUID> = []
        var shardUsers = [Int](repeating: 0, count: RedisBus.shardCount)
        var outbox: [[String]] = []
        /// The flush loop, parked until there is something to send (handed over directly), or nil to stop.
        var flusher: CheckedContinuation<[[String]]?, Never>?
        var stopping = false
    }

    /// What a shard channel carries: `{"r":[recipient ids],"e":event}`.
    private struct Envelope: Decodable {
        var r: [UUID]
        var e: ChatEvent
    }

    private static let encoder = JSONEncoder()
    private static let decoder = JSONDecoder()

    private let publisher: RedisClient
    private let subscriber: RedisSubscriber
    private let prefix: String
    private let logger: Logger
    // Guarded by its Mutex; the flusher is resumed outside the lock.
    private let state = Mutex(State())
    private let dropped = Counter(label: "parley_bus_dropped_total")

    public init(configuration: RedisConfiguration, logger: Logger) {
        var single = configuration
        single.poolSize = 1
        self.publisher = RedisClient(configuration: single, logger: logger)
        self.prefix = configuration.keyPrefix + "bus:"
        self.logger = logger
        let box = WeakBox<RedisBus>()
        self.subscriber = RedisSubscriber(configuration: configuration, logger: logger) { channel, payload in
            box.value?.received(channel: channel, payload: payload)
        }
        box.value = self
    }

    static func shard(of user: UUID) -> Int {
        // The last bytes of a UUID (v4 random, v7 random tail) spread evenly.
        let bytes = user.uuid
        return Int(UInt16(bytes.14) << 8 | UInt16(bytes.15)) % shardCount
    }

    private func channel(_ shard: Int) -> String { prefix + String(shard) }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { try? await self.subscriber.run() }
            await withGracefulShutdownHandler {
                await withTaskCancellationHandler {
                    await self.flushUntilStopped()
                } onCancel: {
                    self.stopFlushing()
                }
            } onGracefulShutdown: {
                self.stopFlushing()
            }
            // Queued publishes are out: close the connections.
            state.withLock { $0.handler = nil }
            subscriber.stop()
            publisher.close()
        }
    }

    /// Sets the handler and waits (up to 5 s) for the subscriber's first connection.
    public func start(handler: @escaping @Sendable (BusDelivery) -> Void) async throws {
        state.withLock { $0.handler = handler }
        do {
            try await subscriber.waitUntilConnected(timeout: .seconds(5))
        } catch {
            throw Self.unavailable(error)
        }
    }

    private static func unavailable(_ error: any Error) -> ParleyError {
        ParleyError(
            .unavailable, code: ParleyError.Code.busUnavailable, message: "Real-time delivery is unavailable; retry shortly.",
            retryAfterSeconds: 1, detail: "\(error)")
    }

    public func publish(_ event: ChatEvent, to recipients: [UUID]) {
        guard !recipients.isEmpty else { return }
        var byShard: [Int: [UUID]] = [:]
        for recipient in recipients { byShard[Self.shard(of: recipient), default: []].append(recipient) }
        // The event is encoded once; each shard's payload only adds its own recipients around it.
        let encoded: Data
        do {
            encoded = try Self.encoder.encode(event)
        } catch {
            dropped.increment()
            logger.error("bus event not encodable; dropped", metadata: ["parley.error": "\(error)"])
            return
        }
        let eventJSON = String(decoding: encoded, as: UTF8.self)
        var commands: [[String]] = []
        for (shard, users) in byShard.sorted(by: { $0.key < $1.key }) {
            let recipients = users.map { "\"" + $0.lowercased + "\"" }.joined(separator: ",")
            commands.append(["PUBLISH", channel(shard), #"{"r":["# + recipients + #"],"e":"# + eventJSON + "}"])
        }
        let handOver: (CheckedContinuation<[[String]]?, Never>, [[String]])? = state.withLock { state in
            guard let flusher = state.flusher else {
                state.outbox.append(contentsOf: commands)
                return nil
            }
            state.flusher = nil
            return (flusher, commands)
        }
        if let (flusher, commands) = handOver { flusher.resume(returning: commands) }
    }

    /// Sends everything queued, in order, one pipeline at a time, until stopped and drained.
    private func flushUntilStopped() async {
        while true {
            let batch: [[String]]? = await withCheckedContinuation { continuation in
                let ready: [[String]]?? = state.withLock { state in
                    if !state.outbox.isEmpty {
                        defer { state.outbox.removeAll(keepingCapacity: true) }
                        return .some(state.outbox)
                    }
                    if state.stopping { return .some(nil) }
                    state.flusher = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
            guard let batch else { return }
            do {
                _ = try await publisher.pipeline(batch)
            } catch {
                dropped.increment(by: Int64(batch.count))
                logger.warning("Redis unavailable: bus events dropped", metadata: ["parley.events": "\(batch.count)"])
            }
        }
    }

    public func subscribe(_ userID: UUID) async throws {
        let shard = Self.shard(of: userID)
        let first = state.withLock { state -> Bool in
            guard state.users.insert(userID).inserted else { return false }
            state.shardUsers[shard] += 1
            return state.shardUsers[shard] == 1
        }
        if first {
            do {
                try await subscriber.subscribe(channel(shard))
            } catch {
                throw Self.unavailable(error)
            }
        }
    }

    public func unsubscribe(_ userID: UUID) async throws {
        let shard = Self.shard(of: userID)
        let last = state.withLock { state -> Bool in
            guard state.users.remove(userID) != nil else { return false }
            state.shardUsers[shard] -= 1
            return state.shardUsers[shard] == 0
        }
        if last { subscriber.unsubscribe(channel(shard)) }
    }

    private func stopFlushing() {
        let flusher: CheckedContinuation<[[String]]?, Never>? = state.withLock { state in
            state.stopping = true
            defer { state.flusher = nil }
            return state.flusher
        }
        flusher?.resume(returning: nil)
    }

    private func received(channel: String, payload: ByteBuffer) {
        guard let envelope = try? Self.decoder.decode(Envelope.self, from: payload) else {
            logger.warning("undecodable bus message", metadata: ["parley.channel": "\(channel)"])
            return
        }
        let (handler, local): ((@Sendable (BusDelivery) -> Void)?, [UUID]) = state.withLock { state in
            (state.handler, envelope.r.filter { state.users.contains($0) })
        }
        guard let handler, !local.isEmpty else { return }
        handler(BusDelivery(event: envelope.e, recipients: local))
    }
}

/// Breaks the reference cycle between an object and a callback it hands to something it owns.
final class WeakBox<T: AnyObject & Sendable>: Sendable {
    private struct Weak: @unchecked Sendable {
        weak var value: T?
    }

    private let storage = Mutex(Weak())
    var value: T? {
        get { storage.withLock { $0.value } }
        set { storage.withLock { $0.value = newValue } }
    }
}
