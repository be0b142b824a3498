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

    static func isWebSocketUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.method == .GET
            && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            && head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
            && !head.headers["sec-websocket-key"].isEmpty && !head.headers["sec-websocket-version"].isEmpty
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
        head.headers.remove(name: "upgrade")
        let connection = head.headers[canonicalForm: "connection"].filter { $0.lowercased() != "upgrade" }
        head.headers.remove(name: "connection")
        for token in connection { head.headers.add(name: "connection", value: String(token)) }
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
