import Logging
import ParleyCore
import PostgresNIO

/// Versioned schema migrations for PostgreSQL, applied in order at start inside one transaction
/// that holds an advisory lock, so several nodes starting together migrate exactly once.
/// Never edit a shipped migration; add a new one.
enum PostgresSchema {
    struct Migration {
        var version: Int
        var name: String
        var statements: [PostgresQuery]
    }

    /// Any constant shared by every Parley node; it names the advisory lock.
    static let lockKey: Int64 = 0x7061_726C_6579

    static let migrations: [Migration] = [
        Migration(
            version: 1,
            name: "initial",
            statements: [
                """
                CREATE TABLE users (
                    id uuid PRIMARY KEY,
                    username text NOT NULL UNIQUE,
                    email text NOT NULL UNIQUE,
                    display_name text NOT NULL,
                    password_hash text NOT NULL,
                    created_at bigint NOT NULL,
                    last_seen_at bigint
                )
                """,
                "CREATE INDEX users_display_name ON users (lower(display_name))",
                """
                CREATE TABLE sessions (
                    id uuid PRIMARY KEY,
                    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    created_at bigint NOT NULL,
                    expires_at bigint NOT NULL,
                    revoked_at bigint
                )
                """,
                "CREATE INDEX sessions_user ON sessions (user_id)",
                """
                CREATE TABLE refresh_tokens (
                    hash text PRIMARY KEY,
                    session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                    created_at bigint NOT NULL,
                    spent_at bigint
                )
                """,
                "CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id)",
                """
                CREATE TABLE conversations (
                    id uuid PRIMARY KEY,
                    type text NOT NULL CHECK (type IN ('direct', 'group')),
                    name text,
                    direct_key text UNIQUE,
                    passcode_hash text,
                    last_seq bigint NOT NULL DEFAULT 0,
                    created_at bigint NOT NULL,
                    updated_at bigint NOT NULL
                )
                """,
                """
                CREATE TABLE members (
                    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
                    read_seq bigint NOT NULL DEFAULT 0,
                    delivered_seq bigint NOT NULL DEFAULT 0,
                    joined_at bigint NOT NULL,
                    PRIMARY KEY (conversation_id, user_id)
                )
                """,
                "CREATE INDEX members_user ON members (user_id)",
                """
                CREATE TABLE messages (
                    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                    seq bigint NOT NULL,
                    id uuid NOT NULL UNIQUE,
                    sender_id uuid NOT NULL,
                    body text NOT NULL,
                    client_msg_id text,
                    created_at bigint NOT NULL,
                    PRIMARY KEY (conversation_id, seq)
                )
                """,
                """
                CREATE UNIQUE INDEX messages_dedupe ON messages (conversation_id, sender_id, client_msg_id)
                WHERE client_msg_id IS NOT NULL
                """,
            ]
        ),
        Migration(
            version: 2,
            name: "outbox",
            statements: [
                // Events of committed changes, waiting for a relay. `shard` (a hash of the key)
                // lets several nodes relay at once, each taking whole shards, so that one key's
                // events are always relayed by one node in position order.
                """
                CREATE TABLE outbox (
                    position bigserial PRIMARY KEY,
                    shard integer NOT NULL,
                    event_id uuid NOT NULL,
                    topic text NOT NULL,
                    key text NOT NULL,
                    type text NOT NULL,
                    envelope text NOT NULL,
                    created_at bigint NOT NULL
                )
                """,
                "CREATE INDEX outbox_shard_position ON outbox (shard, position)",
            ]
        ),
        Migration(
            version: 3,
            name: "outbox leases",
            statements: [
                // Which node relays each outbox shard, until when; `node` is empty for a free shard.
                """
                CREATE TABLE outbox_leases (
                    shard integer PRIMARY KEY,
                    node text NOT NULL DEFAULT '',
                    expires_at timestamptz NOT NULL DEFAULT '-infinity'
                )
                """,
                "INSERT INTO outbox_leases (shard) SELECT generate_series(0, \(StreamEvent.shardCount - 1))",
                // The relays alive (their last renewal), for sharing the shards out fairly.
                "CREATE TABLE outbox_relays (node text PRIMARY KEY, seen_at timestamptz NOT NULL)",
                // The backlog's oldest event without a scan.
                "CREATE INDEX outbox_created_at ON outbox (created_at)",
            ]
        ),
        Migration(
            version: 4,
            name: "message features",
            statements: [
                // Edits, deletions, replies, mentions, reactions, the change sequence for sync, and
                // full-text search (`search`: the body's tsvector in the configured language plus a
                // lexeme naming the conversation, so a search can be limited to the caller's
                // conversations inside the index; null once deleted; `search_settings` records which
                // language the index holds).
                "ALTER TABLE conversations ADD COLUMN change_seq bigint NOT NULL DEFAULT 0",
                """
                ALTER TABLE messages ADD COLUMN edited_at bigint, ADD COLUMN deleted_at bigint, ADD COLUMN reply_to_seq bigint,
                  ADD COLUMN mentions uuid[], ADD COLUMN reaction_count integer NOT NULL DEFAULT 0,
                  ADD COLUMN change_seq bigint NOT NULL DEFAULT 0, ADD COLUMN change_kind text, ADD COLUMN search tsvector
                """,
                "CREATE INDEX messages_changes ON messages (conversation_id, change_seq) WHERE change_seq > 0",
                """
                CREATE TABLE reactions (
                    id bigserial PRIMARY KEY,
                    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                    seq bigint NOT NULL,
                    emoji text NOT NULL,
                    user_id uuid NOT NULL,
                    created_at bigint NOT NULL,
                    UNIQUE (conversation_id, seq, emoji, user_id)
                )
                """,
                """
                CREATE TABLE mentions (
                    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                    user_id uuid NOT NULL,
                    seq bigint NOT NULL,
                    PRIMARY KEY (conversation_id, user_id, seq)
                )
                """,
                "CREATE INDEX mentions_user ON mentions (user_id)",
                "UPDATE messages SET search = to_tsvector('simple', body) || ('c' || replace(conversation_id::text, '-', ''))::tsvector",
                "CREATE INDEX messages_search ON messages USING gin (search)",
                "CREATE TABLE search_settings (id integer PRIMARY KEY CHECK (id = 1), language text NOT NULL)",
                "INSERT INTO search_settings (id, language) VALUES (1, 'simple')",
            ]
        ),
        Migration(
            version: 5,
            name: "attachments",
            statements: [
                // Uploads and the messages that carry them. No foreign key to conversations:
                // deleting a message or a conversation releases its attachments in the same
                // transaction, and their rows stay until the janitor has removed their blobs.
                """
                CREATE TABLE attachments (
                    id uuid PRIMARY KEY,
                    uploader_id uuid NOT NULL,
                    state text NOT NULL,
                    name text NOT NULL,
                    content_type text NOT NULL,
                    size bigint NOT NULL,
                    width integer,
                    height integer,
                    thumbnail boolean NOT NULL DEFAULT false,
                    conversation_id uuid,
                    seq bigint,
                    message_id uuid,
                    position integer NOT NULL DEFAULT 0,
                    created_at bigint NOT NULL,
                    state_at bigint NOT NULL
                )
                """,
                "CREATE INDEX attachments_message ON attachments (conversation_id, seq) WHERE conversation_id IS NOT NULL",
                "CREATE INDEX attachments_disposable ON attachments (state, created_at) WHERE state <> 'attached'",
                "CREATE INDEX attachments_uploader ON attachments (uploader_id, state)",
                "ALTER TABLE messages ADD COLUMN attachment_count integer NOT NULL DEFAULT 0",
            ]
        ),
        Migration(
            version: 6,
            name: "account_security",
            statements: [
                // Sessions people can recognise in a list, and failed logins per login key for the
                // delay after repeated failures (in the database, so every node applies it).
                "ALTER TABLE sessions ADD COLUMN user_agent text",
                "ALTER TABLE sessions ADD COLUMN last_used_at bigint",
                """
                CREATE TABLE login_failures (
                    key text PRIMARY KEY,
                    failures integer NOT NULL,
                    last_failure_at bigint NOT NULL,
                    next_allowed_at bigint NOT NULL
                )
                """,
                "CREATE INDEX login_failures_age ON login_failures (last_failure_at)",
            ]
        ),
    ]

    /// Applies every migration this database has not seen yet.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS parley_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                logger: logger
            )
            var applied: Set<Int> = []
            for try await version in try await connection.query("SELECT version FROM parley_schema_migrations", logger: logger).decode(Int.self) {
                applied.insert(version)
            }
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.statements {
                    try await connection.query(statement, logger: logger)
                }
                try await connection.query(
                    "INSERT INTO parley_schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger
                )
                logger.info("applied PostgreSQL migration", metadata: ["parley.migration": "\(migration.version)_\(migration.name)"])
            }
        }
    }

    /// Makes the search index hold `language`: checks that PostgreSQL knows the configuration (a
    /// start-up error naming the setting if not) and, when the index was built with another one,
    /// re-indexes every message under the migration lock.
    static func useSearchLanguage(_ language: String, _ client: PostgresClient, logger: Logger) async throws {
        let known = try await client.query("SELECT 1 FROM pg_ts_config WHERE cfgname = \(language)", logger: logger).decode(Int32.self)
        var exists = false
        for try await _ in known { exists = true }
        guard exists else {
            throw ParleyError.invalid(
                "PARLEY_SEARCH_LANGUAGE: PostgreSQL has no text search configuration named \"\(language)\" (see \\dF in psql).",
                code: "invalid_configuration")
        }
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            var current: String?
            for try await value in try await connection.query("SELECT language FROM search_settings WHERE id = 1", logger: logger).decode(
                String.self)
            {
                current = value
            }
            guard current != language else { return }
            logger.notice(
                "re-indexing messages for search", metadata: ["parley.search_language": "\(language)", "parley.previous": "\(current ?? "")"])
            try await connection.query(
                """
                UPDATE messages SET search = to_tsvector(\(language)::regconfig, body) || ('c' || replace(conversation_id::text, '-', ''))::tsvector
                WHERE deleted_at IS NULL
                """, logger: logger)
            try await connection.query("UPDATE search_settings SET language = \(language) WHERE id = 1", logger: logger)
        }
    }
}
