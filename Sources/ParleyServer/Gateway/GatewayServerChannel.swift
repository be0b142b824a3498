import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import ParleyCore

/// Every accepted TCP connection of a node: HTTP/1.1 served by the Hummingbird router, except an
/// upgrade to `/api/v1/ws`, which becomes a WebSocket driven by plain NIO handlers
/// (`GatewayHandler`) instead of tasks. The upgrade is decided by `Gateway.admit` (IP rate limit,
/// credentials); a refusal is an HTTP error response with the v1 error body.
struct GatewayServerChannel: ServerChildChannel, HTTPChannelHandler {
    static let path = "/api/v1/ws"

    enum Negotiated: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, ParleyError)
        case webSocket
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)

    let responder: HTTPChannelHandler.Responder
    let gateway: Gateway
    let http1 = HTTP1Channel.Configuration()

    init(responder: @escaping HTTPChannelHandler.Responder, gateway: Gateway) {
        self.responder = Self.refusingLateUpgrades(responder)
        self.gateway = gateway
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Every channel keeps its last receive buffer for reuse, so its first size is what an idle
            // socket holds: 1 KB takes an upgrade request with its token in one read (NIO's default,
            // 2 KB, was a quarter of an idle socket). Busy sockets grow it as they need.
            try channel.syncOptions?.setOption(.recvAllocator, value: Self.receiveBuffers)
            // What `shouldUpgrade` decided, for the handlers installed after it.
            let admitted = NIOLockedValueBox<Identity?>(nil)
            let refusal = NIOLockedValueBox<ParleyError?>(nil)
            let gateway = self.gateway
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: gateway.settings.maxFrameBytes,
                shouldUpgrade: { channel, head in
                    let promise = channel.eventLoop.makePromise(of: HTTPHeaders?.self)
                    promise.completeWithTask {
                        do {
                            guard head.method == .GET, head.uri.split(separator: "?", maxSplits: 1).first == Substring(Self.path) else {
                                throw ParleyError.notFound("Only \(Self.path) accepts WebSocket upgrades.")
                            }
                            let request = Request(head: try HTTPRequest(head, secure: false, splitCookie: false), body: .init(buffer: ByteBuffer()))
                            let identity = try await gateway.admit(request, remoteAddress: channel.remoteAddress)
                            admitted.withLockedValue { $0 = identity }
                            return HTTPHeaders()
                        } catch {
                            refusal.withLockedValue { $0 = error as? ParleyError ?? .internal(detail: "\(error)") }
                            return nil
                        }
                    }
                    return promise.futureResult
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        let session = SocketSession(gateway: gateway, channel: channel)
                        try channel.pipeline.syncOperations.addHandlers([
                            NIOWebSocketFrameAggregator(
                                minNonFinalFragmentSize: 0,
                                maxAccumulatedFrameCount: 256,
                                maxAccumulatedFrameSize: gateway.settings.maxFrameBytes
                            ),
                            GatewayHandler(session: session, identity: admitted.withLockedValue { $0 }),
                        ])
                        return .webSocket
                    }
                }
            )
            let http1 = self.http1
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try pipeline.addHandlers(http1.additionalChannelHandlers())
                        try pipeline.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .nanoseconds($0.nanoseconds) }, logger: logger))
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        if let error = refusal.withLockedValue({ $0 }) { return .refused(asyncChannel, error) }
                        return .http(asyncChannel)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrade)
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // Between the decoder and the upgrade handler: they see whole request parts and response ends.
            let settings = gateway.settings
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<Negotiated>.self)
            try channel.pipeline.syncOperations.addHandler(UpgradeFilterHandler(), position: .before(upgradeHandler))
            try channel.pipeline.syncOperations.addHandler(
                RequestTimeoutHandler(
                    timeouts: .init(
                        head: settings.requestHeadTimeoutSeconds, body: settings.requestBodyTimeoutSeconds,
                        keepAlive: settings.keepAliveTimeoutSeconds)),
                position: .before(upgradeHandler))
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    /// HTTP runs its request loop here. An upgraded WebSocket needs nothing from this task: its
    /// handlers run it, so the task ends at once and holds no memory for the socket's lifetime.
    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let asyncChannel):
                await handleHTTP(asyncChannel: asyncChannel, logger: logger)
            case .refused(let asyncChannel, let error):
                try await Self.writeRefusal(error, on: asyncChannel)
            case .webSocket:
                return
            }
        } catch {
            // A failed upgrade (e.g. a body where none belongs): nothing else will close it.
            logger.debug("connection ended during negotiation", metadata: ["parley.error": "\(error)"])
            try? await value.channel.close()
        }
    }

    /// The v1 error body with the status its kind maps to, then the connection closes.
    private static func writeRefusal(_ error: ParleyError, on asyncChannel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>) async throws {
        let status = ErrorMiddleware<ParleyRequestContext>.status(for: error.kind)
        let json = (try? APIJSON.encoder.encode(ErrorBody(error: .init(code: error.code, message: error.message)))) ?? Data()
        let body = ByteBuffer(bytes: json)
        var fields: HTTPFields = [.connection: "close", .contentType: "application/json; charset=utf-8", .contentLength: String(body.readableBytes)]
        if let retry = error.retryAfterSeconds { fields[.retryAfter] = String(retry) }
        try await asyncChannel.executeThenClose { _, outbound in
            try await outbound.write(contentsOf: [.head(HTTPResponse(status: status, headerFields: fields)), .body(body), .end(nil)])
        }
    }

    /// NIO upgrades only the first request of a connection: a later one asking for a WebSocket is
    /// redirected to the same path on a new connection.
    private static func refusingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectedUpgrade: Error {}
        return { request, responseWriter, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                try await responder(request, responseWriter, channel)
                return
            }
            var path = request.uri.path
            if let query = request.uri.query { path += "?" + query }
            try await responseWriter.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: path]))
            throw RedirectedUpgrade()
        }
    }
}
