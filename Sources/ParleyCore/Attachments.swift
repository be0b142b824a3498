import Foundation

/// A file uploaded by a user: first on its own (`ready`), then attached to one message of theirs.
/// Its bytes live in the blob store under `blobKey`, its thumbnail (for images) under
/// `thumbnailKey`.
public struct Attachment: Sendable, Equatable, Codable {
    public var id: UUID
    public var uploaderID: UUID
    /// The sanitised file name (`FileName.sanitized`).
    public var name: String
    /// Found from the file's first bytes (`ContentSniffer`), never taken from the client.
    public var contentType: String
    public var size: Int64
    public var width: Int?
    public var height: Int?
    public var hasThumbnail: Bool
    /// Set once the attachment is sent in a message.
    public var conversationID: UUID?
    public var messageID: UUID?
    public var createdAt: Date

    public init(
        id: UUID, uploaderID: UUID, name: String, contentType: String, size: Int64, width: Int? = nil, height: Int? = nil,
        hasThumbnail: Bool = false, conversationID: UUID? = nil, messageID: UUID? = nil, createdAt: Date
    ) {
        self.id = id
        self.uploaderID = uploaderID
        self.name = name
        self.contentType = contentType
        self.size = size
        self.width = width
        self.height = height
        self.hasThumbnail = hasThumbnail
        self.conversationID = conversationID
        self.messageID = messageID
        self.createdAt = createdAt
    }

    public var blobKey: String { id.lowercased }
    public var thumbnailKey: String { blobKey + ".thumbnail" }
    public var url: String { "/api/v1/attachments/" + blobKey }
    public var thumbnailURL: String? { hasThumbnail ? url + "/thumbnail" : nil }

    /// At most this many attachments per message.
    public static let maxPerMessage = 10

    /// Whether a browser may show the file in the page: raster images only. Every other type is
    /// served as a download, since HTML, SVG, XML or a script served inline from Parley's origin
    /// would run with the reader's session.
    public var isInlineSafe: Bool { ContentSniffer.inlineSafe.contains(contentType) }
}

extension ParleyError {
    public static let invalidAttachment = ParleyError.invalid(
        "attachmentIds must name your own uploads that are not sent yet.", code: "invalid_attachment")
    public static let tooManyAttachments = ParleyError.invalid(
        "A message can have at most \(Attachment.maxPerMessage) attachments.", code: "too_many_attachments")
    public static let attachmentNotFound = ParleyError.notFound("Attachment not found.", code: "attachment_not_found")
    public static let storageUnavailable = ParleyError(
        .unavailable, code: "storage_unavailable", message: "File storage is unavailable; retry shortly.", retryAfterSeconds: 5)

    public static func uploadTooLarge(limit: Int64) -> ParleyError {
        ParleyError.tooLarge("A file can be at most \(limit) bytes.", code: "upload_too_large")
    }

    public static func quotaExceeded(limit: Int64) -> ParleyError {
        ParleyError.tooLarge("Your uploads would exceed your storage quota of \(limit) bytes.", code: "quota_exceeded")
    }
}

/// The states of an attachment row, from upload to removal. Every blob has a row that names it
/// until the blob is gone, so cleanup never lists the storage: `uploading` rows older than an hour
/// are uploads that died half-way, `ready` rows older than the limit were never sent, and
/// `released` rows are attachments of deleted messages or conversations.
public enum AttachmentState: String, Sendable, Codable {
    case uploading, ready, attached, released
}

/// Where attachment rows live: the chat store, in the same transactions as the messages that
/// carry them.
public protocol AttachmentStore: Sendable {
    /// Records an upload before its bytes are stored (state `uploading`).
    func beginUpload(_ attachment: Attachment, at: Date) async throws
    /// The bytes are stored: records what was learned from them; the upload is `ready` to send.
    func finishUpload(_ attachment: Attachment, at: Date) async throws
    /// The attachment if `userID` may read it: its uploader before it is sent, a member of its
    /// conversation afterwards; nil otherwise, and for uploads in progress or released.
    func attachment(id: UUID, readableBy userID: UUID) async throws -> Attachment?
    /// Bytes in the user's uploads that are not released (their storage quota's use).
    func storedBytes(of userID: UUID) async throws -> Int64
    /// Attachments whose blobs are to go: released ones, `ready` ones created before
    /// `unsentBefore`, `uploading` ones created before `abandonedBefore`; oldest first.
    func disposableAttachments(unsentBefore: Date, abandonedBefore: Date, limit: Int) async throws -> [Attachment]
    /// Forgets attachments whose blobs are gone.
    func forgetAttachments(ids: [UUID]) async throws
}

/// The content type of a file from its first bytes (at least `prefixLength` of them when the file
/// is that long): the client's claim is never used, so a file cannot pass as another type.
public enum ContentSniffer {
    public static let prefixLength = 512

    /// Raster images a browser may display inline.
    public static let inlineSafe: Set<String> = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"]

    /// The types Parley makes thumbnails of.
    public static let thumbnailable: Set<String> = ["image/png", "image/jpeg", "image/gif", "image/webp"]

    public static func contentType(of prefix: some Collection<UInt8>) -> String {
        let bytes = Array(prefix.prefix(prefixLength))
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            bytes.count >= offset + magic.count && Array(bytes[offset..<offset + magic.count]) == magic
        }
        func ascii(_ text: String, at offset: Int = 0) -> Bool { starts(Array(text.utf8), at: offset) }

        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        if starts([0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if ascii("GIF87a") || ascii("GIF89a") { return "image/gif" }
        if ascii("RIFF") && ascii("WEBP", at: 8) { return "image/webp" }
        if ascii("RIFF") && ascii("WAVE", at: 8) { return "audio/wav" }
        if ascii("RIFF") && ascii("AVI ", at: 8) { return "video/x-msvideo" }
        if ascii("BM") && bytes.count >= 14 { return "image/bmp" }
        if ascii("ftyp", at: 4) {
            if ascii("avif", at: 8) { return "image/avif" }
            if ascii("heic", at: 8) || ascii("heix", at: 8) || ascii("mif1", at: 8) { return "image/heic" }
            if ascii("qt  ", at: 8) { return "video/quicktime" }
            if ascii("M4A ", at: 8) { return "audio/mp4" }
            return "video/mp4"
        }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "image/tiff" }
        if ascii("%PDF-") { return "application/pdf" }
        if starts([0x50, 0x4B, 0x03, 0x04]) || starts([0x50, 0x4B, 0x05, 0x06]) { return "application/zip" }
        if starts([0x1F, 0x8B]) { return "application/gzip" }
        if starts([0x1A, 0x45, 0xDF, 0xA3]) { return "video/webm" }
        if ascii("OggS") { return "audio/ogg" }
        if ascii("ID3") || starts([0xFF, 0xFB]) || starts([0xFF, 0xF3]) || starts([0xFF, 0xF2]) { return "audio/mpeg" }
        if ascii("fLaC") { return "audio/flac" }
        if ascii("7z") && starts([0xBC, 0xAF, 0x27, 0x1C], at: 2) { return "application/x-7z-compressed" }
        if ascii("Rar!") { return "application/vnd.rar" }
        if starts([0x7F, 0x45, 0x4C, 0x46]) { return "application/x-elf" }
        if starts([0x00, 0x61, 0x73, 0x6D]) { return "application/wasm" }
        if ascii("SQLite format 3") { return "application/vnd.sqlite3" }
        if starts([0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) { return "application/x-ole-storage" }
        return textType(bytes)
    }

    /// Text (with a guess at markup, which is served as a download) or, with a NUL or invalid
    /// UTF-8, `application/octet-stream`.
    private static func textType(_ bytes: [UInt8]) -> String {
        if bytes.isEmpty { return "application/octet-stream" }
        if bytes.contains(0) { return "application/octet-stream" }
        // A multi-byte character cut by the prefix's end is not an error.
        let cuts = bytes.count == prefixLength ? 0...3 : 0...0
        guard let trimmed = cuts.lazy.map({ bytes.dropLast($0) }).first(where: { String(validating: $0, as: UTF8.self) != nil }) else {
            return "application/octet-stream"
        }
        var start = trimmed.drop { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        if start.starts(with: [0xEF, 0xBB, 0xBF]) { start = start.dropFirst(3) }
        let head = String(decoding: start.prefix(64), as: UTF8.self).lowercased()
        if head.hasPrefix("<!doctype html") || head.hasPrefix("<html") || head.hasPrefix("<head") || head.hasPrefix("<body")
            || head.hasPrefix("<script") || head.hasPrefix("<iframe")
        {
            return "text/html"
        }
        if head.hasPrefix("<svg") || (head.hasPrefix("<?xml") && String(decoding: trimmed, as: UTF8.self).lowercased().contains("<svg")) {
            return "image/svg+xml"
        }
        if head.hasPrefix("<?xml") { return "application/xml" }
        if head.hasPrefix("{") || head.hasPrefix("[") { return "application/json" }
        return "text/plain"
    }
}

/// File names as users see them in a chat, safe anywhere Parley shows or serves them.
public enum FileName {
    public static let maxBytes = 200

    /// The last path component, without control characters, bidirectional overrides and
    /// isolates (which can make `gpj.exe` read as `exe.jpg`), or leading dots and spaces; cut to
    /// `maxBytes` of UTF-8 keeping the extension; `file` if nothing is left.
    public static func sanitized(_ raw: String) -> String {
        let lastComponent = raw.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
        var scalars = String.UnicodeScalarView()
        for scalar in lastComponent.unicodeScalars {
            if scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format
                || scalar.properties.generalCategory == .lineSeparator || scalar.properties.generalCategory == .paragraphSeparator
            {
                continue
            }
            scalars.append(scalar)
        }
        var name = String(scalars).trimmingCharacters(in: .whitespaces)
        while name.hasPrefix(".") || name.hasPrefix(" ") { name.removeFirst() }
        if name.utf8.count > maxBytes {
            let dot = name.lastIndex(of: ".")
            let ext = dot.map { String(name[$0...]) }.flatMap { $0.utf8.count <= 16 ? $0 : nil } ?? ""
            var stem = ext.isEmpty ? name : String(name[..<dot!])
            while stem.utf8.count + ext.utf8.count > maxBytes { stem.removeLast() }
            name = stem + ext
        }
        return name.isEmpty ? "file" : name
    }
}
