import Foundation
import NIOCore
import ParleyCore
import ParleyRedis

/// The fuzz harnesses: every parser of untrusted bytes in Parley, driven with arbitrary input.
/// A harness returns normally for any input; it traps (a crash the fuzzer reports) when the parser
/// crashes or when a property that must hold for every input does not. The same functions run
/// under libFuzzer (`scripts/fuzz.sh`) and over the committed corpora in `swift test`
/// (`ParleyFuzzTests`), so every input that once found a bug stays a regression test.
public enum Harness: String, CaseIterable, Sendable {
    /// Redis replies (RESP2/3): parsed whole and in pieces, the two must agree.
    case resp
    /// WebSocket client frames (`ClientFrame.decode`).
    case clientFrame = "client-frame"
    /// JSON request bodies (`StrictJSON.decode`) in the shapes the REST API takes.
    case jsonBody = "json-body"
    /// `multipart/form-data` upload bodies: fed whole and in pieces, the two must agree.
    case multipart
    /// The text rules applied to user input: mentions, reaction emoji, search queries, file names,
    /// content sniffing and the validators.
    case text

    public func run(_ data: [UInt8]) {
        switch self {
        case .resp: Self.resp(data)
        case .clientFrame: Self.clientFrame(data)
        case .jsonBody: Self.jsonBody(data)
        case .multipart: Self.multipart(data)
        case .text: Self.text(data)
        }
    }

    /// Stops the process with `message` when a property fails (fatalError: the fuzzer reports it).
    static func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        if !condition() { fatalError("property failed: \(message())") }
    }

    /// Splits `data` into pieces whose sizes come from the input itself (1–16 bytes each), so the
    /// fuzzer explores where the boundaries fall.
    static func pieces(_ data: [UInt8]) -> [ArraySlice<UInt8>] {
        var result: [ArraySlice<UInt8>] = []
        var index = 0
        var step = 0
        while index < data.count {
            let size = Int(data[(step * 7) % data.count] % 16) + 1
            let end = min(data.count, index + size)
            result.append(data[index..<end])
            index = end
            step += 1
        }
        return result
    }

    // MARK: RESP

    private static func respValues(_ chunks: [ArraySlice<UInt8>]) -> (values: [RESPValue], failed: Bool) {
        var parser = RESPParser()
        var values: [RESPValue] = []
        for chunk in chunks {
            var failed = false
            do {
                try parser.feed(chunk)
            } catch {
                failed = true
            }
            // Whatever was complete before a failure is still handed out.
            while let value = parser.next() { values.append(value) }
            if failed { return (values, true) }
        }
        return (values, false)
    }

    static func resp(_ data: [UInt8]) {
        let whole = respValues([data[...]])
        let split = respValues(pieces(data))
        require(whole.failed == split.failed, "whole input failed: \(whole.failed), in pieces: \(split.failed)")
        if !whole.failed {
            require(whole.values == split.values, "whole and split parses differ")
        } else {
            // Before the error, both saw the same complete values, in order.
            let common = min(whole.values.count, split.values.count)
            require(Array(whole.values.prefix(common)) == Array(split.values.prefix(common)), "values before the error differ")
        }
    }

    // MARK: Client frames

    static func clientFrame(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        do {
            // Any frame may decode; what matters is that nothing else comes out of it than a frame or
            // an error frame of the invalid-input kind.
            _ = try ClientFrame.decode(text)
        } catch {
            require(!error.error.code.isEmpty && !error.error.message.isEmpty, "an error frame without code or message")
            require(error.error.kind == .invalidInput, "a refused frame must be invalid input, got \(error.error.kind)")
        }
    }

    // MARK: JSON bodies

    struct SendBody: StrictDecodable {
        static let fields: Set<String> = ["body", "clientMsgId", "replyToId", "attachmentIds"]
        var body: String?
        var clientMsgId: String?
        var replyToId: String?
        var attachmentIds: [String]?
    }

    struct CreateBody: StrictDecodable {
        static let fields: Set<String> = ["type", "name", "memberIds", "passcode", "userId"]
        var type: String
        var name: String?
        var memberIds: [String]?
        var passcode: String?
        var userId: String?
    }

    struct ReadBody: StrictDecodable {
        static let fields: Set<String> = ["seq"]
        var seq: Int64
    }

    private static func decoded<T: StrictDecodable>(_ type: T.Type, _ data: Data) {
        do {
            _ = try StrictJSON.decode(type, from: data)
        } catch let error as ParleyError {
            require(error.kind == .invalidInput, "a refused body must be invalid input, got \(error.kind)")
            require(!error.message.isEmpty, "an error without a message")
        } catch {
            require(false, "StrictJSON threw a non-ParleyError: \(error)")
        }
    }

    static func jsonBody(_ data: [UInt8]) {
        let body = Data(data)
        decoded(SendBody.self, body)
        decoded(CreateBody.self, body)
        decoded(ReadBody.self, body)
    }

    // MARK: Multipart

    private static func multipartEvents(boundary: String, _ chunks: [ArraySlice<UInt8>]) -> (events: [MultipartReader.Event], failed: Bool) {
        guard var reader = try? MultipartReader(boundary: boundary) else { return ([], true) }
        var events: [MultipartReader.Event] = []
        for chunk in chunks {
            guard let more = try? reader.feed(chunk) else { return (events, true) }
            events += more
        }
        if (try? reader.finish()) == nil { return (events, true) }
        return (events, false)
    }

    /// Joins adjacent body events, which depend on how the input was split.
    private static func normalized(_ events: [MultipartReader.Event]) -> [MultipartReader.Event] {
        var result: [MultipartReader.Event] = []
        for event in events {
            if case .body(let more) = event, case .body(let earlier)? = result.last {
                result[result.count - 1] = .body(earlier + more)
            } else {
                result.append(event)
            }
        }
        return result
    }

    static func multipart(_ data: [UInt8]) {
        // The first byte picks a boundary; the rest is the body.
        guard let first = data.first else { return }
        let boundaries = ["b", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "x-y_z", String(repeating: "q", count: 70)]
        let boundary = boundaries[Int(first) % boundaries.count]
        let body = Array(data.dropFirst())
        let whole = multipartEvents(boundary: boundary, [body[...]])
        let split = multipartEvents(boundary: boundary, pieces(body))
        require(whole.failed == split.failed, "whole body failed: \(whole.failed), in pieces: \(split.failed)")
        if !whole.failed {
            require(normalized(whole.events) == normalized(split.events), "whole and split parses differ")
        }
        if let contentType = String(validating: body.prefix(200), as: UTF8.self) {
            _ = MultipartReader.boundary(contentType: contentType)
            _ = MultipartReader.parameter("filename", in: contentType)
        }
    }

    // MARK: Text rules

    static func text(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        let names = Mentions.usernames(in: text)
        require(names.count <= Mentions.maxPerMessage && Set(names).count == names.count, "mentions must be distinct and bounded")
        require(names.allSatisfy { (3...32).contains($0.utf8.count) }, "a mention outside 3–32 bytes")

        if let emoji = try? Emoji.reaction(text) {
            require(emoji.count == 1, "a reaction must be one grapheme, got \(emoji.count)")
        }

        if let query = try? SearchQuery(parsing: text) {
            require(!query.terms.isEmpty && query.terms.count <= SearchQuery.maxTerms, "search terms out of bounds")
            for case .words(let words, _) in query.terms {
                require(!words.isEmpty, "an empty search term")
                require(words.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber } }, "a search word with other characters")
            }
        }

        let name = FileName.sanitized(text)
        require(!name.isEmpty && name.utf8.count <= FileName.maxBytes, "file name length \(name.utf8.count)")
        require(!name.contains("/") && !name.contains("\\") && !name.hasPrefix("."), "a file name that is a path: \(name.debugDescription)")
        require(
            !name.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format },
            "a control or format character left in a file name")

        _ = ContentSniffer.contentType(of: data.prefix(64))

        let limits = Limits()
        _ = try? Validation.username(text)
        _ = try? Validation.email(text)
        _ = try? Validation.displayName(text, fallback: "x")
        _ = try? Validation.groupName(text, limits: limits)
        _ = try? Validation.messageBody(text, limits: limits)
        _ = try? Validation.clientMsgID(text, limits: limits)
        _ = MessageReference.preview(of: text)
        _ = SearchHit.highlight(marked: text)
    }
}
