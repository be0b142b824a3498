import Foundation
import GRDB
import ParleyCore
import ParleySQLite
import ParleyTestSupport
import Testing

@Suite("SQLite adapter specifics")
struct SQLiteChatStoreTests {
    @Test("data survives closing and reopening the file; migrations run once")
    func reopen() async throws {
        let directory = try TemporaryDirectory(prefix: "parley-sqlite")
        defer { directory.remove() }
        let path = directory.file("parley.sqlite")
        let first = try SQLiteChatStore(configuration: .init(path: path), logger: .quiet)
        try await first.migrate()
        let alice = try await first.createUser(NewUser(username: "alice", email: "a@example.com", displayName: "A", passwordHash: "h"))
        let group = try await first.createGroup(id: .v7(), name: "G", ownerID: alice.id, memberIDs: [], passcodeHash: nil, now: .now)
        _ = try await first.send(SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: "x", body: "kept"))
        try first.close()

        let second = try SQLiteChatStore(configuration: .init(path: path), logger: .quiet)
        try await second.migrate()
        #expect(try await second.user(id: alice.id)?.username == "alice")
        let page = try await second.messages(conversationID: group.id, cursor: .latest, limit: 10)
        #expect(page.messages.map(\.body) == ["kept"])
        let replay = try await second.send(SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: "x", body: "kept"))
        #expect(replay.replayed, "dedupe survives a restart")
        try second.close()

        let queue = try DatabaseQueue(path: path)
        let applied = try await queue.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(
            applied == [
                "v1_initial", "v2_last_seen", "v3_outbox", "v4_outbox_created_at", "v5_message_features", "v6_attachments",
                "v7_search_index_in_batches", "v8_account_security",
            ])
        let mode = try await queue.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
    }

    @Test("an unwritable database path is a clear startup error, not a crash")
    func unwritable() throws {
        #expect(throws: (any Error).self) {
            try SQLiteChatStore(configuration: .init(path: "/proc/parley-cannot-write/parley.sqlite"), logger: .quiet)
        }
    }
}
