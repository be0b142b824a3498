import Foundation
import GRDB
import ParleyCore

extension SQLiteChatStore {
    static let attachmentColumns =
        "id, uploader_id, name, content_type, size, width, height, thumbnail, conversation_id, message_id, created_at, state"

    /// A row of `attachmentColumns`, by index.
    static func attachment(_ row: Row) -> Attachment {
        Attachment(
            id: uuid(row[0]), uploaderID: uuid(row[1]), name: row[2], contentType: row[3], size: row[4], width: row[5], height: row[6],
            hasThumbnail: (row[7] as Int64) != 0, conversationID: (row[8] as String?).map(uuid), messageID: (row[9] as String?).map(uuid),
            createdAt: date(row[10]))
    }

    public func beginUpload(_ attachment: Attachment, at: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO attachments (id, uploader_id, state, name, content_type, size, created_at, state_at)
                    VALUES (?, ?, 'uploading', ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    attachment.id.lowercased, attachment.uploaderID.lowercased, attachment.name, attachment.contentType, attachment.size,
                    attachment.createdAt.millis, at.millis,
                ])
        }
    }

    public func finishUpload(_ attachment: Attachment, at: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE attachments SET state = 'ready', content_type = ?, size = ?, width = ?, height = ?, thumbnail = ?, state_at = ?
                    WHERE id = ? AND state = 'uploading'
                    """,
                arguments: [
                    attachment.contentType, attachment.size, attachment.width, attachment.height, attachment.hasThumbnail ? 1 : 0, at.millis,
                    attachment.id.lowercased,
                ])
            guard db.changesCount == 1 else { throw ParleyError.attachmentNotFound }
        }
    }

    public func attachment(id: UUID, readableBy userID: UUID) async throws -> Attachment? {
        try await pool.read { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT \(Self.attachmentColumns) FROM attachments WHERE id = ?"), arguments: [id.lowercased])
            else { return nil }
            let attachment = Self.attachment(row)
            switch AttachmentState(rawValue: row[11] as String) {
            case .ready:
                return attachment.uploaderID == userID ? attachment : nil
            case .attached:
                guard let conversationID = attachment.conversationID else { return nil }
                let member = try Bool.fetchOne(
                    db.cachedStatement(sql: "SELECT 1 FROM members WHERE conversation_id = ? AND user_id = ?"),
                    arguments: [conversationID.lowercased, userID.lowercased])
                return member == true ? attachment : nil
            case .uploading, .released, nil:
                return nil
            }
        }
    }

    public func storedBytes(of userID: UUID) async throws -> Int64 {
        try await pool.read { db in
            try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT IFNULL(SUM(size), 0) FROM attachments WHERE uploader_id = ? AND state <> 'released'"),
                arguments: [userID.lowercased]) ?? 0
        }
    }

    public func disposableAttachments(unsentBefore: Date, abandonedBefore: Date, limit: Int) async throws -> [Attachment] {
        try await pool.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.attachmentColumns) FROM attachments
                        WHERE state = 'released' OR (state = 'ready' AND created_at < ?) OR (state = 'uploading' AND created_at < ?)
                        ORDER BY created_at LIMIT ?
                        """),
                arguments: [unsentBefore.millis, abandonedBefore.millis, limit]
            ).map(Self.attachment)
        }
    }

    public func forgetAttachments(ids: [UUID]) async throws {
        guard !ids.isEmpty else { return }
        try await pool.write { db in
            try db.execute(
                sql: "DELETE FROM attachments WHERE id IN (\(Self.placeholders(ids.count)))", arguments: StatementArguments(ids.map(\.lowercased)))
        }
    }

    // MARK: Inside other transactions

    /// The sender's uploads named by a send, in the order named, if every one is `ready`; nil if
    /// any is missing, someone else's or already sent.
    static func attachable(_ db: Database, ids: [UUID], sender: String) throws -> [Attachment]? {
        guard !ids.isEmpty else { return [] }
        let rows = try Row.fetchAll(
            db,
            sql: "SELECT \(attachmentColumns) FROM attachments WHERE id IN (\(placeholders(ids.count))) AND uploader_id = ? AND state = 'ready'",
            arguments: StatementArguments(ids.map(\.lowercased) + [sender]))
        let byID = Dictionary(rows.map { (uuid($0[0]), attachment($0)) }, uniquingKeysWith: { first, _ in first })
        let found = ids.compactMap { byID[$0] }
        return found.count == ids.count && Set(ids).count == ids.count ? found : nil
    }

    /// Attaches checked uploads to a message just inserted.
    static func attach(_ db: Database, _ attachments: [Attachment], conversationID: String, seq: Int64, messageID: String, at: Int64) throws {
        guard !attachments.isEmpty else { return }
        let update = try db.cachedStatement(
            sql: "UPDATE attachments SET state = 'attached', conversation_id = ?, seq = ?, message_id = ?, position = ?, state_at = ? WHERE id = ?")
        for (position, attachment) in attachments.enumerated() {
            try update.execute(arguments: [conversationID, seq, messageID, position, at, attachment.id.lowercased])
        }
        try db.cachedStatement(sql: "UPDATE messages SET attachment_count = ? WHERE conversation_id = ? AND seq = ?").execute(
            arguments: [attachments.count, conversationID, seq])
    }

    /// Releases the attachments of one message (seq) or of a whole conversation (nil): their
    /// blobs go on the janitor's next round.
    static func releaseAttachments(_ db: Database, conversationID: String, seq: Int64?, at: Int64) throws {
        if let seq {
            try db.cachedStatement(
                sql: "UPDATE attachments SET state = 'released', state_at = ? WHERE conversation_id = ? AND seq = ? AND state = 'attached'"
            ).execute(arguments: [at, conversationID, seq])
            try db.cachedStatement(sql: "UPDATE messages SET attachment_count = 0 WHERE conversation_id = ? AND seq = ?").execute(
                arguments: [conversationID, seq])
        } else {
            try db.cachedStatement(
                sql: "UPDATE attachments SET state = 'released', state_at = ? WHERE conversation_id = ? AND state = 'attached'"
            ).execute(arguments: [at, conversationID])
        }
    }

    /// The attachments of messages in one conversation, by seq, in the order they were sent.
    static func attachments(_ db: Database, conversationID: String, seqs: [Int64]) throws -> [Int64: [Attachment]] {
        guard let low = seqs.min(), let high = seqs.max() else { return [:] }
        let rows = try Row.fetchCursor(
            db.cachedStatement(
                sql: """
                    SELECT \(attachmentColumns), seq FROM attachments
                    WHERE conversation_id = ? AND seq BETWEEN ? AND ? AND state = 'attached' ORDER BY seq, position
                    """),
            arguments: [conversationID, low, high])
        var bySeq: [Int64: [Attachment]] = [:]
        while let row = try rows.next() { bySeq[row[12], default: []].append(attachment(row)) }
        return bySeq
    }
}
