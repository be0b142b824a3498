import Crypto
import Foundation
import Logging
import Metrics

/// The `notify` consumer: for each `message.created`, one `notification.requested` event per
/// recipient with no open socket anywhere (the presence port), in `parley.notifications` keyed by
/// the recipient — where a push gateway (FCM, APNs, Web Push) takes over.
///
/// The notifications are written to the outbox, so they reach the stream (and in-process webhooks)
/// like every other event. Their ids derive from the message event's id and the recipient, so a
/// redelivered message event yields the same ids again: consumers drop repeats by id as usual.
public struct NotifyConsumer: EventConsumer {
    public let name = "notify"
    public let topics: [StreamTopic] = [.messages]

    private let store: any ChatStore
    private let presence: any PresenceRegistry
    /// Characters of the body in `preview`; 0 sends no preview (as encryption at rest will).
    private let previewLength: Int
    private let logger: Logger
    private let requested = Counter(label: "parley_notifications_requested_total")

    public init(store: any ChatStore, presence: any PresenceRegistry, previewLength: Int = 140, logger: Logger) {
        self.store = store
        self.presence = presence
        self.previewLength = previewLength
        self.logger = logger
    }

    public func handle(_ event: ConsumedEvent) async throws {
        guard event.type == "message.created" else { return }
        struct Envelope: Decodable {
            struct Payload: Decodable {
                struct Body: Decodable {
                    var id: UUID
                    var conversationId: UUID
                    var seq: Int64
                    var senderId: UUID
                    var body: String
                }
                var message: Body
            }
            var id: UUID
            var data: Payload
        }
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(event.envelope)) else {
            logger.warning("notify: skipped an unreadable message.created event", metadata: ["parley.key": "\(event.key)"])
            return
        }
        let message = envelope.data.message
        let recipients = try await store.memberIDs(conversationID: message.conversationId).filter { $0 != message.senderId }
        guard !recipients.isEmpty else { return }
        let online = try await presence.online(recipients, now: .now)
        let offline = recipients.filter { !online.contains($0) }.sorted { $0.lowercased < $1.lowercased }
        guard !offline.isEmpty, let node = store.outboxNode else { return }
        let sender = try await store.user(id: message.senderId)
        let preview = previewLength > 0 ? String(message.body.prefix(previewLength)) : nil
        let events = try offline.map { userID in
            try StreamEvent.notificationRequested(
                id: Self.notificationID(event: envelope.id, user: userID), userID: userID, conversationID: message.conversationId,
                seq: message.seq, messageID: message.id, sender: sender, senderID: message.senderId, preview: preview, node: node)
        }
        try await store.appendEvents(events)
        requested.increment(by: Int64(events.count))
    }

    /// A UUID (version 8) from SHA-256 of the message event's id and the recipient's.
    static func notificationID(event: UUID, user: UUID) -> UUID {
        var bytes = Array(SHA256.hash(data: Array((event.lowercased + ":" + user.lowercased).utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x80
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return UUID(
            uuid: (
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9], bytes[10], bytes[11], bytes[12],
                bytes[13], bytes[14], bytes[15]
            ))
    }
}

extension StreamEvent {
    /// `notification.requested`: `{"userId", "conversationId", "seq", "messageId", "sender": {"id",
    /// "username", "displayName"}, "preview"}`, keyed by the recipient.
    public static func notificationRequested(
        id: UUID, userID: UUID, conversationID: UUID, seq: Int64, messageID: UUID, sender: User?, senderID: UUID, preview: String?, node: String
    ) throws -> StreamEvent {
        struct Sender: Encodable {
            var id: String
            var username: String?
            var displayName: String?
        }
        struct Data: Encodable {
            var userId: String
            var conversationId: String
            var seq: Int64
            var messageId: String
            var sender: Sender
            var preview: String?

            enum CodingKeys: String, CodingKey { case userId, conversationId, seq, messageId, sender, preview }
            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(userId, forKey: .userId)
                try c.encode(conversationId, forKey: .conversationId)
                try c.encode(seq, forKey: .seq)
                try c.encode(messageId, forKey: .messageId)
                try c.encode(sender, forKey: .sender)
                try c.encode(preview, forKey: .preview)  // null when previews are off
            }
        }
        let data = Data(
            userId: userID.lowercased, conversationId: conversationID.lowercased, seq: seq, messageId: messageID.lowercased,
            sender: Sender(id: senderID.lowercased, username: sender?.username, displayName: sender?.displayName), preview: preview)
        return StreamEvent(
            id: id, type: "notification.requested", occurredAt: Date.now.truncatedToMillis, conversationID: conversationID, seq: seq, node: node,
            topic: .notifications, key: userID.lowercased, data: Array(try WireJSON.encoder.encode(data)))
    }
}
