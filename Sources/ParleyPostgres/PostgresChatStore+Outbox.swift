import Foundation
import ParleyCore
import PostgresNIO
import Synchronization

/// The outbox shards one node relays, leased through `outbox_leases`.
///
/// Every node with a relay heartbeats in `outbox_relays` and holds a fair share of the 64 shards
/// (`ceil(64 / live nodes)`), renewing its leases every fifth of the lease duration. A node that
/// joins takes free shards as the others give up their excess; a node that dies stops renewing and
/// the others take its shards once its leases expire. A shard changes hands only between two relay
/// rounds of its holder (the holder releases it before reading again), so a clean handover
/// publishes nothing twice; after an expiry the old holder may still be publishing a batch the new
/// one publishes again — same event ids, each in position order, so per-key order holds once
/// consumers drop repeated ids.
final class OutboxLeases: Sendable {
    let node: String
    let duration: Duration
    private struct State {
        var shards: [Int32] = []
        var renewed: ContinuousClock.Instant?
    }
    private let state = Mutex(State())

    init(node: String, duration: Duration) {
        self.node = node
        self.duration = duration
    }

    var seconds: Double { Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18 }

    /// The shards held as of the last renewal, or nil when a renewal is due.
    func current(now: ContinuousClock.Instant) -> [Int32]? {
        state.withLock { state in
            guard let renewed = state.renewed, now - renewed < duration / 5 else { return nil }
            return state.shards
        }
    }

    func update(_ shards: [Int32], at instant: ContinuousClock.Instant?) {
        state.withLock { state in
            state.shards = shards.sorted()
            state.renewed = instant
        }
    }
}

extension PostgresChatStore {
    /// Writes the event `make` builds to the outbox inside the caller's transaction, when the store
    /// keeps one.
    func emit(_ db: PostgresConnection, _ make: (String) throws -> StreamEvent) async throws {
        guard let outboxNode else { return }
        try await Self.writeEvents([try make(outboxNode)], on: db)
    }

    public func appendEvents(_ events: [StreamEvent]) async throws {
        guard !events.isEmpty else { return }
        try await transaction { db in try await Self.writeEvents(events, on: db) }
    }

    public func pendingEvents(after cursor: Int64?, limit: Int) async throws -> [OutboxRecord] {
        try await guarded {
            let shards = try await leasedShards()
            guard !shards.isEmpty else { return [] }
            var records: [OutboxRecord] = []
            for try await (position, eventID, topic, key, type, envelope, createdAt) in try await client.run(
                """
                SELECT position, event_id, topic, key, type, envelope, created_at FROM outbox
                WHERE shard = ANY(\(shards)) AND position > \(cursor ?? 0) ORDER BY position LIMIT \(limit)
                """
            ).decode((Int64, UUID, String, String, String, String, Int64).self) {
                guard let topic = StreamTopic(rawValue: topic) else { throw ParleyError.internal(detail: "unreadable outbox row \(position)") }
                records.append(
                    OutboxRecord(
                        position: position, eventID: eventID, topic: topic, key: key, type: type, envelope: Array(envelope.utf8),
                        createdAt: Self.date(createdAt)))
            }
            return records
        }
    }

    public func removeEvents(_ positions: [Int64]) async throws {
        guard !positions.isEmpty else { return }
        try await guarded { try await client.execute("DELETE FROM outbox WHERE position = ANY(\(positions))") }
    }

    public func outboxBacklog() async throws -> (count: Int, oldest: Date?) {
        try await guarded {
            var result: (Int, Date?) = (0, nil)
            for try await (count, oldest) in try await client.run("SELECT count(*), min(created_at) FROM outbox").decode((Int64, Int64?).self) {
                result = (Int(count), oldest.map(Self.date))
            }
            return result
        }
    }

    public func trimOutbox(keepingNewest limit: Int) async throws -> Int {
        try await guarded {
            try await client.first(
                """
                WITH dropped AS (
                    DELETE FROM outbox WHERE position <= (SELECT position FROM outbox ORDER BY position DESC OFFSET \(limit) LIMIT 1)
                    RETURNING 1
                )
                SELECT count(*) FROM dropped
                """, as: Int64.self
            ).map(Int.init) ?? 0
        }
    }

    /// Hands this node's shards back at shutdown, so the other nodes take them at once rather than
    /// after the lease expires.
    public func releaseOutboxShards() async {
        guard let leases else { return }
        leases.update([], at: nil)
        _ = try? await client.execute(
            """
            UPDATE outbox_leases SET node = '', expires_at = '-infinity' WHERE node = \(leases.node);
            """)
        _ = try? await client.execute("DELETE FROM outbox_relays WHERE node = \(leases.node)")
    }

    /// The shards this node may relay now, renewing its leases (and taking or giving up shards to
    /// keep the share fair) when a renewal is due.
    private func leasedShards() async throws -> [Int32] {
        guard let leases else { return [] }
        let now = ContinuousClock.now
        if let shards = leases.current(now: now) { return shards }
        let node = leases.node
        let seconds = leases.seconds
        try await client.execute(
            """
            INSERT INTO outbox_relays (node, seen_at) VALUES (\(node), now())
            ON CONFLICT (node) DO UPDATE SET seen_at = now()
            """)
        let live = try await client.first(
            "SELECT count(*) FROM outbox_relays WHERE seen_at > now() - make_interval(secs => \(seconds))", as: Int64.self)
        let fairShare = (StreamEvent.shardCount + Int(max(1, live ?? 1)) - 1) / Int(max(1, live ?? 1))
        var shards = try await client.all(
            "UPDATE outbox_leases SET expires_at = now() + make_interval(secs => \(seconds)) WHERE node = \(node) RETURNING shard", as: Int32.self
        ).sorted()
        if shards.count > fairShare {
            // Another node joined: give it the excess. Nothing of these shards is in flight (this
            // runs between relay rounds), so the next holder starts where this one stopped.
            let excess = Array(shards[fairShare...])
            try await client.execute("UPDATE outbox_leases SET node = '', expires_at = '-infinity' WHERE node = \(node) AND shard = ANY(\(excess))")
            shards.removeLast(excess.count)
        } else if shards.count < fairShare {
            // Free shards, and those of nodes that stopped renewing.
            shards += try await client.all(
                """
                UPDATE outbox_leases SET node = \(node), expires_at = now() + make_interval(secs => \(seconds))
                WHERE shard IN (
                    SELECT shard FROM outbox_leases WHERE expires_at < now() ORDER BY shard LIMIT \(fairShare - shards.count) FOR UPDATE SKIP LOCKED
                )
                RETURNING shard
                """, as: Int32.self)
        }
        // Relays silent for long are forgotten (the live count only looks at recent ones anyway).
        try await client.execute("DELETE FROM outbox_relays WHERE seen_at < now() - make_interval(secs => \(seconds * 10))")
        leases.update(shards, at: now)
        return shards.sorted()
    }
}
