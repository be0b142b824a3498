import NIOCore
import _NIOFileSystem

/// Where attachment bytes live: a directory on the node's disk (the embedded default) or an
/// S3-compatible bucket that every node of a cluster shares.
///
/// Keys are opaque, made of `[A-Za-z0-9._-]` (the attachment service derives them from ids), so
/// that every adapter can use them as file names and object keys unchanged. A blob is written
/// once and never modified; the rows that describe it (name, type, size) live in the chat store.
public protocol BlobStore: Sendable {
    /// A short name for logs, metrics and readiness: `directory` or `s3`.
    var kind: String { get }

    /// Stores the complete file at `file` under `key`, replacing any blob of that key. The file is
    /// consumed: an adapter may move it into place instead of copying it.
    func put(_ key: String, file: FilePath, size: Int64, contentType: String) async throws

    /// Stores `bytes` under `key` (small blobs, such as thumbnails).
    func put(_ key: String, bytes: ByteBuffer, contentType: String) async throws

    /// Reads the blob (or the byte range of it) in chunks, passing each to `consume` in order.
    /// Throws `BlobStoreError.notFound` before the first chunk if there is no such blob.
    func read(_ key: String, range: Range<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws

    /// The blob's size, or nil if there is none.
    func size(of key: String) async throws -> Int64?

    /// Removes the blob; removing one that does not exist is not an error.
    func delete(_ key: String) async throws

    /// Checks that the storage answers and can be written (for /ready and start-up).
    func check() async throws
}

public enum BlobStoreError: Error, Equatable, CustomStringConvertible {
    /// No blob of that key.
    case notFound(String)
    /// The storage did not answer or refused the request (down, misconfigured, out of space).
    case unavailable(String)
    /// A key with characters outside `[A-Za-z0-9._-]`, or empty, or longer than 200.
    case invalidKey(String)

    public var description: String {
        switch self {
        case .notFound(let key): "no blob \(key)"
        case .unavailable(let reason): "storage unavailable: \(reason)"
        case .invalidKey(let key): "invalid blob key \(key.debugDescription)"
        }
    }
}

enum BlobKey {
    /// Checks a key against the alphabet every adapter can use as is.
    static func validate(_ key: String) throws {
        guard !key.isEmpty, key.utf8.count <= 200, key != ".", key != "..",
            key.utf8.allSatisfy({ byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2E || byte == 0x5F || byte == 0x2D
            })
        else { throw BlobStoreError.invalidKey(key) }
    }
}
