import Foundation
import Logging

/// One event as a consumer receives it: from a Kafka partition (`parley consume`, or `serve` with
/// in-process consumers and Kafka), or straight from the outbox (embedded mode without Kafka).
public struct ConsumedEvent: Sendable {
    public var topic: StreamTopic
    /// The partition key: a conversation id, or a user id for presence and notifications.
    public var key: String
    /// The envelope's `type` (the `parley-event-type` header).
    public var type: String
    /// The envelope, exactly as produced.
    public var envelope: [UInt8]
    /// The partition it came from; events of one partition reach a consumer in order.
    public var partition: Int

    public init(topic: StreamTopic, key: String, type: String, envelope: [UInt8], partition: Int) {
        self.topic = topic
        self.key = key
        self.type = type
        self.envelope = envelope
        self.partition = partition
    }
}

/// A consumer of the event stream (webhooks, notify). The runner feeds it the events of its topics,
/// one partition's events in order, and commits an event's offset only after `handle` returned.
public protocol EventConsumer: Sendable {
    /// Its name: the consumer group is `<topic prefix><name>` (e.g. `parley.webhooks`).
    var name: String { get }
    var topics: [StreamTopic] { get }
    /// Handles one event and returns once done with it. A throw means it could not be handled yet
    /// (its dependency is down, say): the runner retries it with backoff, and the partition's later
    /// events wait.
    func handle(_ event: ConsumedEvent) async throws
}

extension EventConsumer {
    /// Handles `event`, retrying with jittered exponential backoff (`minBackoff` doubling up to
    /// `maxBackoff`) for as long as `handle` throws; only cancellation ends it early.
    public func handleRetrying(_ event: ConsumedEvent, minBackoff: Duration, maxBackoff: Duration, logger: Logger) async throws {
        var backoff = minBackoff
        var failures = 0
        while true {
            do {
                try await handle(event)
                if failures > 0 { logger.info("consumer recovered", metadata: ["parley.consumer": "\(name)"]) }
                return
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                failures += 1
                if failures == 1 {
                    logger.warning(
                        "consumer failed on an event; retrying while its partition waits",
                        metadata: ["parley.consumer": "\(name)", "parley.event_type": "\(event.type)", "parley.error": "\(error)"])
                }
                try await Task.sleep(for: backoff / 2 + backoff / 2 * Double.random(in: 0...1))
                backoff = min(backoff * 2, maxBackoff)
            }
        }
    }
}

/// The event stream of a node without Kafka: the outbox relay hands each batch straight to the
/// node's consumers (webhooks, notify), so they work with one command. The relay removes the batch
/// from the outbox only after every consumer is done with it, so nothing is lost in a crash (a
/// restart hands the batch over again: at least once, as with Kafka).
///
/// Events of one key go to a consumer in order; different shards of the batch are handled at
/// once. Unlike with Kafka, the next batch waits for the slowest shard of this one, so an endpoint
/// that keeps failing delays other conversations' deliveries until its retries run out.
///
/// Dead letters (`parley.deadletter` with Kafka) are appended to `deadLetterPath` as JSON lines.
public struct InProcessEventStream: EventStream {
    private let consumers: [any EventConsumer]
    private let deadLetterPath: String?
    private let logger: Logger
    private let minBackoff: Duration
    private let maxBackoff: Duration

    public init(
        consumers: [any EventConsumer], deadLetterPath: String?, minBackoff: Duration = .milliseconds(100), maxBackoff: Duration = .seconds(30),
        logger: Logger
    ) {
        self.consumers = consumers
        self.deadLetterPath = deadLetterPath
        self.minBackoff = minBackoff
        self.maxBackoff = maxBackoff
        self.logger = logger
    }

    public var problem: String? { nil }

    public func publish(_ events: [OutboxRecord]) async throws {
        try appendDeadLetters(events.filter { $0.topic == .deadletter })
        try await withThrowingTaskGroup(of: Void.self) { group in
            for consumer in consumers {
                let wanted = Set(consumer.topics)
                var byShard: [Int: [ConsumedEvent]] = [:]
                for event in events where wanted.contains(event.topic) {
                    let shard = StreamEvent.shard(of: event.key)
                    byShard[shard, default: []].append(
                        ConsumedEvent(topic: event.topic, key: event.key, type: event.type, envelope: event.envelope, partition: shard))
                }
                for run in byShard.values {
                    group.addTask { [minBackoff, maxBackoff, logger] in
                        for event in run {
                            try await consumer.handleRetrying(event, minBackoff: minBackoff, maxBackoff: maxBackoff, logger: logger)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private func appendDeadLetters(_ events: [OutboxRecord]) throws {
        guard !events.isEmpty else { return }
        guard let deadLetterPath else {
            logger.error("dead letters dropped: no dead-letter file configured", metadata: ["parley.count": "\(events.count)"])
            return
        }
        if !FileManager.default.fileExists(atPath: deadLetterPath) {
            _ = FileManager.default.createFile(atPath: deadLetterPath, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: deadLetterPath))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(events.flatMap { $0.envelope + [UInt8(ascii: "\n")] }))
        try handle.synchronize()
    }
}
