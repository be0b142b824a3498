import Foundation
import Hummingbird
import ParleyCore

/// Authenticates a request by `Authorization: Bearer` or the access-token cookie, checks that the
/// session is still live (so logout and refresh-token reuse take effect at once), applies the
/// per-user rate limit, and, for cookie-authenticated unsafe requests, the Origin check.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = ParleyRequestContext
    let authenticator: Authenticator
    let limiter: any RateLimiter
    let policy: RateLimitPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let identity = try await authenticator.authenticate(request)
        context.identity = identity
        context.logger[metadataKey: "parley.user_id"] = "\(identity.userID.lowercased)"
        try await limiter.enforce("user:" + identity.userID.lowercased, policy: policy, now: .now)
        return try await next(request, context)
    }
}

struct Authenticator: Sendable {
    static let accessCookie = "parley_access"
    static let refreshCookie = "parley_refresh"
    /// Not a credential: a cookie scripts may read, set beside the refresh cookie and for as long,
    /// so the web client knows whether it has a session to resume without asking the server (a
    /// first visit then makes no request that fails).
    static let signedInCookie = "parley_signed_in"

    let tokens: JWTAccessTokens
    let store: any ChatStore
    let csrf: OriginCheck

    func authenticate(_ request: Request) async throws -> Identity {
        let token: String
        let viaCookie: Bool
        if let header = request.headers[.authorization] {
            guard header.count > 7, header.prefix(7).lowercased() == "bearer " else {
                throw ParleyError.unauthenticated("Authorization header must be \"Bearer <token>\".", code: "invalid_token")
            }
            token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            viaCookie = false
        } else if let cookie = request.cookies[Self.accessCookie]?.value, !cookie.isEmpty {
            token = cookie
            viaCookie = true
        } else {
            throw ParleyError.unauthenticated()
        }
        if viaCookie {
            try csrf.check(request)
        }
        return try await authenticate(token: token, viaCookie: viaCookie)
    }

    /// Whether the request carries any credentials at all.
    func hasCredentials(_ request: Request) -> Bool {
        request.headers[.authorization] != nil || !(request.cookies[Self.accessCookie]?.value.isEmpty ?? true)
    }

    /// Checks an access token and that its session is still live.
    func authenticate(token: String, viaCookie: Bool) async throws -> Identity {
        let (userID, sessionID) = try await tokens.verify(token)
        guard let session = try await store.session(id: sessionID), session.userID == userID, session.isActive(at: .now) else {
            throw ParleyError.unauthenticated("Session has ended; log in again.", code: "session_revoked")
        }
        return Identity(userID: userID, sessionID: sessionID, viaCookie: viaCookie)
    }
}

/// Cookie-authenticated state-changing requests must come from this site or an allowed origin:
/// the `Origin` (else `Referer`) must match the request's host or the CORS allow-list.
struct OriginCheck: Sendable {
    let allowedOrigins: Set<String>

    /// `always` also checks safe methods: a WebSocket upgrade is a GET that opens a two-way channel.
    func check(_ request: Request, always: Bool = false) throws {
        if !always {
            switch request.method {
            case .get, .head, .options: return
            default: break
            }
        }
        let origin = request.headers[.origin] ?? request.headers[.referer].flatMap(Self.origin(ofURL:))
        guard let origin, origin != "null" else {
            throw ParleyError.forbidden("Cookie-authenticated requests need an Origin header.", code: "csrf_rejected")
        }
        if allowedOrigins.contains(origin) { return }
        guard let host = request.head.authority,
            let url = URL(string: origin), let originHost = url.host
        else {
            throw ParleyError.forbidden("Request origin is not allowed.", code: "csrf_rejected")
        }
        let originAuthority = url.port.map { "\(originHost):\($0)" } ?? originHost
        guard originAuthority.lowercased() == host.lowercased() else {
            throw ParleyError.forbidden("Request origin is not allowed.", code: "csrf_rejected")
        }
    }

    static func origin(ofURL text: String) -> String? {
        guard let url = URL(string: text), let scheme = url.scheme, let host = url.host else { return nil }
        return "\(scheme)://\(host)" + (url.port.map { ":\($0)" } ?? "")
    }
}
