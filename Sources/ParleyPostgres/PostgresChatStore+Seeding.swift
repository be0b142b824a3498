import Foundation
import ParleyCore
import PostgresNIO

extension PostgresChatStore {
    /// Appends `count` messages to a conversation in large transactions, bypassing the send path
    /// (no dedupe, no events), indexed for search like sent messages. For load-test seeding only
    /// (`parley seed --messages`).
    ///
    /// Messages alternate between `senderIDs`, continue the conversation's seq, and are spaced one
    /// second apart, ending now.
    public func seedHistory(conversationID: UUID, senderIDs: [UUID], count: Int, body: (Int64) -> String) async throws {
        guard count > 0, !senderIDs.isEmpty else { return }
        let batch = 10_000
        var written = 0
        let end = Date().millis
        while written < count {
            let take = min(batch, count - written)
            let first = written
            let bodies = (0..<take).map { body(Int64(first + $0 + 1)) }
            let senders = (0..<take).map { senderIDs[(first + $0) % senderIDs.count] }
            let times = (0..<take).map { end - Int64(count - first - $0) * 1000 }
            let ids = (0..<take).map { _ in UUID.v7() }
            try await transaction { [searchLanguage] db in
                guard
                    let last = try await db.first(
                        "SELECT last_seq FROM conversations WHERE id = \(conversationID) FOR UPDATE", as: Int64.self)
                else { throw ParleyError.conversationNotFound }
                try await db.execute(
                    """
                    INSERT INTO messages (conversation_id, seq, id, sender_id, body, created_at, search)
                    SELECT \(conversationID), \(last) + n.ord, n.i, n.u, n.b, n.t,
                           to_tsvector(\(searchLanguage)::regconfig, n.b) || ('c' || replace(\(conversationID)::text, '-', ''))::tsvector
                    FROM unnest(\(ids)::uuid[], \(senders)::uuid[], \(bodies)::text[], \(times)::bigint[]) WITH ORDINALITY AS n(i, u, b, t, ord)
                    """
                )
                try await db.execute(
                    "UPDATE conversations SET last_seq = \(last + Int64(take)), updated_at = \(end) WHERE id = \(conversationID)")
            }
            written += take
        }
    }
}
