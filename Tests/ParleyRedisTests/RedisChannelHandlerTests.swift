import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import ParleyRedis

/// A command's reply promise, with its outcome recorded the moment it completes.
private final class Reply: Sendable {
    let promise: EventLoopPromise<RESPValue>
    private let outcome = Mutex<Result<RESPValue, any Error>?>(nil)

    init(on loop: any EventLoop) {
        promise = loop.makePromise(of: RESPValue.self)
        promise.futureResult.whenComplete { result in self.outcome.withLock { $0 = result } }
    }

    private var result: Result<RESPValue, any Error>? { outcome.withLock { $0 } }

    var isPending: Bool { result == nil }

    var value: RESPValue? {
        guard case .success(let value)? = result else { return nil }
        return value
    }

    var error: (any Error)? {
        guard case .failure(let error)? = result else { return nil }
        return error
    }
}

/// What the push callback received.
private final class Pushes: Sendable {
    let values = Mutex<[RESPValue]>([])
}

private func bulk(_ text: String) -> RESPValue { .bulk(text) }

private func encoded(_ commands: [[String]]) -> ByteBuffer {
    var bytes = ByteBuffer()
    for command in commands { RESPEncoder.encode(command, into: &bytes) }
    return bytes
}

extension EmbeddedChannel {
    /// Writes `commands` as one request, as `RedisConnection.pipeline` does, and returns their replies.
    fileprivate func send(_ commands: [[String]]) throws -> [Reply] {
        let replies = commands.map { _ in Reply(on: eventLoop) }
        try writeOutbound(RedisRequest(bytes: encoded(commands), replies: replies.map(\.promise)))
        return replies
    }

    /// Feeds bytes from the server.
    fileprivate func receive(_ text: String) throws {
        try writeInbound(ByteBuffer(string: text))
    }

    /// Every write that reached the socket so far, as text.
    fileprivate func wire() throws -> [String] {
        var writes: [String] = []
        while let buffer = try readOutbound(as: ByteBuffer.self) { writes.append(String(buffer: buffer)) }
        return writes
    }
}

@Suite("Redis channel handler: pipelining on one connection")
struct RedisChannelHandlerTests {
    private func makeChannel(onPush: (@Sendable (RESPValue) -> Void)? = nil) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: RedisChannelHandler(onPush: onPush))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return channel
    }

    @Test("requests go out as RESP, and replies complete the waiting commands in request order")
    func pipelining() throws {
        let channel = try makeChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let get = try channel.send([["GET", "greeting"]])
        let batch = try channel.send([["SET", "n", "1"], ["INCR", "n"]])
        #expect(
            try channel.wire() == [
                "*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n",
                "*3\r\n$3\r\nSET\r\n$1\r\nn\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n",
            ])
        #expect((get + batch).allSatisfy { $0.isPending })

        try channel.receive("$5\r\nhello\r\n")
        #expect(get[0].value == bulk("hello"))
        #expect(batch.allSatisfy { $0.isPending }, "one reply completes one command")

        try channel.receive("+OK\r\n:2\r\n")
        #expect(batch.map(\.value) == [.simpleString("OK"), .integer(2)])
    }

    @Test("replies arriving byte by byte complete each command exactly when its last byte arrives")
    func splitReplies() throws {
        let channel = try makeChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let replies = try channel.send([["HMGET", "h", "name", "age"], ["PING"]])
        _ = try channel.wire()
        let first = Array("*2\r\n$3\r\nada\r\n$-1\r\n".utf8)
        let second = Array("+PONG\r\n".utf8)
        var completedAt: [Int?] = [nil, nil]
        for (index, byte) in (first + second).enumerated() {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            for i in replies.indices where completedAt[i] == nil && !replies[i].isPending { completedAt[i] = index }
        }
        #expect(completedAt == [first.count - 1, first.count + second.count - 1])
        #expect(replies.map(\.value) == [.array([bulk("ada"), .bulkString(nil)]), .simpleString("PONG")])
    }

    @Test("an error reply completes its command with the error value; the next command still gets its own reply")
    func errorReply() throws {
        let channel = try makeChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let replies = try channel.send([["NOPE"], ["PING"]])
        try channel.receive("-ERR unknown command 'NOPE'\r\n+PONG\r\n")
        #expect(replies[0].value == .error("ERR unknown command 'NOPE'"))
        #expect(throws: RedisError.server("ERR unknown command 'NOPE'")) { try replies[0].value?.orThrow() }
        #expect(replies[1].value == .simpleString("PONG"))
        #expect(channel.isActive, "an error reply does not drop the connection")
    }

    @Test("when the connection closes, every command still waiting fails with connectionClosed")
    func closeFailsWaiting() throws {
        let channel = try makeChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let batch = try channel.send([["GET", "a"], ["GET", "b"]])
        let ping = try channel.send([["PING"]])
        try channel.receive("$1\r\nA\r\n")
        try channel.close().wait()
        #expect(batch[0].value == bulk("A"), "a command already answered keeps its reply")
        #expect(batch[1].error as? RedisError == .connectionClosed)
        #expect(ping[0].error as? RedisError == .connectionClosed)
    }

    @Test("a malformed reply drops the connection and fails the waiting commands instead of mismatching replies")
    func malformedReply() throws {
        let channel = try makeChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let replies = try channel.send([["GET", "a"], ["GET", "b"]])
        #expect(throws: RESPProtocolError.self) { _ = try channel.writeInbound(ByteBuffer(string: "?garbage\r\n")) }
        #expect(!channel.isActive)
        #expect(replies.allSatisfy { $0.error as? RedisError == .connectionClosed })
    }

    @Test("in push mode, values no command waits for reach the push callback; a waiting command still gets its reply")
    func pushMode() throws {
        let pushes = Pushes()
        let channel = try makeChannel(onPush: { value in pushes.values.withLock { $0.append(value) } })
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        try channel.writeOutbound(RedisRequest(bytes: encoded([["SUBSCRIBE", "news"]]), replies: []))
        #expect(try channel.wire() == ["*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n"])

        try channel.receive("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n")
        #expect(
            pushes.values.withLock { $0 } == [
                .array([bulk("subscribe"), bulk("news"), .integer(1)]),
                .array([bulk("message"), bulk("news"), bulk("hi")]),
            ])

        // A PING in subscribed mode is answered in order; the message after it is a push again.
        let ping = try channel.send([["PING"]])
        try channel.receive("*2\r\n$4\r\npong\r\n$0\r\n\r\n*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$3\r\nbye\r\n")
        #expect(ping[0].value == .array([bulk("pong"), bulk("")]))
        #expect(pushes.values.withLock { $0 }.last == .array([bulk("message"), bulk("news"), bulk("bye")]))
        #expect(pushes.values.withLock { $0.count } == 3)
    }
}
