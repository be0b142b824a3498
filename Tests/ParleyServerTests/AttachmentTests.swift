import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ParleyBlobs
import ParleyImages
import ParleyTestSupport
import Testing

/// Uploads and attachments through the REST API on the embedded node (directory blob store).
@Suite("Attachments: upload, attach, download, limits, thumbnails, cleanup")
struct AttachmentTests {
    typealias Account = TestApp.Client.Account
    typealias Reply = TestApp.Client.Reply

    static func fixture(_ name: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tests/fixtures/images/\(name)")
        return Array(try Data(contentsOf: url))
    }

    static func upload(
        _ client: TestApp.Client, _ user: Account, _ bytes: [UInt8], name: String? = "file.bin", contentType: String = "application/octet-stream"
    ) async throws -> Reply {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(user.accessToken)"
        headers[.contentType] = contentType
        if let name { headers[HTTPField.Name("X-Filename")!] = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? name }
        return try await client.client.execute(uri: "/api/v1/uploads", method: .post, headers: headers, body: ByteBuffer(bytes: bytes)) {
            TestApp.Client.Reply(status: $0.status, headers: $0.headers, body: $0.body)
        }
    }

    static func get(_ client: TestApp.Client, _ user: Account, _ path: String, headers extra: HTTPFields = [:]) async throws -> Reply {
        var headers = extra
        headers[.authorization] = "Bearer \(user.accessToken)"
        return try await client.client.execute(uri: path, method: .get, headers: headers, body: nil) {
            TestApp.Client.Reply(status: $0.status, headers: $0.headers, body: $0.body)
        }
    }

    static func send(_ client: TestApp.Client, _ user: Account, _ conversation: String, body: String?, attachments: [String]) async throws -> Reply {
        let ids = attachments.map { "\"\($0)\"" }.joined(separator: ",")
        let text = body.map { #""body":"\#($0)","# } ?? ""
        return try await client.request(
            .post, "/api/v1/conversations/\(conversation)/messages", token: user.accessToken, json: #"{\#(text)"attachmentIds":[\#(ids)]}"#)
    }

    static func files(under directory: String) -> [String] {
        (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] ?? []).filter {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent($0), isDirectory: &isDirectory)
            return exists && !isDirectory.boolValue
        }
    }

    /// Waits for `condition`, checking every 50 ms, up to `seconds`.
    static func eventually(_ seconds: Double = 10, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    @Test("upload, send, and a member downloads the same bytes; outsiders and the uploader's unsent files")
    func roundTrip() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let eve = try await client.register("eve")
            let group = try await client.createGroup(alice, members: [bob])
            let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let uploaded = try await Self.upload(client, alice, bytes, name: "data.bin")
            #expect(uploaded.status == .created, "\(uploaded.json)")
            let attachment = uploaded.json["attachment"]
            #expect(attachment.keys == ["id", "name", "contentType", "size", "url"])
            #expect(attachment["size"].int == 200_000)
            #expect(attachment["name"].string == "data.bin")
            #expect(attachment["contentType"].string == "application/octet-stream")
            let id = try #require(attachment["id"].string)
            let url = try #require(attachment["url"].string)
            #expect(url == "/api/v1/attachments/\(id)")

            // Before it is sent: the uploader only.
            #expect(try await Self.get(client, alice, url).status == .ok)
            #expect(try await Self.get(client, bob, url).status == .notFound)

            let sent = try await Self.send(client, alice, group, body: nil, attachments: [id])
            #expect(sent.status == .created, "\(sent.json)")
            #expect(sent.json["message"]["body"].string == "")
            #expect(sent.json["message"]["attachments"] == .array([attachment]))
            #expect(try await client.history(bob, group).array.first?["attachments"] == .array([attachment]))

            let download = try await Self.get(client, bob, url)
            #expect(download.status == .ok)
            #expect(Array(download.body.readableBytesView) == bytes)
            #expect(download.headers[.contentType] == "application/octet-stream")
            #expect(download.headers[.cacheControl]?.hasPrefix("private") == true)
            #expect(download.headers[.xContentTypeOptions] == "nosniff")
            #expect(download.headers[.contentDisposition]?.hasPrefix("attachment;") == true)
            #expect(download.headers[.contentSecurityPolicy]?.contains("sandbox") == true)
            let etag = try #require(download.headers[.eTag])

            var ranged = HTTPFields()
            ranged[.range] = "bytes=1000-1999"
            let part = try await Self.get(client, bob, url, headers: ranged)
            #expect(part.status == .partialContent)
            #expect(part.headers[.contentRange] == "bytes 1000-1999/200000")
            #expect(Array(part.body.readableBytesView) == Array(bytes[1000..<2000]))
            ranged[.range] = "bytes=-10"
            #expect(Array(try await Self.get(client, bob, url, headers: ranged).body.readableBytesView) == Array(bytes[199_990...]))
            ranged[.range] = "bytes=300000-"
            let outside = try await Self.get(client, bob, url, headers: ranged)
            #expect(outside.status == .rangeNotSatisfiable)
            #expect(outside.headers[.contentRange] == "bytes */200000")
            var cached = HTTPFields()
            cached[.ifNoneMatch] = etag
            #expect(try await Self.get(client, bob, url, headers: cached).status == .notModified)

            // Not a member: nothing, not even that it exists.
            let refused = try await Self.get(client, eve, url)
            #expect(refused.status == .notFound)
            #expect(refused.errorCode == "attachment_not_found")
            #expect(try await Self.get(client, eve, "/api/v1/attachments/not-an-id").status == .notFound)
        }
    }

    @Test("attachmentIds: someone else's upload, one already sent, eleven, and an empty message without any")
    func attachRules() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let bobs = try #require(try await Self.upload(client, bob, [1, 2, 3]).json["attachment"]["id"].string)
            let stolen = try await Self.send(client, alice, group, body: "mine now", attachments: [bobs])
            #expect(stolen.status == .badRequest)
            #expect(stolen.errorCode == "invalid_attachment")

            let once = try #require(try await Self.upload(client, alice, [4, 5]).json["attachment"]["id"].string)
            #expect(try await Self.send(client, alice, group, body: "first", attachments: [once]).status == .created)
            let twice = try await Self.send(client, alice, group, body: "again", attachments: [once])
            #expect(twice.errorCode == "invalid_attachment")

            var eleven: [String] = []
            for i in 0..<11 { eleven.append(try #require(try await Self.upload(client, alice, [UInt8(i)]).json["attachment"]["id"].string)) }
            let many = try await Self.send(client, alice, group, body: "lots", attachments: eleven)
            #expect(many.status == .badRequest)
            #expect(many.errorCode == "too_many_attachments")
            let ten = try await Self.send(client, alice, group, body: "ten", attachments: Array(eleven.prefix(10)))
            #expect(ten.status == .created)
            #expect(ten.json["message"]["attachments"].array.compactMap { $0["id"].string } == Array(eleven.prefix(10)))

            let empty = try await Self.send(client, alice, group, body: "", attachments: [])
            #expect(empty.errorCode == "empty_body")
            // Nothing of the refused sends was written.
            #expect(try await client.history(alice, group).array.count == 2)
        }
    }

    @Test("a file over the limit: 413 before or while reading, and nothing stored")
    func tooLarge() async throws {
        let directory = try TemporaryDirectory(prefix: "parley-uploads")
        defer { directory.remove() }
        try await TestApp.run(configure: { $0.uploads.directory = directory.path }) { client in
            let alice = try await client.register("alice")
            let big = [UInt8](repeating: 0x61, count: (26 << 20))
            let reply = try await Self.upload(client, alice, big)
            #expect(reply.status == .contentTooLarge)
            #expect(reply.errorCode == "upload_too_large")
            #expect(Self.files(under: directory.path).isEmpty)
        }
        try await TestApp.run(configure: {
            $0.uploads.directory = directory.path
            $0.uploads.maxBytes = 1000
        }) { client in
            let alice = try await client.register("alice")
            // No Content-Length check can catch a multipart body whose file part is too large: the
            // count while reading does.
            let boundary = "b0undary"
            var body = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.txt\"\r\n\r\n".utf8)
            body += [UInt8](repeating: 0x62, count: 1500)
            body += Array("\r\n--\(boundary)--\r\n".utf8)
            let reply = try await Self.upload(client, alice, body, name: nil, contentType: "multipart/form-data; boundary=\(boundary)")
            #expect(reply.status == .contentTooLarge)
            #expect(Self.files(under: directory.path).isEmpty)
        }
    }

    @Test("types come from the bytes: HTML and SVG are downloads, PNG is shown inline; names are cleaned")
    func typesAndNames() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let html = try await Self.upload(
                client, alice, Array("<!DOCTYPE html><script>alert(document.cookie)</script>".utf8), name: "../../cute\u{202E}gnp.html",
                contentType: "image/png")
            #expect(html.json["attachment"]["contentType"].string == "text/html")
            #expect(html.json["attachment"]["name"].string == "cutegnp.html")
            let page = try await Self.get(client, alice, try #require(html.json["attachment"]["url"].string))
            #expect(page.headers[.contentDisposition]?.hasPrefix("attachment;") == true)
            #expect(page.headers[.contentType] == "text/html")

            let svg = try await Self.upload(client, alice, Array("<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".utf8), name: "a.svg")
            let drawing = try await Self.get(client, alice, try #require(svg.json["attachment"]["url"].string))
            #expect(drawing.headers[.contentDisposition]?.hasPrefix("attachment;") == true)

            let png = try await Self.upload(client, alice, try Self.fixture("gps.png"), name: "map.png", contentType: "text/html")
            #expect(png.json["attachment"]["contentType"].string == "image/png")
            let picture = try await Self.get(client, alice, try #require(png.json["attachment"]["url"].string))
            #expect(picture.headers[.contentDisposition]?.hasPrefix("inline;") == true)
        }
    }

    @Test("multipart/form-data: the file part's name and bytes; a malformed body is refused")
    func multipart() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
            var body = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n".utf8)
            body += Array(
                "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"report.pdf\"\r\nContent-Type: text/plain\r\n\r\n".utf8)
            let pdf = Array("%PDF-1.7\n1 0 obj\n<<>>\nendobj\n\r\n--not-the-boundary\n".utf8)
            body += pdf + Array("\r\n--\(boundary)--\r\n".utf8)
            let reply = try await Self.upload(client, alice, body, name: nil, contentType: "multipart/form-data; boundary=\(boundary)")
            #expect(reply.status == .created, "\(reply.json)")
            #expect(reply.json["attachment"]["name"].string == "report.pdf")
            #expect(reply.json["attachment"]["contentType"].string == "application/pdf")
            let file = try await Self.get(client, alice, try #require(reply.json["attachment"]["url"].string))
            #expect(Array(file.body.readableBytesView) == pdf)

            let unclosed = try await Self.upload(
                client, alice, Array("--\(boundary)\r\n\r\nno end".utf8), name: nil, contentType: "multipart/form-data; boundary=\(boundary)")
            #expect(unclosed.errorCode == "invalid_multipart")
            let noFile = try await Self.upload(
                client, alice, Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--\(boundary)--".utf8), name: nil,
                contentType: "multipart/form-data; boundary=\(boundary)")
            #expect(noFile.errorCode == "invalid_multipart")
            let noBoundary = try await Self.upload(client, alice, [1], name: nil, contentType: "multipart/form-data")
            #expect(noBoundary.errorCode == "invalid_multipart")
        }
    }

    @Test(
        "images: size and a metadata-free thumbnail; a truncated JPEG is a file without one",
        .enabled(if: Thumbnailer.isAvailable, "needs libvips: a build with --traits Images (CI builds with it and fails if it is missing)"))
    func thumbnails() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let photo = try await Self.upload(client, alice, try Self.fixture("gps.jpg"), name: "holiday.jpg")
            let attachment = photo.json["attachment"]
            #expect(attachment["width"].int == 800 && attachment["height"].int == 600)
            let thumbnailURL = try #require(attachment["thumbnailUrl"].string)
            let thumbnail = try await Self.get(client, alice, thumbnailURL)
            #expect(thumbnail.status == .ok)
            #expect(thumbnail.headers[.contentType] == "image/webp")
            let bytes = Data(thumbnail.body.readableBytesView)
            #expect(bytes.range(of: Data("ParleyCam".utf8)) == nil && bytes.range(of: Data("Exif".utf8)) == nil)

            let png = try await Self.upload(client, alice, try Self.fixture("gps.png"), name: "gps.png")
            let pngThumb = try await Self.get(client, alice, try #require(png.json["attachment"]["thumbnailUrl"].string))
            #expect(Data(pngThumb.body.readableBytesView).range(of: Data("ParleyCam".utf8)) == nil)

            let truncated = try await Self.upload(client, alice, try Self.fixture("truncated.jpg"), name: "broken.jpg")
            #expect(truncated.status == .created)
            #expect(truncated.json["attachment"]["contentType"].string == "image/jpeg")
            #expect(truncated.json["attachment"]["thumbnailUrl"].isNull)
            let id = try #require(truncated.json["attachment"]["id"].string)
            #expect(try await Self.get(client, alice, "/api/v1/attachments/\(id)/thumbnail").status == .notFound)
        }
    }

    @Test("deleting a message removes its blobs; an upload never sent goes after the limit")
    func cleanup() async throws {
        let directory = try TemporaryDirectory(prefix: "parley-uploads")
        defer { directory.remove() }
        try await TestApp.run(configure: {
            $0.uploads.directory = directory.path
            $0.uploads.unsentSeconds = 2
        }) { client in
            let alice = try await client.register("alice")
            let group = try await client.createGroup(alice)
            let id = try #require(try await Self.upload(client, alice, Array("keep me".utf8)).json["attachment"]["id"].string)
            let sent = try await Self.send(client, alice, group, body: "file", attachments: [id])
            let messageID = try #require(sent.json["message"]["id"].string)
            #expect(Self.files(under: directory.path).count == 1)

            let unsent = try #require(try await Self.upload(client, alice, Array("forgotten".utf8)).json["attachment"]["url"].string)
            #expect(Self.files(under: directory.path).count == 2)
            // The unsent one goes once it is older than the limit; the sent one stays.
            #expect(try await Self.eventually { Self.files(under: directory.path).count == 1 })
            #expect(try await Self.get(client, alice, unsent).status == .notFound)
            #expect(try await Self.get(client, alice, "/api/v1/attachments/\(id)").status == .ok)

            let deleted = try await client.request(.delete, "/api/v1/conversations/\(group)/messages/\(messageID)", token: alice.accessToken)
            #expect(deleted.status == .noContent)
            #expect(try await Self.eventually { Self.files(under: directory.path).isEmpty })
            #expect(try await Self.get(client, alice, "/api/v1/attachments/\(id)").status == .notFound)
            #expect(try await client.history(alice, group).array.first?["attachments"] == .array([]))
        }
    }

    @Test("a storage quota and an upload rate per user")
    func quotaAndRate() async throws {
        try await TestApp.run(configure: {
            $0.uploads.quotaBytes = 1000
            $0.rateLimits.upload = .init(name: "upload", burst: 3, perSecond: 0.001)
        }) { client in
            let alice = try await client.register("alice")
            #expect(try await Self.upload(client, alice, [UInt8](repeating: 1, count: 600)).status == .created)
            let over = try await Self.upload(client, alice, [UInt8](repeating: 2, count: 600))
            #expect(over.status == .contentTooLarge)
            #expect(over.errorCode == "quota_exceeded")
            #expect(try await Self.upload(client, alice, [UInt8](repeating: 3, count: 300)).status == .created)
            let limited = try await Self.upload(client, alice, [4])
            #expect(limited.status == .tooManyRequests)
        }
    }

    @Test("S3 storage down: uploads answer 503 storage_unavailable and chat goes on")
    func storageDown() async throws {
        try await TestApp.run(configure: {
            $0.uploads.s3 = .init(endpoint: "http://127.0.0.1:9", bucket: "nowhere", accessKeyID: "k", secretAccessKey: "s")
        }) { client in
            let alice = try await client.register("alice")
            let group = try await client.createGroup(alice)
            let reply = try await Self.upload(client, alice, [1, 2, 3])
            #expect(reply.status == .serviceUnavailable)
            #expect(reply.errorCode == "storage_unavailable")
            #expect(try await client.send(alice, group, "still here").status == .created)
        }
    }
}
