import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import _NIOFileSystem

/// Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto…), shared by every node
/// of a cluster. Requests are signed with AWS Signature Version 4. A file up to `partSize` goes up
/// in one PUT streamed from disk; a larger one as a multipart upload of `partSize` parts, each also
/// streamed from disk, so memory stays flat whatever the file's size.
public final class S3BlobStore: BlobStore {
    public struct Configuration: Sendable {
        /// `http(s)://host[:port]`; nil for AWS (`https://s3.<region>.amazonaws.com`).
        public var endpoint: String?
        public var bucket: String
        public var region: String
        public var accessKeyID: String
        public var secretAccessKey: String
        /// `endpoint/bucket/key` rather than `bucket.endpoint/key` (MinIO and most servers other
        /// than AWS need it).
        public var pathStyle: Bool
        /// Files larger than this go up as multipart uploads of parts this size (at least 5 MiB).
        public var partSize: Int64
        public var timeout: TimeAmount

        public init(
            endpoint: String?, bucket: String, region: String = "us-east-1", accessKeyID: String, secretAccessKey: String,
            pathStyle: Bool = true, partSize: Int64 = 8 << 20, timeout: TimeAmount = .seconds(60)
        ) {
            self.endpoint = endpoint
            self.bucket = bucket
            self.region = region
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.pathStyle = pathStyle
            self.partSize = max(5 << 20, partSize)
            self.timeout = timeout
        }
    }

    public let kind = "s3"
    public let configuration: Configuration
    private let client: HTTPClient
    private let signer: SigV4
    private let scheme: String
    private let host: String

    /// One client for every S3 store of the process. A storage server that does not answer fails
    /// the request at once (`storage_unavailable`) instead of being retried until its deadline.
    public static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(60))
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    public init(configuration: Configuration, client: HTTPClient = S3BlobStore.sharedClient) throws {
        self.configuration = configuration
        self.client = client
        self.signer = SigV4(accessKeyID: configuration.accessKeyID, secretAccessKey: configuration.secretAccessKey, region: configuration.region)
        let endpoint = configuration.endpoint ?? "https://s3.\(configuration.region).amazonaws.com"
        guard let url = URL(string: endpoint), let scheme = url.scheme, scheme == "http" || scheme == "https", let host = url.host,
            url.path.isEmpty || url.path == "/"
        else { throw BlobStoreError.unavailable("PARLEY_S3_ENDPOINT must be http(s)://host[:port], not \(endpoint)") }
        guard !configuration.bucket.isEmpty else { throw BlobStoreError.unavailable("no bucket configured") }
        self.scheme = scheme
        let authority = url.port.map { "\(host):\($0)" } ?? host
        self.host = configuration.pathStyle ? authority : "\(configuration.bucket).\(authority)"
    }

    // MARK: BlobStore

    public func put(_ key: String, file: FilePath, size: Int64, contentType: String) async throws {
        try BlobKey.validate(key)
        if size <= configuration.partSize {
            try await FileSystem.shared.withFileHandle(forReadingAt: file) { handle in
                let body = HTTPClientRequest.Body.stream(handle.readChunks(in: 0..<size, chunkLength: .kibibytes(256)), length: .known(size))
                _ = try await send("PUT", key: key, headers: [("content-type", contentType)], body: body, expect: [200])
            }
        } else {
            try await multipartPut(key, file: file, size: size, contentType: contentType)
        }
        _ = try? await FileSystem.shared.removeItem(at: file, strategy: .platformDefault, recursively: false)
    }

    public func put(_ key: String, bytes: ByteBuffer, contentType: String) async throws {
        try BlobKey.validate(key)
        _ = try await send("PUT", key: key, headers: [("content-type", contentType)], body: .bytes(bytes), expect: [200])
    }

    public func read(_ key: String, range: Range<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        try BlobKey.validate(key)
        if let range, range.isEmpty { return }
        let headers = range.map { [("range", "bytes=\($0.lowerBound)-\($0.upperBound - 1)")] } ?? []
        let response = try await send("GET", key: key, headers: headers, expect: [200, 206], keepBody: true)
        do {
            for try await chunk in response.body { try await consume(chunk) }
        } catch let error as HTTPClientError {
            throw BlobStoreError.unavailable("reading \(key): \(error)")
        }
    }

    public func size(of key: String) async throws -> Int64? {
        try BlobKey.validate(key)
        do {
            let response = try await send("HEAD", key: key, expect: [200])
            return response.headers.first(name: "content-length").flatMap { Int64($0) }
        } catch BlobStoreError.notFound {
            return nil
        }
    }

    public func delete(_ key: String) async throws {
        try BlobKey.validate(key)
        _ = try await send("DELETE", key: key, expect: [200, 204, 404])
    }

    public func check() async throws {
        _ = try await send("HEAD", key: nil, expect: [200])
    }

    /// Creates the bucket if it does not exist (tests and first runs against a fresh server).
    public func createBucket() async throws {
        _ = try await send("PUT", key: nil, expect: [200, 409])
    }

    // MARK: Multipart upload

    private func multipartPut(_ key: String, file: FilePath, size: Int64, contentType: String) async throws {
        let created = try await send("POST", key: key, query: [("uploads", "")], headers: [("content-type", contentType)], expect: [200])
        guard let uploadID = XMLField.first("UploadId", in: created.body) else {
            throw BlobStoreError.unavailable("CreateMultipartUpload answered without an UploadId")
        }
        do {
            var etags: [String] = []
            try await FileSystem.shared.withFileHandle(forReadingAt: file) { handle in
                var offset: Int64 = 0
                while offset < size {
                    let end = min(size, offset + configuration.partSize)
                    let body = HTTPClientRequest.Body.stream(
                        handle.readChunks(in: offset..<end, chunkLength: .kibibytes(256)), length: .known(end - offset))
                    let part = try await send(
                        "PUT", key: key, query: [("partNumber", String(etags.count + 1)), ("uploadId", uploadID)], body: body, expect: [200])
                    guard let etag = part.headers.first(name: "etag") else { throw BlobStoreError.unavailable("UploadPart answered without an ETag") }
                    etags.append(etag)
                    offset = end
                }
            }
            var xml = "<CompleteMultipartUpload>"
            for (index, etag) in etags.enumerated() {
                xml += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(XMLField.escape(etag))</ETag></Part>"
            }
            xml += "</CompleteMultipartUpload>"
            let completed = try await send(
                "POST", key: key, query: [("uploadId", uploadID)], headers: [("content-type", "application/xml")],
                body: .bytes(ByteBuffer(string: xml)), expect: [200])
            // S3 may answer 200 and report the failure in the body.
            if XMLField.first("Code", in: completed.body) != nil {
                throw BlobStoreError.unavailable("CompleteMultipartUpload failed: \(completed.body)")
            }
        } catch {
            _ = try? await send("DELETE", key: key, query: [("uploadId", uploadID)], expect: [204, 200, 404])
            throw error
        }
    }

    // MARK: Requests

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
    }

    struct StreamingAnswer {
        var headers: HTTPHeaders
        var body: HTTPClientResponse.Body
    }

    private func send(
        _ method: String, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
        body: HTTPClientRequest.Body? = nil, expect: Set<Int>
    ) async throws -> Answer {
        let response = try await execute(method, key: key, query: query, headers: headers, body: body)
        let status = Int(response.status.code)
        // Error bodies and the small XML answers of S3 are read whole (bounded).
        let text = method == "HEAD" ? "" : String(buffer: try await response.body.collect(upTo: 1 << 20))
        try check(status: status, expect: expect, key: key, body: text)
        return Answer(status: status, headers: response.headers, body: text)
    }

    private func send(
        _ method: String, key: String, headers: [(String, String)], expect: Set<Int>, keepBody: Bool
    ) async throws -> StreamingAnswer {
        let response = try await execute(method, key: key, query: [], headers: headers, body: nil)
        let status = Int(response.status.code)
        if !expect.contains(status) {
            let text = String(buffer: (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer())
            try check(status: status, expect: expect, key: key, body: text)
        }
        return StreamingAnswer(headers: response.headers, body: response.body)
    }

    private func check(status: Int, expect: Set<Int>, key: String?, body: String) throws {
        if expect.contains(status) { return }
        if status == 404, let key, XMLField.first("Code", in: body).map({ $0 == "NoSuchKey" }) ?? (body.isEmpty) {
            throw BlobStoreError.notFound(key)
        }
        let code = XMLField.first("Code", in: body) ?? "HTTP \(status)"
        throw BlobStoreError.unavailable("S3 answered \(status) (\(code))")
    }

    private func execute(
        _ method: String, key: String?, query: [(String, String)], headers: [(String, String)], body: HTTPClientRequest.Body?
    ) async throws -> HTTPClientResponse {
        var path = configuration.pathStyle ? "/" + SigV4.encode(configuration.bucket) : ""
        path += "/" + (key.map { SigV4.encode($0) } ?? "")
        let queryString = query.map { $0.1.isEmpty ? SigV4.encode($0.0) : "\(SigV4.encode($0.0))=\(SigV4.encode($0.1))" }
            .joined(separator: "&")
        var request = HTTPClientRequest(url: "\(scheme)://\(host)\(path)\(queryString.isEmpty ? "" : "?" + queryString)")
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        for (name, value) in signer.sign(method: method, path: path, query: query, headers: [("host", host)]) {
            request.headers.add(name: name, value: value)
        }
        request.body = body
        do {
            return try await client.execute(request, timeout: configuration.timeout)
        } catch {
            throw BlobStoreError.unavailable("S3 at \(scheme)://\(host): \(error)")
        }
    }
}

/// The few fields read from S3's XML answers, found by tag name.
enum XMLField {
    static func first(_ tag: String, in xml: String) -> String? {
        guard let open = xml.range(of: "<\(tag)>"), let close = xml.range(of: "</\(tag)>", range: open.upperBound..<xml.endIndex) else {
            return nil
        }
        return unescape(String(xml[open.upperBound..<close.lowerBound]))
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
