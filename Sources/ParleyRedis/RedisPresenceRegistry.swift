import Foundation
import Logging
import ParleyCore

/// Presence shared by every node: one sorted set per user in Redis, holding the user's connection
/// ids scored by the time (ms) they lapse, and one sorted set of every `user|connection` with the
/// same scores. Heartbeats push the scores forward; a crashed node's connections stop being renewed,
/// and once their score passes, `sweep` (run by every node) removes them and reports the users left
/// with no connection. Every transition is decided by a Lua script, so two nodes cannot both (or
/// neither) report the same user coming online or going offline.
public final class RedisPresenceRegistry: PresenceRegistry {
    private let client: RedisClient
    private let prefix: String
    private let ttlMillis: Int64
    /// A user's set outlives its newest entry by two TTLs, so that a lapsed entry is still there
    /// when a sweep (every third of a TTL on every node) comes to report it.
    private var keyLifetimeMillis: String { String(ttlMillis * 3) }

    // KEYS: user's set, all connections. ARGV: now, expiry, connection id, key lifetime ms, user|connection.
    static let connectScript = RedisScript(
        """
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        local before = redis.call('ZCARD', KEYS[1])
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
        if before == 0 then return 1 else return 0 end
        """
    )

    // KEYS: user's set, all connections. ARGV: now, connection id, user|connection.
    static let disconnectScript = RedisScript(
        """
        local removed = redis.call('ZREM', KEYS[1], ARGV[2])
        redis.call('ZREM', KEYS[2], ARGV[3])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        local left = redis.call('ZCARD', KEYS[1])
        if removed == 1 and left == 0 then return 1 else return 0 end
        """
    )

    // KEYS: all connections. ARGV: now, key prefix of users' sets. Returns the users left offline.
    static let sweepScript = RedisScript(
        """
        local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
        local offline = {}
        for _, entry in ipairs(lapsed) do
            redis.call('ZREM', KEYS[1], entry)
            local bar = string.find(entry, '|', 1, true)
            local user = string.sub(entry, 1, bar - 1)
            local key = ARGV[2] .. user
            local removed = redis.call('ZREM', key, string.sub(entry, bar + 1))
            redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
            if removed == 1 and redis.call('ZCARD', key) == 0 then table.insert(offline, user) end
        end
        return offline
        """
    )

    public init(client: RedisClient, ttl: TimeInterval = 30) {
        self.client = client
        self.prefix = client.configuration.keyPrefix + "presence:"
        self.ttlMillis = Int64(ttl * 1000)
    }

    private func key(_ userID: UUID) -> String { prefix + userID.lowercased }
    private var allKey: String { prefix + "all" }
    private func entry(_ userID: UUID, _ connectionID: UUID) -> String { userID.lowercased + "|" + connectionID.lowercased }

    public func connect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool {
        let reply = try await client.evaluate(
            Self.connectScript,
            keys: [key(userID), allKey],
            arguments: [
                String(now.millis), String(now.millis + ttlMillis), connectionID.lowercased, keyLifetimeMillis, entry(userID, connectionID),
            ]
        )
        return reply.integer == 1
    }

    public func disconnect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool {
        let reply = try await client.evaluate(
            Self.disconnectScript, keys: [key(userID), allKey],
            arguments: [String(now.millis), connectionID.lowercased, entry(userID, connectionID)])
        return reply.integer == 1
    }

    public func heartbeat(_ connections: [PresenceConnection], now: Date) async throws {
        let expiry = String(now.millis + ttlMillis)
        var commands: [[String]] = []
        commands.reserveCapacity(connections.count * 2)
        for connection in connections {
            commands.append(["ZADD", key(connection.userID), expiry, connection.connectionID.lowercased])
            commands.append(["PEXPIRE", key(connection.userID), keyLifetimeMillis])
            commands.append(["ZADD", allKey, expiry, entry(connection.userID, connection.connectionID)])
        }
        for chunk in stride(from: 0, to: commands.count, by: 3_000) {
            let replies = try await client.pipeline(Array(commands[chunk..<min(chunk + 3_000, commands.count)]))
            if let failure = replies.first(where: { if case .error = $0 { true } else { false } }) { _ = try failure.orThrow() }
        }
    }

    public func online(_ userIDs: [UUID], now: Date) async throws -> Set<UUID> {
        guard !userIDs.isEmpty else { return [] }
        let replies = try await client.pipeline(userIDs.map { ["ZCOUNT", key($0), "(" + String(now.millis), "+inf"] })
        var online: Set<UUID> = []
        for (user, reply) in zip(userIDs, replies) where (try reply.orThrow().integer ?? 0) > 0 {
            online.insert(user)
        }
        return online
    }

    public func sweep(now: Date) async throws -> [UUID] {
        let reply = try await client.evaluate(Self.sweepScript, keys: [allKey], arguments: [String(now.millis), prefix])
        return (reply.array ?? []).compactMap { $0.string.flatMap(UUID.init(uuidString:)) }
    }
}
