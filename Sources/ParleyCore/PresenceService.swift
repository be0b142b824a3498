import Foundation

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

    /// Announces users whose connections lapsed (a node died holding their sockets) as offline.
    public func sweepLapsed(now: Date = .now) async throws {
        let now = now.truncatedToMillis
        for userID in try await registry.sweep(now: now) {
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
        if let node = store.outboxNode { try await store.appendEvents([.presence(presence, node: node)]) }
        let contacts = try await store.contacts(of: presence.userID, maxGroupSize: maxGroupSize, limit: maxRecipients)
        bus.publish(.presence(presence), to: contacts)
    }
}
