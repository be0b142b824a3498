import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import ParleyCore
import ServiceLifecycle
import Synchronization

/// A small pool of pipelined Redis connections. Each command goes to the next connection in turn;
/// a connection that dropped is replaced on its next use, so the client recovers by itself when
/// Redis restarts (commands in between fail with `RedisError.connectionClosed`).
///
/// A `Service`: `run()` holds the pool for the life of the node and closes its connections on
/// graceful shutdown.
public final class RedisClient: Service, Sendable {
    public let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger

    private struct State {
        /// Each slot's current (or pending) connection; the caller that starts a connection resolves it.
        var slots: [Promise<RedisConnection>?]
        var next = 0
        var closed = false
    }

    // Guarded by its Mutex; connecting happens outside the lock.
    private let state: Mutex<State>

    public init(configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.state = Mutex(State(slots: Array(repeating: nil, count: max(1, configuration.poolSize))))
    }

    public func run() async throws {
        try? await gracefulShutdown()
        close()
    }

    /// A live connection of the pool (connecting it if needed).
    public func connection() async throws -> RedisConnection {
        let (index, slot): (Int, Promise<RedisConnection>?) = try state.withLock { state in
            if state.closed { throw RedisError.connectionClosed }
            let index = state.next % state.slots.count
            state.next &+= 1
            return (index, state.slots[index])
        }
        if let slot, let connection = try? await slot.value, connection.isActive {
            return connection
        }
        return try await reconnect(slot: index, replacing: slot)
    }

    private func reconnect(slot index: Int, replacing old: Promise<RedisConnection>?) async throws -> RedisConnection {
        let (promise, mine): (Promise<RedisConnection>, Bool) = try state.withLock { state in
            if state.closed { throw RedisError.connectionClosed }
            // Another caller may have replaced the slot already; share its attempt.
            if let current = state.slots[index], current !== old { return (current, false) }
            let promise = Promise<RedisConnection>()
            state.slots[index] = promise
            return (promise, true)
        }
        if mine {
            do {
                promise.resolve(.success(try await RedisConnection.connect(configuration, group: group)))
            } catch {
                promise.resolve(.failure(error))
            }
        }
        do {
            return try await promise.value
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

    /// Closes every connection; later commands fail with `connectionClosed`. A connection still
    /// being opened is closed as soon as it is up.
    public func close() {
        let slots = state.withLock { state in
            state.closed = true
            defer { state.slots = state.slots.map { _ in nil } }
            return state.slots.compactMap { $0 }
        }
        for slot in slots {
            slot.whenResolved { result in (try? result.get())?.close() }
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
