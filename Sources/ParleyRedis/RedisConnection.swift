import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where a Redis server is and how to log in.
public struct RedisConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var password: String?
    public var database: Int
    /// Connections in a `RedisClient`'s pool.
    public var poolSize: Int = 4
    /// Prefix of every key and channel Parley uses, so several deployments can share a server.
    public var keyPrefix: String = "parley:"
    /// Shown by `CLIENT LIST` (letters, digits, dashes).
    public var clientName: String? = "parley"

    public init(host: String = "127.0.0.1", port: Int = 6379, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.password = password
        self.database = database
    }

    /// Parses `redis://[:password@]host[:port][/database]`.
    public init(url: String) throws {
        guard let components = URLComponents(string: url), components.scheme?.lowercased() == "redis",
            let host = components.host, !host.isEmpty
        else { throw RedisError.badURL }
        let path = components.path.drop { $0 == "/" }
        guard path.isEmpty || Int(path) != nil else { throw RedisError.badURL }
        let password = components.password?.removingPercentEncoding
        self.init(host: host, port: components.port ?? 6379, password: password?.isEmpty == true ? nil : password, database: Int(path) ?? 0)
    }
}

public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    case badURL
    /// The connection is gone (or never came up); the command may or may not have run.
    case connectionClosed
    /// Redis answered with an error reply.
    case server(String)
    case unexpectedReply(String)

    public var description: String {
        switch self {
        case .badURL: "a Redis URL looks like redis://[:password@]host:6379[/db]"
        case .connectionClosed: "the Redis connection is closed"
        case .server(let message): "Redis error: \(message)"
        case .unexpectedReply(let detail): "unexpected Redis reply: \(detail)"
        }
    }
}

/// One write on its way to the server: the encoded commands and who waits for their replies.
struct RedisRequest: Sendable {
    /// One or more encoded commands.
    var bytes: ByteBuffer
    /// One promise per command that expects a reply, in command order.
    var replies: [EventLoopPromise<RESPValue>]
}

/// The NIO shell around `RESPParser`. Requests are pipelined: each outbound write queues its
/// promises, and replies, which Redis sends in request order, complete them first-in first-out. In
/// push mode (pub/sub) every inbound value goes to `onPush` instead.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var parser = RESPParser()
    private var waiting = CircularBuffer<EventLoopPromise<RESPValue>>()
    private let onPush: (@Sendable (RESPValue) -> Void)?

    init(onPush: (@Sendable (RESPValue) -> Void)?) {
        self.onPush = onPush
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        for reply in request.replies { waiting.append(reply) }
        context.write(wrapOutboundOut(request.bytes), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            try parser.feed(buffer)
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        while let value = parser.next() {
            if let onPush, waiting.isEmpty {
                onPush(value)
            } else if let promise = waiting.popFirst() {
                promise.succeed(value)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll()
        context.close(promise: nil)
    }

    private func failAll() {
        while let promise = waiting.popFirst() {
            promise.fail(RedisError.connectionClosed)
        }
    }
}

/// One connection to Redis. Commands may be sent from any task; they are pipelined in call order.
public final class RedisConnection: Sendable {
    let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    public var isActive: Bool { channel.isActive }

    /// Connects, authenticates and selects the database. With `onPush`, the connection is in push
    /// mode: replies that no command waits for (pub/sub messages) go there, on the event loop.
    public static func connect(
        _ configuration: RedisConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws -> RedisConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(3))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(onPush: onPush))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .get()
        let connection = RedisConnection(channel: channel)
        do {
            if let password = configuration.password {
                try await connection.command(["AUTH", password]).expectOK()
            }
            if let name = configuration.clientName {
                try await connection.command(["CLIENT", "SETNAME", name]).expectOK()
            }
            if configuration.database != 0 {
                try await connection.command(["SELECT", String(configuration.database)]).expectOK()
            }
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply. An error reply is returned, not thrown.
    public func send(_ command: [String]) async throws -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let bytes = encode([command])
        channel.writeAndFlush(RedisRequest(bytes: bytes, replies: [promise])).whenFailure { promise.fail($0) }
        return try await promise.futureResult.get()
    }

    /// Sends one command; an error reply is thrown as `RedisError.server`.
    @discardableResult
    public func command(_ command: [String]) async throws -> RESPValue {
        try await send(command).orThrow()
    }

    /// Sends several commands in one write and waits for all replies (error replies included).
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        let bytes = encode(commands)
        // One write: the handler queues the promises, in order, before the bytes go out.
        let promises = commands.map { _ in channel.eventLoop.makePromise(of: RESPValue.self) }
        channel.writeAndFlush(RedisRequest(bytes: bytes, replies: promises)).whenFailure { error in promises.forEach { $0.fail(error) } }
        var replies: [RESPValue] = []
        replies.reserveCapacity(promises.count)
        for promise in promises { replies.append(try await promise.futureResult.get()) }
        return replies
    }

    /// Writes a command without waiting for anything (push-mode connections: SUBSCRIBE and friends).
    func fire(_ command: [String]) {
        channel.writeAndFlush(RedisRequest(bytes: encode([command]), replies: []), promise: nil)
    }

    private func encode(_ commands: [[String]]) -> ByteBuffer {
        var buffer = channel.allocator.buffer(capacity: 256)
        for command in commands { RESPEncoder.encode(command, into: &buffer) }
        return buffer
    }

    public func close() {
        channel.close(promise: nil)
    }

    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }
}

extension RESPValue {
    /// The value itself, or the server's error reply as a thrown error.
    public func orThrow() throws -> RESPValue {
        if case .error(let message) = self { throw RedisError.server(message) }
        return self
    }

    func expectOK() throws {
        let value = try orThrow()
        guard value.string == "OK" else { throw RedisError.unexpectedReply("\(value)") }
    }
}
