import NIOCore

/// A RESP2 value, as Redis sends it.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; nil is RESP's null bulk string (`$-1`). The bytes are a slice of the buffer
    /// they arrived in, not a copy.
    case bulkString(ByteBuffer?)
    /// An array; nil is RESP's null array (`*-1`).
    case array([RESPValue]?)

    /// A bulk string holding `text`'s UTF-8 bytes.
    public static func bulk(_ text: String) -> RESPValue { .bulkString(ByteBuffer(string: text)) }

    /// The value as text, for simple and bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(buffer: bytes)
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
    public static func encode(_ command: [String], into buffer: inout ByteBuffer) {
        writeHeader(UInt8(ascii: "*"), command.count, into: &buffer)
        for argument in command {
            writeHeader(UInt8(ascii: "$"), argument.utf8.count, into: &buffer)
            buffer.writeString(argument)
            buffer.writeInteger(crlf)
        }
    }

    private static let crlf: UInt16 = 0x0D0A

    private static func writeHeader(_ type: UInt8, _ count: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(type)
        buffer.writeString(String(count))
        buffer.writeInteger(crlf)
    }
}

public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The RESP2 reply parser: a pure state machine with no I/O. Feed it buffers as they arrive, in any
/// split, and take complete values out in order. Bulk strings come out as slices of the buffers
/// fed in (no copy) unless a value spans two reads. Nested arrays are parsed with an explicit stack,
/// so a partial reply resumes where it stopped instead of being re-read from its start.
public struct RESPParser: Sendable {
    /// A reply is refused past this size, so a broken peer cannot make us buffer without bound.
    public static let maxBulkLength = 512 * 1024 * 1024
    /// A header line (type byte, number or simple string) longer than this is refused.
    public static let maxLineLength = 64 * 1024

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

    /// Bytes received and not yet parsed, from the reader index on.
    private var buffer = ByteBuffer()
    private var step = Step.header
    private var stack: [OpenArray] = []
    private var ready: [RESPValue] = []
    private var readyIndex = 0

    public init() {}

    /// Adds a buffer from the wire and parses every value it completes. A protocol error is final:
    /// the connection must be dropped.
    public mutating func feed(_ bytes: ByteBuffer) throws {
        if buffer.readableBytes == 0 {
            // The common case, a read holding whole replies: parse the read's own storage.
            buffer = bytes
        } else {
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
        while let value = try parseOne() {
            complete(value)
        }
        if buffer.readerIndex > Self.maxLineLength { buffer.discardReadBytes() }
    }

    /// Adds bytes from the wire (tests and tools); the same as feeding them as one buffer.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws {
        try feed(ByteBuffer(bytes: bytes))
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
                guard buffer.readableBytes >= length + 2 else { return nil }
                guard buffer.getInteger(at: buffer.readerIndex + length, as: UInt16.self) == 0x0D0A else {
                    throw RESPProtocolError("bulk string not terminated by CRLF")
                }
                let bytes = buffer.readSlice(length: length)!
                buffer.moveReaderIndex(forwardBy: 2)
                step = .header
                return .bulkString(bytes)
            case .header:
                guard let lineLength = lineLength() else {
                    if buffer.readableBytes > Self.maxLineLength { throw RESPProtocolError("header line too long") }
                    return nil
                }
                guard lineLength > 0 else { throw RESPProtocolError("header line without a type byte") }
                let type: UInt8 = buffer.readInteger()!
                var line = buffer.readSlice(length: lineLength - 1)!
                buffer.moveReaderIndex(forwardBy: 2)
                switch type {
                case UInt8(ascii: "+"):
                    return .simpleString(line.readString(length: line.readableBytes)!)
                case UInt8(ascii: "-"):
                    return .error(line.readString(length: line.readableBytes)!)
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

    /// The length of the header line at the reader index (type byte included, CRLF excluded), or
    /// nil while its CRLF has not arrived.
    private func lineLength() -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count >= 2 else { return nil }
            var index = 0
            while index + 1 < bytes.count {
                if bytes[index] == 13 && bytes[index + 1] == 10 { return index }
                index += 1
            }
            return nil
        }
    }

    /// A signed 64-bit decimal; anything else (overflow included) is a protocol error.
    private static func integer(_ line: ByteBuffer) throws -> Int64 {
        let value = line.withUnsafeReadableBytes { bytes -> Int64? in
            var digits = bytes[...]
            let negative = digits.first == UInt8(ascii: "-")
            if negative { digits = digits.dropFirst() }
            guard !digits.isEmpty else { return nil }
            var value: Int64 = 0
            for digit in digits {
                guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
                let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = shifted.addingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
                guard !overflow, !overflow2 else { return nil }
                value = sum
            }
            return negative ? -value : value
        }
        guard let value else {
            throw RESPProtocolError("not an integer: \(String(decoding: line.readableBytesView.prefix(32), as: UTF8.self))")
        }
        return value
    }
}
