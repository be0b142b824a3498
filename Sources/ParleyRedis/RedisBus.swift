import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import ParleyCore
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
public final class RedisBus: Bus {
    public static let shardCount = 64

    private struct State {
        var handler: (@Sendable (BusDelivery) -> Void)?
        var users: Set<UUID> = []
        var shardUsers = [Int](repeating: 0, count: RedisBus.shardCount)
        var outbox: [[String]] = []
        var flushing = false
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

    public func start(handler: @escaping @Sendable (BusDelivery) -> Void) async throws {
        state.withLock { $0.handler = handler }
        try await subscriber.start()
    }

    public func publish(_ event: ChatEvent, to recipients: [UUID]) {
        guard !recipients.isEmpty else { return }
        var byShard: [Int: [UUID]] = [:]
        for recipient in recipients { byShard[Self.shard(of: recipient), default: []].append(recipient) }
        // The event is encoded once; each shard's payload only adds its own recipients around it.
        guard let encoded = try? Self.encoder.encode(event) else { return }
        let eventJSON = String(decoding: encoded, as: UTF8.self)
        var commands: [[String]] = []
        for (shard, users) in byShard.sorted(by: { $0.key < $1.key }) {
            let recipients = users.map { "\"" + $0.lowercased + "\"" }.joined(separator: ",")
            commands.append(["PUBLISH", channel(shard), #"{"r":["# + recipients + #"],"e":"# + eventJSON + "}"])
        }
        let startFlush = state.withLock { state in
            state.outbox.append(contentsOf: commands)
            if state.flushing { return false }
            state.flushing = true
            return true
        }
        if startFlush { Task { await flush() } }
    }

    /// Sends everything queued, in order, one pipeline at a time.
    private func flush() async {
        while true {
            let batch: [[String]] = state.withLock { state in
                let batch = state.outbox
                state.outbox.removeAll(keepingCapacity: true)
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            if batch.isEmpty { return }
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
                throw ParleyError(
                    .unavailable, code: "bus_unavailable", message: "Real-time delivery is unavailable; retry shortly.", retryAfterSeconds: 1,
                    detail: "\(error)")
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

    public func shutdown() async {
        // Give queued publishes a moment to leave.
        for _ in 0..<50 where state.withLock({ $0.flushing }) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        state.withLock { $0.handler = nil }
        subscriber.stop()
        publisher.close()
    }

    private func received(channel: String, payload: [UInt8]) {
        guard let envelope = try? Self.decoder.decode(Envelope.self, from: Data(payload)) else {
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
