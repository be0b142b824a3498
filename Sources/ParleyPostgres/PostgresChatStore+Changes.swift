import Foundation
import ParleyCore
import PostgresNIO

/// Edits, deletions, reactions, the change sequence that sync reads, and search.
///
/// Every change first takes the conversation's next change sequence number with an `UPDATE` of
/// its row, which locks the row until commit: changes of one conversation commit one at a time,
/// in change-sequence order, so their outbox events are in that order too.
extension PostgresChatStore {
    public func message(conversationID: UUID, messageID: UUID) async throws -> Message? {
        try await guarded {
            try await client.messages("\(unescaped: Self.messageSelect) WHERE m.conversation_id = \(conversationID) AND m.id = \(messageID)")
                .first
        }
    }

    public func editMessage(_ edit: MessageEdit) async throws -> MessageChange? {
        try await transaction { [searchLanguage] db in
            let changeSeq = try await Self.nextChangeSeq(db, conversationID: edit.conversationID)
            guard let current = try await Self.message(db, conversationID: edit.conversationID, messageID: edit.messageID) else {
                throw ParleyError.messageNotFound
            }
            guard current.senderID == edit.editorID else { throw ParleyError.notMessageSender }
            guard current.deletedAt == nil else { throw ParleyError.messageDeleted }
            // Unchanged: the transaction (and its change_seq increment) is rolled back.
            guard current.body != edit.body else { throw Unchanged() }
            let mentions = try await Self.resolveMentions(edit.mentionedUsernames, conversationID: edit.conversationID, on: db)
            try await db.execute(
                """
                UPDATE messages SET body = \(edit.body), edited_at = \(edit.at.millis), mentions = \(mentions.isEmpty ? nil : mentions),
                  change_seq = \(changeSeq), change_kind = 'edited',
                  search = to_tsvector(\(searchLanguage)::regconfig, \(edit.body)) || ('c' || replace(conversation_id::text, '-', ''))::tsvector
                WHERE conversation_id = \(edit.conversationID) AND seq = \(current.seq)
                """
            )
            try await db.execute("DELETE FROM mentions WHERE conversation_id = \(edit.conversationID) AND seq = \(current.seq)")
            if !mentions.isEmpty {
                try await db.execute(
                    """
                    INSERT INTO mentions (conversation_id, user_id, seq)
                    SELECT \(edit.conversationID), u, \(current.seq) FROM unnest(\(mentions)::uuid[]) AS u ON CONFLICT DO NOTHING
                    """
                )
            }
            return try await change(.edited, db, conversationID: edit.conversationID, seq: current.seq, changeSeq: changeSeq) {
                .messageChanged(.edited, $0, at: edit.at, node: $1)
            }
        } unchanged: {
            nil
        }
    }

    public func deleteMessage(conversationID: UUID, messageID: UUID, at: Date) async throws -> MessageChange? {
        try await transaction { db in
            let changeSeq = try await Self.nextChangeSeq(db, conversationID: conversationID)
            guard let current = try await Self.message(db, conversationID: conversationID, messageID: messageID) else {
                throw ParleyError.messageNotFound
            }
            guard current.deletedAt == nil else { throw Unchanged() }
            try await db.execute(
                """
                UPDATE messages SET body = '', deleted_at = \(at.millis), mentions = NULL, reaction_count = 0, change_seq = \(changeSeq),
                  change_kind = 'deleted', search = NULL
                WHERE conversation_id = \(conversationID) AND seq = \(current.seq)
                """
            )
            try await db.execute("DELETE FROM mentions WHERE conversation_id = \(conversationID) AND seq = \(current.seq)")
            try await db.execute("DELETE FROM reactions WHERE conversation_id = \(conversationID) AND seq = \(current.seq)")
            try await Self.releaseAttachments(conversationID: conversationID, seq: current.seq, at: at, on: db)
            return try await change(.deleted, db, conversationID: conversationID, seq: current.seq, changeSeq: changeSeq) {
                .messageChanged(.deleted, $0, at: at, node: $1)
            }
        } unchanged: {
            nil
        }
    }

    public func setReaction(
        _ emoji: String, present: Bool, conversationID: UUID, messageID: UUID, userID: UUID, maxDistinct: Int, at: Date
    ) async throws -> MessageChange? {
        try await transaction { db in
            let changeSeq = try await Self.nextChangeSeq(db, conversationID: conversationID)
            var found: (seq: Int64, deletedAt: Int64?)?
            for try await row in try await db.run(
                "SELECT seq, deleted_at FROM messages WHERE conversation_id = \(conversationID) AND id = \(messageID)"
            ).decode((Int64, Int64?).self) {
                found = row
            }
            guard let found else { throw ParleyError.messageNotFound }
            guard found.deletedAt == nil else { throw ParleyError.messageDeleted }
            let changed: Bool
            if present {
                let emojis = try await db.all(
                    "SELECT DISTINCT emoji FROM reactions WHERE conversation_id = \(conversationID) AND seq = \(found.seq)", as: String.self)
                if !emojis.contains(emoji) && emojis.count >= maxDistinct { throw ParleyError.tooManyReactions(maxDistinct) }
                changed =
                    try await db.first(
                        """
                        INSERT INTO reactions (conversation_id, seq, emoji, user_id, created_at)
                        VALUES (\(conversationID), \(found.seq), \(emoji), \(userID), \(at.millis)) ON CONFLICT DO NOTHING RETURNING 1
                        """, as: Int32.self) != nil
            } else {
                let removed = try await db.first(
                    """
                    DELETE FROM reactions WHERE conversation_id = \(conversationID) AND seq = \(found.seq) AND emoji = \(emoji)
                      AND user_id = \(userID) RETURNING id
                    """, as: Int64.self)
                changed = removed != nil
                if let removed {
                    // The emoji keeps its place among the reactions while anyone still uses it: the
                    // earliest remaining reaction with it takes over the removed one's position.
                    try await db.execute(
                        """
                        UPDATE reactions SET id = \(removed) WHERE id = (
                            SELECT MIN(id) FROM reactions WHERE conversation_id = \(conversationID) AND seq = \(found.seq) AND emoji = \(emoji)
                              AND id > \(removed))
                        AND NOT EXISTS (SELECT 1 FROM reactions WHERE conversation_id = \(conversationID) AND seq = \(found.seq)
                              AND emoji = \(emoji) AND id < \(removed))
                        """
                    )
                }
            }
            guard changed else { throw Unchanged() }
            try await db.execute(
                """
                UPDATE messages SET reaction_count = reaction_count + \(present ? 1 : -1), change_seq = \(changeSeq), change_kind = 'reactions'
                WHERE conversation_id = \(conversationID) AND seq = \(found.seq)
                """
            )
            return try await change(.reactions, db, conversationID: conversationID, seq: found.seq, changeSeq: changeSeq) {
                .reaction(added: present, emoji: emoji, userID: userID, message: $0, at: at, node: $1)
            }
        } unchanged: {
            nil
        }
    }

    public func changes(conversationID: UUID, after changeSeq: Int64, maxSeq: Int64, limit: Int) async throws -> ChangePage {
        try await guarded {
            // First the cursor, then the changes: a change committing in between is sent again next
            // time rather than missed.
            guard let current = try await client.first("SELECT change_seq FROM conversations WHERE id = \(conversationID)", as: Int64.self)
            else { throw ParleyError.conversationNotFound }
            let (messages, kinds) = try await client.messagesAndChangeKinds(
                """
                \(unescaped: Self.messageSelect)
                WHERE m.conversation_id = \(conversationID) AND m.change_seq > 0 AND m.change_seq > \(changeSeq) AND m.seq <= \(maxSeq)
                ORDER BY m.change_seq LIMIT \(limit + 1)
                """
            )
            let page = zip(kinds, messages).prefix(limit).map { (kind: $0.0 ?? .edited, message: $0.1) }
            return ChangePage(changes: page, hasMore: messages.count > limit, conversationChangeSeq: current)
        }
    }

    public func searchMessages(_ request: SearchRequest) async throws -> SearchPage {
        let tsquery = Self.tsquery(request.query)
        // The ranked page first, then the headlines of its rows only (ts_headline re-parses a body).
        let language = searchLanguage
        return try await guarded {
            // Limited to the caller's conversations inside the index (their lexemes) when they are
            // few, so a common word costs its matches in those conversations only; for a member of
            // many, the join with members filters instead.
            var conversations = [UUID]()
            if let conversationID = request.conversationID {
                conversations = [conversationID]
            } else {
                conversations = try await client.all(
                    "SELECT conversation_id FROM members WHERE user_id = \(request.userID) LIMIT \(Self.searchConversationLexemes + 1)",
                    as: UUID.self)
            }
            guard !conversations.isEmpty else { return SearchPage(results: [], hasMore: false) }
            let scope =
                conversations.count <= Self.searchConversationLexemes
                ? conversations.map { "'c" + $0.lowercased.replacingOccurrences(of: "-", with: "") + "'" }.joined(separator: " | ")
                : ""
            let ranked = try await client.all(
                """
                SELECT m.id FROM messages m
                JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = \(request.userID),
                  to_tsquery(\(language)::regconfig, \(tsquery)) q
                WHERE m.search @@ (CASE WHEN \(scope) = '' THEN q ELSE q && \(scope)::tsquery END)
                  AND (\(request.conversationID)::uuid IS NULL OR m.conversation_id = \(request.conversationID))
                  AND (\(request.before)::uuid IS NULL OR m.id < \(request.before))
                ORDER BY ts_rank(m.search, q) DESC, m.id DESC LIMIT \(request.limit + 1)
                """,
                as: UUID.self)
            let ids = Array(ranked.prefix(request.limit))
            guard !ids.isEmpty else { return SearchPage(results: [], hasMore: false) }
            // The page's messages and their headlines on two connections at once.
            let client = self.client
            async let pageMessages = client.messages("\(unescaped: Self.messageSelect) WHERE m.id = ANY(\(ids))")
            async let pageHighlights: [UUID: String] = {
                var found: [UUID: String] = [:]
                for try await (id, headline) in try await client.run(
                    """
                    SELECT m.id, ts_headline(\(language)::regconfig, m.body, to_tsquery(\(language)::regconfig, \(tsquery)),
                      \(Self.headlineOptions)) FROM messages m WHERE m.id = ANY(\(ids))
                    """
                ).decode((UUID, String).self) {
                    found[id] = headline
                }
                return found
            }()
            let (messages, highlights) = try await (pageMessages, pageHighlights)
            let byID = Dictionary(messages.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
            let hits = ids.compactMap { id in
                byID[id].map { SearchHit(message: $0, highlight: SearchHit.highlight(marked: highlights[id] ?? "")) }
            }
            return SearchPage(results: hits, hasMore: ranked.count > request.limit)
        }
    }

    // MARK: Helpers

    /// Thrown inside a change's transaction when nothing changed: rolls it back, and the change
    /// returns nil.
    struct Unchanged: Error {}

    /// Runs a change in a transaction; nil (and nothing written) when it throws `Unchanged`.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T?, unchanged: () -> T?) async throws -> T? {
        do {
            return try await client.withTransaction(logger: Self.silent) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError where error.closureError is Unchanged {
            return unchanged()
        } catch is Unchanged {
            return unchanged()
        } catch {
            throw Self.domainError(error)
        }
    }

    /// Most conversations a search names in the index query; a member of more is filtered by join.
    static let searchConversationLexemes = 64

    static let headlineOptions =
        "StartSel=\u{E000}, StopSel=\u{E001}, MaxWords=40, MinWords=15, ShortWord=0, HighlightAll=false, MaxFragments=2, FragmentDelimiter=\" … \""

    static func message(_ db: PostgresConnection, conversationID: UUID, messageID: UUID) async throws -> Message? {
        try await db.messages("\(unescaped: messageSelect) WHERE m.conversation_id = \(conversationID) AND m.id = \(messageID)").first
    }

    /// Takes the conversation's next change sequence number, locking its row until commit.
    static func nextChangeSeq(_ db: PostgresConnection, conversationID: UUID) async throws -> Int64 {
        guard
            let value = try await db.first(
                "UPDATE conversations SET change_seq = change_seq + 1 WHERE id = \(conversationID) RETURNING change_seq", as: Int64.self)
        else { throw ParleyError.conversationNotFound }
        return value
    }

    /// The change as it committed: the message re-read, the members, and the stream event.
    private func change(
        _ kind: MessageChangeKind, _ db: PostgresConnection, conversationID: UUID, seq: Int64, changeSeq: Int64,
        event: (Message, String) -> StreamEvent
    ) async throws -> MessageChange {
        guard
            let message = try await db.messages("\(unescaped: Self.messageSelect) WHERE m.conversation_id = \(conversationID) AND m.seq = \(seq)")
                .first
        else { throw ParleyError.messageNotFound }
        if let outboxNode { try await Self.writeEvents([event(message, outboxNode)], on: db) }
        let members = try await db.all("SELECT user_id FROM members WHERE conversation_id = \(conversationID)", as: UUID.self)
        return MessageChange(kind: kind, message: message, changeSeq: changeSeq, recipients: members)
    }

    /// The tsquery text of a search: every term must match (`&`); a phrase's words follow each other
    /// (`<->`); a prefix ends in `:*`. Words are letters and digits only, quoted as lexemes, so no
    /// tsquery syntax gets through; `to_tsquery` then normalizes them like the index.
    static func tsquery(_ query: SearchQuery) -> String {
        query.terms.map { term in
            switch term {
            case .words(let words, let prefix):
                let lexemes = words.map { "'" + $0.replacingOccurrences(of: "'", with: "''") + "'" }
                return "(" + lexemes.joined(separator: " <-> ") + (prefix ? ":*" : "") + ")"
            }
        }.joined(separator: " & ")
    }
}
