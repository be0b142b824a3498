import Foundation
import ParleyCore

/// Wire shapes of the v1 API. Field names are part of the contract.
struct UserDTO: Encodable, Sendable {
    var id: String
    var username: String
    var displayName: String
    var createdAt: Date
    /// Only on `/users/me` and auth responses, for the caller themself.
    var email: String?

    init(_ user: User, includeEmail: Bool = false) {
        id = user.id.lowercased
        username = user.username
        displayName = user.displayName
        createdAt = user.createdAt
        email = includeEmail ? user.email : nil
    }
}

struct MemberDTO: Encodable, Sendable {
    var userId: String
    var role: MemberRole
    var readSeq: Int64
    var deliveredSeq: Int64
}

/// A conversation as seen by one viewer: `readSeq` and `unreadCount` are theirs.
struct ConversationDTO: Encodable, Sendable {
    var conversation: Conversation
    var viewer: UUID

    enum CodingKeys: String, CodingKey {
        case id, type, name, members, lastSeq, readSeq, unreadCount, mentionCount, changeSeq, lastMessage, hasPasscode, createdAt, updatedAt
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(conversation.id.lowercased, forKey: .id)
        try c.encode(conversation.type, forKey: .type)
        try c.encode(conversation.name, forKey: .name)
        try c.encode(
            conversation.members.map { MemberDTO(userId: $0.userID.lowercased, role: $0.role, readSeq: $0.readSeq, deliveredSeq: $0.deliveredSeq) },
            forKey: .members
        )
        try c.encode(conversation.lastSeq, forKey: .lastSeq)
        try c.encode(conversation.member(viewer)?.readSeq ?? 0, forKey: .readSeq)
        try c.encode(conversation.unreadCount(for: viewer), forKey: .unreadCount)
        try c.encode(conversation.mentionCount, forKey: .mentionCount)
        try c.encode(conversation.changeSeq, forKey: .changeSeq)
        try c.encode(conversation.lastMessage.map(MessageDTO.init), forKey: .lastMessage)
        try c.encode(conversation.hasPasscode, forKey: .hasPasscode)
        try c.encode(conversation.createdAt, forKey: .createdAt)
        try c.encode(conversation.updatedAt, forKey: .updatedAt)
    }
}

struct ConversationEnvelope: Encodable, Sendable {
    var conversation: ConversationDTO
}

struct AuthResponse: Encodable, Sendable {
    var user: UserDTO
    var accessToken: String
    var refreshToken: String
    var expiresIn: Int
}

struct TokenResponse: Encodable, Sendable {
    var accessToken: String
    var refreshToken: String
    var expiresIn: Int
}

/// `{userId, status, lastSeenAt}` with `lastSeenAt` always present (null if never seen): the REST
/// presence entry and, with `type`, the `presence` frame.
struct PresenceDTO: Encodable, Sendable {
    var presence: Presence
    /// Set for the WebSocket frame (`"presence"`), nil for the REST entry.
    var type: String?

    enum CodingKeys: String, CodingKey { case type, userId, status, lastSeenAt }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(type, forKey: .type)
        try c.encode(presence.userID.lowercased, forKey: .userId)
        try c.encode(presence.status.rawValue, forKey: .status)
        try c.encode(presence.lastSeenAt, forKey: .lastSeenAt)
    }
}
