import Foundation
import GRDB
import ParleyCore

extension SQLiteChatStore {
    static let userColumns = "id, username, email, display_name, created_at"

    static func user(_ row: Row) -> User {
        User(
            id: uuid(row["id"]),
            username: row["username"],
            email: row["email"],
            displayName: row["display_name"],
            createdAt: date(row["created_at"])
        )
    }

    static func session(_ row: Row) -> Session {
        Session(
            id: uuid(row["id"]),
            userID: uuid(row["user_id"]),
            createdAt: date(row["created_at"]),
            expiresAt: date(row["expires_at"]),
            revokedAt: (row["revoked_at"] as Int64?).map(date)
        )
    }

    static func member(_ row: Row) -> Member {
        Member(
            userID: uuid(row["user_id"]),
            role: MemberRole(rawValue: row["role"]) ?? .member,
            readSeq: row["read_seq"],
            deliveredSeq: row["delivered_seq"],
            joinedAt: date(row["joined_at"])
        )
    }

    static func message(_ row: Row) -> Message {
        Message(
            id: uuid(row["id"]),
            conversationID: uuid(row["conversation_id"]),
            seq: row["seq"],
            senderID: uuid(row["sender_id"]),
            body: row["body"],
            clientMsgID: row["client_msg_id"],
            createdAt: date(row["created_at"])
        )
    }

    static func conversation(_ db: Database, id: String) throws -> Conversation? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM conversations WHERE id = ?", arguments: [id]) else { return nil }
        let lastSeq: Int64 = row["last_seq"]
        let members = try Row.fetchAll(
            db,
            sql: "SELECT * FROM members WHERE conversation_id = ? ORDER BY joined_at, user_id",
            arguments: [id]
        ).map(member)
        let lastMessage =
            lastSeq > 0
            ? try Row.fetchOne(db, sql: "SELECT * FROM messages WHERE conversation_id = ? AND seq = ?", arguments: [id, lastSeq]).map(message)
            : nil
        return Conversation(
            id: uuid(row["id"]),
            type: ConversationType(rawValue: row["type"]) ?? .group,
            name: row["name"],
            hasPasscode: (row["passcode_hash"] as String?) != nil,
            lastSeq: lastSeq,
            lastMessage: lastMessage,
            members: members,
            createdAt: date(row["created_at"]),
            updatedAt: date(row["updated_at"])
        )
    }

    static func insertMember(_ db: Database, conversationID: String, userID: String, role: MemberRole, now: Date) throws {
        try db.execute(
            sql: "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)",
            arguments: [conversationID, userID, role.rawValue, now.millis]
        )
    }

    static func uuid(_ text: String) -> UUID {
        // Every id in the schema is written by this store from a UUID; a bad one is corruption.
        UUID(canonical: text) ?? UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    }

    static func date(_ millis: Int64) -> Date {
        Date(timeIntervalSince1970: TimeInterval(millis) / 1000)
    }

    static func placeholders(_ count: Int) -> String {
        Array(repeating: "?", count: count).joined(separator: ",")
    }

    /// Escapes LIKE wildcards so user input matches literally.
    static func likePattern(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_")
    }
}
