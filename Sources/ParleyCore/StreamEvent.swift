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
        // Written by hand: this runs in the store's write transaction for every message.
        var json = JSONWriter(capacity: 256 + message.body.utf8.count)
        json.raw("{")
        json.key("message")
        json.message(message)
        json.raw("}")
        return messageEvent("message.created", message, at: message.createdAt, node: node, data: json.bytes)
    }

    /// `message.edited` / `message.deleted`: `{"message": …}` as it reads after the change (a deleted
    /// message with its empty body and `deletedAt`).
    public static func messageChanged(_ kind: MessageChangeKind, _ message: Message, at: Date, node: String) -> StreamEvent {
        var json = JSONWriter(capacity: 256 + message.body.utf8.count)
        json.raw("{")
        json.key("message")
        json.message(message)
        json.raw("}")
        return messageEvent(kind == .deleted ? "message.deleted" : "message.edited", message, at: at, node: node, data: json.bytes)
    }

    /// `reaction.added` / `reaction.removed`: `{"emoji", "userId", "message": …}`, the message with
    /// its reactions after the change.
    public static func reaction(added: Bool, emoji: String, userID: UUID, message: Message, at: Date, node: String) -> StreamEvent {
        var json = JSONWriter(capacity: 320 + message.body.utf8.count)
        json.raw("{")
        json.key("emoji")
        json.string(emoji)
        json.comma()
        json.key("userId")
        json.uuid(userID)
        json.comma()
        json.key("message")
        json.message(message)
        json.raw("}")
        return messageEvent(added ? "reaction.added" : "reaction.removed", message, at: at, node: node, data: json.bytes)
    }

    private static func messageEvent(_ type: String, _ message: Message, at: Date, node: String, data: [UInt8]) -> StreamEvent {
        StreamEvent(
            type: type, occurredAt: at.truncatedToMillis, conversationID: message.conversationID, seq: message.seq, node: node,
            topic: .messages, key: message.conversationID.lowercased, data: data)
    }

    /// The envelope as the stream carries it (JSON, UTF-8).
    public func envelope() throws -> [UInt8] {
        var json = JSONWriter(capacity: 200 + data.count)
        json.raw("{")
        json.key("id")
        json.uuid(id)
        json.comma()
        json.key("type")
        json.string(type)
        json.comma()
        json.key("occurredAt")
        json.date(occurredAt)
        json.comma()
        json.key("conversationId")  // null, not absent
        if let conversationID { json.uuid(conversationID) } else { json.null() }
        json.comma()
        json.key("seq")
        if let seq { json.integer(seq) } else { json.null() }
        json.comma()
        json.key("node")
        json.string(node)
        json.comma()
        json.key("data")
        json.raw(data)  // JSON already
        json.raw("}")
        return json.bytes
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
