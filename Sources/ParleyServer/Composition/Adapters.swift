import Foundation
import Logging
import ParleyBlobs
import ParleyCore
import ParleyKafka
import ParleyPostgres
import ParleyRedis
import ParleySQLite
import ServiceLifecycle
import _NIOFileSystem

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
    /// Where attachment bytes live: a directory of this node, or S3 shared by the cluster.
    public var blobs: any BlobStore
    /// The shared Redis pool (presence, rate limits), in cluster mode.
    var redis: RedisClient?
    /// What /ready checks, by name.
    var readinessChecks: [(name: String, check: @Sendable () async throws -> Void)]
    /// The relay from the outbox to the event stream (Kafka, or the in-process consumers).
    public var relay: OutboxRelay?
    /// What the stream needs running: the Kafka producer, consumers, the webhook HTTP client.
    var streamServices: [any Service] = []

    /// Long-lived services, in start order. A ServiceGroup stops services in reverse order, so the
    /// store — first here — closes last, after everything that writes to it.
    public var services: [any Service] {
        var services: [any Service] = [store]
        if let redis { services.append(redis) }
        services += streamServices
        services.append(bus)
        if let relay { services.append(relay) }
        return services
    }

    /// Builds the adapters of `serve` (with `relay`: the outbox relay and the in-process consumers)
    /// or of `consume` and `seed` (without).
    public static func make(configuration: ParleyConfiguration, relay withRelay: Bool = true, logger: Logger) throws -> Adapters {
        let store: any ChatStore
        // With an event stream or in-process consumers, every change also writes its event to the outbox.
        let outboxNode = configuration.writesOutbox ? configuration.nodeID : nil
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
            postgres.searchLanguage = configuration.searchLanguage
            store = PostgresChatStore(configuration: postgres, logger: logger)
        }
        let blobs: any BlobStore
        if let s3 = configuration.uploads.s3 {
            blobs = try S3BlobStore(configuration: s3)
        } else {
            blobs = DirectoryBlobStore(root: FilePath(configuration.uploadsDirectory))
        }
        var adapters: Adapters
        if let redisURL = configuration.redisURL {
            var redis = try RedisConfiguration(url: redisURL)
            redis.clientName = "parley-" + configuration.nodeID.filter { $0.isLetter || $0.isNumber || $0 == "-" }
            let client = RedisClient(configuration: redis, logger: logger)
            adapters = Adapters(
                store: store,
                bus: RedisBus(configuration: redis, logger: logger),
                presence: RedisPresenceRegistry(client: client, ttl: configuration.gateway.presenceTTLSeconds),
                limiter: RedisRateLimiter(client: client, logger: logger),
                blobs: blobs,
                redis: client,
                readinessChecks: [("store", { try await store.ping() }), ("redis", { try await client.command(["PING"]) })]
            )
        } else {
            adapters = Adapters(
                store: store, bus: InProcessBus(), presence: InMemoryPresenceRegistry(ttl: configuration.gateway.presenceTTLSeconds),
                limiter: InMemoryRateLimiter(), blobs: blobs, readinessChecks: [("store", { try await store.ping() })])
        }
        guard withRelay else { return adapters }

        let consumers = try adapters.makeConsumers(
            configuration.consumers.running(withKafka: configuration.kafka != nil), configuration, logger: logger)
        let stream: any EventStream
        if let kafka = configuration.kafka {
            let made = try KafkaStreamFactory.make(kafka, logger: logger)
            stream = made.stream
            adapters.streamServices += made.service.map { [$0] } ?? []
            // In-process consumers read the topics like any other consumer group.
            adapters.streamServices += try consumers.consumers.map { try KafkaConsumerFactory.make(kafka, consumer: $0, logger: logger) }
        } else if !consumers.consumers.isEmpty {
            stream = InProcessEventStream(consumers: consumers.consumers, deadLetterPath: configuration.deadLetterPath, logger: logger)
        } else {
            return adapters
        }
        adapters.streamServices += consumers.services
        var relayConfiguration = OutboxRelay.Configuration()
        relayConfiguration.maxPending = configuration.outbox.maxPending
        if case .postgres = configuration.store {
            // Other nodes' commits to this node's shards wake nothing here: look more often.
            relayConfiguration.fallbackInterval = .milliseconds(250)
        }
        adapters.relay = OutboxRelay(outbox: store, stream: stream, configuration: relayConfiguration, logger: logger)
        return adapters
    }

    /// The named consumers over these adapters, and the services they need running (the webhook
    /// HTTP client).
    public func makeConsumers(_ names: [ParleyConfiguration.ConsumerName], _ configuration: ParleyConfiguration, logger: Logger) throws -> (
        consumers: [any EventConsumer], services: [any Service]
    ) {
        var consumers: [any EventConsumer] = []
        var services: [any Service] = []
        for name in names {
            switch name {
            case .webhooks:
                let settings = configuration.consumers
                guard !settings.webhooks.isEmpty else { throw ConfigurationError("the webhooks consumer needs endpoints: set PARLEY_WEBHOOKS") }
                var webhooks = WebhookConsumer.Configuration(endpoints: settings.webhooks)
                webhooks.maxAttempts = settings.webhookMaxAttempts
                webhooks.baseBackoff = .milliseconds(settings.webhookRetryMilliseconds)
                webhooks.maxBackoff = max(.seconds(60), webhooks.baseBackoff)
                webhooks.timeout = .milliseconds(settings.webhookTimeoutMilliseconds)
                let transport = WebhookHTTPTransport()
                services.append(transport)
                consumers.append(WebhookConsumer(configuration: webhooks, transport: transport, deadLetters: store, logger: logger))
            case .notify:
                consumers.append(
                    NotifyConsumer(store: store, presence: presence, previewLength: configuration.consumers.notifyPreviewCharacters, logger: logger))
            }
        }
        return (consumers, services)
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
