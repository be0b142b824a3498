import Foundation
import NIOCore
import ParleyBlobs
import ParleyTestSupport
import Testing
import _NIOFileSystem

/// One adapter of the `BlobStore` port: a fresh, empty store, and a way to throw it away.
struct BlobStoreFactory: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () async throws -> (store: any BlobStore, teardown: @Sendable () async -> Void)
    var testDescription: String { name }

    static let directory = BlobStoreFactory(name: "directory") {
        let directory = try TemporaryDirectory(prefix: "parley-blobs")
        return (DirectoryBlobStore(root: FilePath(directory.file("blobs"))), { directory.remove() })
    }

    /// S3 at `PARLEY_TEST_S3_ENDPOINT` (moto's server mode, `scripts/services.sh` starts one): a
    /// bucket of its own per test, with 5 MiB parts so that multipart uploads happen at test sizes.
    static let s3 = BlobStoreFactory(name: "S3") {
        guard let endpoint = s3Endpoint else { throw TestEnvironmentError("PARLEY_TEST_S3_ENDPOINT is not set") }
        let store = try S3BlobStore(
            configuration: s3Configuration(endpoint: endpoint, bucket: "parley-test-" + UUID().uuidString.prefix(8).lowercased()))
        try await store.createBucket()
        return (store, {})
    }

    static func s3Configuration(endpoint: String, bucket: String) -> S3BlobStore.Configuration {
        .init(endpoint: endpoint, bucket: bucket, region: "us-east-1", accessKeyID: "parley", secretAccessKey: "parley-secret", partSize: 5 << 20)
    }

    static var s3Endpoint: String? { ProcessInfo.processInfo.environment["PARLEY_TEST_S3_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } }

    static let all: [BlobStoreFactory] = s3Endpoint == nil ? [.directory] : [.directory, .s3]
}

@Suite("BlobStore conformance")
struct BlobStoreConformanceTests {
    @Test("S3 runs when CI requires every adapter")
    func s3IsConfigured() {
        if TestEnvironment.requireAll { #expect(BlobStoreFactory.s3Endpoint != nil, "PARLEY_TEST_S3_ENDPOINT is not set") }
    }

    @Test("a file put is read back whole and in ranges, byte for byte", arguments: BlobStoreFactory.all)
    func putAndRead(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        let bytes = Self.randomBytes(300_000)
        let file = try await Self.temporaryFile(bytes)
        try await store.put("a1", file: file, size: Int64(bytes.count), contentType: "application/octet-stream")
        #expect(try await FileSystem.shared.info(forFileAt: file) == nil, "the file was not consumed")
        #expect(try await store.size(of: "a1") == Int64(bytes.count))
        #expect(try await Self.read(store, "a1") == bytes)
        #expect(try await Self.read(store, "a1", range: 0..<1) == Array(bytes[0..<1]))
        #expect(try await Self.read(store, "a1", range: 1000..<70_000) == Array(bytes[1000..<70_000]))
        #expect(try await Self.read(store, "a1", range: 299_990..<300_000) == Array(bytes[299_990...]))
    }

    @Test("small blobs from memory, replaced by a second put of the same key", arguments: BlobStoreFactory.all)
    func putBytes(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        try await store.put("a2.thumbnail", bytes: ByteBuffer(bytes: [1, 2, 3]), contentType: "image/webp")
        #expect(try await Self.read(store, "a2.thumbnail") == [1, 2, 3])
        try await store.put("a2.thumbnail", bytes: ByteBuffer(bytes: [9, 8]), contentType: "image/webp")
        #expect(try await Self.read(store, "a2.thumbnail") == [9, 8])
        #expect(try await store.size(of: "a2.thumbnail") == 2)
    }

    @Test("a file larger than a part goes up in parts and comes back whole", arguments: BlobStoreFactory.all)
    func multipart(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        // 12 MiB + 5 bytes: two full 5 MiB parts and a short last one on S3.
        let bytes = Self.randomBytes((12 << 20) + 5)
        let file = try await Self.temporaryFile(bytes)
        try await store.put("big", file: file, size: Int64(bytes.count), contentType: "application/pdf")
        #expect(try await store.size(of: "big") == Int64(bytes.count))
        let back = try await Self.read(store, "big")
        #expect(back.count == bytes.count)
        #expect(back == bytes)
        let edge = Int64(5 << 20)
        #expect(try await Self.read(store, "big", range: (edge - 3)..<(edge + 3)) == Array(bytes[Int(edge - 3)..<Int(edge + 3)]))
    }

    @Test("a missing blob: notFound on read, nil size, and delete is quiet", arguments: BlobStoreFactory.all)
    func missing(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        await #expect(throws: BlobStoreError.notFound("nothing")) { try await Self.read(store, "nothing") }
        #expect(try await store.size(of: "nothing") == nil)
        try await store.delete("nothing")
    }

    @Test("delete removes the blob", arguments: BlobStoreFactory.all)
    func delete(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        try await store.put("gone", bytes: ByteBuffer(string: "bye"), contentType: "text/plain")
        try await store.delete("gone")
        #expect(try await store.size(of: "gone") == nil)
        await #expect(throws: BlobStoreError.notFound("gone")) { try await Self.read(store, "gone") }
    }

    @Test("keys outside [A-Za-z0-9._-] are refused before they reach the storage", arguments: BlobStoreFactory.all)
    func keys(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        for key in ["", "../etc/passwd", "a/b", "..", "sp ace", String(repeating: "k", count: 201)] {
            await #expect(throws: BlobStoreError.invalidKey(key)) { try await store.put(key, bytes: ByteBuffer(), contentType: "text/plain") }
        }
    }

    @Test("the check passes on a working store", arguments: BlobStoreFactory.all)
    func check(factory: BlobStoreFactory) async throws {
        let (store, teardown) = try await factory.make()
        defer { Task { await teardown() } }
        try await store.check()
    }

    @Test("storage that is down or unusable: unavailable, for every operation")
    func unavailable() async throws {
        var stores: [any BlobStore] = []
        // A directory adapter whose root is a file.
        let directory = try TemporaryDirectory(prefix: "parley-blobs-down")
        defer { directory.remove() }
        _ = FileManager.default.createFile(atPath: directory.file("root"), contents: Data("x".utf8))
        stores.append(DirectoryBlobStore(root: FilePath(directory.file("root"))))
        // An S3 endpoint where nothing listens (a port just closed).
        let port = try Self.closedPort()
        stores.append(try S3BlobStore(configuration: BlobStoreFactory.s3Configuration(endpoint: "http://127.0.0.1:\(port)", bucket: "down")))
        for store in stores {
            await #expect(throws: BlobStoreError.self) { try await store.check() }
            do {
                try await store.put("k", bytes: ByteBuffer(string: "x"), contentType: "text/plain")
                Issue.record("put on \(store.kind) succeeded")
            } catch let error as BlobStoreError {
                guard case .unavailable = error else { Issue.record("put on \(store.kind): \(error)"); continue }
            }
            do {
                _ = try await Self.read(store, "k")
                Issue.record("read on \(store.kind) succeeded")
            } catch let error as BlobStoreError {
                if case .notFound = error, store.kind == "directory" { continue }  // nothing was ever written there
                guard case .unavailable = error else { Issue.record("read on \(store.kind): \(error)"); continue }
            }
        }
    }

    // MARK: Helpers

    static func read(_ store: any BlobStore, _ key: String, range: Range<Int64>? = nil) async throws -> [UInt8] {
        var out: [UInt8] = []
        try await store.read(key, range: range) { chunk in out.append(contentsOf: chunk.readableBytesView) }
        return out
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let word = generator.next()
                for shift in stride(from: 0, to: 64, by: 8) where offset < raw.count {
                    raw[offset] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
                    offset += 1
                }
            }
        }
        return bytes
    }

    static func temporaryFile(_ bytes: [UInt8]) async throws -> FilePath {
        let path = FilePath(NSTemporaryDirectory()).appending("parley-blob-\(UUID().uuidString)")
        _ = try await FileSystem.shared.withFileHandle(forWritingAt: path, options: .newFile(replaceExisting: true)) { handle in
            try await handle.write(contentsOf: bytes, toAbsoluteOffset: 0)
        }
        return path
    }

    /// A loopback port that was free a moment ago (bound, then closed).
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
