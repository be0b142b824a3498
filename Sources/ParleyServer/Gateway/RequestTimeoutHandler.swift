import NIOCore
import NIOHTTP1

/// Deadlines for slow clients on an HTTP connection, so that a peer trickling its request (the
/// slowloris attack) or connecting and sending nothing cannot hold a socket for long:
///
/// - `head`: a new connection's first request head must be complete within it;
/// - `body`: the longest pause between two reads of a request body;
/// - `keepAlive`: how long a connection may sit idle after a response before its next request
///   head is complete (longer than nginx's upstream keep-alive of 60 s, so a proxy never reuses a
///   connection the node is closing).
///
/// While a request is being answered nothing is timed (a handler may take its time). An upgrade
/// request removes the handler: a WebSocket has its own authentication timeout and heartbeat.
/// Sits between the HTTP decoder and the upgrade handler.
final class RequestTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    struct Timeouts: Sendable, Equatable {
        var head: TimeAmount
        var body: TimeAmount
        var keepAlive: TimeAmount

        init(head: Double, body: Double, keepAlive: Double) {
            self.head = .nanoseconds(Int64(head * 1e9))
            self.body = .nanoseconds(Int64(body * 1e9))
            self.keepAlive = .nanoseconds(Int64(keepAlive * 1e9))
        }
    }

    private let timeouts: Timeouts
    private var deadline: Scheduled<Void>?
    private var removed = false
    /// Between a request's head and its end.
    private var receiving = false
    /// Requests received in full whose responses have not ended (more than one if the client
    /// pipelines).
    private var unanswered = 0
    /// Responses that ended before their request had all arrived (e.g. a 413 for an upload).
    private var answeredEarly = 0

    init(timeouts: Timeouts) {
        self.timeouts = timeouts
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, timeouts.head) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, timeouts.head)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        disarm()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            if UpgradeFilterHandler.isWebSocketUpgrade(head) {
                disarm()
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            receiving = true
            arm(context, timeouts.body)
        case .body:
            arm(context, timeouts.body)
        case .end:
            receiving = false
            if answeredEarly > 0 { answeredEarly -= 1 } else { unanswered += 1 }
            settle(context)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            // From when the response has gone out (a large download may take a while to write).
            let future = context.write(data)
            if unanswered > 0 { unanswered -= 1 } else { answeredEarly += 1 }
            future.assumeIsolated().whenSuccess { [self] in settle(context) }
            future.cascade(to: promise)
            return
        }
        context.write(data, promise: promise)
    }

    /// After a request or a response ended: idle (keep-alive deadline) once nothing is being
    /// received or answered; no deadline while a handler works; a body's deadline stays as it is.
    private func settle(_ context: ChannelHandlerContext) {
        guard !removed, context.channel.isActive, !receiving else { return }
        if unanswered > 0 { disarm() } else { arm(context, timeouts.keepAlive) }
    }

    private func arm(_ context: ChannelHandlerContext, _ timeout: TimeAmount) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            channel.close(promise: nil)
        }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}
