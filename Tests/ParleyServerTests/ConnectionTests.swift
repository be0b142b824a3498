import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import ParleyCore
import ParleyTestSupport
import Synchronization
import Testing

@testable import ParleyServer

/// A frame as the peer sees it.
private enum Written: Equatable {
    case text(String)
    case ping
    case close(code: UInt16, reason: String)
    case other(String)

    init(_ frame: WebSocketFrame) {
        var data = frame.data
        switch frame.opcode {
        case .text: self = .text(String(buffer: data))
        case .ping: self = .ping
        case .connectionClose:
            let code = data.readInteger(as: UInt16.self) ?? 0
            self = .close(code: code, reason: String(buffer: data))
        default: self = .other("\(frame.opcode)")
        }
    }

    var closeCode: UInt16? {
        guard case .close(let code, _) = self else { return nil }
        return code
    }

    /// The `body` of a message frame.
    var messageBody: String? {
        guard case .text(let text) = self, let json = JSONValue.parse(Data(text.utf8)), json["type"].string == "message" else { return nil }
        return json["message"]["body"].string
    }
}

extension EmbeddedChannel {
    /// Runs the work scheduled on the loop, then takes every frame written so far.
    fileprivate func written() throws -> [Written] {
        embeddedEventLoop.run()
        var frames: [Written] = []
        while let frame = try readOutbound(as: WebSocketFrame.self) { frames.append(Written(frame)) }
        return frames
    }
}

@Suite("Connection: one socket's outbound queue")
struct ConnectionTests {
    /// A connection on a connected (active) embedded channel.
    private func makeConnection(limit: Int = 16) throws -> (Connection, EmbeddedChannel) {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9000)).wait()
        return (Connection(userID: UUID(), sessionID: UUID(), channel: channel, limit: limit), channel)
    }

    @Test("frames enqueued before start() are held, then written in order once it is called")
    func heldUntilStarted() throws {
        let (connection, channel) = try makeConnection()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        for text in ["one", "two", "three"] { #expect(connection.enqueue(ByteBuffer(string: text))) }
        #expect(try channel.written() == [])
        connection.start()
        #expect(try channel.written() == [.text("one"), .text("two"), .text("three")])
        #expect(connection.enqueue(ByteBuffer(string: "four")))
        #expect(try channel.written() == [.text("four")])
    }

    @Test("the same encoded frame enqueued on two sockets reaches both, byte for byte")
    func sharedFrame() throws {
        let (first, firstChannel) = try makeConnection()
        defer { _ = try? firstChannel.finish(acceptAlreadyClosed: true) }
        let (second, secondChannel) = try makeConnection()
        defer { _ = try? secondChannel.finish(acceptAlreadyClosed: true) }
        let frame = ServerFrame.encode(ServerFrame.Typing(conversationId: "c1", userId: "u1", state: "start"))
        let expected = String(buffer: frame)
        first.start()
        second.start()
        #expect(first.enqueue(frame))
        #expect(second.enqueue(frame))
        #expect(try firstChannel.written() == [.text(expected)])
        #expect(try secondChannel.written() == [.text(expected)])
    }

    @Test("a socket whose queue fills up is sent close 4008, disconnected, and refuses further frames")
    func slowConsumer() throws {
        let (connection, channel) = try makeConnection(limit: 3)
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        for i in 1...3 { #expect(connection.enqueue(ByteBuffer(string: "m\(i)"))) }
        #expect(!connection.enqueue(ByteBuffer(string: "m4")))
        #expect(try channel.written().map(\.closeCode) == [4008])
        #expect(!channel.isActive)
        #expect(!connection.enqueue(ByteBuffer(string: "m5")))
        connection.start()
        #expect(try channel.written() == [], "the backlog was dropped, not written after the close")
    }

    @Test("close(code:reason:) writes the frames queued before it, then the close frame; nothing after it")
    func orderlyClose() throws {
        let (connection, channel) = try makeConnection()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        connection.start()
        #expect(connection.enqueue(ByteBuffer(string: "a")))
        #expect(connection.enqueue(ByteBuffer(string: "b")))
        connection.close(code: 1001, reason: "node shutting down")
        #expect(!connection.enqueue(ByteBuffer(string: "c")))
        #expect(try channel.written() == [.text("a"), .text("b"), .close(code: 1001, reason: "node shutting down")])
        #expect(channel.isActive, "the peer gets time to answer the close")
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "a peer that never answers is disconnected after two seconds")
    }

    @Test("a heartbeat pings; a peer that answered is pinged again, one that did not is disconnected")
    func heartbeat() throws {
        let (connection, channel) = try makeConnection()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        connection.heartbeat()
        #expect(try channel.written() == [.ping])
        connection.ponged()
        connection.heartbeat()
        #expect(try channel.written() == [.ping])
        #expect(channel.isActive)

        connection.heartbeat()  // no pong since the last ping
        #expect(try channel.written() == [])
        #expect(!channel.isActive)
        #expect(!connection.enqueue(ByteBuffer(string: "late")))
    }
}

/// A socket registered with the registry, and the channel standing in for its peer.
private struct PeerSocket: Sendable {
    let connection: Connection
    let channel: NIOAsyncTestingChannel

    /// What the peer has received so far.
    func received() async throws -> [Written] {
        // Drains were submitted to the loop's serial queue before this, so they have run after it.
        await channel.testingEventLoop.run()
        var frames: [Written] = []
        while let frame = try await channel.readOutbound(as: WebSocketFrame.self) { frames.append(Written(frame)) }
        return frames
    }
}

/// A registry with the sockets a test opened, all closed at the end.
private final class RegistryFixture: Sendable {
    let registry = ConnectionRegistry(bus: InProcessBus(), logger: Logger(label: "test"))
    private let channels = Mutex<[NIOAsyncTestingChannel]>([])

    /// Opens, registers and starts a socket, as the gateway does once a client is authenticated.
    func connect(_ userID: UUID, session: UUID = UUID()) async throws -> PeerSocket {
        let channel = await NIOAsyncTestingChannel(handlers: [])
        channels.withLock { $0.append(channel) }
        let connection = Connection(userID: userID, sessionID: session, channel: channel, limit: 16)
        try await registry.add(connection)
        connection.start()
        return PeerSocket(connection: connection, channel: channel)
    }

    func closeAll() async {
        for channel in channels.withLock({ $0 }) { _ = try? await channel.finish(acceptAlreadyClosed: true) }
    }
}

@Suite("Connection registry: bus deliveries to this node's sockets")
struct ConnectionRegistryTests {
    /// Runs `body` while the registry applies subscriptions, then stops it and closes every socket.
    private func withRegistry(_ body: (RegistryFixture) async throws -> Void) async throws {
        let fixture = RegistryFixture()
        let registry = fixture.registry
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await registry.run() }
            var failure: (any Error)?
            do { try await body(fixture) } catch { failure = error }
            registry.finish()
            try await group.waitForAll()
            await fixture.closeAll()
            if let failure { throw failure }
        }
    }

    private func message(from sender: UUID, _ body: String) -> ChatEvent {
        .message(
            Message(
                id: UUID(), conversationID: UUID(), seq: 1, senderID: sender, body: body, clientMsgID: nil,
                createdAt: Date(timeIntervalSince1970: 1_700_000_000)))
    }

    @Test("a message reaches every socket of its recipients and no other socket")
    func deliverToRecipients() async throws {
        try await withRegistry { node in
            let alice = UUID(), bob = UUID(), carol = UUID()
            let alicePhone = try await node.connect(alice)
            let aliceLaptop = try await node.connect(alice)
            let bobPhone = try await node.connect(bob)

            node.registry.deliver(BusDelivery(event: message(from: bob, "hi alice"), recipients: [alice]))
            #expect(try await alicePhone.received().map(\.messageBody) == ["hi alice"])
            #expect(try await aliceLaptop.received().map(\.messageBody) == ["hi alice"])
            #expect(try await bobPhone.received() == [])

            // Carol has no socket on this node: her part of the delivery is skipped.
            node.registry.deliver(BusDelivery(event: message(from: alice, "hi bob"), recipients: [bob, carol]))
            #expect(try await bobPhone.received().map(\.messageBody) == ["hi bob"])
            #expect(try await alicePhone.received() == [])
            #expect(try await aliceLaptop.received() == [])
        }
    }

    @Test("a revoked session's socket is closed with 4001; the user's other sockets stay open")
    func sessionRevoked() async throws {
        try await withRegistry { node in
            let alice = UUID(), bob = UUID(), revoked = UUID()
            let alicePhone = try await node.connect(alice, session: revoked)
            let aliceLaptop = try await node.connect(alice)
            let bobPhone = try await node.connect(bob)

            node.registry.deliver(BusDelivery(event: .sessionRevoked(sessionID: revoked), recipients: [alice, bob]))
            #expect(try await alicePhone.received().map(\.closeCode) == [4001])
            #expect(try await aliceLaptop.received() == [])
            #expect(try await bobPhone.received() == [])

            node.registry.deliver(BusDelivery(event: message(from: bob, "still there?"), recipients: [alice]))
            #expect(try await alicePhone.received() == [], "nothing follows the close frame")
            #expect(try await aliceLaptop.received().map(\.messageBody) == ["still there?"])
        }
    }

    @Test("a removed socket gets nothing more, while the user's other sockets still do")
    func removed() async throws {
        try await withRegistry { node in
            let alice = UUID(), bob = UUID()
            let alicePhone = try await node.connect(alice)
            let aliceLaptop = try await node.connect(alice)
            let bobPhone = try await node.connect(bob)
            #expect(node.registry.count == 3)

            node.registry.remove(alicePhone.connection)
            #expect(node.registry.count == 2)
            node.registry.deliver(BusDelivery(event: message(from: bob, "one"), recipients: [alice]))
            #expect(try await alicePhone.received() == [])
            #expect(try await aliceLaptop.received().map(\.messageBody) == ["one"])

            node.registry.remove(aliceLaptop.connection)
            node.registry.deliver(BusDelivery(event: message(from: bob, "two"), recipients: [alice, bob]))
            #expect(try await aliceLaptop.received() == [])
            #expect(try await bobPhone.received().map(\.messageBody) == ["two"])
            #expect(node.registry.count == 1)
        }
    }
}
