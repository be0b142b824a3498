/// A RESP2 value, as Redis sends it.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; nil is RESP's null bulk string (`$-1`).
    case bulkString([UInt8]?)
    /// An array; nil is RESP's null array (`*-1`).
    case array([RESPValue]?)

    /// The value as text, for simple and bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var array: [RESPValue]? {
        if case .array(let values?) = self { return values }
        return nil
    }

    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): true
        default: false
        }
    }
}

/// Writes commands in RESP's request form: an array of bulk strings.
public enum RESPEncoder {
    public static func encode(_ command: [String], into bytes: inout [UInt8]) {
        encode(command.map { Array($0.utf8) }, into: &bytes)
    }

    public static func encode(_ command: [[UInt8]], into bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "*"))
        bytes.append(contentsOf: String(command.count).utf8)
        bytes.append(contentsOf: [13, 10])
        for argument in command {
            bytes.append(UInt8(ascii: "$"))
            bytes.append(contentsOf: String(argument.count).utf8)
            bytes.append(contentsOf: [13, 10])
            bytes.append(contentsOf: argument)
            bytes.append(contentsOf: [13, 10])
        }
    }
}

public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The RESP2 reply parser: a pure state machine with no I/O. Feed it bytes as they arrive, in any
/// split, and take complete values out in order. Nested arrays are parsed with an explicit stack,
/// so a partial reply resumes where it stopped instead of being re-read from its start.
public struct RESPParser: Sendable {
    /// A reply is refused past this size, so a broken peer cannot make us buffer without bound.
    public static let maxBulkLength = 512 * 1024 * 1024

    private enum Step: Sendable {
        /// Waiting for a type byte and its header line.
        case header
        /// Inside a bulk string of this many bytes (plus CRLF).
        case bulk(Int)
    }

    private struct OpenArray: Sendable {
        var remaining: Int
        var elements: [RESPValue]
    }

    private var buffer: [UInt8] = []
    private var offset = 0
    private var step = Step.header
    private var stack: [OpenArray] = []
    private var ready: [RESPValue] = []
    private var readyIndex = 0

    public init() {}

    /// Adds bytes from the wire and parses every value they complete. A protocol error is final:
    /// the connection must be dropped.
    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) throws where Bytes.Element == UInt8 {
        buffer.append(contentsOf: bytes)
        while let value = try parseOne() {
            complete(value)
        }
        // Drop consumed bytes now and then rather than on every read.
        if offset > 0 && (offset == buffer.count || offset > 64 * 1024) {
            buffer.removeFirst(offset)
            offset = 0
        }
    }

    /// The next complete top-level value, in arrival order.
    public mutating func next() -> RESPValue? {
        guard readyIndex < ready.count else { return nil }
        let value = ready[readyIndex]
        readyIndex += 1
        if readyIndex == ready.count {
            ready.removeAll(keepingCapacity: true)
            readyIndex = 0
        }
        return value
    }

    /// Places a finished value in its enclosing array, closing arrays that become full.
    private mutating func complete(_ value: RESPValue) {
        var value = value
        while var open = stack.popLast() {
            open.elements.append(value)
            open.remaining -= 1
            if open.remaining > 0 {
                stack.append(open)
                return
            }
            value = .array(open.elements)
        }
        ready.append(value)
    }

    /// Parses one scalar or opens an array; nil when more bytes are needed.
    private mutating func parseOne() throws -> RESPValue? {
        while true {
            switch step {
            case .bulk(let length):
                guard buffer.count - offset >= length + 2 else { return nil }
                let bytes = Array(buffer[offset..<offset + length])
                guard buffer[offset + length] == 13, buffer[offset + length + 1] == 10 else {
                    throw RESPProtocolError("bulk string not terminated by CRLF")
                }
                offset += length + 2
                step = .header
                return .bulkString(bytes)
            case .header:
                guard let lineEnd = findCRLF() else {
                    if buffer.count - offset > 64 * 1024 { throw RESPProtocolError("header line too long") }
                    return nil
                }
                let type = buffer[offset]
                let line = buffer[(offset + 1)..<lineEnd]
                offset = lineEnd + 2
                switch type {
                case UInt8(ascii: "+"):
                    return .simpleString(String(decoding: line, as: UTF8.self))
                case UInt8(ascii: "-"):
                    return .error(String(decoding: line, as: UTF8.self))
                case UInt8(ascii: ":"):
                    return .integer(try Self.integer(line))
                case UInt8(ascii: "$"):
                    let length = try Self.integer(line)
                    if length == -1 { return .bulkString(nil) }
                    guard length >= 0, length <= Self.maxBulkLength else { throw RESPProtocolError("bad bulk length \(length)") }
                    step = .bulk(Int(length))
                case UInt8(ascii: "*"):
                    let count = try Self.integer(line)
                    if count == -1 { return .array(nil) }
                    guard count >= 0, count <= 1 << 24 else { throw RESPProtocolError("bad array length \(count)") }
                    if count == 0 { return .array([]) }
                    stack.append(OpenArray(remaining: Int(count), elements: []))
                default:
                    throw RESPProtocolError("unknown RESP type byte \(type)")
                }
            }
        }
    }

    private func findCRLF() -> Int? {
        var index = offset
        while index + 1 < buffer.count {
            if buffer[index] == 13 && buffer[index + 1] == 10 { return index }
            index += 1
        }
        return nil
    }

    private static func integer(_ line: ArraySlice<UInt8>) throws -> Int64 {
        guard let value = Int64(String(decoding: line, as: UTF8.self)) else {
            throw RESPProtocolError("not an integer: \(String(decoding: line.prefix(32), as: UTF8.self))")
        }
        return value
    }
}
