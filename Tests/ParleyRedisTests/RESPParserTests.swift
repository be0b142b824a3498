import NIOCore
import ParleyRedis
import Testing

@Suite("RESP parser (pure state machine)")
struct RESPParserTests {
    static let wire = Array(
        "+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n*3\r\n$7\r\nmessage\r\n*2\r\n:1\r\n$0\r\n\r\n:-7\r\n".utf8)
    static let expected: [RESPValue] = [
        .simpleString("OK"),
        .error("ERR wrong"),
        .integer(42),
        .bulk("hello"),
        .bulkString(nil),
        .array(nil),
        .array([]),
        .array([.bulk("message"), .array([.integer(1), .bulk("")]), .integer(-7)]),
    ]

    static func parse(_ chunks: [[UInt8]]) throws -> [RESPValue] {
        var parser = RESPParser()
        var values: [RESPValue] = []
        for chunk in chunks {
            try parser.feed(chunk)
            while let value = parser.next() { values.append(value) }
        }
        return values
    }

    @Test("every RESP2 type, nested arrays included, in one read")
    func wholeInput() throws {
        #expect(try Self.parse([Self.wire]) == Self.expected)
    }

    @Test("the same values however the bytes are split (every split point, and byte by byte)")
    func anySplit() throws {
        for cut in 0...Self.wire.count {
            #expect(try Self.parse([Array(Self.wire[..<cut]), Array(Self.wire[cut...])]) == Self.expected, "split at \(cut)")
        }
        #expect(try Self.parse(Self.wire.map { [$0] }) == Self.expected)
    }

    @Test("binary bulk strings keep their bytes, CR and LF included")
    func binarySafe() throws {
        let payload: [UInt8] = [0, 13, 10, 255, 36, 42]
        #expect(try Self.parse([Array("$6\r\n".utf8) + payload + [13, 10]]) == [.bulkString(ByteBuffer(bytes: payload))])
    }

    @Test("malformed input is a protocol error, not a crash")
    func malformed() {
        for bad in ["?what\r\n", ":12x\r\n", "$-5\r\n", "$3\r\nabcd\r\n", "*-2\r\n", "\r\n", ":\r\n", ":-\r\n", ":99999999999999999999\r\n"] {
            #expect(throws: RESPProtocolError.self, "\(bad.debugDescription)") { try Self.parse([Array(bad.utf8)]) }
        }
    }

    @Test("commands are encoded as arrays of bulk strings")
    func encoder() throws {
        var bytes = ByteBuffer()
        RESPEncoder.encode(["SET", "k", "a b\r\n"], into: &bytes)
        #expect(String(buffer: bytes) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na b\r\n\r\n")
    }
}
