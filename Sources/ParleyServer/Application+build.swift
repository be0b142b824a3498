import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import ParleyCore
import ParleyPostgres
import ParleyRedis
import ParleySQLite

/// Builds a Parley node from its configuration: the store, auth, rate limiting, every route and
/// middleware. `parley serve` and the tests both go through here.
public func buildApplication(configuration: ParleyConfiguration, logger: Logger) async throws -> some ApplicationProtocol {
    _ = ParleyMetrics.registry
    try configuration.validate()
    try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)

    let adapters = try await Adapters.make(configuration: configuration, logger: logger)
    let store = adapters.store
    let secret = try configuration.jwtSecret ?? JWTSecretFile.loadOrCreate(directory: configuration.dataDirectory, logger: logger)
    let tokens = try await JWTAccessTokens(secret: secret, lifetimeSeconds: configuration.accessTokenSeconds)
    let hasher = BcryptPasswordHasher(cost: configuration.bcryptCost)
    let limiter = adapters.limiter
    let bus = adapters.bus
    let presenceRegistry = adapters.presence
    let allowedOrigins = Set(configuration.corsAllowedOrigins)

    let accounts = AccountService(
        store: store,
        hasher: hasher,
        issuer: tokens,
        limits: configuration.limits,
        refreshLifetimeSeconds: configuration.refreshTokenSeconds,
        bus: bus
    )
    let chat = ChatService(
        store: store,
        hasher: hasher,
        limits: configuration.limits,
        bus: bus,
        typing: TypingTracker(throttle: configuration.gateway.typingThrottleSeconds, ttl: configuration.gateway.typingTTLSeconds)
    )
    chat.publishCommittedMessages()
    let presence = PresenceService(registry: presenceRegistry, store: store, bus: bus)
    let authenticator = Authenticator(tokens: tokens, store: store, csrf: OriginCheck(allowedOrigins: allowedOrigins))
    let registry = ConnectionRegistry(bus: bus, logger: logger)
    var gatewaySettings = configuration.gateway
    gatewaySettings.nodeID = configuration.nodeID
    try await bus.start { delivery in registry.deliver(delivery) }
    let gateway = Gateway(
        chat: chat,
        presence: presence,
        authenticator: authenticator,
        registry: registry,
        limiter: limiter,
        sendPolicy: configuration.rateLimits.send,
        framePolicy: configuration.rateLimits.webSocketFrames,
        settings: gatewaySettings,
        logger: logger
    )

    let router = Router(context: ParleyRequestContext.self)
    router.add(middleware: MetricsMiddleware())
    router.add(middleware: LogRequestsMiddleware(.debug))
    router.add(middleware: SecurityHeadersMiddleware(hsts: configuration.secureCookies))
    router.add(middleware: AllowListCORSMiddleware(allowedOrigins: allowedOrigins))
    router.add(middleware: ErrorMiddleware())
    router.add(
        middleware: IPRateLimitMiddleware(limiter: limiter, policy: configuration.rateLimits.ip, trustProxy: configuration.trustProxyHeaders)
    )
    if let webRoot = configuration.webDirectory ?? WebClient.bundledRoot {
        router.add(
            middleware: FileMiddleware(
                webRoot,
                cacheControl: .init([(MediaType(type: .any), [.noCache])]),
                searchForIndexHtml: true,
                logger: logger
            )
        )
    }

    OperationsController(nodeID: configuration.nodeID, checks: adapters.readinessChecks).addRoutes(to: router)

    let api = router.group("api/v1")
    AuthController(
        accounts: accounts,
        authenticator: authenticator,
        limiter: limiter,
        authPolicy: configuration.rateLimits.auth,
        maxRequestBytes: configuration.maxRequestBytes,
        secureCookies: configuration.secureCookies,
        trustProxy: configuration.trustProxyHeaders
    ).addRoutes(to: api.group("auth"))

    let authenticated = api.group().add(
        middleware: AuthMiddleware(authenticator: authenticator, limiter: limiter, policy: configuration.rateLimits.api)
    )
    UserController(store: store, limits: configuration.limits).addRoutes(to: authenticated.group("users"))
    ConversationController(
        chat: chat,
        limiter: limiter,
        sendPolicy: configuration.rateLimits.send,
        maxRequestBytes: configuration.maxRequestBytes
    ).addRoutes(to: authenticated.group("conversations"))
    PresenceController(presence: presence).addRoutes(to: authenticated.group("presence"))
    api.get("ws") { _, _ -> Response in
        throw ParleyError(.invalidInput, code: "upgrade_required", message: "This endpoint speaks WebSocket only.")
    }

    let webSocketRouter = Router(context: ParleyRequestContext.self)
    webSocketRouter.add(middleware: ErrorMiddleware())
    webSocketRouter.add(
        middleware: IPRateLimitMiddleware(limiter: limiter, policy: configuration.rateLimits.ip, trustProxy: configuration.trustProxyHeaders)
    )
    webSocketRouter.add(middleware: WebSocketAuthMiddleware(authenticator: authenticator))
    webSocketRouter.ws("api/v1/ws") { inbound, outbound, context in
        try await gateway.handle(inbound: inbound, outbound: outbound, context: context)
    }

    return Application(
        router: router,
        server: .http1WebSocketUpgrade(
            webSocketRouter: webSocketRouter,
            configuration: .init(
                ws: .init(
                    maxFrameSize: configuration.gateway.maxFrameBytes,
                    autoPing: .enabled(timePeriod: .seconds(configuration.gateway.heartbeatSeconds)),
                    closeTimeout: .seconds(5),
                    validateUTF8: true
                )
            )
        ),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "parley"),
        services: [
            GatewayService(
                registry: registry,
                chat: chat,
                presence: presence,
                bus: bus,
                interval: .seconds(configuration.gateway.maintenanceIntervalSeconds),
                presenceHeartbeat: .seconds(configuration.gateway.presenceTTLSeconds / 3)
            )
        ],
        logger: logger
    )
}

/// The node's adapters of the ports: embedded (SQLite and in-process) by default, PostgreSQL and
/// Redis in cluster mode.
struct Adapters {
    var store: any ChatStore
    var bus: any Bus
    var presence: any PresenceRegistry
    var limiter: any RateLimiter
    /// What /ready checks, by name.
    var readinessChecks: [(name: String, check: @Sendable () async throws -> Void)]

    static func make(configuration: ParleyConfiguration, logger: Logger) async throws -> Adapters {
        let store: any ChatStore
        var checks: [(name: String, check: @Sendable () async throws -> Void)] = []
        if configuration.store == "sqlite" {
            let sqlite = try SQLiteChatStore(
                configuration: .init(path: configuration.databasePath, synchronousFull: configuration.sqliteSynchronousFull),
                logger: logger
            )
            store = sqlite
            checks.append(("store", { try await sqlite.ping() }))
        } else {
            let postgres = try await PostgresChatStore(configuration: .init(url: configuration.store), logger: logger)
            store = postgres
            checks.append(("store", { try await postgres.ping() }))
        }
        guard let redisURL = configuration.redisURL else {
            return Adapters(
                store: store, bus: InProcessBus(), presence: InMemoryPresenceRegistry(ttl: configuration.gateway.presenceTTLSeconds),
                limiter: InMemoryRateLimiter(), readinessChecks: checks)
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
            readinessChecks: checks
        )
    }
}

/// The embedded mode's access-token key: generated once (512 random bits) and kept, readable by
/// the owner only, in the data directory so that tokens survive restarts.
public enum JWTSecretFile {
    public static func loadOrCreate(directory: String, logger: Logger) throws -> String {
        let path = (directory as NSString).appendingPathComponent("jwt-secret")
        if let existing = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            existing.utf8.count >= 32
        {
            return existing
        }
        let secret = AccountService.makeRefreshToken() + AccountService.makeRefreshToken()
        guard FileManager.default.createFile(atPath: path, contents: Data(secret.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ConfigurationError("cannot write the JWT key to \(path)")
        }
        logger.info("generated a new JWT signing key", metadata: ["parley.path": "\(path)"])
        return secret
    }
}

/// The web client: static files (HTML, CSS, JavaScript modules) served at `/`.
enum WebClient {
    /// The copy bundled with the server, if the bundle has one.
    static var bundledRoot: String? {
        guard let url = Bundle.module.url(forResource: "web", withExtension: nil, subdirectory: "Resources"),
            FileManager.default.fileExists(atPath: url.appendingPathComponent("index.html").path)
        else { return nil }
        return url.path
    }
}
