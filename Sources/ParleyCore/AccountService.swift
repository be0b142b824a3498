import Crypto
import Foundation
import Synchronization

public struct AuthTokens: Sendable {
    public var accessToken: String
    public var refreshToken: String
    public var expiresIn: Int
    public var session: Session
}

/// Registration, login, refresh-token rotation and logout.
public struct AccountService: Sendable {
    private let store: any ChatStore
    private let hasher: any PasswordHasher
    private let issuer: any AccessTokenIssuer
    private let limits: Limits
    private let refreshLifetimeSeconds: Int
    /// Told about revoked sessions so that their open sockets close.
    private let bus: any Bus
    private let dummyHash = DummyHash()

    public init(
        store: any ChatStore,
        hasher: any PasswordHasher,
        issuer: any AccessTokenIssuer,
        limits: Limits,
        refreshLifetimeSeconds: Int,
        bus: any Bus
    ) {
        self.bus = bus
        self.store = store
        self.hasher = hasher
        self.issuer = issuer
        self.limits = limits
        self.refreshLifetimeSeconds = refreshLifetimeSeconds
    }

    public func register(username: String, email: String, password: String, displayName: String?, now: Date = .now) async throws -> (User, AuthTokens)
    {
        let username = try Validation.username(username)
        let email = try Validation.email(email)
        try Validation.password(password, limits: limits)
        let displayName = try Validation.displayName(displayName, fallback: username)
        let hash = try await hasher.hash(password)
        let user = try await store.createUser(
            NewUser(username: username, email: email, displayName: displayName, passwordHash: hash, createdAt: now)
        )
        return (user, try await startSession(for: user, now: now))
    }

    public func login(_ login: String, password: String, now: Date = .now) async throws -> (User, AuthTokens) {
        let key = login.trimmingCharacters(in: .whitespaces).lowercased()
        guard !key.isEmpty, key.utf8.count <= 254, password.utf8.count <= limits.maxPasswordBytes,
            let credentials = try await store.credentials(login: key)
        else {
            // Spend the same time as a real check so response times do not reveal which logins exist.
            // A hasher that fails here fails the login as an internal error: never skip the check.
            _ = try await hasher.verify(password, against: try await dummyHash.value(hasher))
            throw Self.badCredentials
        }
        guard try await hasher.verify(password, against: credentials.passwordHash) else {
            throw Self.badCredentials
        }
        return (credentials.user, try await startSession(for: credentials.user, now: now))
    }

    public func refresh(token: String, now: Date = .now) async throws -> AuthTokens {
        let newToken = Self.makeRefreshToken()
        let outcome = try await store.rotateRefreshToken(
            presentedHash: Self.hashRefreshToken(token),
            newHash: Self.hashRefreshToken(newToken),
            now: now
        )
        switch outcome {
        case .rotated(let session):
            let access = try await issuer.issue(userID: session.userID, sessionID: session.id, now: now)
            return AuthTokens(accessToken: access, refreshToken: newToken, expiresIn: issuer.lifetimeSeconds, session: session)
        case .reused(let session):
            bus.publish(.sessionRevoked(sessionID: session.id), to: [session.userID])
            throw ParleyError.unauthenticated("Refresh token was already used; the session has been revoked.", code: "refresh_token_reused")
        case .invalid:
            throw ParleyError.unauthenticated("Refresh token is invalid or expired.", code: "invalid_refresh_token")
        }
    }

    public func logout(userID: UUID, sessionID: UUID, now: Date = .now) async throws {
        try await store.revokeSession(id: sessionID, now: now)
        bus.publish(.sessionRevoked(sessionID: sessionID), to: [userID])
    }

    // MARK: Users

    /// The caller's own profile; a caller whose account is gone is no longer authenticated.
    public func profile(of userID: UUID) async throws -> User {
        guard let user = try await store.user(id: userID) else { throw ParleyError.unauthenticated() }
        return user
    }

    /// Users whose username or display name matches `query` (at most 64 characters), usernames first.
    public func searchUsers(query: String, limit: Int) async throws -> [User] {
        let query = query.trimmingCharacters(in: .whitespaces)
        guard query.count <= 64 else { throw ParleyError.invalid("query must be at most 64 characters.", code: "invalid_query") }
        guard (1...limits.maxSearchResults).contains(limit) else {
            throw ParleyError.invalid("limit must be between 1 and \(limits.maxSearchResults).", code: "invalid_limit")
        }
        return query.isEmpty ? [] : try await store.searchUsers(query: query, limit: limit)
    }

    /// Profiles by id (at most 200), for showing member and sender names.
    public func users(ids: [UUID]) async throws -> [User] {
        guard ids.count <= 200 else { throw ParleyError.invalid("At most 200 ids.", code: "too_many_user_ids") }
        return try await store.users(ids: ids)
    }

    private func startSession(for user: User, now: Date) async throws -> AuthTokens {
        let refresh = Self.makeRefreshToken()
        let session = try await store.createSession(
            id: .v7(now: now),
            userID: user.id,
            refreshTokenHash: Self.hashRefreshToken(refresh),
            expiresAt: now.addingTimeInterval(TimeInterval(refreshLifetimeSeconds)),
            now: now
        )
        let access = try await issuer.issue(userID: user.id, sessionID: session.id, now: now)
        return AuthTokens(accessToken: access, refreshToken: refresh, expiresIn: issuer.lifetimeSeconds, session: session)
    }

    static let badCredentials = ParleyError.unauthenticated("Login or password is incorrect.", code: "invalid_credentials")

    /// 256 random bits, base64url without padding.
    public static func makeRefreshToken() -> String {
        let key = SymmetricKey(size: .bits256)
        return key.withUnsafeBytes { Data($0) }.base64URLEncoded()
    }

    /// Only this hash is stored, so a leaked database does not leak usable refresh tokens.
    public static func hashRefreshToken(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

/// A real bcrypt hash of a throwaway password, computed once, for constant-time failed logins.
/// Only a hash that was computed is cached: a failure is thrown, and the next login tries again.
private final class DummyHash: Sendable {
    private let cached = Mutex<String?>(nil)

    func value(_ hasher: any PasswordHasher) async throws -> String {
        if let value = cached.withLock({ $0 }) { return value }
        let value = try await hasher.hash("parley-dummy-password")
        cached.withLock { $0 = value }
        return value
    }
}

extension Data {
    public func base64URLEncoded() -> String {
        base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
