import Foundation
import Hummingbird
import ParleyCore

/// `/api/v1/auth`: register, login, refresh, logout.
struct AuthController {
    let accounts: AccountService
    let authenticator: Authenticator
    let limiter: any RateLimiter
    let authPolicy: RateLimitPolicy
    let maxRequestBytes: Int
    let secureCookies: Bool
    let trustProxy: Bool

    struct RegisterRequest: StrictDecodable {
        static let fields: Set<String> = ["username", "email", "password", "displayName"]
        var username: String
        var email: String
        var password: String
        var displayName: String?
    }

    struct LoginRequest: StrictDecodable {
        static let fields: Set<String> = ["login", "password"]
        var login: String
        var password: String
    }

    struct RefreshRequest: StrictDecodable {
        static let fields: Set<String> = ["refreshToken"]
        var refreshToken: String?
    }

    func addRoutes(to group: RouterGroup<ParleyRequestContext>) {
        group.post("register", use: register)
        group.post("login", use: login)
        group.post("refresh", use: refresh)
        group.post("logout", use: logout)
    }

    @Sendable func register(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        try await limitAuth(request, context)
        let body = try await APIJSON.decode(RegisterRequest.self, from: request, maxBytes: maxRequestBytes)
        let (user, tokens) = try await accounts.register(
            username: body.username,
            email: body.email,
            password: body.password,
            displayName: body.displayName,
            userAgent: request.headers[.userAgent]
        )
        context.logger.info("user registered", metadata: ["parley.user_id": "\(user.id.lowercased)"])
        return try authResponse(user: user, tokens: tokens, status: .created)
    }

    @Sendable func login(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        try await limitAuth(request, context)
        let body = try await APIJSON.decode(LoginRequest.self, from: request, maxBytes: maxRequestBytes)
        let (user, tokens) = try await accounts.login(body.login, password: body.password, userAgent: request.headers[.userAgent])
        return try authResponse(user: user, tokens: tokens, status: .ok)
    }

    @Sendable func refresh(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        try await limitAuth(request, context)
        let buffer = try await APIJSON.collectBody(request, maxBytes: maxRequestBytes)
        var token = buffer.readableBytes > 0 ? try APIJSON.decode(RefreshRequest.self, from: Data(buffer: buffer)).refreshToken : nil
        if token == nil, let cookie = request.cookies[Authenticator.refreshCookie]?.value, !cookie.isEmpty {
            try authenticator.csrf.check(request)
            token = cookie
        }
        guard let token, !token.isEmpty, token.utf8.count <= 256 else {
            throw ParleyError.unauthenticated("A refresh token is required.", code: "invalid_refresh_token")
        }
        let tokens = try await accounts.refresh(token: token)
        var response = try APIJSON.response(
            TokenResponse(accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, expiresIn: tokens.expiresIn)
        )
        setCookies(&response, tokens: tokens)
        return response
    }

    @Sendable func logout(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let identity = try await authenticator.authenticate(request)
        try await accounts.logout(userID: identity.userID, sessionID: identity.sessionID)
        var response = Response(status: .noContent)
        for (name, path) in [(Authenticator.accessCookie, "/"), (Authenticator.refreshCookie, "/api/v1/auth")] {
            response.setCookie(Cookie(name: name, value: "", maxAge: 0, path: path, secure: secureCookies, httpOnly: true, sameSite: .strict))
        }
        response.setCookie(
            Cookie(name: Authenticator.signedInCookie, value: "", maxAge: 0, path: "/", secure: secureCookies, httpOnly: false, sameSite: .strict))
        return response
    }

    private func limitAuth(_ request: Request, _ context: ParleyRequestContext) async throws {
        let ip = ClientAddress.of(request, context: context, trustProxy: trustProxy)
        try await limiter.enforce("ip:" + ip, policy: authPolicy, now: .now)
    }

    private func authResponse(user: User, tokens: AuthTokens, status: HTTPResponse.Status) throws -> Response {
        var response = try APIJSON.response(
            AuthResponse(
                user: UserDTO(user, includeEmail: true),
                accessToken: tokens.accessToken,
                refreshToken: tokens.refreshToken,
                expiresIn: tokens.expiresIn
            ),
            status: status
        )
        setCookies(&response, tokens: tokens)
        return response
    }

    private func setCookies(_ response: inout Response, tokens: AuthTokens) {
        response.setCookie(
            Cookie(
                name: Authenticator.accessCookie,
                value: tokens.accessToken,
                maxAge: tokens.expiresIn,
                path: "/",
                secure: secureCookies,
                httpOnly: true,
                sameSite: .lax
            )
        )
        response.setCookie(
            Cookie(
                name: Authenticator.refreshCookie,
                value: tokens.refreshToken,
                maxAge: max(0, Int(tokens.session.expiresAt.timeIntervalSinceNow)),
                path: "/api/v1/auth",
                secure: secureCookies,
                httpOnly: true,
                sameSite: .strict
            )
        )
        response.setCookie(
            Cookie(
                name: Authenticator.signedInCookie,
                value: "1",
                maxAge: max(0, Int(tokens.session.expiresAt.timeIntervalSinceNow)),
                path: "/",
                secure: secureCookies,
                httpOnly: false,
                sameSite: .strict
            )
        )
    }
}
