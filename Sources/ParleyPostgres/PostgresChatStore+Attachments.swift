import Foundation
import ParleyCore
import PostgresNIO

extension PostgresChatStore {
    static let attachmentColumns =
        "id, uploader_id, name, content_type, size, width, height, thumbnail, conversation_id, message_id, created_at, state"
    typealias AttachmentRow = (UUID, UUID, String, String, Int64, Int32?, Int32?, Bool, UUID?, UUID?, Int64, String)

    static func attachment(_ row: AttachmentRow) -> Attachment {
        Attachment(
            id: row.0, uploaderID: row.1, name: row.2, contentType: row.3, size: row.4, width: row.5.map(Int.init),
            height: row.6.map(Int.init), hasThumbnail: row.7, conversationID: row.8, messageID: row.9, createdAt: date(row.10))
    }

    public func beginUpload(_ attachment: Attachment, at: Date) async throws {
        try await guarded {
            try await client.execute(
                """
                INSERT INTO attachments (id, uploader_id, state, name, content_type, size, created_at, state_at)
                VALUES (\(attachment.id), \(attachment.uploaderID), 'uploading', \(attachment.name), \(attachment.contentType),
                        \(attachment.size), \(attachment.createdAt.millis), \(at.millis))
                """)
        }
    }

    public func finishUpload(_ attachment: Attachment, at: Date) async throws {
        try await guarded {
            let updated = try await client.first(
                """
                UPDATE attachments SET state = 'ready', content_type = \(attachment.contentType), size = \(attachment.size),
                  width = \(attachment.width.map(Int32.init)), height = \(attachment.height.map(Int32.init)),
                  thumbnail = \(attachment.hasThumbnail), state_at = \(at.millis)
                WHERE id = \(attachment.id) AND state = 'uploading' RETURNING id
                """, as: UUID.self)
            guard updated != nil else { throw ParleyError.attachmentNotFound }
        }
    }

    public func attachment(id: UUID, readableBy userID: UUID) async throws -> Attachment? {
        try await guarded {
            // The uploader's own before it is sent; a current member's once attached.
            for try await row in try await client.run(
                """
                SELECT \(unescaped: Self.attachmentColumns) FROM attachments a
                WHERE a.id = \(id) AND (
                  (a.state = 'ready' AND a.uploader_id = \(userID))
                  OR (a.state = 'attached' AND EXISTS (SELECT 1 FROM members mb WHERE mb.conversation_id = a.conversation_id AND mb.user_id = \(userID))))
                """
            ).decode(AttachmentRow.self) {
                return Self.attachment(row)
            }
            return nil
        }
    }

    public func storedBytes(of userID: UUID) async throws -> Int64 {
        try await guarded {
            try await client.first(
                "SELECT COALESCE(SUM(size), 0)::bigint FROM attachments WHERE uploader_id = \(userID) AND state <> 'released'", as: Int64.self)
                ?? 0
        }
    }

    public func disposableAttachments(unsentBefore: Date, abandonedBefore: Date, limit: Int) async throws -> [Attachment] {
        try await guarded {
            var found: [Attachment] = []
            for try await row in try await client.run(
                """
                SELECT \(unescaped: Self.attachmentColumns) FROM attachments
                WHERE state = 'released' OR (state = 'ready' AND created_at < \(unsentBefore.millis))
                   OR (state = 'uploading' AND created_at < \(abandonedBefore.millis))
                ORDER BY created_at LIMIT \(limit)
                """
            ).decode(AttachmentRow.self) {
                found.append(Self.attachment(row))
            }
            return found
        }
    }

    public func forgetAttachments(ids: [UUID]) async throws {
        guard !ids.isEmpty else { return }
        try await guarded { try await client.execute("DELETE FROM attachments WHERE id = ANY(\(ids))") }
    }

    // MARK: Inside other transactions

    /// The sender's uploads named by a send, in the order named, locked, if every one is `ready`;
    /// nil if any is missing, someone else's or already sent.
    static func attachable(_ ids: [UUID], sender: UUID, on db: PostgresConnection) async throws -> [Attachment]? {
        guard !ids.isEmpty else { return [] }
        var byID: [UUID: Attachment] = [:]
        for try await row in try await db.run(
            """
            SELECT \(unescaped: attachmentColumns) FROM attachments
            WHERE id = ANY(\(ids)) AND uploader_id = \(sender) AND state = 'ready' FOR UPDATE
            """
        ).decode(AttachmentRow.self) {
            byID[row.0] = attachment(row)
        }
        let found = ids.compactMap { byID[$0] }
        return found.count == ids.count && Set(ids).count == ids.count ? found : nil
    }

    /// Attaches the checked uploads of messages just inserted.
    static func attach(_ messages: [Message], on db: PostgresConnection) async throws {
        let rows = messages.flatMap { message in message.attachments.enumerated().map { (message, $0.offset, $0.element) } }
        guard !rows.isEmpty else { return }
        let now = Date.now.millis
        try await db.execute(
            """
            UPDATE attachments a SET state = 'attached', conversation_id = n.c, seq = n.s, message_id = n.m, position = n.p, state_at = \(now)
            FROM unnest(\(rows.map(\.2.id))::uuid[], \(rows.map(\.0.conversationID))::uuid[], \(rows.map(\.0.seq))::bigint[],
                        \(rows.map(\.0.id))::uuid[], \(rows.map { Int32($0.1) })::integer[]) AS n(i, c, s, m, p)
            WHERE a.id = n.i
            """)
        let carriers = messages.filter { !$0.attachments.isEmpty }
        try await db.execute(
            """
            UPDATE messages m SET attachment_count = n.k
            FROM unnest(\(carriers.map(\.conversationID))::uuid[], \(carriers.map(\.seq))::bigint[],
                        \(carriers.map { Int32($0.attachments.count) })::integer[]) AS n(c, s, k)
            WHERE m.conversation_id = n.c AND m.seq = n.s
            """)
    }

    /// Releases the attachments of one message (seq) or of a whole conversation (nil): their
    /// blobs go on the janitor's next round.
    static func releaseAttachments(conversationID: UUID, seq: Int64?, at: Date, on db: PostgresConnection) async throws {
        if let seq {
            try await db.execute(
                """
                UPDATE attachments SET state = 'released', state_at = \(at.millis)
                WHERE conversation_id = \(conversationID) AND seq = \(seq) AND state = 'attached'
                """)
            try await db.execute("UPDATE messages SET attachment_count = 0 WHERE conversation_id = \(conversationID) AND seq = \(seq)")
        } else {
            try await db.execute(
                """
                UPDATE attachments SET state = 'released', state_at = \(at.millis)
                WHERE conversation_id = \(conversationID) AND state = 'attached'
                """)
        }
    }
}

extension PostgresQueryable {
    /// The attachments of the given messages, by message, in the order they were sent.
    func attachments(of keys: [(UUID, Int64)]) async throws -> [MessageKey: [Attachment]] {
        var found: [MessageKey: [Attachment]] = [:]
        for try await row in try await run(
            """
            SELECT \(unescaped: PostgresChatStore.attachmentColumns), a.seq FROM attachments a
            JOIN unnest(\(keys.map(\.0))::uuid[], \(keys.map(\.1))::bigint[]) AS k(c, s) ON a.conversation_id = k.c AND a.seq = k.s
            WHERE a.state = 'attached' ORDER BY a.seq, a.position
            """
        ).decode((UUID, UUID, String, String, Int64, Int32?, Int32?, Bool, UUID?, UUID?, Int64, String, Int64).self) {
            let attachment = PostgresChatStore.attachment((row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11))
            found[MessageKey(conversation: row.8 ?? attachment.id, seq: row.12), default: []].append(attachment)
        }
        return found
    }
}
