import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A small pool of pipelined Redis connections. Each command goes to the next connection in turn;
/// a connection that dropped is replaced on its next use, so the client recovers by itself when
/// Redis restarts (commands in between fail with `RedisError.connectionClosed`).
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger

    private struct Slot {
        var connecting: Task<RedisConnection, any Error>?
    }

    private struct State {
        var slots: [Slot]
        var next = 0
        var closed = false
    }

    private let state: Mutex<State>

    public init(configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.state = Mutex(State(slots: Array(repeating: Slot(), count: max(1, configuration.poolSize))))
    }

    /// A live connection of the pool (connecting it if needed).
    public func connection() async throws -> RedisConnection {
        let (index, task): (Int, Task<RedisConnection, any Error>?) = state.withLock { state in
            let index = state.next % state.slots.count
            state.next &+= 1
            return (index, state.closed ? nil : state.slots[index].connecting)
        }
        if let task, let connection = try? await task.value, connection.isActive {
            return connection
        }
        return try await reconnect(slot: index, replacing: task)
    }

    private func reconnect(slot index: Int, replacing old: Task<RedisConnection, any Error>?) async throws -> RedisConnection {
        let configuration = configuration
        let group = group
        let task: Task<RedisConnection, any Error> = try state.withLock { state in
            if state.closed { throw RedisError.connectionClosed }
            // Another caller may have replaced the slot already; share its attempt.
            if let current = state.slots[index].connecting, current != old { return current }
            let task = Task { try await RedisConnection.connect(configuration, group: group) }
            state.slots[index].connecting = task
            return task
        }
        do {
            return try await task.value
        } catch {
            logger.debug("Redis connection failed", metadata: ["parley.error": "\(error)"])
            throw RedisError.connectionClosed
        }
    }

    /// Runs one command; an error reply is thrown.
    @discardableResult
    public func command(_ command: [String]) async throws -> RESPValue {
        try await connection().command(command)
    }

    /// Runs several commands in one round trip on one connection; replies (error replies included)
    /// come back in order.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        try await connection().pipeline(commands)
    }

    /// Runs a Lua script by its SHA1, loading it first when the server does not know it (a fresh or
    /// restarted Redis).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let connection = try await connection()
        let args = [String(keys.count)] + keys + arguments
        let reply = try await connection.send(["EVALSHA", script.sha1] + args)
        if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
            return try await connection.command(["EVAL", script.source] + args)
        }
        return try reply.orThrow()
    }

    public func close() {
        let tasks = state.withLock { state in
            state.closed = true
            return state.slots.compactMap(\.connecting)
        }
        for task in tasks {
            Task { try? await task.value.close() }
        }
    }
}

/// A Lua script and its SHA1, for EVALSHA.
public struct RedisScript: Sendable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}
