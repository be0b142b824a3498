import Foundation

/// A streaming reader of `multipart/form-data` bodies (RFC 7578 over RFC 2046): bytes go in as
/// they arrive, events come out, and a part's body is never held whole. Strict about structure,
/// bounded in what it keeps: a part's header block may not exceed `maxHeaderBytes`, and only the
/// bytes that could begin a delimiter are held back between chunks.
public struct MultipartReader: Sendable {
    public struct Part: Sendable, Equatable {
        /// Header names lower-cased, in order.
        public var headers: [Header]
        public struct Header: Sendable, Equatable {
            public var name: String
            public var value: String
        }

        public func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }

        /// The `name` parameter of `Content-Disposition: form-data`.
        public var fieldName: String? { header("content-disposition").flatMap { MultipartReader.parameter("name", in: $0) } }
        /// The `filename*` (RFC 5987, UTF-8) or `filename` parameter.
        public var fileName: String? {
            guard let disposition = header("content-disposition") else { return nil }
            if let extended = MultipartReader.parameter("filename*", in: disposition), let decoded = MultipartReader.decodeExtended(extended) {
                return decoded
            }
            return MultipartReader.parameter("filename", in: disposition)
        }
    }

    public enum Event: Sendable, Equatable {
        case partBegan(Part)
        case body(ArraySlice<UInt8>)
        case partEnded
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case noBoundary
        case headersTooLong
        case malformedHeader
        case malformedDelimiter
        case tooManyParts
        case unexpectedEnd

        public var description: String {
            switch self {
            case .noBoundary: "the Content-Type has no usable multipart boundary"
            case .headersTooLong: "a part's headers are too long"
            case .malformedHeader: "a part's header is malformed"
            case .malformedDelimiter: "a boundary delimiter is malformed"
            case .tooManyParts: "too many parts"
            case .unexpectedEnd: "the body ended before the closing boundary"
            }
        }
    }

    private enum State {
        case preamble, afterDelimiter, headers, body, done
    }

    public let maxHeaderBytes: Int
    public let maxParts: Int
    private let delimiter: [UInt8]  // CRLF "--" boundary
    private var buffer: [UInt8]
    private var state = State.preamble
    private var parts = 0

    public var isFinished: Bool { state == .done }

    public init(boundary: String, maxHeaderBytes: Int = 8192, maxParts: Int = 16) throws {
        // RFC 2046: 1 to 70 characters, not ending in a space.
        guard (1...70).contains(boundary.utf8.count), !boundary.hasSuffix(" "),
            boundary.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F })
        else { throw Failure.noBoundary }
        self.delimiter = Array("\r\n--\(boundary)".utf8)
        self.maxHeaderBytes = maxHeaderBytes
        self.maxParts = maxParts
        // The first delimiter may open the body without a CRLF before it: supply one.
        self.buffer = [0x0D, 0x0A]
    }

    /// The boundary of a `multipart/form-data` Content-Type, or nil.
    public static func boundary(contentType: String) -> String? {
        let type = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard type == "multipart/form-data" else { return nil }
        return parameter("boundary", in: contentType)
    }

    /// Feeds the next bytes of the body; returns what they complete.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws -> [Event] {
        if state == .done { return [] }  // the epilogue is ignored
        buffer.append(contentsOf: bytes)
        var events: [Event] = []
        var start = 0
        defer { buffer.removeFirst(start) }
        loop: while true {
            switch state {
            case .preamble:
                if let at = find(delimiter, from: start) {
                    start = at + delimiter.count
                    state = .afterDelimiter
                } else {
                    start = max(start, buffer.count - (delimiter.count - 1))
                    break loop
                }
            case .afterDelimiter:
                guard buffer.count - start >= 2 else { break loop }
                if buffer[start] == 0x2D && buffer[start + 1] == 0x2D {
                    state = .done
                    start = buffer.count
                    break loop
                }
                // Transport padding (spaces, tabs), then CRLF.
                var index = start
                while index < buffer.count, buffer[index] == 0x20 || buffer[index] == 0x09 { index += 1 }
                if index - start > 64 { throw Failure.malformedDelimiter }
                guard buffer.count - index >= 2 else { break loop }
                guard buffer[index] == 0x0D && buffer[index + 1] == 0x0A else { throw Failure.malformedDelimiter }
                parts += 1
                if parts > maxParts { throw Failure.tooManyParts }
                start = index + 2
                state = .headers
            case .headers:
                let end: Int
                let next: Int
                if buffer.count - start >= 2 && buffer[start] == 0x0D && buffer[start + 1] == 0x0A {
                    end = start
                    next = start + 2
                } else if let at = find([0x0D, 0x0A, 0x0D, 0x0A], from: start) {
                    end = at
                    next = at + 4
                } else {
                    if buffer.count - start > maxHeaderBytes { throw Failure.headersTooLong }
                    break loop
                }
                if end - start > maxHeaderBytes { throw Failure.headersTooLong }
                events.append(.partBegan(Part(headers: try Self.headers(buffer[start..<end]))))
                start = next
                state = .body
            case .body:
                if let at = find(delimiter, from: start) {
                    if at > start { events.append(.body(buffer[start..<at])) }
                    events.append(.partEnded)
                    start = at + delimiter.count
                    state = .afterDelimiter
                } else {
                    let safe = buffer.count - (delimiter.count - 1)
                    if safe > start {
                        events.append(.body(buffer[start..<safe]))
                        start = safe
                    }
                    break loop
                }
            case .done:
                start = buffer.count
                break loop
            }
        }
        return events
    }

    /// Call at the end of the body: throws unless the closing delimiter was read.
    public func finish() throws {
        guard state == .done else { throw Failure.unexpectedEnd }
    }

    private func find(_ needle: [UInt8], from: Int) -> Int? {
        guard buffer.count - from >= needle.count else { return nil }
        let first = needle[0]
        var index = from
        let last = buffer.count - needle.count
        while index <= last {
            if buffer[index] == first {
                var matched = 1
                while matched < needle.count && buffer[index + matched] == needle[matched] { matched += 1 }
                if matched == needle.count { return index }
            }
            index += 1
        }
        return nil
    }

    private static func headers(_ block: ArraySlice<UInt8>) throws -> [Part.Header] {
        guard !block.isEmpty else { return [] }
        guard let text = String(validating: block, as: UTF8.self) else { throw Failure.malformedHeader }
        var headers: [Part.Header] = []
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: false) {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex, !line.hasPrefix(" "), !line.hasPrefix("\t") else {
                throw Failure.malformedHeader
            }
            let name = line[..<colon]
            guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { throw Failure.malformedHeader }
            headers.append(.init(name: name.lowercased(), value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return headers
    }

    /// A parameter of a header value such as `form-data; name="file"; filename="a.png"`: quoted
    /// (with `\` escapes) or a bare token; nil if absent.
    public static func parameter(_ wanted: String, in value: String) -> String? {
        var index = value.firstIndex(of: ";") ?? value.endIndex
        while index < value.endIndex {
            index = value.index(after: index)
            while index < value.endIndex, value[index] == " " || value[index] == "\t" { index = value.index(after: index) }
            guard let equals = value[index...].firstIndex(of: "=") else { return nil }
            let name = value[index..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            index = value.index(after: equals)
            var parsed = ""
            if index < value.endIndex, value[index] == "\"" {
                index = value.index(after: index)
                while index < value.endIndex, value[index] != "\"" {
                    if value[index] == "\\", value.index(after: index) < value.endIndex { index = value.index(after: index) }
                    parsed.append(value[index])
                    index = value.index(after: index)
                }
                if index < value.endIndex { index = value.index(after: index) }
                while index < value.endIndex, value[index] != ";" { index = value.index(after: index) }
            } else {
                let end = value[index...].firstIndex(of: ";") ?? value.endIndex
                parsed = value[index..<end].trimmingCharacters(in: .whitespaces)
                index = end
            }
            if name == wanted { return parsed }
        }
        return nil
    }

    /// RFC 5987 `UTF-8''percent%20encoded`.
    static func decodeExtended(_ value: String) -> String? {
        let pieces = value.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard pieces.count == 3, pieces[0].lowercased() == "utf-8" else { return nil }
        return String(pieces[2]).removingPercentEncoding
    }
}
