import Foundation

/// The event types besides `message.created`, one constructor each; docs/events.md lists them with
/// their `data` and docs/events/*.schema.json holds a schema per type.
extension StreamEvent {
    /// A conversation as events carry it: the REST object without the viewer's own fields
    /// (`readSeq`, `unreadCount`) and without `lastMessage`.
    struct ConversationPayload: Encodable {
        struct MemberPayload: Encodable {
            var userId: String
            var role: MemberRole
            var readSeq: Int64
            var deliveredSeq: Int64
        }
        var id: String
        var type: ConversationType
        var name: String?
        var members: [MemberPayload]
        var lastSeq: Int64
        var hasPasscode: Bool
        var createdAt: Date
        var updatedAt: Date

        init(_ conversation: Conversation) {
            id = conversation.id.lowercased
            type = conversation.type
            name = conversation.name
            members = conversation.members.map {
                MemberPayload(userId: $0.userID.lowercased, role: $0.role, readSeq: $0.readSeq, deliveredSeq: $0.deliveredSeq)
            }
            lastSeq = conversation.lastSeq
            hasPasscode = conversation.hasPasscode
            createdAt = conversation.createdAt.truncatedToMillis
            updatedAt = conversation.updatedAt.truncatedToMillis
        }

        func encode(to encoder: any Encoder) throws {
            enum Keys: String, CodingKey { case id, type, name, members, lastSeq, hasPasscode, createdAt, updatedAt }
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(id, forKey: .id)
            try c.encode(type, forKey: .type)
            try c.encode(name, forKey: .name)  // null for a direct conversation, not absent
            try c.encode(members, forKey: .members)
            try c.encode(lastSeq, forKey: .lastSeq)
            try c.encode(hasPasscode, forKey: .hasPasscode)
            try c.encode(createdAt, forKey: .createdAt)
            try c.encode(updatedAt, forKey: .updatedAt)
        }
    }

    private static func json(_ value: some Encodable) throws -> [UInt8] {
        Array(try WireJSON.encoder.encode(value))
    }

    private static func conversationEvent(_ type: String, _ conversationID: UUID, at: Date, node: String, data: [UInt8]) -> StreamEvent {
        StreamEvent(
            type: type, occurredAt: at.truncatedToMillis, conversationID: conversationID, seq: nil, node: node, topic: .conversations,
            key: conversationID.lowercased, data: data)
    }

    /// `conversation.created`: `{"conversation": …}` with its first members.
    public static func conversationCreated(_ conversation: Conversation, node: String) throws -> StreamEvent {
        struct Data: Encodable { var conversation: ConversationPayload }
        return conversationEvent(
            "conversation.created", conversation.id, at: conversation.createdAt, node: node,
            data: try json(Data(conversation: ConversationPayload(conversation))))
    }

    /// `conversation.updated` (name or passcode changed): `{"conversation": …}` as it is now.
    public static func conversationUpdated(_ conversation: Conversation, at: Date, node: String) throws -> StreamEvent {
        struct Data: Encodable { var conversation: ConversationPayload }
        return conversationEvent(
            "conversation.updated", conversation.id, at: at, node: node, data: try json(Data(conversation: ConversationPayload(conversation))))
    }

    /// `conversation.deleted`: `{}`; the envelope's `conversationId` says which.
    public static func conversationDeleted(_ conversationID: UUID, at: Date, node: String) -> StreamEvent {
        conversationEvent("conversation.deleted", conversationID, at: at, node: node, data: Array("{}".utf8))
    }

    /// `member.added`: `{"userId", "role"}`.
    public static func memberAdded(_ conversationID: UUID, userID: UUID, role: MemberRole, at: Date, node: String) throws -> StreamEvent {
        struct Data: Encodable {
            var userId: String
            var role: MemberRole
        }
        return conversationEvent("member.added", conversationID, at: at, node: node, data: try json(Data(userId: userID.lowercased, role: role)))
    }

    /// `member.removed`: `{"userId"}` (left or was removed).
    public static func memberRemoved(_ conversationID: UUID, userID: UUID, at: Date, node: String) throws -> StreamEvent {
        struct Data: Encodable { var userId: String }
        return conversationEvent("member.removed", conversationID, at: at, node: node, data: try json(Data(userId: userID.lowercased)))
    }

    /// `member.role_changed`: `{"userId", "role"}` with the new role (also when an owner who left is
    /// succeeded).
    public static func memberRoleChanged(_ conversationID: UUID, userID: UUID, role: MemberRole, at: Date, node: String) throws -> StreamEvent {
        struct Data: Encodable {
            var userId: String
            var role: MemberRole
        }
        return conversationEvent(
            "member.role_changed", conversationID, at: at, node: node, data: try json(Data(userId: userID.lowercased, role: role)))
    }

    /// `receipt.read` / `receipt.delivered`: a member's watermark moved up to `seq` (also the
    /// envelope's `seq`); `{"userId", "seq"}`. A read watermark implies delivery up to it, so
    /// advancing `read` emits only `receipt.read`.
    public static func receipt(_ kind: Watermark, conversationID: UUID, userID: UUID, seq: Int64, at: Date, node: String) throws -> StreamEvent {
        struct Data: Encodable {
            var userId: String
            var seq: Int64
        }
        return StreamEvent(
            type: "receipt.\(kind.rawValue)", occurredAt: at.truncatedToMillis, conversationID: conversationID, seq: seq, node: node,
            topic: .receipts, key: conversationID.lowercased, data: try json(Data(userId: userID.lowercased, seq: seq)))
    }

    /// `presence.online` / `presence.offline`: the user's first socket opened or last one closed
    /// (anywhere in the cluster); `{"userId"}`, keyed by the user.
    public static func presence(_ presence: Presence, node: String) throws -> StreamEvent {
        struct Data: Encodable { var userId: String }
        return StreamEvent(
            type: "presence.\(presence.status.rawValue)", occurredAt: (presence.lastSeenAt ?? .now).truncatedToMillis, conversationID: nil,
            seq: nil, node: node, topic: .presence, key: presence.userID.lowercased, data: try json(Data(userId: presence.userID.lowercased)))
    }
}
