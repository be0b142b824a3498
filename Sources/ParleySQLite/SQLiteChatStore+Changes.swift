import Foundation
import GRDB
import ParleyCore

/// Edits, deletions, reactions, the change sequence that sync reads, mentions and search.
extension SQLiteChatStore {
    public func message(conversationID: UUID, messageID: UUID) async throws -> Message? {
        try await pool.read { db in try Self.message(db, conversationID: conversationID.lowercased, messageID: messageID.lowercased) }
    }

    public func editMessage(_ edit: MessageEdit) async throws -> MessageChange? {
        let cid = edit.conversationID.lowercased
        return try await pool.write { db in
            guard let current = try Self.message(db, conversationID: cid, messageID: edit.messageID.lowercased) else {
                throw try Self.missing(db, conversationID: cid)
            }
            guard current.senderID == edit.editorID else { throw ParleyError.notMessageSender }
            guard current.deletedAt == nil else { throw ParleyError.messageDeleted }
            guard current.body != edit.body else { return nil }
            let mentions = try Self.resolveMentions(db, conversationID: cid, usernames: edit.mentionedUsernames)
            let changeSeq = try Self.nextChangeSeq(db, conversationID: cid)
            try db.cachedStatement(
                sql: """
                    UPDATE messages SET body = ?, edited_at = ?, mentions = ?, change_seq = ?, change_kind = 'edited'
                    WHERE conversation_id = ? AND seq = ?
                    """
            ).execute(arguments: [edit.body, edit.at.millis, Self.mentionsText(mentions), changeSeq, cid, current.seq])
            try db.cachedStatement(sql: "DELETE FROM mentions WHERE conversation_id = ? AND seq = ?").execute(arguments: [cid, current.seq])
            try Self.insertMentions(db, conversationID: cid, seq: current.seq, users: mentions)
            return try self.change(.edited, db, conversationID: cid, seq: current.seq, changeSeq: changeSeq) {
                .messageChanged(.edited, $0, at: edit.at, node: $1)
            }
        }
    }

    public func deleteMessage(conversationID: UUID, messageID: UUID, at: Date) async throws -> MessageChange? {
        let cid = conversationID.lowercased
        return try await pool.write { db in
            guard let current = try Self.message(db, conversationID: cid, messageID: messageID.lowercased) else {
                throw try Self.missing(db, conversationID: cid)
            }
            guard current.deletedAt == nil else { return nil }
            let changeSeq = try Self.nextChangeSeq(db, conversationID: cid)
            // The body is overwritten, not flagged: the text is gone from the table (and, through the
            // update trigger, from the search index).
            try db.cachedStatement(
                sql: """
                    UPDATE messages SET body = '', deleted_at = ?, mentions = NULL, reaction_count = 0, change_seq = ?, change_kind = 'deleted'
                    WHERE conversation_id = ? AND seq = ?
                    """
            ).execute(arguments: [at.millis, changeSeq, cid, current.seq])
            try db.cachedStatement(sql: "DELETE FROM mentions WHERE conversation_id = ? AND seq = ?").execute(arguments: [cid, current.seq])
            try db.cachedStatement(sql: "DELETE FROM reactions WHERE conversation_id = ? AND seq = ?").execute(arguments: [cid, current.seq])
            try Self.releaseAttachments(db, conversationID: cid, seq: current.seq, at: at.millis)
            return try self.change(.deleted, db, conversationID: cid, seq: current.seq, changeSeq: changeSeq) {
                .messageChanged(.deleted, $0, at: at, node: $1)
            }
        }
    }

    public func setReaction(
        _ emoji: String, present: Bool, conversationID: UUID, messageID: UUID, userID: UUID, maxDistinct: Int, at: Date
    ) async throws -> MessageChange? {
        let cid = conversationID.lowercased
        let uid = userID.lowercased
        return try await pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT seq, deleted_at FROM messages WHERE conversation_id = ? AND id = ?"),
                    arguments: [cid, messageID.lowercased])
            else { throw try Self.missing(db, conversationID: cid) }
            let seq: Int64 = row[0]
            guard (row[1] as Int64?) == nil else { throw ParleyError.messageDeleted }
            if present {
                let emojis = try String.fetchAll(
                    db.cachedStatement(sql: "SELECT DISTINCT emoji FROM reactions WHERE conversation_id = ? AND seq = ?"), arguments: [cid, seq])
                if !emojis.contains(emoji) && emojis.count >= maxDistinct { throw ParleyError.tooManyReactions(maxDistinct) }
                try db.cachedStatement(
                    sql: "INSERT OR IGNORE INTO reactions (conversation_id, seq, emoji, user_id, created_at) VALUES (?, ?, ?, ?, ?)"
                ).execute(arguments: [cid, seq, emoji, uid, at.millis])
                guard db.changesCount > 0 else { return nil }
            } else {
                let removed = try Int64.fetchOne(
                    db.cachedStatement(
                        sql: "DELETE FROM reactions WHERE conversation_id = ? AND seq = ? AND emoji = ? AND user_id = ? RETURNING rowid"),
                    arguments: [cid, seq, emoji, uid])
                guard let removed else { return nil }
                // The emoji keeps its place among the reactions while anyone still uses it: the
                // earliest remaining reaction with it takes over the removed one's position.
                try db.cachedStatement(
                    sql: """
                        UPDATE reactions SET rowid = ?1 WHERE rowid = (
                            SELECT MIN(rowid) FROM reactions WHERE conversation_id = ?2 AND seq = ?3 AND emoji = ?4 AND rowid > ?1)
                        AND NOT EXISTS (SELECT 1 FROM reactions WHERE conversation_id = ?2 AND seq = ?3 AND emoji = ?4 AND rowid < ?1)
                        """
                ).execute(arguments: [removed, cid, seq, emoji])
            }
            let changeSeq = try Self.nextChangeSeq(db, conversationID: cid)
            try db.cachedStatement(
                sql: """
                    UPDATE messages SET reaction_count = reaction_count + ?, change_seq = ?, change_kind = 'reactions'
                    WHERE conversation_id = ? AND seq = ?
                    """
            ).execute(arguments: [present ? 1 : -1, changeSeq, cid, seq])
            return try self.change(.reactions, db, conversationID: cid, seq: seq, changeSeq: changeSeq) {
                .reaction(added: present, emoji: emoji, userID: userID, message: $0, at: at, node: $1)
            }
        }
    }

    public func changes(conversationID: UUID, after changeSeq: Int64, maxSeq: Int64, limit: Int) async throws -> ChangePage {
        try await pool.read { db in
            let current = try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT change_seq FROM conversations WHERE id = ?"), arguments: [conversationID.lowercased])
            guard let current else { throw ParleyError.conversationNotFound }
            // `change_seq > 0` lets the partial index serve the query.
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: Self.messageSelect
                        + " WHERE m.conversation_id = ? AND m.change_seq > 0 AND m.change_seq > ? AND m.seq <= ? ORDER BY m.change_seq LIMIT ?"),
                arguments: [conversationID.lowercased, changeSeq, maxSeq, limit + 1])
            let page = Array(rows.prefix(limit))
            let messages = try Self.messages(db, rows: page)
            let kinds = page.map { MessageChangeKind(rawValue: ($0[12] as String?) ?? "") ?? .edited }
            return ChangePage(
                changes: Array(zip(kinds, messages)).map { (kind: $0.0, message: $0.1) }, hasMore: rows.count > limit,
                conversationChangeSeq: current)
        }
    }

    public func searchMessages(_ request: SearchRequest) async throws -> SearchPage {
        // What was sent since the last indexing round is found too.
        try await indexPendingSearch()
        return try await pool.read { db in
            // Limited to the caller's conversations inside the index (their `conv` tokens) when they
            // are few, so a common word costs its matches in those conversations only; for a member
            // of many, the join with members filters instead.
            var conversations = [String]()
            if let conversationID = request.conversationID {
                conversations = [conversationID.lowercased]
            } else {
                conversations = try String.fetchAll(
                    db.cachedStatement(sql: "SELECT conversation_id FROM members WHERE user_id = ? LIMIT ?"),
                    arguments: [request.userID.lowercased, Self.searchConversationTokens + 1])
            }
            guard !conversations.isEmpty else { return SearchPage(results: [], hasMore: false) }
            let match = Self.ftsQuery(request.query, conversations: conversations.count <= Self.searchConversationTokens ? conversations : nil)
            var sql = """
                SELECT m.conversation_id, m.seq, m.id, m.sender_id, m.body, m.client_msg_id, m.created_at, m.edited_at, m.deleted_at,
                       m.mentions, m.reaction_count, m.change_seq, m.change_kind, r.id, r.seq, r.sender_id, r.body, m.attachment_count,
                       snippet(message_search, 0, char(57344), char(57345), '…', 40)
                FROM message_search s
                JOIN messages m ON m.search_id = s.rowid
                JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = ?
                LEFT JOIN messages r ON r.conversation_id = m.conversation_id AND r.seq = m.reply_to_seq
                WHERE message_search MATCH ?
                """
            var arguments: StatementArguments = [request.userID.lowercased, match]
            if let conversationID = request.conversationID {
                sql += " AND m.conversation_id = ?"
                _ = arguments.append(contentsOf: [conversationID.lowercased])
            }
            if let before = request.before {
                sql += " AND m.id < ?"
                _ = arguments.append(contentsOf: [before.lowercased])
            }
            // Relevance of the body only (the conv column weighs nothing), then newest first.
            sql += " ORDER BY bm25(message_search, 1.0, 0.0), m.id DESC LIMIT ?"
            _ = arguments.append(contentsOf: [request.limit + 1])
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            let page = Array(rows.prefix(request.limit))
            var hits: [SearchHit] = []
            for (row, message) in zip(page, try Self.messages(db, rows: page)) {
                hits.append(SearchHit(message: message, highlight: SearchHit.highlight(marked: (row[18] as String?) ?? "")))
            }
            return SearchPage(results: hits, hasMore: rows.count > request.limit)
        }
    }

    /// Most conversations a search names in the index query; a member of more is filtered by join.
    static let searchConversationTokens = 64

    // MARK: Helpers

    static func message(_ db: Database, conversationID: String, messageID: String) throws -> Message? {
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: messageSelect + " WHERE m.conversation_id = ? AND m.id = ?"), arguments: [conversationID, messageID])
        return try messages(db, rows: rows).first
    }

    /// The error for a message that was not found: the conversation's, if that is what is missing.
    static func missing(_ db: Database, conversationID: String) throws -> ParleyError {
        let exists = try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM conversations WHERE id = ?"), arguments: [conversationID]) != nil
        return exists ? .messageNotFound : .conversationNotFound
    }

    /// Takes the conversation's next change sequence number.
    static func nextChangeSeq(_ db: Database, conversationID: String) throws -> Int64 {
        guard
            let value = try Int64.fetchOne(
                db.cachedStatement(sql: "UPDATE conversations SET change_seq = change_seq + 1 WHERE id = ? RETURNING change_seq"),
                arguments: [conversationID])
        else { throw ParleyError.conversationNotFound }
        return value
    }

    /// The change as it committed: the message re-read, the members, and the stream event.
    private func change(
        _ kind: MessageChangeKind, _ db: Database, conversationID: String, seq: Int64, changeSeq: Int64,
        event: (Message, String) -> StreamEvent
    ) throws -> MessageChange {
        guard let message = try Self.message(db, conversationID: conversationID, seq: seq) else { throw ParleyError.messageNotFound }
        if let outboxNode { try Self.writeEvent(event(message, outboxNode), db: db) }
        let members = try String.fetchAll(
            db.cachedStatement(sql: "SELECT user_id FROM members WHERE conversation_id = ?"), arguments: [conversationID])
        return MessageChange(kind: kind, message: message, changeSeq: changeSeq, recipients: members.map(Self.uuid))
    }

    /// The members of the conversation named by `usernames`, in that order.
    static func resolveMentions(_ db: Database, conversationID: String, usernames: [String]) throws -> [UUID] {
        guard !usernames.isEmpty else { return [] }
        let names = String(decoding: try JSONSerialization.data(withJSONObject: usernames), as: UTF8.self)
        var ids: [String: UUID] = [:]
        let rows = try Row.fetchCursor(
            db.cachedStatement(
                sql: """
                    SELECT u.username, u.id FROM users u JOIN members mb ON mb.user_id = u.id AND mb.conversation_id = ?
                    WHERE u.username IN (SELECT value FROM json_each(?))
                    """),
            arguments: [conversationID, names])
        while let row = try rows.next() { ids[row[0]] = uuid(row[1]) }
        return usernames.compactMap { ids[$0] }
    }

    static func mentionsText(_ users: [UUID]) -> String? {
        users.isEmpty ? nil : users.map(\.lowercased).joined(separator: ",")
    }

    static func insertMentions(_ db: Database, conversationID: String, seq: Int64, users: [UUID]) throws {
        for user in users {
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO mentions (conversation_id, user_id, seq) VALUES (?, ?, ?)").execute(
                arguments: [conversationID, user.lowercased, seq])
        }
    }

    /// The FTS5 query of a search: every term must match in the body; each word is quoted (no
    /// operator or column syntax gets through), a phrase is one quoted string, a prefix ends in `*`.
    /// With `conversations`, only messages of those conversations match.
    static func ftsQuery(_ query: SearchQuery, conversations: [String]?) -> String {
        var match = query.terms.map { term in
            switch term {
            case .words(let words, let prefix):
                "body : \"" + words.joined(separator: " ").replacingOccurrences(of: "\"", with: "\"\"") + "\"" + (prefix ? "*" : "")
            }
        }.joined(separator: " AND ")
        if let conversations {
            let tokens = conversations.map { "conv : \"c" + $0.replacingOccurrences(of: "-", with: "") + "\"" }
            match = "(" + match + ") AND (" + tokens.joined(separator: " OR ") + ")"
        }
        return match
    }
}
