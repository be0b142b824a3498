import Foundation
import Logging
import ParleyCore
import PostgresNIO
import ServiceLifecycle

/// The cluster `ChatStore`: PostgreSQL through postgres-nio's connection pool. Several Parley nodes
/// share one database. The `SendPipeline` of each node hands it batches of sends; each batch locks the rows of
/// the conversations it writes (in id order, so two nodes never deadlock), which keeps every
/// conversation's seq gapless across nodes.
public final class PostgresChatStore: ChatStore {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var username: String
        public var password: String?
        public var database: String?
        /// Pooled connections per node.
        public var maxConnections: Int = 16
        /// Connections opened at start and kept open: a burst of clients right after a deploy finds
        /// them ready instead of queueing behind connection set-up.
        public var minConnections: Int = 4
        /// The schema Parley's tables live in (the connections' `search_path`); the user's default when nil.
        public var schema: String?
        /// When set, every change also writes its stream event to the outbox, in the same
        /// transaction, stamped with this node id. Nil writes none.
        public var outboxNode: String?
        /// How long a node's lease on outbox shards lasts without renewal: a node that stops
        /// renewing (it died) loses its shards to the others after this long.
        public var outboxLease: Duration = .seconds(10)
        /// The text-search configuration messages are indexed and searched with (`simple`: no
        /// stemming, any language; or e.g. `english`, `german`). Changing it re-indexes at start.
        public var searchLanguage: String = "simple"

        public init(host: String, port: Int = 5432, username: String, password: String?, database: String?) {
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.database = database
        }

        /// Parses `postgres://user:password@host:port/database` (also `postgresql://`).
        public init(url: String) throws {
            guard let components = URLComponents(string: url), let scheme = components.scheme,
                ["postgres", "postgresql"].contains(scheme.lowercased()), let host = components.host, !host.isEmpty
            else {
                throw ParleyError.invalid("A PostgreSQL URL looks like postgres://user:password@host:5432/database.")
            }
            self.init(
                host: host,
                port: components.port ?? 5432,
                username: components.user?.removingPercentEncoding ?? "postgres",
                password: components.password?.removingPercentEncoding,
                database: components.path.count > 1 ? String(components.path.dropFirst()) : nil
            )
        }
    }

    let client: PostgresClient
    private let logger: Logger
    private let host: String
    public let outboxNode: String?
    /// The outbox shards this node relays; nil without an outbox.
    let leases: OutboxLeases?
    let searchLanguage: String

    /// Configures the pool. Nothing connects until `run()` runs; then `migrate()` before serving.
    public init(configuration: Configuration, logger: Logger) {
        var config = PostgresClient.Configuration(
            host: configuration.host,
            port: configuration.port,
            username: configuration.username,
            password: configuration.password,
            database: configuration.database,
            tls: .disable
        )
        config.options.maximumConnections = configuration.maxConnections
        config.options.minimumConnections = max(0, min(configuration.minConnections, configuration.maxConnections - 1))
        config.options.connectTimeout = .seconds(5)
        if let schema = configuration.schema {
            config.options.additionalStartupParameters = [("search_path", schema)]
        }
        self.client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.logger = logger
        self.host = "\(configuration.host):\(configuration.port)"
        self.outboxNode = configuration.outboxNode
        self.leases = configuration.outboxNode.map { OutboxLeases(node: $0, duration: configuration.outboxLease) }
        self.searchLanguage = configuration.searchLanguage
    }

    /// Runs the connection pool for the life of the node (postgres-nio's client needs a task of its
    /// own). Ends on graceful shutdown or cancellation, closing the pool's connections.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.client.run()
        }
        logger.info("PostgreSQL store closed", metadata: ["parley.postgres_host": "\(host)"])
    }

    /// Migrates the schema (under an advisory lock, so nodes starting together take turns). Throws
    /// if the database cannot be reached.
    public func migrate() async throws {
        try await PostgresSchema.migrate(client, logger: logger)
        try await PostgresSchema.useSearchLanguage(searchLanguage, client, logger: logger)
        logger.info("PostgreSQL store ready", metadata: ["parley.postgres_host": "\(host)"])
    }

    /// Runs `body`, turning driver errors into domain errors.
    func guarded<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw Self.domainError(error)
        }
    }

    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await guarded {
            try await client.withTransaction(logger: Self.silent) { connection in try await body(connection) }
        }
    }

    // MARK: Users

    public func createUser(_ user: NewUser) async throws -> User {
        try await transaction { db in
            if try await db.first("SELECT 1 FROM users WHERE username = \(user.username)", as: Int32.self) != nil {
                throw ParleyError.conflict("That username is taken.", code: "username_taken")
            }
            if try await db.first("SELECT 1 FROM users WHERE email = \(user.email)", as: Int32.self) != nil {
                throw ParleyError.conflict("That email address is already registered.", code: "email_taken")
            }
            do {
                try await db.execute(
                    """
                    INSERT INTO users (id, username, email, display_name, password_hash, created_at)
                    VALUES (\(user.id), \(user.username), \(user.email), \(user.displayName), \(user.passwordHash), \(user.createdAt.millis))
                    """
                )
            } catch  where Self.sqlState(error) == "23505" {
                // Another node registered the same name between the check and the insert.
                if Self.constraint(error)?.contains("email") == true {
                    throw ParleyError.conflict("That email address is already registered.", code: "email_taken")
                }
                throw ParleyError.conflict("That username is taken.", code: "username_taken")
            }
        }
        return User(
            id: user.id, username: user.username, email: user.email, displayName: user.displayName, createdAt: user.createdAt.truncatedToMillis)
    }

    public func user(id: UUID) async throws -> User? {
        try await guarded { try await client.users("SELECT \(unescaped: Self.userColumns) FROM users WHERE id = \(id)").first }
    }

    public func credentials(login: String) async throws -> UserCredentials? {
        let column = login.contains("@") ? "email" : "username"
        return try await guarded {
            for try await row in try await client.run(
                "SELECT \(unescaped: Self.userColumns), password_hash FROM users WHERE \(unescaped: column) = \(login.lowercased())"
            ).decode((UUID, String, String, String, Int64, String).self) {
                return UserCredentials(
                    user: User(id: row.0, username: row.1, email: row.2, displayName: row.3, createdAt: Self.date(row.4)), passwordHash: row.5)
            }
            return nil
        }
    }

    public func searchUsers(query: String, limit: Int) async throws -> [User] {
        let pattern = Self.likePattern(query.lowercased())
        let contains = "%" + pattern + "%"
        let prefix = pattern + "%"
        return try await guarded {
            try await client.users(
                """
                SELECT \(unescaped: Self.userColumns) FROM users
                WHERE username LIKE \(contains) OR lower(display_name) LIKE \(contains)
                ORDER BY (username LIKE \(prefix)) DESC, username
                LIMIT \(limit)
                """
            )
        }
    }

    public func users(ids: [UUID]) async throws -> [User] {
        guard !ids.isEmpty else { return [] }
        return try await guarded { try await client.users("SELECT \(unescaped: Self.userColumns) FROM users WHERE id = ANY(\(ids))") }
    }

    public func setLastSeen(userID: UUID, at: Date) async throws {
        try await guarded { try await client.execute("UPDATE users SET last_seen_at = \(at.millis) WHERE id = \(userID)") }
    }

    public func lastSeen(userIDs: [UUID]) async throws -> [UUID: Date] {
        guard !userIDs.isEmpty else { return [:] }
        return try await guarded {
            var result: [UUID: Date] = [:]
            for try await (id, millis) in try await client.run(
                "SELECT id, last_seen_at FROM users WHERE last_seen_at IS NOT NULL AND id = ANY(\(userIDs))"
            ).decode((UUID, Int64).self) {
                result[id] = Self.date(millis)
            }
            return result
        }
    }

    // MARK: Sessions

    static let sessionColumns = "s.id, s.user_id, s.created_at, s.expires_at, s.revoked_at, s.user_agent, s.last_used_at"

    public func createSession(id: UUID, userID: UUID, refreshTokenHash: String, expiresAt: Date, userAgent: String?, now: Date) async throws
        -> Session
    {
        try await transaction { db in
            try await db.execute(
                """
                INSERT INTO sessions (id, user_id, created_at, expires_at, user_agent)
                VALUES (\(id), \(userID), \(now.millis), \(expiresAt.millis), \(userAgent))
                """
            )
            try await db.execute(
                "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (\(refreshTokenHash), \(id), \(now.millis))"
            )
        }
        return Session(
            id: id, userID: userID, createdAt: now.truncatedToMillis, expiresAt: expiresAt.truncatedToMillis, revokedAt: nil, userAgent: userAgent)
    }

    public func session(id: UUID) async throws -> Session? {
        try await guarded {
            try await client.sessions("SELECT \(unescaped: Self.sessionColumns) FROM sessions s WHERE s.id = \(id)").first
        }
    }

    public func sessions(userID: UUID, now: Date) async throws -> [Session] {
        try await guarded {
            try await client.sessions(
                """
                SELECT \(unescaped: Self.sessionColumns) FROM sessions s
                WHERE s.user_id = \(userID) AND s.revoked_at IS NULL AND s.expires_at > \(now.millis)
                ORDER BY COALESCE(s.last_used_at, s.created_at) DESC, s.id DESC
                """
            )
        }
    }

    public func rotateRefreshToken(presentedHash: String, newHash: String, now: Date) async throws -> RefreshOutcome {
        try await transaction { db in
            // Lock the token row: two nodes presenting the same token cannot both rotate it.
            guard
                let spentAt = try await db.first(
                    "SELECT spent_at FROM refresh_tokens WHERE hash = \(presentedHash) FOR UPDATE", as: Int64?.self)
            else { return .invalid }
            guard
                var session = try await db.sessions(
                    """
                    SELECT \(unescaped: Self.sessionColumns) FROM refresh_tokens t
                    JOIN sessions s ON s.id = t.session_id WHERE t.hash = \(presentedHash)
                    """
                ).first, session.isActive(at: now)
            else { return .invalid }
            if spentAt != nil {
                try await db.execute("UPDATE sessions SET revoked_at = \(now.millis) WHERE id = \(session.id)")
                return .reused(session)
            }
            try await db.execute("UPDATE refresh_tokens SET spent_at = \(now.millis) WHERE hash = \(presentedHash)")
            try await db.execute("UPDATE sessions SET last_used_at = \(now.millis) WHERE id = \(session.id)")
            session.lastUsedAt = now.truncatedToMillis
            try await db.execute("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (\(newHash), \(session.id), \(now.millis))")
            return .rotated(session)
        }
    }

    public func revokeSession(id: UUID, now: Date) async throws {
        try await guarded {
            try await client.execute("UPDATE sessions SET revoked_at = \(now.millis) WHERE id = \(id) AND revoked_at IS NULL")
        }
    }

    public func setPassword(userID: UUID, passwordHash: String, keeping: UUID, now: Date) async throws -> [UUID] {
        try await transaction { db in
            try await db.execute("UPDATE users SET password_hash = \(passwordHash) WHERE id = \(userID)")
            var revoked: [UUID] = []
            for try await id in try await db.run(
                """
                UPDATE sessions SET revoked_at = \(now.millis)
                WHERE user_id = \(userID) AND id <> \(keeping) AND revoked_at IS NULL AND expires_at > \(now.millis) RETURNING id
                """
            ).decode(UUID.self) {
                revoked.append(id)
            }
            return revoked
        }
    }

    // MARK: Failed logins

    public func loginFailures(key: String) async throws -> LoginFailures? {
        try await guarded {
            for try await (count, last, next) in try await client.run(
                "SELECT failures, last_failure_at, next_allowed_at FROM login_failures WHERE key = \(key)"
            ).decode((Int, Int64, Int64).self) {
                return LoginFailures(count: count, lastFailureAt: Self.date(last), nextAllowedAt: Self.date(next))
            }
            return nil
        }
    }

    public func reserveLoginAttempt(key: String, now: Date, forgetBefore: Date, delay: LoginDelay) async throws -> LoginAttempt {
        let attempt = try await transaction { db -> LoginAttempt in
            // The row exists (an old empty one if new), then is locked: attempts at the same moment on
            // any node take turns here.
            try await db.execute(
                "INSERT INTO login_failures (key, failures, last_failure_at, next_allowed_at) VALUES (\(key), 0, 0, 0) ON CONFLICT (key) DO NOTHING")
            var count = 1
            for try await (failures, last, next) in try await db.run(
                "SELECT failures, last_failure_at, next_allowed_at FROM login_failures WHERE key = \(key) FOR UPDATE"
            ).decode((Int, Int64, Int64).self) where last >= forgetBefore.millis {
                if next > now.millis { return .delayed(until: Self.date(next)) }
                count = failures + 1
            }
            let next = now + TimeInterval(delay.seconds(after: count))
            try await db.execute(
                """
                UPDATE login_failures SET failures = \(count), last_failure_at = \(now.millis), next_allowed_at = \(next.millis)
                WHERE key = \(key)
                """)
            return .counted(count)
        }
        // Old records of other keys go outside that transaction, skipping rows another attempt holds
        // (two attempts deleting each other's rows would deadlock).
        try await guarded {
            try await client.execute(
                """
                DELETE FROM login_failures WHERE key IN (
                    SELECT key FROM login_failures WHERE last_failure_at < \(forgetBefore.millis) AND key <> \(key)
                    LIMIT 1000 FOR UPDATE SKIP LOCKED)
                """)
        }
        return attempt
    }

    public func clearLoginFailures(key: String) async throws {
        try await guarded { try await client.execute("DELETE FROM login_failures WHERE key = \(key)") }
    }

    // MARK: Conversations

    public func findOrCreateDirectConversation(between a: UUID, and b: UUID, now: Date) async throws -> (Conversation, created: Bool) {
        let key = [a.lowercased, b.lowercased].sorted().joined(separator: ":")
        let id = UUID.v7(now: now)
        let created = try await transaction { db -> Bool in
            // ON CONFLICT waits for a concurrent creator on another node, then yields its row.
            let inserted = try await db.first(
                """
                INSERT INTO conversations (id, type, direct_key, created_at, updated_at)
                VALUES (\(id), 'direct', \(key), \(now.millis), \(now.millis))
                ON CONFLICT (direct_key) DO NOTHING RETURNING id
                """,
                as: UUID.self
            )
            guard inserted != nil else { return false }
            for user in [a, b] {
                try await db.execute(
                    "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (\(id), \(user), 'member', \(now.millis))"
                )
            }
            if let created = try await db.conversations(ids: [id]).first {
                try await emit(db) { try .conversationCreated(created, node: $0) }
            }
            return true
        }
        let conversationID: UUID? =
            created ? id : try await guarded { try await client.first("SELECT id FROM conversations WHERE direct_key = \(key)", as: UUID.self) }
        guard let conversationID, let conversation = try await conversation(id: conversationID) else {
            throw ParleyError.internal(detail: "direct conversation vanished")
        }
        return (conversation, created)
    }

    public func createGroup(id: UUID, name: String, ownerID: UUID, memberIDs: [UUID], passcodeHash: String?, now: Date) async throws -> Conversation {
        try await transaction { db in
            try await db.execute(
                """
                INSERT INTO conversations (id, type, name, passcode_hash, created_at, updated_at)
                VALUES (\(id), 'group', \(name), \(passcodeHash), \(now.millis), \(now.millis))
                """
            )
            try await db.execute("INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (\(id), \(ownerID), 'owner', \(now.millis))")
            let others = memberIDs.filter { $0 != ownerID }
            if !others.isEmpty {
                try await db.execute(
                    """
                    INSERT INTO members (conversation_id, user_id, role, joined_at)
                    SELECT \(id), u, 'member', \(now.millis) FROM unnest(\(others)::uuid[]) AS u ON CONFLICT DO NOTHING
                    """
                )
            }
            guard let created = try await db.conversations(ids: [id]).first else { throw ParleyError.internal(detail: "group vanished") }
            try await emit(db) { try .conversationCreated(created, node: $0) }
            return created
        }
    }

    public func conversation(id: UUID) async throws -> Conversation? {
        try await guarded { try await client.conversations(ids: [id]).first }
    }

    public func conversations(for userID: UUID, limit: Int) async throws -> [Conversation] {
        try await guarded {
            let ids = try await client.all(
                """
                SELECT c.id FROM members m JOIN conversations c ON c.id = m.conversation_id
                WHERE m.user_id = \(userID) ORDER BY c.updated_at DESC, c.id DESC LIMIT \(limit)
                """,
                as: UUID.self
            )
            var conversations = try await client.conversations(ids: ids)
            var mentionCounts: [UUID: Int64] = [:]
            for try await (conversationID, count) in try await client.run(
                """
                SELECT mt.conversation_id, COUNT(*) FROM mentions mt
                JOIN members mb ON mb.conversation_id = mt.conversation_id AND mb.user_id = mt.user_id
                WHERE mt.user_id = \(userID) AND mt.seq > mb.read_seq GROUP BY mt.conversation_id
                """
            ).decode((UUID, Int64).self) {
                mentionCounts[conversationID] = count
            }
            for i in conversations.indices { conversations[i].mentionCount = mentionCounts[conversations[i].id] ?? 0 }
            return conversations
        }
    }

    public func member(conversationID: UUID, userID: UUID) async throws -> Member? {
        try await guarded {
            for try await row in try await client.run(
                """
                SELECT user_id, role, read_seq, delivered_seq, joined_at FROM members
                WHERE conversation_id = \(conversationID) AND user_id = \(userID)
                """
            ).decode((UUID, String, Int64, Int64, Int64).self) {
                return Member(
                    userID: row.0, role: MemberRole(rawValue: row.1) ?? .member, readSeq: row.2, deliveredSeq: row.3, joinedAt: Self.date(row.4))
            }
            return nil
        }
    }

    public func memberIDs(conversationID: UUID) async throws -> [UUID] {
        try await guarded { try await client.all("SELECT user_id FROM members WHERE conversation_id = \(conversationID)", as: UUID.self) }
    }

    public func contacts(of userID: UUID, maxGroupSize: Int, limit: Int) async throws -> [UUID] {
        try await guarded {
            try await client.all(
                """
                SELECT DISTINCT other.user_id FROM members mine
                JOIN members other ON other.conversation_id = mine.conversation_id AND other.user_id <> mine.user_id
                WHERE mine.user_id = \(userID)
                  AND (SELECT COUNT(*) FROM members n WHERE n.conversation_id = mine.conversation_id) <= \(maxGroupSize)
                LIMIT \(limit)
                """,
                as: UUID.self
            )
        }
    }

    public func passcodeHash(conversationID: UUID) async throws -> String? {
        try await guarded {
            try await client.first("SELECT passcode_hash FROM conversations WHERE id = \(conversationID)", as: String?.self) ?? nil
        }
    }

    public func updateGroup(id: UUID, name: String?, passcodeHash: String??, now: Date) async throws -> Conversation? {
        try await transaction { db in
            var changed = false
            if let name {
                changed =
                    try await db.first(
                        "UPDATE conversations SET name = \(name) WHERE id = \(id) AND name IS DISTINCT FROM \(name) RETURNING 1", as: Int32.self)
                    != nil
            }
            if let passcodeHash {
                let passcodeChanged =
                    try await db.first(
                        """
                        UPDATE conversations SET passcode_hash = \(passcodeHash)
                        WHERE id = \(id) AND passcode_hash IS DISTINCT FROM \(passcodeHash) RETURNING 1
                        """, as: Int32.self) != nil
                changed = changed || passcodeChanged
            }
            let updated = try await db.conversations(ids: [id]).first
            if let updated, changed {
                try await emit(db) { try .conversationUpdated(updated, at: now, node: $0) }
            }
            return updated
        }
    }

    public func deleteConversation(id: UUID) async throws {
        try await transaction { db in
            try await Self.releaseAttachments(conversationID: id, seq: nil, at: .now, on: db)
            if try await db.first("DELETE FROM conversations WHERE id = \(id) RETURNING 1", as: Int32.self) != nil {
                try await emit(db) { .conversationDeleted(id, at: .now, node: $0) }
            }
        }
    }

    public func addMembers(conversationID: UUID, userIDs: [UUID], role: MemberRole, now: Date) async throws -> [UUID] {
        try await transaction { db in
            guard try await db.first("SELECT 1 FROM conversations WHERE id = \(conversationID)", as: Int32.self) != nil else {
                throw ParleyError.conversationNotFound
            }
            let added = Set(
                try await db.all(
                    """
                    INSERT INTO members (conversation_id, user_id, role, joined_at)
                    SELECT \(conversationID), u, \(role.rawValue), \(now.millis) FROM unnest(\(userIDs)::uuid[]) AS u
                    ON CONFLICT (conversation_id, user_id) DO NOTHING RETURNING user_id
                    """,
                    as: UUID.self
                )
            )
            let newMembers = userIDs.filter { added.contains($0) }
            for user in newMembers {
                try await emit(db) { try .memberAdded(conversationID, userID: user, role: role, at: now, node: $0) }
            }
            return newMembers
        }
    }

    public func removeMember(conversationID: UUID, userID: UUID, now: Date) async throws {
        try await transaction { db in
            let role = try await db.first(
                "DELETE FROM members WHERE conversation_id = \(conversationID) AND user_id = \(userID) RETURNING role", as: String.self)
            if role != nil { try await emit(db) { try .memberRemoved(conversationID, userID: userID, at: now, node: $0) } }
            guard role == MemberRole.owner.rawValue else { return }
            let successor = try await db.first(
                """
                SELECT user_id FROM members WHERE conversation_id = \(conversationID)
                ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1
                """,
                as: UUID.self
            )
            if let successor {
                try await db.execute("UPDATE members SET role = 'owner' WHERE conversation_id = \(conversationID) AND user_id = \(successor)")
                try await emit(db) { try .memberRoleChanged(conversationID, userID: successor, role: .owner, at: now, node: $0) }
            } else {
                try await db.execute("DELETE FROM conversations WHERE id = \(conversationID)")
                try await emit(db) { .conversationDeleted(conversationID, at: now, node: $0) }
            }
        }
    }

    public func setRole(conversationID: UUID, userID: UUID, role: MemberRole) async throws {
        try await transaction { db in
            let changed = try await db.first(
                """
                UPDATE members SET role = \(role.rawValue)
                WHERE conversation_id = \(conversationID) AND user_id = \(userID) AND role <> \(role.rawValue) RETURNING 1
                """, as: Int32.self)
            if changed != nil {
                try await emit(db) { try .memberRoleChanged(conversationID, userID: userID, role: role, at: .now, node: $0) }
            }
        }
    }

    // MARK: Messages

    public func appendBatch(_ requests: [SendRequest]) async throws -> [Result<SendResult, any Error>] {
        try await transaction { [outboxNode, searchLanguage] connection in
            try await Self.appendBatch(requests, outboxNode: outboxNode, searchLanguage: searchLanguage, on: connection)
        }
    }

    // MARK: Outbox

    public func messages(conversationID: UUID, member: UUID?, cursor: PageCursor, limit: Int) async throws -> MessagePage {
        let query: PostgresQuery
        switch cursor {
        case .latest:
            query = "\(unescaped: Self.messageSelect) WHERE m.conversation_id = \(conversationID) ORDER BY m.seq DESC LIMIT \(limit + 1)"
        case .before(let seq):
            query = """
                \(unescaped: Self.messageSelect) WHERE m.conversation_id = \(conversationID) AND m.seq < \(seq)
                ORDER BY m.seq DESC LIMIT \(limit + 1)
                """
        case .after(let seq):
            query = """
                \(unescaped: Self.messageSelect) WHERE m.conversation_id = \(conversationID) AND m.seq > \(seq)
                ORDER BY m.seq ASC LIMIT \(limit + 1)
                """
        }
        let rows = try await guarded {
            try await client.withConnection { db in
                if let member {
                    let isMember = try await db.first(
                        "SELECT 1 FROM members WHERE conversation_id = \(conversationID) AND user_id = \(member)", as: Int32.self)
                    guard isMember != nil else { throw ParleyError.conversationNotFound }
                }
                return try await db.messages(query)
            }
        }
        var messages = Array(rows.prefix(limit))
        if case .after = cursor {} else { messages.reverse() }
        return MessagePage(messages: messages, hasMore: rows.count > limit)
    }

    public func advanceWatermark(_ kind: Watermark, conversationID: UUID, userID: UUID, to seq: Int64) async throws -> WatermarkUpdate {
        try await transaction { db in
            var found: (read: Int64, delivered: Int64, last: Int64)?
            for try await row in try await db.run(
                """
                SELECT m.read_seq, m.delivered_seq, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id
                WHERE m.conversation_id = \(conversationID) AND m.user_id = \(userID) FOR UPDATE OF m
                """
            ).decode((Int64, Int64, Int64).self) {
                found = row
            }
            guard let found else { throw ParleyError.conversationNotFound }
            let target = min(seq, found.last)
            let current = kind == .read ? found.read : found.delivered
            guard target > current else { return WatermarkUpdate(value: current, advanced: false) }
            switch kind {
            case .read:
                try await db.execute(
                    """
                    UPDATE members SET read_seq = \(target), delivered_seq = GREATEST(delivered_seq, \(target))
                    WHERE conversation_id = \(conversationID) AND user_id = \(userID)
                    """
                )
            case .delivered:
                try await db.execute(
                    "UPDATE members SET delivered_seq = \(target) WHERE conversation_id = \(conversationID) AND user_id = \(userID)")
            }
            try await emit(db) { try .receipt(kind, conversationID: conversationID, userID: userID, seq: target, at: .now, node: $0) }
            return WatermarkUpdate(value: target, advanced: true)
        }
    }

    public func ping() async throws {
        try await guarded { _ = try await client.first("SELECT 1", as: Int32.self) }
    }
}
