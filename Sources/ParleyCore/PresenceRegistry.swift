import Foundation
import Synchronization

/// Which users have at least one live connection, across all nodes.
///
/// Every connection is held for `ttl` seconds and renewed by heartbeats, so when a node dies
/// without saying goodbye its users go offline by themselves once their entries lapse.
/// Adapters: `InMemoryPresenceRegistry` (one node) and `RedisPresenceRegistry` (cluster); both run
/// `Tests/PortConformanceTests` unchanged.
public protocol PresenceRegistry: Sendable {
    /// Records a connection; true if the user had no other live connection (just came online).
    func connect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool
    /// Removes a connection; true if it was the user's last live one (just went offline).
    func disconnect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool
    /// Keeps connections alive for another `ttl` (re-adding any the registry lost, e.g. after a restart).
    func heartbeat(_ connections: [PresenceConnection], now: Date) async throws
    /// Those of `userIDs` that are online.
    func online(_ userIDs: [UUID], now: Date) async throws -> Set<UUID>
    /// Forgets connections whose heartbeats lapsed (their node died) and returns the users who are
    /// offline because of it. Across all nodes, each such user is returned to exactly one caller,
    /// which announces the transition.
    func sweep(now: Date) async throws -> [UUID]
}

/// One socket of one user, as the presence registry knows it.
public struct PresenceConnection: Sendable, Hashable {
    public var userID: UUID
    public var connectionID: UUID

    public init(userID: UUID, connectionID: UUID) {
        self.userID = userID
        self.connectionID = connectionID
    }
}

public final class InMemoryPresenceRegistry: PresenceRegistry {
    /// Per user: connection id → when it lapses without a heartbeat. Guarded by its Mutex.
    private let connections = Mutex([UUID: [UUID: Date]]())
    private let ttl: TimeInterval

    public init(ttl: TimeInterval = 30) {
        self.ttl = ttl
    }

    public func connect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool {
        connections.withLock { connections in
            var live = (connections[userID] ?? [:]).filter { $0.value > now }
            let wasOffline = live.isEmpty
            live[connectionID] = now.addingTimeInterval(ttl)
            connections[userID] = live
            return wasOffline
        }
    }

    public func disconnect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool {
        connections.withLock { connections in
            guard var live = connections[userID], live.removeValue(forKey: connectionID) != nil else { return false }
            live = live.filter { $0.value > now }
            connections[userID] = live.isEmpty ? nil : live
            return live.isEmpty
        }
    }

    public func heartbeat(_ list: [PresenceConnection], now: Date) async throws {
        connections.withLock { connections in
            for connection in list {
                connections[connection.userID, default: [:]][connection.connectionID] = now.addingTimeInterval(ttl)
            }
        }
    }

    public func online(_ userIDs: [UUID], now: Date) async throws -> Set<UUID> {
        connections.withLock { connections in
            Set(userIDs.filter { connections[$0]?.values.contains { $0 > now } ?? false })
        }
    }

    public func sweep(now: Date) async throws -> [UUID] {
        connections.withLock { connections in
            var offline: [UUID] = []
            for (user, live) in connections where live.values.contains(where: { $0 <= now }) {
                let remaining = live.filter { $0.value > now }
                connections[user] = remaining.isEmpty ? nil : remaining
                if remaining.isEmpty { offline.append(user) }
            }
            return offline
        }
    }
}
