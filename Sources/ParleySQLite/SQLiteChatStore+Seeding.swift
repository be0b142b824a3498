import Foundation
import GRDB
import ParleyCore

extension SQLiteChatStore {
    /// Appends `count` messages to a conversation in large transactions, bypassing the send path
    /// (no dedupe, no events). For load-test seeding only (`parley seed --messages`): it writes
    /// millions of rows in seconds, which sends one by one cannot.
    ///
    /// Messages alternate between `senderIDs`, continue the conversation's seq, and are spaced one
    /// second apart, ending now.
    public func seedHistory(conversationID: UUID, senderIDs: [UUID], count: Int, body: (Int64) -> String) async throws {
        guard count > 0, !senderIDs.isEmpty else { return }
        let cid = conversationID.lowercased
        let senders = senderIDs.map(\.lowercased)
        let batch = 50_000
        var written = 0
        let end = Date().millis
        while written < count {
            let take = min(batch, count - written)
            let first = written
            let bodies = (0..<take).map { body(Int64(first + $0 + 1)) }
            try await pool.write { db in
                guard let last = try Int64.fetchOne(db, sql: "SELECT last_seq FROM conversations WHERE id = ?", arguments: [cid]) else {
                    throw ParleyError.conversationNotFound
                }
                // Indexed for search like sent messages, in the same batches.
                let searchBase = try Int64.fetchOne(db, sql: "SELECT IFNULL(MAX(search_id), 0) FROM messages") ?? 0
                let insert = try db.cachedStatement(
                    sql: """
                        INSERT INTO messages (conversation_id, seq, id, sender_id, body, client_msg_id, created_at, search_id)
                        VALUES (?, ?, ?, ?, ?, NULL, ?, ?)
                        """
                )
                for offset in 0..<take {
                    let seq = last + Int64(offset) + 1
                    let index = first + offset
                    try insert.execute(arguments: [
                        cid, seq, UUID.v7().lowercased, senders[index % senders.count], bodies[offset],
                        end - Int64(count - index) * 1000, searchBase + Int64(offset) + 1,
                    ])
                }
                try db.execute(
                    sql: "UPDATE conversations SET last_seq = ?, updated_at = ? WHERE id = ?",
                    arguments: [last + Int64(take), end, cid]
                )
                try Self.indexPendingSearch(db)
            }
            written += take
        }
    }
}
