import Foundation

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
