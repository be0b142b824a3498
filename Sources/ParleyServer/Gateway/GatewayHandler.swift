import NIOCore
import NIOWebSocket
import ParleyCore

/// The I/O shell of one upgraded WebSocket: turns frames into `SocketSession` calls on the channel's
/// event loop and answers the protocol's own frames (ping, close). No task, no async stream: an idle
/// socket is this handler, its session and NIO's buffers.
final class GatewayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let session: SocketSession
    /// What the upgrade's credentials proved; handed to the session once, then dropped.
    private var identity: Identity?
    /// A close frame went out (ours, or our answer to the peer's): the next one from the peer
    /// completes the handshake and is not answered again.
    private var closeSent = false

    init(session: SocketSession, identity: Identity?) {
        self.session = session
        self.identity = identity
    }

    func handlerAdded(context: ChannelHandlerContext) {
        session.started(identity: identity)
        identity = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // No extension is negotiated (no compression: nothing to inflate into a bomb), so a set
        // reserved bit is a protocol error (RFC 6455 §5.2), not a frame to read.
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            close(context, code: 1002, reason: "reserved bits set")
            return
        }
        switch frame.opcode {
        case .text:
            let bytes = frame.unmaskedData
            guard let text = String(validating: bytes.readableBytesView, as: UTF8.self) else {
                close(context, code: CloseCode.invalidPayload, reason: "text frames must be UTF-8")
                return
            }
            session.received(text: text)
        case .binary:
            session.receivedBinary()
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            session.ponged()
        case .connectionClose:
            // The peer closes (or answers our close): answer once, then close the TCP connection.
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self) ?? CloseCode.normal
            if !closeSent {
                let answer = Connection.closeFrame(code: code, reason: "", allocator: context.channel.allocator)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in channel.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        default:
            // Continuations are joined by the aggregator before this handler; anything else is a
            // reserved opcode.
            close(context, code: 1002, reason: "reserved opcode")
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if unwrapOutboundIn(data).opcode == .connectionClose { closeSent = true }
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            session.goAway()
            return
        }
        if case ChannelEvent.inputClosed = event {
            // The peer shut its side without a close frame (the server allows half-closure): done.
            session.abandon()
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { session.writable() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge:
            close(context, code: CloseCode.messageTooBig, reason: "message too big")
        case is NIOWebSocketError:
            // The protocol error handler before this one already sent the close frame.
            break
        default:
            close(context, code: 1002, reason: "protocol error")
        }
    }

    private func close(_ context: ChannelHandlerContext, code: UInt16, reason: String) {
        session.abandon()
        let frame = Connection.closeFrame(code: code, reason: reason, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }
}
