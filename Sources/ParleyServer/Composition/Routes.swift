import Foundation
import Hummingbird
import ParleyCore

/// The HTTP routes of a node: middleware, the web client, operations endpoints and the v1 API.
func buildRouter(_ node: Node) -> Router<ParleyRequestContext> {
    let configuration = node.configuration
    let limiter = node.adapters.limiter
    let allowedOrigins = Set(configuration.corsAllowedOrigins)

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
                logger: node.logger
            )
        )
    }

    var advisories: [(name: String, state: @Sendable () -> String)] = []
    if let relay = node.adapters.relay {
        advisories.append(("stream", { relay.degradedReason == nil ? "ok" : "degraded" }))
    }
    OperationsController(nodeID: configuration.nodeID, checks: node.adapters.readinessChecks, advisories: advisories).addRoutes(to: router)

    let api = router.group("api/v1")
    AuthController(
        accounts: node.accounts,
        authenticator: node.authenticator,
        limiter: limiter,
        authPolicy: configuration.rateLimits.auth,
        maxRequestBytes: configuration.maxRequestBytes,
        secureCookies: configuration.secureCookies,
        trustProxy: configuration.trustProxyHeaders
    ).addRoutes(to: api.group("auth"))

    let authenticated = api.group().add(
        middleware: AuthMiddleware(authenticator: node.authenticator, limiter: limiter, policy: configuration.rateLimits.api)
    )
    UserController(accounts: node.accounts, maxRequestBytes: configuration.maxRequestBytes).addRoutes(to: authenticated.group("users"))
    SessionController(accounts: node.accounts).addRoutes(to: authenticated.group("sessions"))
    ConversationController(
        chat: node.chat,
        janitor: node.janitor,
        limiter: limiter,
        sendPolicy: configuration.rateLimits.send,
        maxRequestBytes: configuration.maxRequestBytes
    ).addRoutes(to: authenticated.group("conversations"))
    PresenceController(presence: node.presence).addRoutes(to: authenticated.group("presence"))
    SearchController(chat: node.chat).addRoutes(to: authenticated.group("search"))
    node.attachments.addRoutes(uploads: authenticated.group("uploads"), attachments: authenticated.group("attachments"))
    api.get("ws") { _, _ -> Response in
        throw ParleyError(.invalidInput, code: "upgrade_required", message: "This endpoint speaks WebSocket only.")
    }
    return router
}
