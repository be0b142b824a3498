import Foundation

/// The JSON of Parley's wire formats: the REST API, the WebSocket frames and the event stream all
/// encode with it, so a message reads the same wherever it is seen. Times are RFC 3339 in UTC with
/// milliseconds.
public enum WireJSON {
    public static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// Encoders keep no per-call state, so one configured instance is shared.
    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(dateStyle))
        }
        return encoder
    }()
}

/// A message as the v1 API shows it (field names are part of the contract).
public struct MessageDTO: Encodable, Sendable {
    public var message: Message

    public init(message: Message) {
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case id, conversationId, seq, senderId, body, clientMsgId, createdAt, editedAt, deletedAt, replyTo, mentions, reactions, attachments
    }

    struct ReplyDTO: Encodable {
        var id: String
        var seq: Int64
        var senderId: String
        var preview: String
    }

    struct ReactionDTO: Encodable {
        var emoji: String
        var count: Int
        var userIds: [String]
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(message.id.lowercased, forKey: .id)
        try c.encode(message.conversationID.lowercased, forKey: .conversationId)
        try c.encode(message.seq, forKey: .seq)
        try c.encode(message.senderID.lowercased, forKey: .senderId)
        try c.encode(message.body, forKey: .body)
        try c.encode(message.clientMsgID, forKey: .clientMsgId)
        try c.encode(message.createdAt, forKey: .createdAt)
        // Present (null or empty) on every message, so clients need no existence checks.
        try c.encode(message.editedAt, forKey: .editedAt)
        try c.encode(message.deletedAt, forKey: .deletedAt)
        try c.encode(
            message.replyTo.map { ReplyDTO(id: $0.id.lowercased, seq: $0.seq, senderId: $0.senderID.lowercased, preview: $0.preview) },
            forKey: .replyTo)
        try c.encode(message.mentions.map(\.lowercased), forKey: .mentions)
        try c.encode(
            message.reactions.map { ReactionDTO(emoji: $0.emoji, count: $0.count, userIds: $0.userIDs.map(\.lowercased)) }, forKey: .reactions)
        try c.encode(message.attachments.map(AttachmentDTO.init), forKey: .attachments)
    }
}

/// An attachment as clients see it: `{id, name, contentType, size, width?, height?, thumbnailUrl?,
/// url}`. The URLs are paths on the node that served it (any node serves any attachment).
public struct AttachmentDTO: Encodable, Sendable {
    public var id: String
    public var name: String
    public var contentType: String
    public var size: Int64
    public var width: Int?
    public var height: Int?
    public var thumbnailUrl: String?
    public var url: String

    public init(_ attachment: Attachment) {
        id = attachment.id.lowercased
        name = attachment.name
        contentType = attachment.contentType
        size = attachment.size
        width = attachment.width
        height = attachment.height
        thumbnailUrl = attachment.thumbnailURL
        url = attachment.url
    }
}
