import Foundation
import Logging
import ParleyCore
import ParleyImages
import ServiceLifecycle
import _NIOFileSystem

/// One Parley node's domain services and gateway, built over its adapters. Routes read from here
/// (`Routes.swift`); the application runs `services` and calls `prepare()` before it serves.
struct Node: Sendable {
    let configuration: ParleyConfiguration
    let adapters: Adapters
    let accounts: AccountService
    let chat: ChatService
    let pipeline: SendPipeline
    let presence: PresenceService
    let authenticator: Authenticator
    let registry: ConnectionRegistry
    let gateway: Gateway
    let janitor: AttachmentJanitor
    let attachments: AttachmentController
    let logger: Logger

    init(configuration: ParleyConfiguration, adapters: Adapters, logger: Logger) async throws {
        self.configuration = configuration
        self.adapters = adapters
        self.logger = logger
        let store = adapters.store
        let bus = adapters.bus
        let secret = try configuration.jwtSecret ?? JWTSecretFile.loadOrCreate(directory: configuration.dataDirectory, logger: logger)
        let tokens = try await JWTAccessTokens(secret: secret, lifetimeSeconds: configuration.accessTokenSeconds)
        let hasher = BcryptPasswordHasher(cost: configuration.bcryptCost)

        accounts = AccountService(
            store: store,
            hasher: hasher,
            issuer: tokens,
            limits: configuration.limits,
            refreshLifetimeSeconds: configuration.refreshTokenSeconds,
            bus: bus,
            loginDelay: configuration.loginDelay
        )
        let typing = TypingTracker(throttle: configuration.gateway.typingThrottleSeconds, ttl: configuration.gateway.typingTTLSeconds)
        var pipelineConfiguration = configuration.sendPipeline
        // Metric names as operators know them: parley_sqlite_send_* or parley_postgres_send_*.
        pipelineConfiguration.metricsName = configuration.store == .sqlite ? "sqlite_send" : "postgres_send"
        pipeline = SendPipeline(
            store: store, bus: bus, typing: typing, limits: configuration.limits, configuration: pipelineConfiguration,
            relay: adapters.relay, logger: logger)
        chat = ChatService(store: store, hasher: hasher, limits: configuration.limits, bus: bus, typing: typing, pipeline: pipeline)
        presence = PresenceService(registry: adapters.presence, store: store, bus: bus)
        authenticator = Authenticator(tokens: tokens, store: store, csrf: OriginCheck(allowedOrigins: Set(configuration.corsAllowedOrigins)))
        registry = ConnectionRegistry(bus: bus, logger: logger)
        var gatewaySettings = configuration.gateway
        gatewaySettings.nodeID = configuration.nodeID
        gateway = Gateway(
            chat: chat,
            presence: presence,
            authenticator: authenticator,
            registry: registry,
            limiter: adapters.limiter,
            sendPolicy: configuration.rateLimits.send,
            framePolicy: configuration.rateLimits.webSocketFrames,
            ipPolicy: configuration.rateLimits.ip,
            trustProxy: configuration.trustProxyHeaders,
            settings: gatewaySettings,
            logger: logger
        )
        janitor = AttachmentJanitor(
            store: store, blobs: adapters.blobs, unsentAfter: .seconds(configuration.uploads.unsentSeconds),
            interval: configuration.uploads.janitorInterval, logger: logger)
        attachments = AttachmentController(
            store: store, blobs: adapters.blobs, thumbnailer: Thumbnailer(), limiter: adapters.limiter,
            uploadPolicy: configuration.rateLimits.upload, settings: configuration.uploads,
            temporaryDirectory: FilePath((configuration.dataDirectory as NSString).appendingPathComponent("uploads-in-progress")),
            logger: logger)
    }

    /// The node's long-lived services in start order; the ServiceGroup stops them in reverse, so
    /// sockets close first, then the pipeline drains, then the bus flushes, and the store closes last.
    var services: [any Service] {
        adapters.services + [
            pipeline,
            GatewayService(
                registry: registry,
                sockets: gateway.sockets,
                chat: chat,
                presence: presence,
                heartbeat: .seconds(configuration.gateway.heartbeatSeconds),
                interval: .seconds(configuration.gateway.maintenanceIntervalSeconds),
                presenceHeartbeat: .seconds(configuration.gateway.presenceTTLSeconds / 3),
                logger: logger
            ),
            janitor,
        ]
    }

    /// Runs once the services are up, before the server accepts connections: migrations, then the
    /// bus's delivery handler (for Redis, once its subscriber is connected).
    func prepare() async throws {
        try await adapters.prepare()
        // Uploads stream to files here before they are stored; whatever a killed node left is junk.
        let inProgress = attachments.temporaryDirectory
        _ = try? await FileSystem.shared.removeItem(at: inProgress, strategy: .platformDefault, recursively: true)
        try await FileSystem.shared.createDirectory(at: inProgress, withIntermediateDirectories: true, permissions: nil)
        do {
            try await adapters.blobs.check()
        } catch {
            // Chat works without file storage; uploads and downloads answer storage_unavailable.
            logger.warning("file storage is not usable", metadata: ["parley.storage": "\(adapters.blobs.kind)", "parley.error": "\(error)"])
        }
        let registry = self.registry
        try await adapters.bus.start { delivery in registry.deliver(delivery) }
    }
}
