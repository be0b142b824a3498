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
        migrator.registerMigration("v5_message_features") { db in
            // Edits, deletions, replies, mentions, reactions, the change sequence for sync, and
            // full-text search.
            try db.execute(
                sql: """
                    ALTER TABLE conversations ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE messages ADD COLUMN edited_at INTEGER;
                    ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
                    ALTER TABLE messages ADD COLUMN reply_to_seq INTEGER;
                    ALTER TABLE messages ADD COLUMN mentions TEXT;
                    ALTER TABLE messages ADD COLUMN reaction_count INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE messages ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE messages ADD COLUMN change_kind TEXT;
                    ALTER TABLE messages ADD COLUMN search_id INTEGER;
                    CREATE INDEX messages_changes ON messages (conversation_id, change_seq) WHERE change_seq > 0;

                    -- Reactions in the order they were made (rowid).
                    CREATE TABLE reactions (
                        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                        seq INTEGER NOT NULL,
                        emoji TEXT NOT NULL,
                        user_id TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE UNIQUE INDEX reactions_unique ON reactions (conversation_id, seq, emoji, user_id);

                    -- Who is mentioned where; unread mentions are those above the member's read_seq.
                    CREATE TABLE mentions (
                        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                        user_id TEXT NOT NULL,
                        seq INTEGER NOT NULL,
                        PRIMARY KEY (conversation_id, user_id, seq)
                    ) WITHOUT ROWID;
                    CREATE INDEX mentions_user ON mentions (user_id);

                    -- Full-text index over the bodies, reading them from messages through a view (no
                    -- second copy). `conv` is a token naming the conversation, so that a search can
                    -- be limited to the caller's conversations inside the index. search_id is the
                    -- integer key FTS5 needs; the triggers keep the index in step with every insert,
                    -- edit, deletion and cascade.
                    WITH numbered AS (SELECT conversation_id, seq, row_number() OVER (ORDER BY created_at, id) AS n FROM messages)
                    UPDATE messages SET search_id = numbered.n FROM numbered
                    WHERE messages.conversation_id = numbered.conversation_id AND messages.seq = numbered.seq;
                    CREATE UNIQUE INDEX messages_search_id ON messages (search_id);
                    CREATE VIEW message_search_source AS
                        SELECT search_id, body, 'c' || replace(conversation_id, '-', '') AS conv FROM messages WHERE deleted_at IS NULL;
                    CREATE VIRTUAL TABLE message_search USING fts5 (
                        body, conv, content = 'message_search_source', content_rowid = 'search_id',
                        tokenize = 'unicode61 remove_diacritics 2'
                    );
                    INSERT INTO message_search (message_search) VALUES ('rebuild');
                    CREATE TRIGGER messages_search_insert AFTER INSERT ON messages
                    WHEN new.search_id IS NOT NULL AND new.deleted_at IS NULL BEGIN
                        INSERT INTO message_search (rowid, body, conv) VALUES (new.search_id, new.body, 'c' || replace(new.conversation_id, '-', ''));
                    END;
                    CREATE TRIGGER messages_search_delete AFTER DELETE ON messages
                    WHEN old.search_id IS NOT NULL AND old.deleted_at IS NULL BEGIN
                        INSERT INTO message_search (message_search, rowid, body, conv)
                        VALUES ('delete', old.search_id, old.body, 'c' || replace(old.conversation_id, '-', ''));
                    END;
                    CREATE TRIGGER messages_search_update AFTER UPDATE OF body ON messages WHEN old.search_id IS NOT NULL BEGIN
                        INSERT INTO message_search (message_search, rowid, body, conv)
                        SELECT 'delete', old.search_id, old.body, 'c' || replace(old.conversation_id, '-', '') WHERE old.deleted_at IS NULL;
                        INSERT INTO message_search (rowid, body, conv)
                        SELECT new.search_id, new.body, 'c' || replace(new.conversation_id, '-', '') WHERE new.deleted_at IS NULL;
                    END;
                    """
            )
        }
        migrator.registerMigration("v6_attachments") { db in
            // Uploads and the messages that carry them. Not tied to conversations by a foreign key:
            // deleting a message or a conversation releases its attachments in the same
            // transaction, and their rows stay until the janitor has removed their blobs.
            try db.execute(
                sql: """
                    CREATE TABLE attachments (
                        id TEXT PRIMARY KEY NOT NULL,
                        uploader_id TEXT NOT NULL,
                        state TEXT NOT NULL,
                        name TEXT NOT NULL,
                        content_type TEXT NOT NULL,
                        size INTEGER NOT NULL,
                        width INTEGER,
                        height INTEGER,
                        thumbnail INTEGER NOT NULL DEFAULT 0,
                        conversation_id TEXT,
                        seq INTEGER,
                        message_id TEXT,
                        position INTEGER NOT NULL DEFAULT 0,
                        created_at INTEGER NOT NULL,
                        state_at INTEGER NOT NULL
                    );
                    CREATE INDEX attachments_message ON attachments (conversation_id, seq) WHERE conversation_id IS NOT NULL;
                    CREATE INDEX attachments_disposable ON attachments (state, created_at) WHERE state <> 'attached';
                    CREATE INDEX attachments_uploader ON attachments (uploader_id, state);
                    ALTER TABLE messages ADD COLUMN attachment_count INTEGER NOT NULL DEFAULT 0;
                    """
            )
        }
        migrator.registerMigration("v7_search_index_in_batches") { db in
            // New messages reach the full-text index in batches (`indexPendingSearch`), not one
            // by one in the send's transaction: an FTS5 insert per message made every group commit
            // write index segments of its own and their merges, about a tenth of a send's cost.
            // `search_state.indexed` is the highest search_id in the index; edits and deletions of
            // messages above it have nothing to take out of the index (the batch reads them as
            // they are when it runs).
            try db.execute(
                sql: """
                    DROP TRIGGER messages_search_insert;
                    DROP TRIGGER messages_search_delete;
                    DROP TRIGGER messages_search_update;
                    CREATE TABLE search_state (id INTEGER PRIMARY KEY CHECK (id = 1), indexed INTEGER NOT NULL);
                    INSERT INTO search_state (id, indexed) VALUES (1, (SELECT IFNULL(MAX(search_id), 0) FROM messages));
                    CREATE TRIGGER messages_search_delete AFTER DELETE ON messages
                    WHEN old.search_id IS NOT NULL AND old.deleted_at IS NULL AND old.search_id <= (SELECT indexed FROM search_state WHERE id = 1)
                    BEGIN
                        INSERT INTO message_search (message_search, rowid, body, conv)
                        VALUES ('delete', old.search_id, old.body, 'c' || replace(old.conversation_id, '-', ''));
                    END;
                    CREATE TRIGGER messages_search_update AFTER UPDATE OF body ON messages
                    WHEN old.search_id IS NOT NULL AND old.search_id <= (SELECT indexed FROM search_state WHERE id = 1)
                    BEGIN
                        INSERT INTO message_search (message_search, rowid, body, conv)
                        SELECT 'delete', old.search_id, old.body, 'c' || replace(old.conversation_id, '-', '') WHERE old.deleted_at IS NULL;
                        INSERT INTO message_search (rowid, body, conv)
                        SELECT new.search_id, new.body, 'c' || replace(new.conversation_id, '-', '') WHERE new.deleted_at IS NULL;
                    END;
                    """
            )
        }
        migrator.registerMigration("v8_account_security") { db in
            // Sessions people can recognise in a list (their browser, when last used), and failed
            // logins per login key for the delay after repeated failures.
            try db.execute(
                sql: """
                    ALTER TABLE sessions ADD COLUMN user_agent TEXT;
                    ALTER TABLE sessions ADD COLUMN last_used_at INTEGER;
                    CREATE TABLE login_failures (
                        key TEXT PRIMARY KEY NOT NULL,
                        failures INTEGER NOT NULL,
                        last_failure_at INTEGER NOT NULL,
                        next_allowed_at INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX login_failures_age ON login_failures (last_failure_at);
                    """
            )
        }
        return migrator
    }
}
