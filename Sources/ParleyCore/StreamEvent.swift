import Foundation

/// The topics of the event stream, without the configured prefix (`parley.` by default).
public enum StreamTopic: String, Sendable, CaseIterable {
    case messages, conversations, receipts, presence, notifications, deadletter
}

/// One event of the stream, in the envelope docs/events.md describes:
/// `{"id", "type", "occurredAt", "conversationId", "seq", "node", "data"}`.
///
/// Events are built inside the store transaction that makes the change and written to its outbox
/// there, so an event exists exactly when its change committed; the relay later produces the
/// envelope unchanged. `id` is unique per event: a consumer that sees an id twice has a re-send.
public struct StreamEvent: Sendable, Equatable {
    public var id: UUID
    public var type: String
    public var occurredAt: Date
    public var conversationID: UUID?
    public var seq: Int64?
    /// The node that made the change.
    public var node: String
    public var topic: StreamTopic
    /// The partition key: the conversation id (the user id for presence and notifications), so one
    /// conversation's events stay in order on one partition.
    public var key: String
    /// The `data` object, already JSON.
    public var data: [UInt8]

    public init(
        id: UUID = .v7(), type: String, occurredAt: Date, conversationID: UUID?, seq: Int64?, node: String, topic: StreamTopic, key: String,
        data: [UInt8]
    ) {
        self.id = id
        self.type = type
        self.occurredAt = occurredAt
        self.conversationID = conversationID
        self.seq = seq
        self.node = node
        self.topic = topic
        self.key = key
        self.data = data
    }

    /// Outbox shards: a relay takes whole shards, so one key's events are relayed in order by one relay.
    public static let shardCount = 64

    /// The shard of a key: FNV-1a of its UTF-8 bytes (stable across processes and nodes, unlike
    /// `hashValue`).
    public static func shard(of key: String) -> Int {
        var hash: UInt32 = 2_166_136_261
        for byte in key.utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        return Int(hash % UInt32(shardCount))
    }

    /// `message.created`: `data` is `{"message": <the message as REST returns it>}`.
    public static func messageCreated(_ message: Message, node: String) throws -> StreamEvent {
        // The time as the store keeps it (milliseconds), so the event reads as the message reads back.
        var message = message
        message.createdAt = message.createdAt.truncatedToMillis
        struct Payload: Encodable { var message: MessageDTO }
        return StreamEvent(
            type: "message.created", occurredAt: message.createdAt, conversationID: message.conversationID, seq: message.seq, node: node,
            topic: .messages, key: message.conversationID.lowercased,
            data: Array(try WireJSON.encoder.encode(Payload(message: MessageDTO(message: message)))))
    }

    /// The envelope as the stream carries it (JSON, UTF-8).
    public func envelope() throws -> [UInt8] {
        struct Head: Encodable {
            var id: String
            var type: String
            var occurredAt: Date
            var conversationId: String?
            var seq: Int64?
            var node: String

            enum CodingKeys: String, CodingKey { case id, type, occurredAt, conversationId, seq, node }

            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(id, forKey: .id)
                try c.encode(type, forKey: .type)
                try c.encode(occurredAt, forKey: .occurredAt)
                try c.encode(conversationId, forKey: .conversationId)  // null, not absent
                try c.encode(seq, forKey: .seq)
                try c.encode(node, forKey: .node)
            }
        }
        // The head's object with `data` spliced in before its closing brace: `data` is JSON already.
        var bytes = Array(
            try WireJSON.encoder.encode(
                Head(id: id.lowercased, type: type, occurredAt: occurredAt, conversationId: conversationID?.lowercased, seq: seq, node: node)))
        bytes.removeLast()
        bytes += Array(#","data":"#.utf8)
        bytes += data
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }
}

/// An event waiting in a store's outbox, in commit order.
public struct OutboxRecord: Sendable, Equatable {
    /// Its place in the outbox: increasing in commit order within a key.
    public var position: Int64
    public var eventID: UUID
    public var topic: StreamTopic
    public var key: String
    public var type: String
    public var envelope: [UInt8]
    /// When it was written to the outbox (for the commit-to-stream lag), if the store knows.
    public var createdAt: Date?

    public init(position: Int64, eventID: UUID, topic: StreamTopic, key: String, type: String, envelope: [UInt8], createdAt: Date? = nil) {
        self.position = position
        self.eventID = eventID
        self.topic = topic
        self.key = key
        self.type = type
        self.envelope = envelope
        self.createdAt = createdAt
    }
}

/// The outbox of a store: events written in the transactions of the changes they describe, read by
/// the relay in order and removed once the stream has them.
public protocol OutboxStore: Sendable {
    /// The node id the store stamps on events it writes to its outbox, or nil when it keeps none
    /// (no event stream and no in-process consumer is configured).
    var outboxNode: String? { get }
    /// Writes events that are not part of a store change (presence transitions, notifications, dead
    /// letters) to the outbox, in one transaction of their own.
    func appendEvents(_ events: [StreamEvent]) async throws
    /// The oldest pending events after `position` (from the start when nil), in commit order per
    /// key, at most `limit`.
    func pendingEvents(after position: Int64?, limit: Int) async throws -> [OutboxRecord]
    /// Removes events the stream acknowledged.
    func removeEvents(_ positions: [Int64]) async throws
    /// How many events are pending, and when the oldest of them was written.
    func outboxBacklog() async throws -> (count: Int, oldest: Date?)
    /// Drops the oldest pending events beyond the newest `limit`; returns how many it dropped.
    func trimOutbox(keepingNewest limit: Int) async throws -> Int
    /// Gives up this node's share of the outbox at shutdown, where nodes share one (PostgreSQL).
    func releaseOutboxShards() async
}

extension OutboxStore {
    public func releaseOutboxShards() async {}

    /// The oldest pending events, at most `limit`.
    public func pendingEvents(limit: Int) async throws -> [OutboxRecord] {
        try await pendingEvents(after: nil, limit: limit)
    }
}
