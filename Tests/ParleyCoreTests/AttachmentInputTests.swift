import Foundation
import ParleyCore
import Testing

/// Swift Testing has an `Attachment` too: this file means Parley's.
private typealias Attachment = ParleyCore.Attachment

@Suite("Upload input: content types from bytes, file names, multipart bodies")
struct AttachmentInputTests {
    @Test(
        "the type comes from the first bytes, whatever the name or the client claim",
        arguments: [
            ([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13], "image/png"),
            ([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], "image/jpeg"),
            (Array("GIF89a\u{1}\u{0}".utf8), "image/gif"),
            (Array("RIFF\u{0}\u{0}\u{0}\u{0}WEBPVP8 ".utf8), "image/webp"),
            (Array("%PDF-1.7\n".utf8), "application/pdf"),
            ([0x50, 0x4B, 0x03, 0x04, 20, 0], "application/zip"),
            (Array("\u{0}\u{0}\u{0}\u{18}ftypmp42".utf8), "video/mp4"),
            (Array("  <!DOCTYPE html><html><script>alert(1)</script>".utf8), "text/html"),
            (Array("<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".utf8), "image/svg+xml"),
            (Array("<?xml version='1.0'?><svg/>".utf8), "image/svg+xml"),
            (Array("<?xml version='1.0'?><note/>".utf8), "application/xml"),
            (Array("{\"a\": 1}".utf8), "application/json"),
            (Array("2026-12-03 12:00:01 INFO started\nnaïve café ✓\n".utf8), "text/plain"),
            ([0x00, 0x01, 0x02, 0xFF], "application/octet-stream"),
            ([0xC3, 0x28, 0x41], "application/octet-stream"),  // invalid UTF-8
            ([], "application/octet-stream"),
        ] as [([UInt8], String)])
    func sniff(bytes: [UInt8], type: String) {
        #expect(ContentSniffer.contentType(of: bytes) == type)
    }

    @Test("a character cut at the end of the sniffed prefix is still text")
    func cutCharacter() {
        // 1,200 bytes of a 3-byte character: the 512-byte prefix ends inside one.
        let text = Array(String(repeating: "✓", count: 400).utf8)
        #expect(ContentSniffer.contentType(of: text) == "text/plain")
        // A whole file that ends inside a character is not text.
        #expect(ContentSniffer.contentType(of: text.prefix(ContentSniffer.prefixLength - 1)) == "application/octet-stream")
    }

    @Test("only raster images are served inline")
    func inline() {
        let at = Date()
        func attachment(_ type: String) -> Attachment {
            Attachment(id: UUID(), uploaderID: UUID(), name: "f", contentType: type, size: 1, createdAt: at)
        }
        #expect(attachment("image/png").isInlineSafe)
        #expect(attachment("image/jpeg").isInlineSafe)
        for type in ["text/html", "image/svg+xml", "application/xml", "application/pdf", "text/plain", "application/octet-stream"] {
            #expect(!attachment(type).isInlineSafe, "\(type)")
        }
    }

    @Test(
        "file names lose paths, control and bidi characters, and leading dots",
        arguments: [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\me\\Desktop\\notes.txt", "notes.txt"),
            ("invoice\u{202E}gpj.exe", "invoicegpj.exe"),
            ("a\u{0}b\u{7}c\n.txt", "abc.txt"),
            ("\u{2066}hidden\u{2069}.png", "hidden.png"),
            (".bashrc", "bashrc"),
            ("   ", "file"),
            ("", "file"),
            ("/", "file"),
            ("héllo wörld.txt", "héllo wörld.txt"),
        ])
    func names(raw: String, clean: String) {
        #expect(FileName.sanitized(raw) == clean)
    }

    @Test("a long name is cut to 200 bytes of UTF-8, keeping its extension")
    func longName() {
        let name = FileName.sanitized(String(repeating: "ж", count: 300) + ".jpeg")
        #expect(name.utf8.count <= FileName.maxBytes)
        #expect(name.hasSuffix(".jpeg"))
        #expect(name.hasPrefix("жжж"))
    }

    // MARK: Multipart

    static let body = Array(
        ("preamble to ignore\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            + "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".png\"\r\nContent-Type: image/png\r\n\r\n"
            + "\r\n--XyNOT a delimiter\r\nline two\r\n--XyZ--\r\nepilogue").utf8)

    static func read(_ body: [UInt8], chunk: Int, boundary: String = "XyZ") throws -> [(MultipartReader.Part, [UInt8])] {
        var reader = try MultipartReader(boundary: boundary)
        var parts: [(MultipartReader.Part, [UInt8])] = []
        var offset = 0
        while offset < body.count {
            let end = min(body.count, offset + chunk)
            for event in try reader.feed(body[offset..<end]) {
                switch event {
                case .partBegan(let part): parts.append((part, []))
                case .body(let bytes): parts[parts.count - 1].1 += bytes
                case .partEnded: break
                }
            }
            offset = end
        }
        try reader.finish()
        return parts
    }

    @Test("parts, names and bodies come out the same however the bytes are split", arguments: [1, 2, 3, 7, 64, 100_000])
    func multipart(chunk: Int) throws {
        let parts = try Self.read(Self.body, chunk: chunk)
        #expect(parts.count == 2)
        #expect(parts[0].0.fieldName == "note" && parts[0].0.fileName == nil)
        #expect(parts[0].1 == Array("hello".utf8))
        #expect(parts[1].0.fieldName == "file")
        #expect(parts[1].0.fileName == "a \"b\".png")
        #expect(parts[1].0.header("content-type") == "image/png")
        #expect(parts[1].1 == Array("\r\n--XyNOT a delimiter\r\nline two".utf8))
    }

    @Test("a body that opens with the delimiter, an RFC 5987 file name, and a part without headers")
    func edges() throws {
        let body = Array(
            ("--b\r\nContent-Disposition: form-data; name=file; filename*=UTF-8''na%C3%AFve%20%E2%9C%93.txt\r\n\r\nx\r\n--b\r\n\r\nno headers\r\n--b--")
                .utf8)
        let parts = try Self.read(body, chunk: 5, boundary: "b")
        #expect(parts.map(\.0.fileName) == ["naïve ✓.txt", nil])
        #expect(parts.map(\.1) == [Array("x".utf8), Array("no headers".utf8)])
    }

    @Test("boundaries from Content-Type")
    func boundaries() {
        #expect(MultipartReader.boundary(contentType: "multipart/form-data; boundary=----WebKitFormBoundaryAbC") == "----WebKitFormBoundaryAbC")
        #expect(MultipartReader.boundary(contentType: "Multipart/Form-Data; charset=utf-8; boundary=\"a b\"") == "a b")
        #expect(MultipartReader.boundary(contentType: "multipart/mixed; boundary=x") == nil)
        #expect(MultipartReader.boundary(contentType: "multipart/form-data") == nil)
    }

    @Test(
        "malformed bodies are refused with a reason",
        arguments: [
            ("--b\r\nContent-Disposition form-data\r\n\r\nx\r\n--b--", MultipartReader.Failure.malformedHeader),
            ("--bX\r\n\r\n", .malformedDelimiter),
            ("--b\r\n" + String(repeating: "X-Long: yes\r\n", count: 1000) + "\r\nx\r\n--b--", .headersTooLong),
            ("--b\r\n\r\nnever closed", .unexpectedEnd),
            (String(repeating: "--b\r\n\r\nx\r\n", count: 17) + "--b--", .tooManyParts),
            ("no delimiter at all", .unexpectedEnd),
        ])
    func malformed(body: String, failure: MultipartReader.Failure) {
        #expect(throws: failure) { _ = try Self.read(Array(body.utf8), chunk: 13, boundary: "b") }
    }

    @Test("boundaries that RFC 2046 does not allow")
    func badBoundaries() {
        for boundary in ["", String(repeating: "x", count: 71), "ends with space ", "tab\there"] {
            #expect(throws: MultipartReader.Failure.noBoundary) { _ = try MultipartReader(boundary: boundary) }
        }
    }

    @Test("the reader holds back no more than a delimiter's length of a large part")
    func bounded() throws {
        var reader = try MultipartReader(boundary: "b")
        _ = try reader.feed(Array("--b\r\n\r\n".utf8))
        var delivered = 0
        for _ in 0..<100 {
            for case .body(let bytes) in try reader.feed([UInt8](repeating: 0x41, count: 10_000)) { delivered += bytes.count }
        }
        #expect(delivered >= 1_000_000 - 5)
    }
}
