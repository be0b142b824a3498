import Foundation
import ParleyCore
import PostgresNIO

extension PostgresChatStore {
    /// Writes one batch of sends inside the caller's transaction in a fixed number of round trips,
    /// whatever the batch size:
    ///
    /// 1. lock the batch's conversations (`FOR UPDATE`, in id order: nodes never deadlock) and read
    ///    their `last_seq`;
    /// 2. read their members;
    /// 3. look up the clientMsgIds already stored (replays);
    /// 4. insert the new messages with `unnest` arrays;
    /// 5. move each conversation's `last_seq` and the senders' own watermarks;
    /// 6. with an outbox, write each new message's `message.created` event.
    ///
    /// Seqs are assigned here, under the row locks, so they stay gapless while several nodes write
    /// to the same conversation. A request that fails (not a member) writes nothing.
    static func appendBatch(
        _ requests: [SendRequest], outboxNode: String?, searchLanguage: String, on db: PostgresConnection
    ) async throws -> [Result<SendResult, any Error>] {
        let conversationIDs = Array(Set(requests.map(\.conversationID))).sorted { $0.uuidString < $1.uuidString }
        var lastSeqs: [UUID: Int64] = [:]
        for try await (id, lastSeq) in try await db.run(
            "SELECT id, last_seq FROM conversations WHERE id = ANY(\(conversationIDs)) ORDER BY id FOR UPDATE"
        ).decode((UUID, Int64).self) {
            lastSeqs[id] = lastSeq
        }
        var members: [UUID: [UUID]] = [:]
        for try await (conversation, user) in try await db.run(
            "SELECT conversation_id, user_id FROM members WHERE conversation_id = ANY(\(Array(lastSeqs.keys)))"
        ).decode((UUID, UUID).self) {
            members[conversation, default: []].append(user)
        }
        let memberSets = members.mapValues(Set.init)

        struct DedupeKey: Hashable {
            var conversation: UUID
            var sender: UUID
            var clientMsgID: String
        }
        struct MemberKey: Hashable {
            var conversation: UUID
            var sender: UUID
        }
        var known: [DedupeKey: Message] = [:]
        let keyed = requests.filter { $0.clientMsgID != nil && memberSets[$0.conversationID]?.contains($0.senderID) == true }
        if !keyed.isEmpty {
            let stored = try await db.messages(
                """
                \(unescaped: messageSelect)
                JOIN unnest(\(keyed.map(\.conversationID))::uuid[], \(keyed.map(\.senderID))::uuid[], \(keyed.map { $0.clientMsgID ?? "" })::text[])
                  AS k(c, s, cm) ON m.conversation_id = k.c AND m.sender_id = k.s AND m.client_msg_id = k.cm
                """
            )
            for message in stored {
                if let clientMsgID = message.clientMsgID {
                    known[DedupeKey(conversation: message.conversationID, sender: message.senderID, clientMsgID: clientMsgID)] = message
                }
            }
        }

        var results: [Result<SendResult, any Error>] = []
        results.reserveCapacity(requests.count)
        var inserts: [Message] = []
        var newLastSeqs: [UUID: (seq: Int64, at: Int64)] = [:]
        var senderSeqs: [MemberKey: Int64] = [:]  // highest seq each sender wrote in this batch
        var claimed: Set<UUID> = []  // uploads attached by earlier requests of this batch
        for request in requests {
            guard let lastSeq = lastSeqs[request.conversationID], memberSets[request.conversationID]?.contains(request.senderID) == true else {
                results.append(.failure(ParleyError.conversationNotFound))
                continue
            }
            if let clientMsgID = request.clientMsgID,
                let original = known[DedupeKey(conversation: request.conversationID, sender: request.senderID, clientMsgID: clientMsgID)]
            {
                results.append(.success(SendResult(message: original, replayed: true)))
                continue
            }
            var replyTo: MessageReference?
            if let replyToID = request.replyToID,
                let earlier = inserts.first(where: { $0.id == replyToID && $0.conversationID == request.conversationID })
            {
                // A reply to a message of this same batch, not written yet.
                replyTo = MessageReference(
                    id: replyToID, seq: earlier.seq, senderID: earlier.senderID, preview: MessageReference.preview(of: earlier.body))
            } else if let replyToID = request.replyToID {
                // Replies are rare: one round trip each.
                for try await (seq, sender, body) in try await db.run(
                    "SELECT seq, sender_id, body FROM messages WHERE id = \(replyToID) AND conversation_id = \(request.conversationID)"
                ).decode((Int64, UUID, String).self) {
                    replyTo = MessageReference(id: replyToID, seq: seq, senderID: sender, preview: MessageReference.preview(of: body))
                }
                guard replyTo != nil else {
                    results.append(.failure(ParleyError.invalidReply))
                    continue
                }
            }
            // Attachments are rare too: one round trip for a send that has any.
            guard let attachments = try await attachable(request.attachmentIDs, sender: request.senderID, on: db),
                claimed.isDisjoint(with: request.attachmentIDs)
            else {
                results.append(.failure(ParleyError.invalidAttachment))
                continue
            }
            claimed.formUnion(request.attachmentIDs)
            let mentions = try await resolveMentions(request.mentionedUsernames, conversationID: request.conversationID, on: db)
            let seq = lastSeq + 1
            lastSeqs[request.conversationID] = seq
            let message = request.message(seq: seq, replyTo: replyTo, mentions: mentions, attachments: attachments)
            if let clientMsgID = request.clientMsgID {
                // A second send of the same clientMsgId later in this batch replays this one.
                known[DedupeKey(conversation: request.conversationID, sender: request.senderID, clientMsgID: clientMsgID)] = message
            }
            inserts.append(message)
            newLastSeqs[request.conversationID] = (seq, max(newLastSeqs[request.conversationID]?.at ?? 0, request.createdAt.millis))
            senderSeqs[MemberKey(conversation: request.conversationID, sender: request.senderID)] = seq
            results.append(.success(SendResult(message: message, replayed: false, recipients: members[request.conversationID] ?? [])))
        }
        guard !inserts.isEmpty else { return results }

        // Replies and mentions as arrays beside the messages: 0 is "no reply" (seqs start at 1), a
        // mention list is text ("" for none) parsed back to uuid[].
        try await db.execute(
            """
            INSERT INTO messages (conversation_id, seq, id, sender_id, body, client_msg_id, created_at, reply_to_seq, mentions, search)
            SELECT c, s, i, u, b, CASE WHEN h THEN k END, t, NULLIF(r, 0), CASE WHEN mt = '' THEN NULL ELSE string_to_array(mt, ',')::uuid[] END,
                   to_tsvector(\(searchLanguage)::regconfig, b) || ('c' || replace(c::text, '-', ''))::tsvector
            FROM unnest(\(inserts.map(\.conversationID))::uuid[], \(inserts.map(\.seq))::bigint[], \(inserts.map(\.id))::uuid[],
                        \(inserts.map(\.senderID))::uuid[], \(inserts.map(\.body))::text[], \(inserts.map { $0.clientMsgID != nil })::bool[],
                        \(inserts.map { $0.clientMsgID ?? "" })::text[], \(inserts.map(\.createdAt.millis))::bigint[],
                        \(inserts.map { $0.replyTo?.seq ?? 0 })::bigint[], \(inserts.map { $0.mentions.map(\.lowercased).joined(separator: ",") })::text[])
              AS n(c, s, i, u, b, h, k, t, r, mt)
            """
        )
        try await attach(inserts, on: db)
        let mentioned = inserts.flatMap { message in message.mentions.map { (message.conversationID, $0, message.seq) } }
        if !mentioned.isEmpty {
            try await db.execute(
                """
                INSERT INTO mentions (conversation_id, user_id, seq)
                SELECT * FROM unnest(\(mentioned.map(\.0))::uuid[], \(mentioned.map(\.1))::uuid[], \(mentioned.map(\.2))::bigint[])
                ON CONFLICT DO NOTHING
                """
            )
        }
        let updated = Array(newLastSeqs)
        try await db.execute(
            """
            UPDATE conversations c SET last_seq = n.seq, updated_at = GREATEST(c.updated_at, n.at)
            FROM unnest(\(updated.map(\.key))::uuid[], \(updated.map(\.value.seq))::bigint[], \(updated.map(\.value.at))::bigint[]) AS n(id, seq, at)
            WHERE c.id = n.id
            """
        )
        // A sender has read and received everything up to their own message.
        let senders = Array(senderSeqs)
        try await db.execute(
            """
            UPDATE members m SET read_seq = GREATEST(m.read_seq, n.seq), delivered_seq = GREATEST(m.delivered_seq, n.seq)
            FROM unnest(\(senders.map(\.key.conversation))::uuid[], \(senders.map(\.key.sender))::uuid[], \(senders.map(\.value))::bigint[])
              AS n(c, u, seq)
            WHERE m.conversation_id = n.c AND m.user_id = n.u
            """
        )
        if let outboxNode {
            try await writeEvents(try inserts.map { try StreamEvent.messageCreated($0, node: outboxNode) }, on: db)
        }
        return results
    }

    /// Writes events to the outbox inside the caller's transaction, in order (their positions
    /// increase in array order).
    static func writeEvents(_ events: [StreamEvent], on db: PostgresConnection) async throws {
        guard !events.isEmpty else { return }
        let envelopes = try events.map { String(decoding: try $0.envelope(), as: UTF8.self) }
        let now = Date.now.millis
        try await db.execute(
            """
            INSERT INTO outbox (shard, event_id, topic, key, type, envelope, created_at)
            SELECT sh, e, tp, k, ty, env, \(now)
            FROM unnest(\(events.map { Int32(StreamEvent.shard(of: $0.key)) })::integer[], \(events.map(\.id))::uuid[],
                        \(events.map(\.topic.rawValue))::text[], \(events.map(\.key))::text[], \(events.map(\.type))::text[],
                        \(envelopes)::text[]) WITH ORDINALITY AS n(sh, e, tp, k, ty, env, ord)
            ORDER BY ord
            """
        )
    }

    /// The members of the conversation named by `usernames`, in that order.
    static func resolveMentions(_ usernames: [String], conversationID: UUID, on db: some PostgresQueryable) async throws -> [UUID] {
        guard !usernames.isEmpty else { return [] }
        var ids: [String: UUID] = [:]
        for try await (username, id) in try await db.run(
            """
            SELECT u.username, u.id FROM users u JOIN members mb ON mb.user_id = u.id AND mb.conversation_id = \(conversationID)
            WHERE u.username = ANY(\(usernames))
            """
        ).decode((String, UUID).self) {
            ids[username] = id
        }
        return usernames.compactMap { ids[$0] }
    }
}
