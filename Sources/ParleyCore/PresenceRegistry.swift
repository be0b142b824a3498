import Foundation
import Synchronization

/// Which users have at least one live connection, across all nodes.
///
/// Adapters: `InMemoryPresenceRegistry` (one node) and, later, Redis with expiring keys refreshed
/// by heartbeats, so a crashed node's users go offline by themselves.
public protocol PresenceRegistry: Sendable {
    /// Records a connection; true if the user had no other connection (just came online).
    func connect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool
    /// Removes a connection; true if it was the user's last (just went offline).
    func disconnect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool
    /// Keeps a connection alive.
    func heartbeat(userID: UUID, connectionID: UUID, now: Date) async throws
    /// Those of `userIDs` that are online.
    func online(_ userIDs: [UUID], now: Date) async throws -> Set<UUID>
}

public final class InMemoryPresenceRegistry: PresenceRegistry {
    // Guarded by its Mutex.
    private let connections = Mutex([UUID: Set<UUID>]())

    public init() {}

    public func connect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool {
        connections.withLock { connections in
            let wasOffline = connections[userID]?.isEmpty ?? true
            connections[userID, default: []].insert(connectionID)
            return wasOffline
        }
    }

    public func disconnect(userID: UUID, connectionID: UUID, now: Date) async throws -> Bool {
        connections.withLock { connections in
            guard var set = connections[userID], set.remove(connectionID) != nil else { return false }
            if set.isEmpty {
                connections.removeValue(forKey: userID)
                return true
            }
            connections[userID] = set
            return false
        }
    }

    public func heartbeat(userID: UUID, connectionID: UUID, now: Date) async throws {}

    public func online(_ userIDs: [UUID], now: Date) async throws -> Set<UUID> {
        connections.withLock { connections in Set(userIDs.filter { connections[$0] != nil }) }
    }
}

/// Online / offline transitions and their fan-out to the user's contacts.
public struct PresenceService: Sendable {
    public let registry: any PresenceRegistry
    public let store: any ChatStore
    public let bus: any Bus
    /// Conversations larger than this do not spread presence (a 10,000-member group would turn
    /// every login into 10,000 events).
    public var maxGroupSize = 100
    /// At most this many contacts hear about one transition.
    public var maxRecipients = 1000

    public init(registry: any PresenceRegistry, store: any ChatStore, bus: any Bus) {
        self.registry = registry
        self.store = store
        self.bus = bus
    }

    public func connected(userID: UUID, connectionID: UUID, now: Date = .now) async throws {
        if try await registry.connect(userID: userID, connectionID: connectionID, now: now) {
            try await announce(Presence(userID: userID, status: .online, lastSeenAt: now))
        }
    }

    public func disconnected(userID: UUID, connectionID: UUID, now: Date = .now) async throws {
        let now = now.truncatedToMillis
        if try await registry.disconnect(userID: userID, connectionID: connectionID, now: now) {
            try await store.setLastSeen(userID: userID, at: now)
            try await announce(Presence(userID: userID, status: .offline, lastSeenAt: now))
        }
    }

    public func presence(of userIDs: [UUID], now: Date = .now) async throws -> [Presence] {
        let online = try await registry.online(userIDs, now: now)
        let lastSeen = try await store.lastSeen(userIDs: userIDs)
        return userIDs.map { id in
            Presence(userID: id, status: online.contains(id) ? .online : .offline, lastSeenAt: online.contains(id) ? now : lastSeen[id])
        }
    }

    private func announce(_ presence: Presence) async throws {
        let contacts = try await store.contacts(of: presence.userID, maxGroupSize: maxGroupSize, limit: maxRecipients)
        bus.publish(.presence(presence), to: contacts)
    }
}
