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
            revokedAt: (row["revoked_at"] as Int64?).map(date),
            userAgent: row["user_agent"],
            lastUsedAt: (row["last_used_at"] as Int64?).map(date)
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

    /// The columns `message(_:)` reads, by index: the message, then the message it replies to.
    static let messageSelect = """
        SELECT m.conversation_id, m.seq, m.id, m.sender_id, m.body, m.client_msg_id, m.created_at, m.edited_at, m.deleted_at,
               m.mentions, m.reaction_count, m.change_seq, m.change_kind, r.id, r.seq, r.sender_id, r.body, m.attachment_count
        FROM messages m LEFT JOIN messages r ON r.conversation_id = m.conversation_id AND r.seq = m.reply_to_seq
        """

    /// A row of `messageSelect`, without its reactions (see `messages(_:rows:)`). Columns by index:
    /// pages of messages are read often, and name lookups are case-insensitive string compares.
    static func message(_ row: Row) -> Message {
        let mentions: String? = row[9]
        let replyID: String? = row[13]
        return Message(
            id: uuid(row[2]),
            conversationID: uuid(row[0]),
            seq: row[1],
            senderID: uuid(row[3]),
            body: row[4],
            clientMsgID: row[5],
            createdAt: date(row[6]),
            editedAt: (row[7] as Int64?).map(date),
            deletedAt: (row[8] as Int64?).map(date),
            replyTo: replyID.map {
                MessageReference(id: uuid($0), seq: row[14], senderID: uuid(row[15]), preview: MessageReference.preview(of: row[16]))
            },
            mentions: mentions.map { $0.split(separator: ",").map { uuid(String($0)) } } ?? [],
            changeSeq: row[11]
        )
    }

    /// Messages from rows of `messageSelect`, with their reactions and attachments.
    static func messages(_ db: Database, rows: [Row]) throws -> [Message] {
        var messages = rows.map(message)
        let withFiles = rows.indices.filter { (rows[$0][17] as Int64) > 0 }
        for conversationID in Set(withFiles.map { messages[$0].conversationID }) {
            let indices = withFiles.filter { messages[$0].conversationID == conversationID }
            let bySeq = try attachments(db, conversationID: conversationID.lowercased, seqs: indices.map { messages[$0].seq })
            for i in indices { messages[i].attachments = bySeq[messages[i].seq] ?? [] }
        }
        let reacted = rows.indices.filter { (rows[$0][10] as Int64) > 0 }
        guard !reacted.isEmpty else { return messages }
        let conversationID = messages[reacted[0]].conversationID.lowercased
        var bySeq: [Int64: [(emoji: String, userID: UUID)]] = [:]
        let seqs = reacted.map { messages[$0].seq }
        if reacted.allSatisfy({ messages[$0].conversationID == messages[reacted[0]].conversationID }) {
            let rows = try Row.fetchCursor(
                db, sql: "SELECT seq, emoji, user_id FROM reactions WHERE conversation_id = ? AND seq BETWEEN ? AND ? ORDER BY rowid",
                arguments: [conversationID, seqs.min(), seqs.max()])
            while let row = try rows.next() { bySeq[row[0], default: []].append((emoji: row[1] as String, userID: uuid(row[2]))) }
            for i in reacted { messages[i].reactions = ReactionSummary.summarize(bySeq[messages[i].seq] ?? []) }
        } else {
            for i in reacted {
                messages[i].reactions = try reactions(db, conversationID: messages[i].conversationID.lowercased, seq: messages[i].seq)
            }
        }
        return messages
    }

    static func reactions(_ db: Database, conversationID: String, seq: Int64) throws -> [ReactionSummary] {
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT emoji, user_id FROM reactions WHERE conversation_id = ? AND seq = ? ORDER BY rowid"),
            arguments: [conversationID, seq])
        return ReactionSummary.summarize(rows.map { (emoji: $0[0] as String, userID: uuid($0[1])) })
    }

    /// One message by its seq, with its reactions.
    static func message(_ db: Database, conversationID: String, seq: Int64) throws -> Message? {
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: messageSelect + " WHERE m.conversation_id = ? AND m.seq = ?"), arguments: [conversationID, seq])
        return try messages(db, rows: rows).first
    }

    static func conversation(_ db: Database, id: String) throws -> Conversation? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM conversations WHERE id = ?", arguments: [id]) else { return nil }
        let lastSeq: Int64 = row["last_seq"]
        let members = try Row.fetchAll(
            db,
            sql: "SELECT * FROM members WHERE conversation_id = ? ORDER BY joined_at, user_id",
            arguments: [id]
        ).map(member)
        let lastMessage = try lastSeq > 0 ? message(db, conversationID: id, seq: lastSeq) : nil
        return Conversation(
            id: uuid(row["id"]),
            type: ConversationType(rawValue: row["type"]) ?? .group,
            name: row["name"],
            hasPasscode: (row["passcode_hash"] as String?) != nil,
            lastSeq: lastSeq,
            lastMessage: lastMessage,
            members: members,
            createdAt: date(row["created_at"]),
            updatedAt: date(row["updated_at"]),
            changeSeq: row["change_seq"]
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
