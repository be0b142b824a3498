import Crypto
import Foundation
import Synchronization

public struct AuthTokens: Sendable {
    public var accessToken: String
    public var refreshToken: String
    public var expiresIn: Int
    public var session: Session
}

/// The delay after repeated failed logins of one account (not only of one address: an attacker
/// with many addresses gets no more guesses). `freeFailures` in a row cost nothing; from then on
/// each failure makes the next attempt wait twice as long as the one before (`firstSeconds`, then
/// twice that, four times … at most `maxSeconds`); attempts while waiting are refused unchecked and
/// not counted; a success clears the count, and failures older than `forgetSeconds` are forgotten.
/// Logins that name no account are counted the same way, so the delay does not tell which exist.
public struct LoginDelay: Sendable, Equatable {
    public var freeFailures: Int
    public var firstSeconds: Int
    public var maxSeconds: Int
    public var forgetSeconds: Int

    public init(freeFailures: Int = 5, firstSeconds: Int = 1, maxSeconds: Int = 900, forgetSeconds: Int = 3600) {
        self.freeFailures = freeFailures
        self.firstSeconds = firstSeconds
        self.maxSeconds = maxSeconds
        self.forgetSeconds = forgetSeconds
    }

    /// Seconds the next attempt waits after `failures` failures in a row.
    public func seconds(after failures: Int) -> Int {
        guard failures >= freeFailures else { return 0 }
        let doublings = min(failures - freeFailures, 30)
        return firstSeconds > maxSeconds >> doublings ? maxSeconds : firstSeconds << doublings
    }
}

/// Registration, login, refresh-token rotation, logout, password changes and the sessions list.
public struct AccountService: Sendable {
    private let store: any ChatStore
    private let hasher: any PasswordHasher
    private let issuer: any AccessTokenIssuer
    private let limits: Limits
    private let refreshLifetimeSeconds: Int
    /// Told about revoked sessions so that their open sockets close.
    private let bus: any Bus
    private let dummyHash = DummyHash()
    private let loginDelay: LoginDelay

    public init(
        store: any ChatStore,
        hasher: any PasswordHasher,
        issuer: any AccessTokenIssuer,
        limits: Limits,
        refreshLifetimeSeconds: Int,
        bus: any Bus,
        loginDelay: LoginDelay = LoginDelay()
    ) {
        self.bus = bus
        self.loginDelay = loginDelay
        self.store = store
        self.hasher = hasher
        self.issuer = issuer
        self.limits = limits
        self.refreshLifetimeSeconds = refreshLifetimeSeconds
    }

    public func register(
        username: String, email: String, password: String, displayName: String?, userAgent: String? = nil, now: Date = .now
    ) async throws -> (User, AuthTokens) {
        let username = try Validation.username(username)
        let email = try Validation.email(email)
        try Validation.password(password, limits: limits)
        let displayName = try Validation.displayName(displayName, fallback: username)
        let hash = try await hasher.hash(password)
        let user = try await store.createUser(
            NewUser(username: username, email: email, displayName: displayName, passwordHash: hash, createdAt: now)
        )
        return (user, try await startSession(for: user, userAgent: userAgent, now: now))
    }

    public func login(_ login: String, password: String, userAgent: String? = nil, now: Date = .now) async throws -> (User, AuthTokens) {
        let key = login.trimmingCharacters(in: .whitespaces).lowercased()
        guard !key.isEmpty, key.utf8.count <= 254, password.utf8.count <= limits.maxPasswordBytes else {
            _ = try await hasher.verify(password, against: try await dummyHash.value(hasher))
            throw Self.badCredentials
        }
        let credentials = try await store.credentials(login: key)
        let failureKey = credentials.map { Self.failureKey(userID: $0.user.id) } ?? "login:" + key
        // Counted before the check, so that parallel attempts cannot all pass one opening.
        try await reserveAttempt(failureKey, now: now)
        guard let credentials else {
            // Spend the same time as a real check so response times do not reveal which logins exist.
            // A hasher that fails here fails the login as an internal error: never skip the check.
            _ = try await hasher.verify(password, against: try await dummyHash.value(hasher))
            throw Self.badCredentials
        }
        guard try await hasher.verify(password, against: credentials.passwordHash) else {
            throw Self.badCredentials
        }
        try await store.clearLoginFailures(key: failureKey)
        return (credentials.user, try await startSession(for: credentials.user, userAgent: userAgent, now: now))
    }

    /// Changes the caller's password after checking the current one (a wrong one counts as a failed
    /// login of the account), and signs out every other session of theirs: their sockets close and
    /// their refresh tokens stop working. The calling session stays.
    public func changePassword(userID: UUID, sessionID: UUID, current: String, new: String, now: Date = .now) async throws {
        try Validation.password(new, limits: limits)
        guard let user = try await store.user(id: userID), let credentials = try await store.credentials(login: user.username) else {
            throw ParleyError.unauthenticated()
        }
        let failureKey = Self.failureKey(userID: userID)
        try await reserveAttempt(failureKey, now: now)
        guard current.utf8.count <= limits.maxPasswordBytes, try await hasher.verify(current, against: credentials.passwordHash) else {
            throw ParleyError.forbidden("The current password is incorrect.", code: "wrong_password")
        }
        let hash = try await hasher.hash(new)
        let revoked = try await store.setPassword(userID: userID, passwordHash: hash, keeping: sessionID, now: now)
        try await store.clearLoginFailures(key: failureKey)
        for id in revoked {
            bus.publish(.sessionRevoked(sessionID: id), to: [userID])
        }
    }

    /// The caller's live sessions, most recently used first.
    public func sessions(userID: UUID, now: Date = .now) async throws -> [Session] {
        try await store.sessions(userID: userID, now: now)
    }

    /// Ends one of the caller's own sessions (another user's, or an unknown id: 404).
    public func revokeSession(_ id: UUID, userID: UUID, now: Date = .now) async throws {
        guard let session = try await store.session(id: id), session.userID == userID else {
            throw ParleyError.notFound("No such session.", code: "session_not_found")
        }
        try await logout(userID: userID, sessionID: session.id, now: now)
    }

    private static func failureKey(userID: UUID) -> String { "user:" + userID.lowercased }

    private func forgetBefore(_ now: Date) -> Date { now - TimeInterval(loginDelay.forgetSeconds) }

    /// Counts an attempt for `key`, or throws `login_delayed` while it must wait.
    private func reserveAttempt(_ key: String, now: Date) async throws {
        if case .delayed(let until) = try await store.reserveLoginAttempt(key: key, now: now, forgetBefore: forgetBefore(now), delay: loginDelay) {
            throw ParleyError.loginDelayed(retryAfterSeconds: max(1, Int(until.timeIntervalSince(now).rounded(.up))))
        }
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

    private func startSession(for user: User, userAgent: String?, now: Date) async throws -> AuthTokens {
        let refresh = Self.makeRefreshToken()
        let session = try await store.createSession(
            id: .v7(now: now),
            userID: user.id,
            refreshTokenHash: Self.hashRefreshToken(refresh),
            expiresAt: now.addingTimeInterval(TimeInterval(refreshLifetimeSeconds)),
            userAgent: userAgent.map { String($0.prefix(256)) },
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
