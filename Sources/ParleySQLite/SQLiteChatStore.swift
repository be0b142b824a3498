import Foundation
import GRDB
import Logging
import ParleyCore
import ServiceLifecycle

/// The embedded `ChatStore`: one SQLite file in WAL mode through a GRDB `DatabasePool`
/// (one writer, concurrent readers). The `SendPipeline` hands it batches of sends, so many messages
/// share one transaction under load.
public final class SQLiteChatStore: ChatStore {
    public struct Configuration: Sendable {
        /// Path of the database file; `data/parley.sqlite` under the data directory by default.
        public var path: String
        /// `FULL` makes every commit survive power loss; `NORMAL` only process crashes.
        public var synchronousFull: Bool = true
        /// Page cache per connection, in KiB.
        public var cacheSizeKiB: Int = 32_768
        public var maxReaders: Int = 4
        /// When set, every change also writes its stream event to the outbox, in the same
        /// transaction, stamped with this node id. Nil (no stream, no in-process consumers) writes none.
        public var outboxNode: String?

        public init(path: String, synchronousFull: Bool = true, outboxNode: String? = nil) {
            self.path = path
            self.synchronousFull = synchronousFull
            self.outboxNode = outboxNode
        }
    }

    let pool: DatabasePool
    private let logger: Logger
    public let outboxNode: String?

    public init(configuration: Configuration, logger: Logger) throws {
        var config = GRDB.Configuration()
        config.maximumReaderCount = configuration.maxReaders
        config.busyMode = .timeout(10)
        let cacheSize = configuration.cacheSizeKiB
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA cache_size = -\(cacheSize)")
        }
        let directory = (configuration.path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let pool = try DatabasePool(path: configuration.path, configuration: config)
        self.pool = pool
        self.logger = logger
        self.outboxNode = configuration.outboxNode
        // GRDB sets synchronous=NORMAL on the writer after prepareDatabase; choose durability now.
        let synchronous = configuration.synchronousFull ? "FULL" : "NORMAL"
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
        }
        logger.info("SQLite store opened", metadata: ["parley.sqlite_path": "\(configuration.path)", "parley.synchronous": "\(synchronous)"])
    }

    public func migrate() async throws {
        try SQLiteSchema.migrator.migrate(pool)
    }

    /// Holds the database open for the life of the node; closes it on graceful shutdown (or cancellation).
    public func run() async throws {
        // While the node runs, new messages reach the search index in batches.
        let logger = self.logger
        let indexing = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.searchIndexInterval)
                do {
                    try await indexPendingSearch()
                } catch {
                    // Before the migrations have run, or while the store closes: the next round.
                    logger.debug("search indexing deferred", metadata: ["parley.error": "\(error)"])
                }
            }
        }
        try? await gracefulShutdown()
        indexing.cancel()
        _ = await indexing.value
        try? await indexPendingSearch()
        try close()
    }

    /// How often new messages are added to the full-text index (a search adds them at once).
    static let searchIndexInterval: Duration = .milliseconds(250)

    /// Adds the messages sent since the last round to the full-text index, in one transaction;
    /// nothing to do costs one read.
    func indexPendingSearch() async throws {
        guard try await pool.read({ db in try Self.searchPending(db) }) else { return }
        try await pool.write { db in try Self.indexPendingSearch(db) }
    }

    static func searchPending(_ db: Database) throws -> Bool {
        let indexed = try Int64.fetchOne(db.cachedStatement(sql: "SELECT indexed FROM search_state WHERE id = 1")) ?? 0
        let top = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(search_id) FROM messages")) ?? 0
        return top > indexed
    }

    static func indexPendingSearch(_ db: Database) throws {
        let indexed = try Int64.fetchOne(db.cachedStatement(sql: "SELECT indexed FROM search_state WHERE id = 1")) ?? 0
        guard let top = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(search_id) FROM messages")), top > indexed else { return }
        try db.cachedStatement(
            sql: """
                INSERT INTO message_search (rowid, body, conv)
                SELECT search_id, body, 'c' || replace(conversation_id, '-', '') FROM messages
                WHERE search_id > ? AND search_id <= ? AND deleted_at IS NULL ORDER BY search_id
                """
        ).execute(arguments: [indexed, top])
        try db.cachedStatement(sql: "UPDATE search_state SET indexed = ? WHERE id = 1").execute(arguments: [top])
    }

    /// Checkpoints the write-ahead log into the database file (so the file alone is a complete copy)
    /// and closes the database; later calls fail.
    public func close() throws {
        try pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        try pool.close()
        logger.info("SQLite store closed")
    }

    // MARK: Users

    public func createUser(_ user: NewUser) async throws -> User {
        try await pool.write { db in
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM users WHERE username = ?"), arguments: [user.username]) != nil {
                throw ParleyError.conflict("That username is taken.", code: "username_taken")
            }
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM users WHERE email = ?"), arguments: [user.email]) != nil {
                throw ParleyError.conflict("That email address is already registered.", code: "email_taken")
            }
            try db.cachedStatement(sql: "INSERT INTO users (id, username, email, display_name, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)")
                .execute(
                    arguments: [user.id.lowercased, user.username, user.email, user.displayName, user.passwordHash, user.createdAt.millis]
                )
        }
        return User(
            id: user.id, username: user.username, email: user.email, displayName: user.displayName, createdAt: user.createdAt.truncatedToMillis)
    }

    public func user(id: UUID) async throws -> User? {
        try await pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.userColumns) FROM users WHERE id = ?"), arguments: [id.lowercased]).map(Self.user)
        }
    }

    public func credentials(login: String) async throws -> UserCredentials? {
        try await pool.read { db in
            let column = login.contains("@") ? "email" : "username"
            return try Row.fetchOne(
                db.cachedStatement(sql: "SELECT \(Self.userColumns), password_hash FROM users WHERE \(column) = ?"),
                arguments: [login.lowercased()]
            ).map { UserCredentials(user: Self.user($0), passwordHash: $0["password_hash"]) }
        }
    }

    public func searchUsers(query: String, limit: Int) async throws -> [User] {
        let pattern = Self.likePattern(query.lowercased())
        return try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.userColumns) FROM users
                        WHERE username LIKE ? ESCAPE '\\' OR display_name LIKE ? ESCAPE '\\'
                        ORDER BY (username LIKE ? ESCAPE '\\') DESC, username
                        LIMIT ?
                        """),
                arguments: ["%" + pattern + "%", "%" + pattern + "%", pattern + "%", limit]
            ).map(Self.user)
        }
    }

    public func users(ids: [UUID]) async throws -> [User] {
        guard !ids.isEmpty else { return [] }
        return try await pool.read { db in
            try Row.fetchAll(
                db.makeStatement(sql: "SELECT \(Self.userColumns) FROM users WHERE id IN (\(Self.placeholders(ids.count)))"),
                arguments: StatementArguments(ids.map(\.lowercased))
            ).map(Self.user)
        }
    }

    public func setLastSeen(userID: UUID, at: Date) async throws {
        try await pool.write { db in
            try db.cachedStatement(sql: "UPDATE users SET last_seen_at = ? WHERE id = ?").execute(arguments: [at.millis, userID.lowercased])
        }
    }

    public func lastSeen(userIDs: [UUID]) async throws -> [UUID: Date] {
        guard !userIDs.isEmpty else { return [:] }
        return try await pool.read { db in
            let rows = try Row.fetchAll(
                db.makeStatement(
                    sql: "SELECT id, last_seen_at FROM users WHERE last_seen_at IS NOT NULL AND id IN (\(Self.placeholders(userIDs.count)))"),
                arguments: StatementArguments(userIDs.map(\.lowercased))
            )
            return Dictionary(uniqueKeysWithValues: rows.map { (Self.uuid($0["id"]), Self.date($0["last_seen_at"])) })
        }
    }

    // MARK: Sessions

    public func createSession(id: UUID, userID: UUID, refreshTokenHash: String, expiresAt: Date, userAgent: String?, now: Date) async throws
        -> Session
    {
        try await pool.write { db in
            try db.cachedStatement(sql: "INSERT INTO sessions (id, user_id, created_at, expires_at, user_agent) VALUES (?, ?, ?, ?, ?)").execute(
                arguments: [id.lowercased, userID.lowercased, now.millis, expiresAt.millis, userAgent]
            )
            try db.cachedStatement(sql: "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)").execute(
                arguments: [refreshTokenHash, id.lowercased, now.millis]
            )
        }
        return Session(
            id: id, userID: userID, createdAt: now.truncatedToMillis, expiresAt: expiresAt.truncatedToMillis, revokedAt: nil, userAgent: userAgent)
    }

    public func sessions(userID: UUID, now: Date) async throws -> [Session] {
        try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT * FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?
                        ORDER BY COALESCE(last_used_at, created_at) DESC, id DESC
                        """),
                arguments: [userID.lowercased, now.millis]
            ).map(Self.session)
        }
    }

    public func session(id: UUID) async throws -> Session? {
        try await pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM sessions WHERE id = ?"), arguments: [id.lowercased]).map(Self.session)
        }
    }

    public func rotateRefreshToken(presentedHash: String, newHash: String, now: Date) async throws -> RefreshOutcome {
        try await pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT t.spent_at, s.* FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
                            WHERE t.hash = ?
                            """),
                    arguments: [presentedHash]
                )
            else { return .invalid }
            var session = Self.session(row)
            guard session.isActive(at: now) else { return .invalid }
            if (row["spent_at"] as Int64?) != nil {
                try db.cachedStatement(sql: "UPDATE sessions SET revoked_at = ? WHERE id = ?").execute(arguments: [now.millis, session.id.lowercased])
                return .reused(session)
            }
            try db.cachedStatement(sql: "UPDATE refresh_tokens SET spent_at = ? WHERE hash = ?").execute(arguments: [now.millis, presentedHash])
            try db.cachedStatement(sql: "UPDATE sessions SET last_used_at = ? WHERE id = ?").execute(arguments: [now.millis, session.id.lowercased])
            session.lastUsedAt = now.truncatedToMillis
            try db.cachedStatement(sql: "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)").execute(
                arguments: [newHash, session.id.lowercased, now.millis]
            )
            return .rotated(session)
        }
    }

    public func revokeSession(id: UUID, now: Date) async throws {
        try await pool.write { db in
            try db.cachedStatement(sql: "UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL").execute(
                arguments: [now.millis, id.lowercased]
            )
        }
    }

    public func setPassword(userID: UUID, passwordHash: String, keeping: UUID, now: Date) async throws -> [UUID] {
        try await pool.write { db in
            try db.cachedStatement(sql: "UPDATE users SET password_hash = ? WHERE id = ?").execute(arguments: [passwordHash, userID.lowercased])
            return try String.fetchAll(
                db.cachedStatement(
                    sql: """
                        UPDATE sessions SET revoked_at = ?
                        WHERE user_id = ? AND id <> ? AND revoked_at IS NULL AND expires_at > ? RETURNING id
                        """),
                arguments: [now.millis, userID.lowercased, keeping.lowercased, now.millis]
            ).map(Self.uuid)
        }
    }

    // MARK: Failed logins

    public func loginFailures(key: String) async throws -> LoginFailures? {
        try await pool.read { db in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT failures, last_failure_at, next_allowed_at FROM login_failures WHERE key = ?"), arguments: [key]
            )
            .map {
                LoginFailures(count: $0["failures"], lastFailureAt: Self.date($0["last_failure_at"]), nextAllowedAt: Self.date($0["next_allowed_at"]))
            }
        }
    }

    public func reserveLoginAttempt(key: String, now: Date, forgetBefore: Date, delay: LoginDelay) async throws -> LoginAttempt {
        // One write transaction: SQLite runs them one at a time, so the read and the update are atomic.
        try await pool.write { db in
            var count = 1
            if let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT failures, last_failure_at, next_allowed_at FROM login_failures WHERE key = ?"), arguments: [key]),
                (row["last_failure_at"] as Int64) >= forgetBefore.millis
            {
                let next: Int64 = row["next_allowed_at"]
                if next > now.millis { return .delayed(until: Self.date(next)) }
                count = (row["failures"] as Int) + 1
            }
            let next = now + TimeInterval(delay.seconds(after: count))
            try db.cachedStatement(
                sql: """
                    INSERT INTO login_failures (key, failures, last_failure_at, next_allowed_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (key) DO UPDATE SET
                        failures = excluded.failures, last_failure_at = excluded.last_failure_at, next_allowed_at = excluded.next_allowed_at
                    """
            ).execute(arguments: [key, count, now.millis, next.millis])
            try db.cachedStatement(sql: "DELETE FROM login_failures WHERE last_failure_at < ? AND key <> ?").execute(
                arguments: [forgetBefore.millis, key])
            return .counted(count)
        }
    }

    public func clearLoginFailures(key: String) async throws {
        try await pool.write { db in
            try db.cachedStatement(sql: "DELETE FROM login_failures WHERE key = ?").execute(arguments: [key])
        }
    }

    // MARK: Conversations

    public func findOrCreateDirectConversation(between a: UUID, and b: UUID, now: Date) async throws -> (Conversation, created: Bool) {
        let key = [a.lowercased, b.lowercased].sorted().joined(separator: ":")
        return try await pool.write { db in
            if let id = try String.fetchOne(db.cachedStatement(sql: "SELECT id FROM conversations WHERE direct_key = ?"), arguments: [key]),
                let existing = try Self.conversation(db, id: id)
            {
                return (existing, false)
            }
            let id = UUID.v7(now: now).lowercased
            try db.cachedStatement(sql: "INSERT INTO conversations (id, type, direct_key, created_at, updated_at) VALUES (?, 'direct', ?, ?, ?)")
                .execute(
                    arguments: [id, key, now.millis, now.millis]
                )
            for user in [a, b] {
                try Self.insertMember(db, conversationID: id, userID: user.lowercased, role: .member, now: now)
            }
            guard let created = try Self.conversation(db, id: id) else { throw ParleyError.internal(detail: "direct conversation vanished") }
            try self.emit(db) { try .conversationCreated(created, node: $0) }
            return (created, true)
        }
    }

    public func createGroup(id: UUID, name: String, ownerID: UUID, memberIDs: [UUID], passcodeHash: String?, now: Date) async throws -> Conversation {
        try await pool.write { db in
            try db.cachedStatement(
                sql: "INSERT INTO conversations (id, type, name, passcode_hash, created_at, updated_at) VALUES (?, 'group', ?, ?, ?, ?)"
            ).execute(
                arguments: [id.lowercased, name, passcodeHash, now.millis, now.millis]
            )
            try Self.insertMember(db, conversationID: id.lowercased, userID: ownerID.lowercased, role: .owner, now: now)
            for member in memberIDs where member != ownerID {
                try Self.insertMember(db, conversationID: id.lowercased, userID: member.lowercased, role: .member, now: now)
            }
            guard let created = try Self.conversation(db, id: id.lowercased) else { throw ParleyError.internal(detail: "group vanished") }
            try self.emit(db) { try .conversationCreated(created, node: $0) }
            return created
        }
    }

    public func conversation(id: UUID) async throws -> Conversation? {
        try await pool.read { db in try Self.conversation(db, id: id.lowercased) }
    }

    public func conversations(for userID: UUID, limit: Int) async throws -> [Conversation] {
        try await pool.read { db in
            let ids = try String.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT c.id FROM members m JOIN conversations c ON c.id = m.conversation_id
                        WHERE m.user_id = ? ORDER BY c.updated_at DESC, c.id DESC LIMIT ?
                        """),
                arguments: [userID.lowercased, limit]
            )
            var mentionCounts: [String: Int64] = [:]
            let counts = try Row.fetchCursor(
                db.cachedStatement(
                    sql: """
                        SELECT mt.conversation_id, COUNT(*) FROM mentions mt
                        JOIN members mb ON mb.conversation_id = mt.conversation_id AND mb.user_id = mt.user_id
                        WHERE mt.user_id = ? AND mt.seq > mb.read_seq GROUP BY mt.conversation_id
                        """),
                arguments: [userID.lowercased])
            while let row = try counts.next() { mentionCounts[row[0]] = row[1] }
            return try ids.compactMap { id in
                var conversation = try Self.conversation(db, id: id)
                conversation?.mentionCount = mentionCounts[id] ?? 0
                return conversation
            }
        }
    }

    public func member(conversationID: UUID, userID: UUID) async throws -> Member? {
        try await pool.read { db in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM members WHERE conversation_id = ? AND user_id = ?"),
                arguments: [conversationID.lowercased, userID.lowercased]
            ).map(Self.member)
        }
    }

    public func memberIDs(conversationID: UUID) async throws -> [UUID] {
        try await pool.read { db in
            try String.fetchAll(
                db.cachedStatement(sql: "SELECT user_id FROM members WHERE conversation_id = ?"), arguments: [conversationID.lowercased]
            )
            .map(Self.uuid)
        }
    }

    public func contacts(of userID: UUID, maxGroupSize: Int, limit: Int) async throws -> [UUID] {
        try await pool.read { db in
            try String.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT DISTINCT other.user_id FROM members mine
                        JOIN members other ON other.conversation_id = mine.conversation_id AND other.user_id != mine.user_id
                        WHERE mine.user_id = ?
                          AND (SELECT COUNT(*) FROM members n WHERE n.conversation_id = mine.conversation_id) <= ?
                        LIMIT ?
                        """),
                arguments: [userID.lowercased, maxGroupSize, limit]
            ).map(Self.uuid)
        }
    }

    public func passcodeHash(conversationID: UUID) async throws -> String? {
        try await pool.read { db in
            try String.fetchOne(
                db.cachedStatement(sql: "SELECT passcode_hash FROM conversations WHERE id = ?"), arguments: [conversationID.lowercased])
        }
    }

    public func updateGroup(id: UUID, name: String?, passcodeHash: String??, now: Date) async throws -> Conversation? {
        try await pool.write { db in
            var changed = false
            if let name {
                try db.cachedStatement(sql: "UPDATE conversations SET name = ?1 WHERE id = ?2 AND name IS NOT ?1").execute(arguments: [
                    name, id.lowercased,
                ])
                changed = changed || db.changesCount > 0
            }
            if let passcodeHash {
                try db.cachedStatement(sql: "UPDATE conversations SET passcode_hash = ?1 WHERE id = ?2 AND passcode_hash IS NOT ?1").execute(
                    arguments: [passcodeHash, id.lowercased])
                changed = changed || db.changesCount > 0
            }
            let updated = try Self.conversation(db, id: id.lowercased)
            if let updated, changed {
                try self.emit(db) { try .conversationUpdated(updated, at: now, node: $0) }
            }
            return updated
        }
    }

    public func deleteConversation(id: UUID) async throws {
        try await pool.write { db in
            try Self.releaseAttachments(db, conversationID: id.lowercased, seq: nil, at: Date.now.millis)
            try db.cachedStatement(sql: "DELETE FROM conversations WHERE id = ?").execute(arguments: [id.lowercased])
            if db.changesCount > 0 { try self.emit(db) { .conversationDeleted(id, at: .now, node: $0) } }
        }
    }

    public func addMembers(conversationID: UUID, userIDs: [UUID], role: MemberRole, now: Date) async throws -> [UUID] {
        try await pool.write { db in
            guard
                try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM conversations WHERE id = ?"), arguments: [conversationID.lowercased]) != nil
            else {
                throw ParleyError.conversationNotFound
            }
            var added: [UUID] = []
            for user in userIDs {
                try db.cachedStatement(
                    sql: """
                        INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)
                        ON CONFLICT (conversation_id, user_id) DO NOTHING
                        """
                ).execute(
                    arguments: [conversationID.lowercased, user.lowercased, role.rawValue, now.millis]
                )
                if db.changesCount > 0 {
                    added.append(user)
                    try self.emit(db) { try .memberAdded(conversationID, userID: user, role: role, at: now, node: $0) }
                }
            }
            return added
        }
    }

    public func removeMember(conversationID: UUID, userID: UUID, now: Date) async throws {
        let cid = conversationID.lowercased
        try await pool.write { db in
            let role = try String.fetchOne(
                db.cachedStatement(sql: "DELETE FROM members WHERE conversation_id = ? AND user_id = ? RETURNING role"),
                arguments: [cid, userID.lowercased]
            )
            if role != nil { try self.emit(db) { try .memberRemoved(conversationID, userID: userID, at: now, node: $0) } }
            guard role == MemberRole.owner.rawValue else { return }
            let successor = try String.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT user_id FROM members WHERE conversation_id = ?
                        ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1
                        """),
                arguments: [cid]
            )
            if let successor {
                try db.cachedStatement(sql: "UPDATE members SET role = 'owner' WHERE conversation_id = ? AND user_id = ?").execute(
                    arguments: [cid, successor]
                )
                try self.emit(db) { try .memberRoleChanged(conversationID, userID: Self.uuid(successor), role: .owner, at: now, node: $0) }
            } else {
                try db.cachedStatement(sql: "DELETE FROM conversations WHERE id = ?").execute(arguments: [cid])
                try self.emit(db) { .conversationDeleted(conversationID, at: now, node: $0) }
            }
        }
    }

    public func setRole(conversationID: UUID, userID: UUID, role: MemberRole) async throws {
        try await pool.write { db in
            try db.cachedStatement(sql: "UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ? AND role != ?").execute(
                arguments: [role.rawValue, conversationID.lowercased, userID.lowercased, role.rawValue]
            )
            if db.changesCount > 0 {
                try self.emit(db) { try .memberRoleChanged(conversationID, userID: userID, role: role, at: .now, node: $0) }
            }
        }
    }

    // MARK: Messages

    public func appendBatch(_ requests: [SendRequest]) async throws -> [Result<SendResult, any Error>] {
        try await pool.write { [outboxNode] db in try Self.appendBatch(requests, outboxNode: outboxNode, db: db) }
    }

    /// Writes one batch of sends inside the caller's transaction.
    ///
    /// Per message this costs one `INSERT OR IGNORE`; everything per conversation (membership,
    /// the next seq, the new lastSeq, the senders' watermarks) is read or written once per batch.
    /// Nothing is written for a request that fails (not a member), so no savepoints are needed: a
    /// replayed clientMsgId hits the dedupe index, inserts nothing, and returns the original.
    static func appendBatch(_ requests: [SendRequest], outboxNode: String?, db: Database) throws -> [Result<SendResult, any Error>] {
        struct ConversationState {
            /// The members as ids, converted once per batch and shared by every message's recipients.
            var members: [UUID]
            var memberSet: Set<String>
            var firstSeq: Int64
            var lastSeq: Int64
            var updatedAt: Int64 = 0
            /// Highest seq each sender wrote in this batch.
            var senderSeqs: [String: Int64] = [:]
        }
        var conversations: [String: ConversationState] = [:]
        // search_id: the next key of the full-text index (read from its index, not a scan).
        let insert = try db.cachedStatement(
            sql: """
                INSERT OR IGNORE INTO messages (conversation_id, seq, id, sender_id, body, client_msg_id, created_at, reply_to_seq, mentions, search_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT IFNULL(MAX(search_id), 0) + 1 FROM messages))
                """
        )
        var results: [Result<SendResult, any Error>] = []
        results.reserveCapacity(requests.count)
        for request in requests {
            let cid = request.conversationID.lowercased
            let sender = request.senderID.lowercased
            if conversations[cid] == nil {
                guard let lastSeq = try Int64.fetchOne(db.cachedStatement(sql: "SELECT last_seq FROM conversations WHERE id = ?"), arguments: [cid])
                else {
                    results.append(.failure(ParleyError.conversationNotFound))
                    continue
                }
                let members = try String.fetchAll(db.cachedStatement(sql: "SELECT user_id FROM members WHERE conversation_id = ?"), arguments: [cid])
                conversations[cid] = ConversationState(
                    members: members.map(uuid), memberSet: Set(members), firstSeq: lastSeq, lastSeq: lastSeq)
            }
            guard var state = conversations[cid], state.memberSet.contains(sender) else {
                results.append(.failure(ParleyError.conversationNotFound))
                continue
            }
            let seq = state.lastSeq + 1
            let createdAt = request.createdAt.millis
            /// A request that names what it may not is answered as a replay if it is one (its
            /// original, whatever it names now), else with `error`.
            func refuse(_ error: ParleyError) throws {
                if let original = try replayed(db, conversationID: cid, sender: sender, clientMsgID: request.clientMsgID) {
                    results.append(.success(SendResult(message: original, replayed: true)))
                } else {
                    results.append(.failure(error))
                }
            }
            var replyTo: MessageReference?
            if let replyToID = request.replyToID {
                guard
                    let row = try Row.fetchOne(
                        db.cachedStatement(sql: "SELECT seq, sender_id, body FROM messages WHERE id = ? AND conversation_id = ?"),
                        arguments: [replyToID.lowercased, cid])
                else {
                    try refuse(.invalidReply)
                    continue
                }
                replyTo = MessageReference(id: replyToID, seq: row[0], senderID: uuid(row[1]), preview: MessageReference.preview(of: row[2]))
            }
            guard let attachments = try attachable(db, ids: request.attachmentIDs, sender: sender) else {
                try refuse(.invalidAttachment)
                continue
            }
            let mentions = try resolveMentions(db, conversationID: cid, usernames: request.mentionedUsernames)
            try insert.execute(arguments: [
                cid, seq, request.messageID.lowercased, sender, request.body, request.clientMsgID, createdAt, replyTo?.seq,
                mentionsText(mentions),
            ])
            if db.changesCount == 0 {
                // The dedupe index already holds this (sender, clientMsgId): a replay.
                try refuse(.internal(detail: "message insert was ignored without a duplicate"))
                continue
            }
            try insertMentions(db, conversationID: cid, seq: seq, users: mentions)
            try attach(db, attachments, conversationID: cid, seq: seq, messageID: request.messageID.lowercased, at: createdAt)
            state.lastSeq = seq
            state.updatedAt = max(state.updatedAt, createdAt)
            state.senderSeqs[sender] = seq
            conversations[cid] = state
            let message = request.message(seq: seq, replyTo: replyTo, mentions: mentions, attachments: attachments)
            if let outboxNode {
                try writeEvent(.messageCreated(message, node: outboxNode), db: db)
            }
            results.append(
                .success(
                    SendResult(
                        message: message,
                        replayed: false,
                        recipients: state.members
                    )
                )
            )
        }
        for (cid, state) in conversations where state.lastSeq > state.firstSeq {
            try db.cachedStatement(sql: "UPDATE conversations SET last_seq = ?, updated_at = MAX(updated_at, ?) WHERE id = ?").execute(
                arguments: [state.lastSeq, state.updatedAt, cid]
            )
            // A sender has read and received everything up to their own message.
            for (sender, seq) in state.senderSeqs {
                try db.cachedStatement(
                    sql: """
                        UPDATE members SET read_seq = MAX(read_seq, ?), delivered_seq = MAX(delivered_seq, ?)
                        WHERE conversation_id = ? AND user_id = ?
                        """
                ).execute(arguments: [seq, seq, cid, sender])
            }
        }
        return results
    }

    /// The message a sender already sent with this clientMsgId, if any.
    static func replayed(_ db: Database, conversationID: String, sender: String, clientMsgID: String?) throws -> Message? {
        guard let clientMsgID,
            let row = try Row.fetchOne(
                db.cachedStatement(sql: messageSelect + " WHERE m.conversation_id = ? AND m.sender_id = ? AND m.client_msg_id = ?"),
                arguments: [conversationID, sender, clientMsgID])
        else { return nil }
        return try messages(db, rows: [row]).first
    }

    // MARK: Outbox

    /// Writes one event to the outbox, inside the caller's transaction.
    static func writeEvent(_ event: StreamEvent, db: Database) throws {
        try db.cachedStatement(
            sql: "INSERT INTO outbox (event_id, topic, key, type, envelope, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [event.id.lowercased, event.topic.rawValue, event.key, event.type, Data(try event.envelope()), Date.now.millis])
    }

    /// Writes the event `make` builds to the outbox inside the caller's transaction, when the store
    /// keeps one.
    private func emit(_ db: Database, _ make: (String) throws -> StreamEvent) throws {
        guard let outboxNode else { return }
        try Self.writeEvent(try make(outboxNode), db: db)
    }

    public func appendEvents(_ events: [StreamEvent]) async throws {
        guard !events.isEmpty else { return }
        try await pool.write { db in
            for event in events { try Self.writeEvent(event, db: db) }
        }
    }

    public func pendingEvents(after position: Int64?, limit: Int) async throws -> [OutboxRecord] {
        try await pool.read { db in
            let rows = try Row.fetchCursor(
                db.cachedStatement(
                    sql: "SELECT position, event_id, topic, key, type, envelope, created_at FROM outbox WHERE position > ? ORDER BY position LIMIT ?"),
                arguments: [position ?? 0, limit])
            var records: [OutboxRecord] = []
            records.reserveCapacity(limit)
            // Columns by index: the relay reads thousands of rows a second, and name lookups are
            // case-insensitive string compares.
            while let row = try rows.next() {
                let position: Int64 = row[0]
                let eventText: String = row[1]
                guard let eventID = UUID(canonical: eventText), let topic = StreamTopic(rawValue: row[2]) else {
                    throw ParleyError.internal(detail: "unreadable outbox row \(position)")
                }
                let envelope: Data = row[5]
                records.append(
                    OutboxRecord(
                        position: position, eventID: eventID, topic: topic, key: row[3], type: row[4], envelope: Array(envelope),
                        createdAt: Self.date(row[6])))
            }
            return records
        }
    }

    public func removeEvents(_ positions: [Int64]) async throws {
        guard !positions.isEmpty else { return }
        // One statement per run of consecutive positions (a relay's batch is usually one run).
        var runs: [(Int64, Int64)] = []
        for position in positions.sorted() {
            if let last = runs.last, position == last.1 + 1 {
                runs[runs.count - 1].1 = position
            } else if runs.last?.1 != position {
                runs.append((position, position))
            }
        }
        try await pool.write { [runs] db in
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE position BETWEEN ? AND ?")
            for (first, last) in runs { try delete.execute(arguments: [first, last]) }
        }
    }

    public func outboxBacklog() async throws -> (count: Int, oldest: Date?) {
        try await pool.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS count, MIN(created_at) AS oldest FROM outbox")
            let oldest: Int64? = row?["oldest"]
            return (row?["count"] ?? 0, oldest.map(Self.date))
        }
    }

    public func trimOutbox(keepingNewest limit: Int) async throws -> Int {
        try await pool.write { db in
            try db.execute(
                sql: "DELETE FROM outbox WHERE position <= (SELECT position FROM outbox ORDER BY position DESC LIMIT 1 OFFSET ?)",
                arguments: [limit])
            return db.changesCount
        }
    }

    public func messages(conversationID: UUID, member: UUID?, cursor: PageCursor, limit: Int) async throws -> MessagePage {
        let cid = conversationID.lowercased
        return try await pool.read { db in
            if let member {
                let isMember = try Bool.fetchOne(
                    db.cachedStatement(sql: "SELECT 1 FROM members WHERE conversation_id = ? AND user_id = ?"), arguments: [cid, member.lowercased])
                guard isMember != nil else { throw ParleyError.conversationNotFound }
            }
            let rows: [Row]
            switch cursor {
            case .latest:
                rows = try Row.fetchAll(
                    db.cachedStatement(sql: Self.messageSelect + " WHERE m.conversation_id = ? ORDER BY m.seq DESC LIMIT ?"),
                    arguments: [cid, limit + 1]
                )
            case .before(let seq):
                rows = try Row.fetchAll(
                    db.cachedStatement(sql: Self.messageSelect + " WHERE m.conversation_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?"),
                    arguments: [cid, seq, limit + 1]
                )
            case .after(let seq):
                rows = try Row.fetchAll(
                    db.cachedStatement(sql: Self.messageSelect + " WHERE m.conversation_id = ? AND m.seq > ? ORDER BY m.seq ASC LIMIT ?"),
                    arguments: [cid, seq, limit + 1]
                )
            }
            var messages = try Self.messages(db, rows: Array(rows.prefix(limit)))
            if case .after = cursor {} else { messages.reverse() }
            return MessagePage(messages: messages, hasMore: rows.count > limit)
        }
    }

    public func advanceWatermark(_ kind: Watermark, conversationID: UUID, userID: UUID, to seq: Int64) async throws -> WatermarkUpdate {
        let cid = conversationID.lowercased
        let uid = userID.lowercased
        return try await pool.write { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT m.read_seq, m.delivered_seq, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id
                            WHERE m.conversation_id = ? AND m.user_id = ?
                            """),
                    arguments: [cid, uid]
                )
            else { throw ParleyError.conversationNotFound }
            let target = min(seq, row["last_seq"] as Int64)
            let current: Int64 = kind == .read ? row["read_seq"] : row["delivered_seq"]
            guard target > current else { return WatermarkUpdate(value: current, advanced: false) }
            switch kind {
            case .read:
                try db.cachedStatement(
                    sql: """
                        UPDATE members SET read_seq = ?1, delivered_seq = MAX(delivered_seq, ?1)
                        WHERE conversation_id = ?2 AND user_id = ?3
                        """
                ).execute(
                    arguments: [target, cid, uid]
                )
            case .delivered:
                try db.cachedStatement(sql: "UPDATE members SET delivered_seq = ? WHERE conversation_id = ? AND user_id = ?").execute(
                    arguments: [target, cid, uid]
                )
            }
            try self.emit(db) { try .receipt(kind, conversationID: conversationID, userID: userID, seq: target, at: .now, node: $0) }
            return WatermarkUpdate(value: target, advanced: true)
        }
    }

    public func ping() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }
}
