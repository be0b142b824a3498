import GRDB

/// Versioned schema migrations, applied in order at start. Never edit a shipped migration;
/// add a new one.
enum SQLiteSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1_initial") { db in
            try db.execute(
                sql: """
                    CREATE TABLE users (
                        id TEXT PRIMARY KEY NOT NULL,
                        username TEXT NOT NULL UNIQUE,
                        email TEXT NOT NULL UNIQUE,
                        display_name TEXT NOT NULL,
                        password_hash TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE INDEX users_display_name ON users(display_name COLLATE NOCASE);

                    CREATE TABLE sessions (
                        id TEXT PRIMARY KEY NOT NULL,
                        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                        created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL,
                        revoked_at INTEGER
                    );
                    CREATE INDEX sessions_user ON sessions(user_id);

                    CREATE TABLE refresh_tokens (
                        hash TEXT PRIMARY KEY NOT NULL,
                        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                        created_at INTEGER NOT NULL,
                        spent_at INTEGER
                    ) WITHOUT ROWID;
                    CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

                    CREATE TABLE conversations (
                        id TEXT PRIMARY KEY NOT NULL,
                        type TEXT NOT NULL CHECK (type IN ('direct', 'group')),
                        name TEXT,
                        direct_key TEXT UNIQUE,
                        passcode_hash TEXT,
                        last_seq INTEGER NOT NULL DEFAULT 0,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL
                    );

                    CREATE TABLE members (
                        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
                        read_seq INTEGER NOT NULL DEFAULT 0,
                        delivered_seq INTEGER NOT NULL DEFAULT 0,
                        joined_at INTEGER NOT NULL,
                        PRIMARY KEY (conversation_id, user_id)
                    ) WITHOUT ROWID;
                    CREATE INDEX members_user ON members(user_id);

                    CREATE TABLE messages (
                        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                        seq INTEGER NOT NULL,
                        id TEXT NOT NULL UNIQUE,
                        sender_id TEXT NOT NULL,
                        body TEXT NOT NULL,
                        client_msg_id TEXT,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (conversation_id, seq)
                    ) WITHOUT ROWID;
                    CREATE UNIQUE INDEX messages_dedupe
                        ON messages(conversation_id, sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
                    """
            )
        }
        migrator.registerMigration("v2_last_seen") { db in
            try db.execute(sql: "ALTER TABLE users ADD COLUMN last_seen_at INTEGER")
        }
        migrator.registerMigration("v3_outbox") { db in
            // Events of committed changes, waiting for the relay. AUTOINCREMENT: positions are
            // never reused, so a removed event's position cannot come back as a newer event.
            try db.execute(
                sql: """
                    CREATE TABLE outbox (
                        position INTEGER PRIMARY KEY AUTOINCREMENT,
                        event_id TEXT NOT NULL,
                        topic TEXT NOT NULL,
                        key TEXT NOT NULL,
                        type TEXT NOT NULL,
                        envelope BLOB NOT NULL,
                        created_at INTEGER NOT NULL
                    )
                    """
            )
        }
        migrator.registerMigration("v4_outbox_created_at") { db in
            // The backlog's count and oldest event from a small index instead of a scan of every
            // envelope.
            try db.execute(sql: "CREATE INDEX outbox_created_at ON outbox (created_at)")
        }
        return migrator
    }
}
