import NIOCore
import NIOHTTP1

/// Lets through to the upgrade handler only requests that are a complete WebSocket upgrade (`GET`,
/// `Upgrade: websocket`, `Connection: upgrade`, a key and a version). Any other request carrying an
/// `Upgrade` header — `curl --http2` asking for `h2c`, a WebSocket upgrade missing its key, a
/// `TRACE` with `Upgrade: websocket` — loses that header and is served as plain HTTP/1.1, as RFC
/// 9110 §7.8 allows. NIO's upgrade handler, given an upgrade it cannot perform, passes on the end
/// of the request without its head, and the connection closed without an answer. Sits between the
/// HTTP decoder and the upgrade handler.
final class UpgradeFilterHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// A WebSocket upgrade NIO will perform: one key, version 13, and no body (an upgrade head
    /// that announced a body would wait for it with no deadline).
    static func isWebSocketUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.method == .GET
            && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            && head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
            && head.headers["sec-websocket-key"].count == 1 && head.headers["sec-websocket-version"] == ["13"]
            && head.headers["transfer-encoding"].isEmpty && head.headers["content-length"].allSatisfy { $0 == "0" }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade") else {
            context.fireChannelRead(data)
            return
        }
        if Self.isWebSocketUpgrade(head) {
            // The connection becomes a WebSocket: nothing more to filter.
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        // The HTTP decoder has seen an upgrade request and parses nothing after it on this
        // connection: answer this one and close.
        head.headers.remove(name: "upgrade")
        head.headers.replaceOrAdd(name: "connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
