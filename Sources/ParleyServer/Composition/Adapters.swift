import Foundation
import Logging
import ParleyCore
import ParleyKafka
import ParleyPostgres
import ParleyRedis
import ParleySQLite
import ServiceLifecycle

/// The composition root: which adapter serves each port for a configuration. Embedded (SQLite and
/// in-process) by default; PostgreSQL for `StoreLocation.postgres`; Redis for the bus, presence and
/// rate limits when a Redis URL is set. `parley serve`, `parley seed` and the tests all build their
/// adapters here.
///
/// Nothing connects while building: connections belong to the adapters' services (`services`), which
/// the node runs in its ServiceGroup, and `prepare()` (migrations) runs once they are up.
public struct Adapters: Sendable {
    public var store: any ChatStore
    public var bus: any Bus
    public var presence: any PresenceRegistry
    public var limiter: any RateLimiter
    /// The shared Redis pool (presence, rate limits), in cluster mode.
    var redis: RedisClient?
    /// What /ready checks, by name.
    var readinessChecks: [(name: String, check: @Sendable () async throws -> Void)]
    /// The event stream, when Kafka is configured: the relay from the outbox and the producer it uses.
    public var relay: OutboxRelay?
    var streamService: (any Service)?

    /// Long-lived services, in start order. A ServiceGroup stops services in reverse order, so the
    /// store — first here — closes last, after everything that writes to it.
    public var services: [any Service] {
        var services: [any Service] = [store]
        if let streamService { services.append(streamService) }
        if let redis { services.append(redis) }
        services.append(bus)
        if let relay { services.append(relay) }
        return services
    }

    public static func make(configuration: ParleyConfiguration, logger: Logger) throws -> Adapters {
        let store: any ChatStore
        // With an event stream, every change also writes its event to the outbox.
        let outboxNode = configuration.kafka == nil ? nil : configuration.nodeID
        switch configuration.store {
        case .sqlite:
            store = try SQLiteChatStore(
                configuration: .init(
                    path: configuration.databasePath, synchronousFull: configuration.sqliteSynchronousFull, outboxNode: outboxNode),
                logger: logger
            )
        case .postgres(let url):
            var postgres = try PostgresChatStore.Configuration(url: url)
            postgres.outboxNode = outboxNode
            postgres.outboxLease = .seconds(configuration.outbox.leaseSeconds)
            store = PostgresChatStore(configuration: postgres, logger: logger)
        }
        var relay: OutboxRelay?
        var streamService: (any Service)?
        if let kafka = configuration.kafka {
            let stream = try KafkaStreamFactory.make(kafka, logger: logger)
            var relayConfiguration = OutboxRelay.Configuration()
            relayConfiguration.maxPending = configuration.outbox.maxPending
            if case .postgres = configuration.store {
                // Other nodes' commits to this node's shards wake nothing here: look more often.
                relayConfiguration.fallbackInterval = .milliseconds(250)
            }
            relay = OutboxRelay(outbox: store, stream: stream.stream, configuration: relayConfiguration, logger: logger)
            streamService = stream.service
        }
        var checks: [(name: String, check: @Sendable () async throws -> Void)] = [("store", { try await store.ping() })]
        guard let redisURL = configuration.redisURL else {
            return Adapters(
                store: store, bus: InProcessBus(), presence: InMemoryPresenceRegistry(ttl: configuration.gateway.presenceTTLSeconds),
                limiter: InMemoryRateLimiter(), readinessChecks: checks, relay: relay, streamService: streamService)
        }
        var redis = try RedisConfiguration(url: redisURL)
        redis.clientName = "parley-" + configuration.nodeID.filter { $0.isLetter || $0.isNumber || $0 == "-" }
        let client = RedisClient(configuration: redis, logger: logger)
        checks.append(("redis", { try await client.command(["PING"]) }))
        return Adapters(
            store: store,
            bus: RedisBus(configuration: redis, logger: logger),
            presence: RedisPresenceRegistry(client: client, ttl: configuration.gateway.presenceTTLSeconds),
            limiter: RedisRateLimiter(client: client, logger: logger),
            redis: client,
            readinessChecks: checks,
            relay: relay,
            streamService: streamService
        )
    }

    /// Brings the store's schema up to date; run once the services are running, before serving.
    public func prepare() async throws {
        try await store.migrate()
        relay?.start()
    }

    /// For one-shot commands (`parley seed`): runs the adapters' services, prepares the store, runs
    /// `body`, then stops the services (closing the store) whether `body` succeeded or not.
    public func withRunning<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for service in services {
                group.addTask { try await service.run() }
            }
            defer { group.cancelAll() }
            try await prepare()
            return try await body()
        }
    }
}
