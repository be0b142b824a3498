import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

enum BenchError: Error, CustomStringConvertible {
    case upgradeRefused(Int)
    case badURL(String)

    var description: String {
        switch self {
        case .upgradeRefused(let index): "connection \(index): the WebSocket upgrade was refused"
        case .badURL(let url): "not a ws:// URL: \(url)"
        }
    }
}

struct Target: Sendable {
    var host: String
    var port: Int
    var path: String

    init(url: String) throws {
        guard let components = URLComponents(string: url), components.scheme == "ws", let host = components.host else {
            throw BenchError.badURL(url)
        }
        self.host = host
        self.port = components.port ?? 80
        self.path = components.path.isEmpty ? "/api/v1/ws" : components.path
    }
}

/// Opens one WebSocket with a `BenchConnection` on top, authenticated by bearer token.
enum Connector {
    enum Upgrade {
        case upgraded(any Channel, BenchConnection)
        case refused
    }

    static func connect(
        target: Target,
        token: String?,
        query: String?,
        group: any EventLoopGroup,
        makeHandler: @escaping @Sendable (any EventLoop) -> BenchConnection
    ) async throws -> (any Channel, BenchConnection) {
        let upgrade: EventLoopFuture<Upgrade> = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(
                        maxFrameSize: 1 << 20,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                let handler = makeHandler(channel.eventLoop)
                                try channel.pipeline.syncOperations.addHandler(handler)
                                return Upgrade.upgraded(channel, handler)
                            }
                        }
                    )
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(target.host):\(target.port)")
                    headers.add(name: "Content-Length", value: "0")
                    if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
                    let uri = target.path + (query.map { "?" + $0 } ?? "")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                        upgradeRequestHead: head,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in channel.eventLoop.makeCompletedFuture { Upgrade.refused } }
                    )
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: .init(upgradeConfiguration: configuration)
                    )
                }
            }
        switch try await upgrade.get() {
        case .upgraded(let channel, let handler): return (channel, handler)
        case .refused: throw BenchError.upgradeRefused(-1)
        }
    }

    /// Connects one bench socket with `plan`, probes it with a ping and returns once the pong is
    /// back (the server has authenticated it and subscribed its user), counting it as connected.
    static func openProbed(
        target: Target,
        token: String?,
        query: String?,
        group: any EventLoopGroup,
        plan: ConnectionPlan,
        board: StatsBoard,
        progress: Progress,
        clock: ClockBox
    ) async throws -> (any Channel, BenchConnection) {
        let (channel, handler) = try await connect(target: target, token: token, query: query, group: group) { loop in
            BenchConnection(plan: plan, stats: board.stats(for: loop), progress: progress, clock: clock, ready: loop.makePromise())
        }
        channel.eventLoop.execute { handler.probe() }
        // A connection that never answers its probe is a failed connection, not a hung run.
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(30)) { handler.ready.fail(ChannelError.connectTimeout(.seconds(30))) }
        defer { deadline.cancel() }
        try await handler.ready.futureResult.get()
        progress.connected.add(1, ordering: .relaxed)
        return (channel, handler)
    }
}
