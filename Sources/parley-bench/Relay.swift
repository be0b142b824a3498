import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// `parley-bench relay`: the ceiling of this machine for Parley's frame traffic. It speaks just
/// enough of the protocol for `direct --relay` (hello, send → ack, message to both members), on the
/// same stack (SwiftNIO WebSocket, JSON decode and re-encode of every frame), with no accounts, no
/// storage and no fan-out bus. With `--raw` it does not decode JSON at all: the ack and the messages
/// are the client's own bytes behind a new `type` prefix, the true ceiling of the machine.
struct Relay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the baseline relay: WebSocket frames forwarded between paired clients.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 9090
    @Flag(help: "Forward frames without decoding JSON (re-prefixed bytes) instead of decoding and re-encoding each.") var raw = false

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let pairs = PairTable()
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: 1 << 16,
            shouldUpgrade: { channel, head in
                channel.eventLoop.makeSucceededFuture(head.uri.hasPrefix("/api/v1/ws") ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, head in
                let query = URLComponents(string: head.uri)?.queryItems ?? []
                let pair = query.first { $0.name == "pair" }?.value ?? "0"
                let side = Int(query.first { $0.name == "side" }?.value ?? "0") ?? 0
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RelayHandler(pair: pair, side: side, table: pairs, raw: raw))
                }
            }
        )
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
            }
            .bind(host: host, port: port).get()
        print("relay\(raw ? " (raw)" : "") listening on ws://\(host):\(port)/api/v1/ws")
        try await server.closeFuture.get()
    }
}

/// The two sides of every pair, and each pair's message counter.
final class PairTable: Sendable {
    private let table = NIOLockedValueBox([String: (sides: [Int: any Channel], seq: Int64)]())

    func join(pair: String, side: Int, channel: any Channel) {
        table.withLockedValue { table in
            var entry = table[pair] ?? ([:], 0)
            entry.sides[side] = channel
            table[pair] = entry
        }
    }

    func leave(pair: String, side: Int) {
        table.withLockedValue { table in _ = table[pair]?.sides.removeValue(forKey: side) }
    }

    func nextSeq(pair: String, otherThan side: Int) -> (Int64, (any Channel)?) {
        table.withLockedValue { table in
            guard var entry = table[pair] else { return (0, nil) }
            entry.seq += 1
            table[pair] = entry
            return (entry.seq, entry.sides.first { $0.key != side }?.value)
        }
    }
}

final class RelayHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let pair: String
    let side: Int
    let table: PairTable
    let raw: Bool

    init(pair: String, side: Int, table: PairTable, raw: Bool) {
        self.pair = pair
        self.side = side
        self.table = table
        self.raw = raw
    }

    private static let sendPrefix = Array(#"{"type":"send","#.utf8)
    private static let pingPrefix = Array(#"{"type":"ping""#.utf8)
    private static let ackPrefix = Array(#"{"type":"ack","#.utf8)

    /// The raw relay: a send's bytes after `{"type":"send",` become the ack and, behind
    /// `{"type":"message","seq":N,`, the message to both sides. Nothing is parsed.
    private func relayRaw(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        let view = payload.readableBytesView
        if view.starts(with: Self.pingPrefix) {
            write(#"{"type":"pong"}"#, to: context.channel)
            return
        }
        guard view.starts(with: Self.sendPrefix) else { return }
        let rest = payload.getSlice(at: payload.readerIndex + Self.sendPrefix.count, length: payload.readableBytes - Self.sendPrefix.count)!
        let (seq, peer) = table.nextSeq(pair: pair, otherThan: side)
        var ack = context.channel.allocator.buffer(capacity: Self.ackPrefix.count + rest.readableBytes)
        ack.writeBytes(Self.ackPrefix)
        ack.writeImmutableBuffer(rest)
        var message = context.channel.allocator.buffer(capacity: 32 + rest.readableBytes)
        message.writeString(#"{"type":"message","seq":\#(seq),"#)
        message.writeImmutableBuffer(rest)
        let channel = context.channel
        channel.write(WebSocketFrame(fin: true, opcode: .text, data: ack), promise: nil)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: message), promise: nil)
        peer?.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: message), promise: nil)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        table.join(pair: pair, side: side, channel: context.channel)
        write(#"{"type":"hello","userId":"relay","sessionId":"relay","heartbeatSeconds":30}"#, to: context.channel)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        table.leave(pair: pair, side: side)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text where raw:
            relayRaw(frame.unmaskedData, context: context)
        case .text:
            var payload = frame.unmaskedData
            guard let bytes = payload.readBytes(length: payload.readableBytes),
                let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
            else { return }
            if object["type"] as? String == "ping" {
                write(#"{"type":"pong"}"#, to: context.channel)
                return
            }
            guard object["type"] as? String == "send", let body = object["body"] as? String else { return }
            let (seq, peer) = table.nextSeq(pair: pair, otherThan: side)
            let message: [String: Any] = [
                "id": "r\(seq)", "conversationId": object["conversationId"] ?? pair, "seq": seq, "senderId": "\(side)",
                "body": body, "clientMsgId": object["clientMsgId"] ?? NSNull(), "createdAt": "",
            ]
            guard let messageFrame = try? JSONSerialization.data(withJSONObject: ["type": "message", "message": message]),
                let ackFrame = try? JSONSerialization.data(withJSONObject: [
                    "type": "ack", "clientMsgId": object["clientMsgId"] ?? NSNull(), "message": message,
                ])
            else { return }
            write(String(decoding: ackFrame, as: UTF8.self), to: context.channel)
            write(String(decoding: messageFrame, as: UTF8.self), to: context.channel)
            if let peer { write(String(decoding: messageFrame, as: UTF8.self), to: peer) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    private func write(_ text: String, to channel: any Channel) {
        var buffer = channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: buffer), promise: nil)
    }
}
