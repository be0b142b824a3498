import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ParleyBlobs
import ParleyCore
import ParleyImages
import _NIOFileSystem

/// `POST /api/v1/uploads`, `GET /api/v1/attachments/{id}` and `…/thumbnail`.
///
/// An upload streams to a temporary file beside the blob store (never held in memory), is typed
/// from its first bytes, thumbnailed when it is an image (libvips, off the event loops), and then
/// handed to the blob store (a rename for the directory store, a streamed PUT or multipart upload
/// for S3). Its row is written first (`uploading`), so an upload that dies half-way leaves a row
/// for the janitor rather than a stray blob.
struct AttachmentController: Sendable {
    let store: any ChatStore
    let blobs: any BlobStore
    let thumbnailer: Thumbnailer
    let limiter: any RateLimiter
    let uploadPolicy: RateLimitPolicy
    let settings: ParleyConfiguration.Uploads
    let temporaryDirectory: FilePath
    let logger: Logger

    struct UploadResponse: Encodable {
        var attachment: AttachmentDTO
    }

    func addRoutes(uploads: RouterGroup<ParleyRequestContext>, attachments: RouterGroup<ParleyRequestContext>) {
        uploads.post(use: upload)
        attachments.get(":id", use: download)
        attachments.get(":id/thumbnail", use: thumbnail)
    }

    // MARK: Upload

    @Sendable func upload(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let uploader = try context.requireIdentity().userID
        try await limiter.enforce("user:" + uploader.lowercased, policy: uploadPolicy, now: .now)
        let declaredLength = request.headers[.contentLength].flatMap { Int64($0) }
        if let declaredLength, declaredLength > settings.maxBytes + Self.multipartOverhead {
            throw ParleyError.uploadTooLarge(limit: settings.maxBytes)
        }
        let quotaUse = try await quotaCheck(uploader, adding: declaredLength ?? 0)
        let contentType = request.headers[.contentType] ?? "application/octet-stream"
        var multipart: MultipartReader?
        if contentType.lowercased().hasPrefix("multipart/") {
            guard let boundary = MultipartReader.boundary(contentType: contentType) else {
                throw ParleyError.invalid("A multipart upload must be multipart/form-data with a boundary.", code: "invalid_multipart")
            }
            multipart = try MultipartReader(boundary: boundary)
        }

        let id = UUID.v7()
        let now = Date.now
        let placeholder = Attachment(
            id: id, uploaderID: uploader, name: FileName.sanitized(Self.headerName(request.headers[.xFilename]) ?? "file"),
            contentType: "application/octet-stream", size: 0, createdAt: now)
        try await store.beginUpload(placeholder, at: now)
        let file = temporaryDirectory.appending("upload-" + id.lowercased)
        do {
            let received = try await receive(request.body, into: file, multipart: &multipart)
            guard received.sawFile else {
                throw ParleyError.invalid("A multipart upload needs one part named \"file\".", code: "invalid_multipart")
            }
            if let quota = settings.quotaBytes, quotaUse + received.size > quota { throw ParleyError.quotaExceeded(limit: quota) }
            var attachment = placeholder
            attachment.size = received.size
            attachment.contentType = ContentSniffer.contentType(of: received.prefix)
            if let partName = received.partFileName, request.headers[.xFilename] == nil { attachment.name = FileName.sanitized(partName) }
            if ContentSniffer.thumbnailable.contains(attachment.contentType), Thumbnailer.isAvailable {
                do {
                    let thumbnail = try await thumbnailer.thumbnail(ofFileAt: file.string)
                    attachment.width = thumbnail.width
                    attachment.height = thumbnail.height
                    try await blobs.put(attachment.thumbnailKey, bytes: ByteBuffer(bytes: thumbnail.bytes), contentType: "image/webp")
                    attachment.hasThumbnail = true
                } catch let error as Thumbnailer.Failure {
                    // A corrupt or truncated image is still a file: stored, without a thumbnail.
                    logger.debug("no thumbnail", metadata: ["parley.attachment": "\(id.lowercased)", "parley.reason": "\(error)"])
                }
            }
            try await blobs.put(attachment.blobKey, file: file, size: attachment.size, contentType: attachment.contentType)
            try await store.finishUpload(attachment, at: .now)
            return try APIJSON.response(UploadResponse(attachment: AttachmentDTO(attachment)), status: .created)
        } catch {
            // The row stays `uploading` for the janitor if this node cannot even reach the store;
            // the blobs go now if they can.
            _ = try? await FileSystem.shared.removeItem(at: file, strategy: .platformDefault, recursively: false)
            try? await blobs.delete(placeholder.thumbnailKey)
            try? await store.forgetAttachments(ids: [id])
            if let error = error as? BlobStoreError {
                logger.warning("upload failed: storage", metadata: ["parley.error": "\(error)"])
                throw ParleyError.storageUnavailable
            }
            throw error
        }
    }

    /// Room for the multipart framing around a file of the maximum size (boundaries, part headers).
    static let multipartOverhead: Int64 = 16 * 1024

    struct Received {
        var size: Int64 = 0
        var prefix: [UInt8] = []
        var sawFile = false
        var partFileName: String?
    }

    /// Streams the file's bytes (the raw body, or the `file` part of a multipart body) to `file`,
    /// counting them against the size limit as they come.
    private func receive(_ body: RequestBody, into file: FilePath, multipart: inout MultipartReader?) async throws -> Received {
        var received = Received()
        received.sawFile = multipart == nil
        let limit = settings.maxBytes
        var total: Int64 = 0
        try await FileSystem.shared.withFileHandle(forWritingAt: file, options: .newFile(replaceExisting: true)) { handle in
            var inFilePart = false
            var fileDone = false
            func write(_ bytes: some Collection<UInt8> & Sendable) async throws {
                guard !bytes.isEmpty else { return }
                received.size += Int64(bytes.count)
                if received.size > limit { throw ParleyError.uploadTooLarge(limit: limit) }
                if received.prefix.count < ContentSniffer.prefixLength {
                    received.prefix += bytes.prefix(ContentSniffer.prefixLength - received.prefix.count)
                }
                try await handle.write(contentsOf: bytes, toAbsoluteOffset: received.size - Int64(bytes.count))
            }
            for try await chunk in body {
                total += Int64(chunk.readableBytes)
                if total > limit + Self.multipartOverhead { throw ParleyError.uploadTooLarge(limit: limit) }
                guard var reader = multipart else {
                    try await write(chunk.readableBytesView)
                    continue
                }
                let events: [MultipartReader.Event]
                do {
                    events = try reader.feed(chunk.readableBytesView)
                } catch let failure as MultipartReader.Failure {
                    throw ParleyError.invalid("The multipart body is malformed: \(failure).", code: "invalid_multipart")
                }
                multipart = reader
                for event in events {
                    switch event {
                    case .partBegan(let part):
                        inFilePart = !fileDone && part.fieldName == "file"
                        if inFilePart {
                            received.sawFile = true
                            received.partFileName = part.fileName
                        }
                    case .body(let bytes):
                        if inFilePart { try await write(Array(bytes)) }
                    case .partEnded:
                        if inFilePart { fileDone = true }
                        inFilePart = false
                    }
                }
            }
            if let reader = multipart {
                do {
                    try reader.finish()
                } catch {
                    throw ParleyError.invalid("The multipart body ended before its closing boundary.", code: "invalid_multipart")
                }
            }
        }
        return received
    }

    /// Bytes the user already keeps; throws if adding `size` would pass the quota.
    private func quotaCheck(_ user: UUID, adding size: Int64) async throws -> Int64 {
        guard let quota = settings.quotaBytes else { return 0 }
        let used = try await store.storedBytes(of: user)
        if used + max(0, size - Self.multipartOverhead) > quota { throw ParleyError.quotaExceeded(limit: quota) }
        return used
    }

    /// `X-Filename` as sent: percent-encoded UTF-8 (what the web client sends), or plain text.
    static func headerName(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value.removingPercentEncoding ?? value
    }

    // MARK: Download

    @Sendable func download(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let attachment = try await readable(request, context)
        return try await serve(
            key: attachment.blobKey, size: attachment.size, contentType: attachment.contentType, etag: "\"\(attachment.blobKey)\"",
            name: attachment.name, inline: attachment.isInlineSafe, request: request)
    }

    @Sendable func thumbnail(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let attachment = try await readable(request, context)
        guard attachment.hasThumbnail else { throw ParleyError.attachmentNotFound }
        let size: Int64
        do {
            guard let stored = try await blobs.size(of: attachment.thumbnailKey) else { throw ParleyError.attachmentNotFound }
            size = stored
        } catch is BlobStoreError {
            throw ParleyError.storageUnavailable
        }
        return try await serve(
            key: attachment.thumbnailKey, size: size, contentType: "image/webp", etag: "\"\(attachment.blobKey)-t\"",
            name: attachment.name + ".webp", inline: true, request: request)
    }

    private func readable(_ request: Request, _ context: ParleyRequestContext) async throws -> Attachment {
        let caller = try context.requireIdentity().userID
        guard let id = UUID(canonical: context.parameters.get("id") ?? "") else { throw ParleyError.attachmentNotFound }
        // Someone who may not read it learns nothing, not even that it exists.
        guard let attachment = try await store.attachment(id: id, readableBy: caller) else { throw ParleyError.attachmentNotFound }
        return attachment
    }

    private func serve(
        key: String, size: Int64, contentType: String, etag: String, name: String, inline: Bool, request: Request
    ) async throws -> Response {
        var headers = HTTPFields()
        headers[.eTag] = etag
        // Private: behind a login. Blobs never change under an id, so a browser may keep them.
        headers[.cacheControl] = "private, max-age=86400, immutable"
        headers[.xContentTypeOptions] = "nosniff"
        headers[.contentSecurityPolicy] = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
        headers[.acceptRanges] = "bytes"
        headers[.contentDisposition] = Self.disposition(inline: inline, name: name)
        if let match = request.headers[.ifNoneMatch], match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == etag })
        {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = contentType
        var status = HTTPResponse.Status.ok
        var range: Range<Int64>?
        if let header = request.headers[.range], request.headers[.ifRange].map({ $0 == etag }) ?? true {
            switch Self.byteRange(header, size: size) {
            case .whole:
                break
            case .unsatisfiable:
                headers[.contentRange] = "bytes */\(size)"
                headers[.contentType] = nil
                return Response(status: .rangeNotSatisfiable, headers: headers)
            case .range(let wanted):
                range = wanted
                status = .partialContent
                headers[.contentRange] = "bytes \(wanted.lowerBound)-\(wanted.upperBound - 1)/\(size)"
            }
        }
        let length = range.map { $0.count } ?? Int(size)
        headers[.contentLength] = String(length)
        if request.method == .head { return Response(status: status, headers: headers) }
        let blobs = self.blobs
        let wanted = range
        return Response(
            status: status, headers: headers,
            body: ResponseBody(contentLength: length) { writer in
                try await blobs.read(key, range: wanted) { chunk in try await writer.write(chunk) }
                try await writer.finish(nil)
            })
    }

    enum ByteRange: Equatable {
        case whole
        case range(Range<Int64>)
        case unsatisfiable
    }

    /// One `bytes=` range of RFC 9110 (`a-b`, `a-`, `-n`); several ranges, or another unit, are
    /// answered with the whole file (which RFC 9110 allows).
    static func byteRange(_ header: String, size: Int64) -> ByteRange {
        guard header.hasPrefix("bytes="), !header.contains(",") else { return .whole }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .whole }
        if parts[0].isEmpty {
            guard let suffix = Int64(parts[1]), suffix > 0 else { return .unsatisfiable }
            return size == 0 ? .unsatisfiable : .range(max(0, size - suffix)..<size)
        }
        guard let start = Int64(parts[0]), start >= 0 else { return .whole }
        guard start < size else { return .unsatisfiable }
        if parts[1].isEmpty { return .range(start..<size) }
        guard let end = Int64(parts[1]), end >= start else { return .whole }
        return .range(start..<min(size, end + 1))
    }

    /// RFC 3986's unreserved characters: everything else in a name is percent-encoded.
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// `inline` or `attachment`, with the name both as ASCII and as RFC 5987 UTF-8.
    static func disposition(inline: Bool, name: String) -> String {
        let ascii = String(name.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" ? Character($0) : "_" })
        let encoded = name.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? "file"
        return "\(inline ? "inline" : "attachment"); filename=\"\(ascii)\"; filename*=UTF-8''\(encoded)"
    }
}

extension HTTPField.Name {
    static let xFilename = HTTPField.Name("X-Filename")!
}
