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

    func messages(_ query: PostgresQuery) async throws -> [Message] {
        var messages: [Message] = []
        for try await row in try await run(query).decode((UUID, Int64, UUID, UUID, String, String?, Int64).self) {
            messages.append(
                Message(
                    id: row.2, conversationID: row.0, seq: row.1, senderID: row.3, body: row.4, clientMsgID: row.5,
                    createdAt: PostgresChatStore.date(row.6))
            )
        }
        return messages
    }

    func users(_ query: PostgresQuery) async throws -> [User] {
        var users: [User] = []
        for try await row in try await run(query).decode((UUID, String, String, String, Int64).self) {
            users.append(User(id: row.0, username: row.1, email: row.2, displayName: row.3, createdAt: PostgresChatStore.date(row.4)))
        }
        return users
    }

    func sessions(_ query: PostgresQuery) async throws -> [Session] {
        var sessions: [Session] = []
        for try await row in try await run(query).decode((UUID, UUID, Int64, Int64, Int64?).self) {
            sessions.append(
                Session(
                    id: row.0, userID: row.1, createdAt: PostgresChatStore.date(row.2), expiresAt: PostgresChatStore.date(row.3),
                    revokedAt: row.4.map(PostgresChatStore.date)))
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
            SELECT \(unescaped: PostgresChatStore.messageColumns("m")) FROM conversations c
            JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq
            WHERE c.id = ANY(\(ids))
            """
        )
        let lastByConversation = Dictionary(lastMessages.map { ($0.conversationID, $0) }, uniquingKeysWith: { first, _ in first })
        var conversations: [UUID: Conversation] = [:]
        for try await row in try await run(
            """
            SELECT id, type, name, passcode_hash IS NOT NULL, last_seq, created_at, updated_at FROM conversations
            WHERE id = ANY(\(ids))
            """
        ).decode((UUID, String, String?, Bool, Int64, Int64, Int64).self) {
            conversations[row.0] = Conversation(
                id: row.0,
                type: ConversationType(rawValue: row.1) ?? .group,
                name: row.2,
                hasPasscode: row.3,
                lastSeq: row.4,
                lastMessage: lastByConversation[row.0],
                members: members[row.0] ?? [],
                createdAt: PostgresChatStore.date(row.5),
                updatedAt: PostgresChatStore.date(row.6)
            )
        }
        return ids.compactMap { conversations[$0] }
    }
}

extension PostgresChatStore {
    static let silent = Logger(label: "parley-postgres-silent", factory: { _ in SwiftLogNoOpLogHandler() })

    static let userColumns = "id, username, email, display_name, created_at"

    static func messageColumns(_ alias: String) -> String {
        ["conversation_id", "seq", "id", "sender_id", "body", "client_msg_id", "created_at"].map { "\(alias).\($0)" }.joined(separator: ", ")
    }

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
