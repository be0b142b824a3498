import Foundation
import Logging
import ParleyCore
import PostgresNIO

/// Something that runs a query: the pooled client, or one leased connection inside a transaction.
protocol PostgresQueryable: Sendable {
    func run(_ query: PostgresQuery) async throws -> PostgresRowSequence
}

extension PostgresClient: PostgresQueryable {
    func run(_ query: PostgresQuery) async throws -> PostgresRowSequence {
        try await self.query(query)
    }
}

extension PostgresConnection: PostgresQueryable {
    func run(_ query: PostgresQuery) async throws -> PostgresRowSequence {
        try await self.query(query, logger: PostgresChatStore.silent)
    }
}

extension PostgresQueryable {
    /// Runs a statement and drains its rows.
    func execute(_ query: PostgresQuery) async throws {
        for try await _ in try await run(query) {}
    }

    func all<Column: PostgresDecodable & Sendable>(_ query: PostgresQuery, as _: Column.Type) async throws -> [Column] {
        var values: [Column] = []
        for try await value in try await run(query).decode(Column.self) { values.append(value) }
        return values
    }

    func first<Column: PostgresDecodable & Sendable>(_ query: PostgresQuery, as _: Column.Type) async throws -> Column? {
        try await all(query, as: Column.self).first
    }

    /// Messages from a query selecting `PostgresChatStore.messageSelect`'s columns, with their
    /// reactions and attachments.
    func messages(_ query: PostgresQuery) async throws -> [Message] {
        try await messagesAndChangeKinds(query).messages
    }

    /// Messages as `messages(_:)` reads them, and the kind of each one's latest change.
    func messagesAndChangeKinds(_ query: PostgresQuery) async throws -> (messages: [Message], kinds: [MessageChangeKind?]) {
        var messages: [Message] = []
        var kinds: [MessageChangeKind?] = []
        var reacted: [Int] = []
        var withFiles: [Int] = []
        for try await row in try await run(query).decode(
            (UUID, Int64, UUID, UUID, String, String?, Int64, Int64?, Int64?, [UUID]?, Int32, Int64, UUID?, Int64?, UUID?, String?, String?, Int32)
                .self
        ) {
            kinds.append(row.16.flatMap(MessageChangeKind.init(rawValue:)))
            let (conversationID, seq, id, senderID, body, clientMsgID, createdAt, editedAt, deletedAt, mentions, reactionCount, changeSeq) =
                (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11)
            var replyTo: MessageReference?
            if let replyID = row.12, let replySeq = row.13, let replySender = row.14 {
                replyTo = MessageReference(id: replyID, seq: replySeq, senderID: replySender, preview: MessageReference.preview(of: row.15 ?? ""))
            }
            if reactionCount > 0 { reacted.append(messages.count) }
            if row.17 > 0 { withFiles.append(messages.count) }
            messages.append(
                Message(
                    id: id, conversationID: conversationID, seq: seq, senderID: senderID, body: body, clientMsgID: clientMsgID,
                    createdAt: PostgresChatStore.date(createdAt), editedAt: editedAt.map(PostgresChatStore.date),
                    deletedAt: deletedAt.map(PostgresChatStore.date), replyTo: replyTo, mentions: mentions ?? [], changeSeq: changeSeq))
        }
        if !withFiles.isEmpty {
            let attachments = try await self.attachments(
                of: withFiles.map { (messages[$0].conversationID, messages[$0].seq) })
            for i in withFiles {
                messages[i].attachments = attachments[MessageKey(conversation: messages[i].conversationID, seq: messages[i].seq)] ?? []
            }
        }
        guard !reacted.isEmpty else { return (messages, kinds) }
        var reactions: [MessageKey: [(emoji: String, userID: UUID)]] = [:]
        for try await (conversation, seq, emoji, user) in try await run(
            """
            SELECT r.conversation_id, r.seq, r.emoji, r.user_id FROM reactions r
            JOIN unnest(\(reacted.map { messages[$0].conversationID })::uuid[], \(reacted.map { messages[$0].seq })::bigint[]) AS k(c, s)
              ON r.conversation_id = k.c AND r.seq = k.s
            ORDER BY r.id
            """
        ).decode((UUID, Int64, String, UUID).self) {
            reactions[MessageKey(conversation: conversation, seq: seq), default: []].append((emoji, user))
        }
        for i in reacted {
            messages[i].reactions = ReactionSummary.summarize(
                reactions[MessageKey(conversation: messages[i].conversationID, seq: messages[i].seq)] ?? [])
        }
        return (messages, kinds)
    }

    func users(_ query: PostgresQuery) async throws -> [User] {
        var users: [User] = []
        for try await row in try await run(query).decode((UUID, String, String, String, Int64).self) {
            users.append(User(id: row.0, username: row.1, email: row.2, displayName: row.3, createdAt: PostgresChatStore.date(row.4)))
        }
        return users
    }

    /// Sessions from a query selecting `PostgresChatStore.sessionColumns`.
    func sessions(_ query: PostgresQuery) async throws -> [Session] {
        var sessions: [Session] = []
        for try await row in try await run(query).decode((UUID, UUID, Int64, Int64, Int64?, String?, Int64?).self) {
            sessions.append(
                Session(
                    id: row.0, userID: row.1, createdAt: PostgresChatStore.date(row.2), expiresAt: PostgresChatStore.date(row.3),
                    revokedAt: row.4.map(PostgresChatStore.date), userAgent: row.5, lastUsedAt: row.6.map(PostgresChatStore.date)))
        }
        return sessions
    }

    /// Conversations with their members and last message, in the order of `ids`.
    func conversations(ids: [UUID]) async throws -> [Conversation] {
        guard !ids.isEmpty else { return [] }
        var members: [UUID: [Member]] = [:]
        for try await row in try await run(
            """
            SELECT conversation_id, user_id, role, read_seq, delivered_seq, joined_at FROM members
            WHERE conversation_id = ANY(\(ids)) ORDER BY joined_at, user_id
            """
        ).decode((UUID, UUID, String, Int64, Int64, Int64).self) {
            members[row.0, default: []].append(
                Member(
                    userID: row.1, role: MemberRole(rawValue: row.2) ?? .member, readSeq: row.3, deliveredSeq: row.4,
                    joinedAt: PostgresChatStore.date(row.5))
            )
        }
        let lastMessages = try await messages(
            """
            \(unescaped: PostgresChatStore.messageSelect)
            JOIN conversations c ON m.conversation_id = c.id AND m.seq = c.last_seq
            WHERE c.id = ANY(\(ids))
            """
        )
        let lastByConversation = Dictionary(lastMessages.map { ($0.conversationID, $0) }, uniquingKeysWith: { first, _ in first })
        var conversations: [UUID: Conversation] = [:]
        for try await row in try await run(
            """
            SELECT id, type, name, passcode_hash IS NOT NULL, last_seq, created_at, updated_at, change_seq FROM conversations
            WHERE id = ANY(\(ids))
            """
        ).decode((UUID, String, String?, Bool, Int64, Int64, Int64, Int64).self) {
            conversations[row.0] = Conversation(
                id: row.0,
                type: ConversationType(rawValue: row.1) ?? .group,
                name: row.2,
                hasPasscode: row.3,
                lastSeq: row.4,
                lastMessage: lastByConversation[row.0],
                members: members[row.0] ?? [],
                createdAt: PostgresChatStore.date(row.5),
                updatedAt: PostgresChatStore.date(row.6),
                changeSeq: row.7
            )
        }
        return ids.compactMap { conversations[$0] }
    }
}

/// A message by its place: conversation and seq.
struct MessageKey: Hashable {
    var conversation: UUID
    var seq: Int64
}

extension PostgresChatStore {
    static let silent = Logger(label: "parley-postgres-silent", factory: { _ in SwiftLogNoOpLogHandler() })

    static let userColumns = "id, username, email, display_name, created_at"

    /// The columns `messages(_:)` decodes: the message `m`, then the message it replies to (`r`).
    static let messageSelect = """
        SELECT m.conversation_id, m.seq, m.id, m.sender_id, m.body, m.client_msg_id, m.created_at, m.edited_at, m.deleted_at,
               m.mentions, m.reaction_count, m.change_seq, r.id, r.seq, r.sender_id, r.body, m.change_kind, m.attachment_count
        FROM messages m LEFT JOIN messages r ON r.conversation_id = m.conversation_id AND r.seq = m.reply_to_seq
        """

    static func date(_ millis: Int64) -> Date {
        Date(timeIntervalSince1970: TimeInterval(millis) / 1000)
    }

    /// Escapes LIKE wildcards so user input matches literally.
    static func likePattern(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_")
    }

    /// The SQLSTATE of a server error, if `error` is one.
    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }

    static func constraint(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.constraintName]
    }

    /// Maps what the driver throws onto the domain's errors: lost connections, a server shutting down,
    /// serialization failures and deadlocks are retryable (`store_unavailable`); anything else that is
    /// not already a `ParleyError` is an internal error with the driver's text for operators only.
    static func domainError(_ error: any Error) -> any Error {
        if let transaction = error as? PostgresTransactionError,
            let cause = transaction.closureError ?? transaction.beginError ?? transaction.commitError
        {
            return domainError(cause)
        }
        if error is ParleyError { return error }
        if let state = sqlState(error) {
            let retryable = state.hasPrefix("08") || state.hasPrefix("57") || state.hasPrefix("53") || state == "40001" || state == "40P01"
            if !retryable { return ParleyError.internal(detail: "PostgreSQL \(state): \(String(reflecting: error))") }
        }
        return ParleyError(
            .unavailable,
            code: ParleyError.Code.storeUnavailable,
            message: "The database is unavailable; retry shortly.",
            retryAfterSeconds: 1,
            detail: String(reflecting: error)
        )
    }
}
