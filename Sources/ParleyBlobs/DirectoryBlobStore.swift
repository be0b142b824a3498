import NIOCore
import _NIOFileSystem

/// Blobs as files under one directory of the node's disk (the embedded default:
/// `<data dir>/blobs`). A blob is written to a temporary name and renamed into place, so a reader
/// never sees half a file; files fan out over 256 subdirectories by a hash of the key.
public struct DirectoryBlobStore: BlobStore {
    public let kind = "directory"
    public let root: FilePath
    private let fileSystem = FileSystem.shared

    public init(root: FilePath) {
        self.root = root
    }

    public func put(_ key: String, file: FilePath, size: Int64, contentType: String) async throws {
        try BlobKey.validate(key)
        let target = try await preparedPath(of: key)
        try await mapErrors(key) {
            // A rename within the file system; across file systems NIO copies and removes.
            _ = try? await fileSystem.removeItem(at: target, strategy: .platformDefault, recursively: false)
            try await fileSystem.moveItem(at: file, to: target)
        }
    }

    public func put(_ key: String, bytes: ByteBuffer, contentType: String) async throws {
        try BlobKey.validate(key)
        let target = try await preparedPath(of: key)
        let partial = FilePath(target.string + ".partial-" + String(UInt64.random(in: 0...UInt64.max), radix: 36))
        try await mapErrors(key) {
            _ = try await fileSystem.withFileHandle(forWritingAt: partial, options: .newFile(replaceExisting: true)) { handle in
                try await handle.write(contentsOf: bytes, toAbsoluteOffset: 0)
            }
            _ = try? await fileSystem.removeItem(at: target, strategy: .platformDefault, recursively: false)
            try await fileSystem.moveItem(at: partial, to: target)
        }
    }

    public func read(_ key: String, range: Range<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        try BlobKey.validate(key)
        let handle: ReadFileHandle
        do {
            handle = try await fileSystem.openFile(forReadingAt: path(of: key), options: .init())
        } catch let error as FileSystemError where error.code == .notFound {
            throw BlobStoreError.notFound(key)
        } catch {
            throw BlobStoreError.unavailable("\(error)")
        }
        do {
            let chunks = range.map { handle.readChunks(in: $0, chunkLength: .kibibytes(64)) } ?? handle.readChunks(chunkLength: .kibibytes(64))
            for try await chunk in chunks { try await consume(chunk) }
        } catch {
            try? await handle.close()
            throw error
        }
        try await handle.close()
    }

    public func size(of key: String) async throws -> Int64? {
        try BlobKey.validate(key)
        return try await mapErrors(key) { try await fileSystem.info(forFileAt: path(of: key))?.size }
    }

    public func delete(_ key: String) async throws {
        try BlobKey.validate(key)
        _ = try await mapErrors(key) { try await fileSystem.removeItem(at: path(of: key), strategy: .platformDefault, recursively: false) }
    }

    public func check() async throws {
        let probe = root.appending(".probe-" + String(UInt64.random(in: 0...UInt64.max), radix: 36))
        try await mapErrors("probe") {
            try await fileSystem.createDirectory(at: root, withIntermediateDirectories: true, permissions: nil)
            _ = try await fileSystem.withFileHandle(forWritingAt: probe, options: .newFile(replaceExisting: true)) { handle in
                try await handle.write(contentsOf: [UInt8(0x70)], toAbsoluteOffset: 0)
            }
            try await fileSystem.removeItem(at: probe, strategy: .platformDefault, recursively: false)
        }
    }

    /// `<root>/<2 hex digits of a hash of the key>/<key>`.
    func path(of key: String) -> FilePath {
        var hash: UInt32 = 2_166_136_261
        for byte in key.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let bucket = String(hash & 0xFF, radix: 16)
        return root.appending(bucket.count == 1 ? "0" + bucket : bucket).appending(key)
    }

    private func preparedPath(of key: String) async throws -> FilePath {
        let target = path(of: key)
        try await mapErrors(key) {
            try await fileSystem.createDirectory(at: target.removingLastComponent(), withIntermediateDirectories: true, permissions: nil)
        }
        return target
    }

    private func mapErrors<T>(_ key: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as BlobStoreError {
            throw error
        } catch let error as FileSystemError where error.code == .notFound {
            throw BlobStoreError.notFound(key)
        } catch {
            throw BlobStoreError.unavailable("\(error)")
        }
    }
}
