import Foundation
import JWTKit
import ParleyCore

/// Claims of a Parley access token.
struct AccessClaims: JWTPayload {
    var sub: SubjectClaim
    /// Session id: lets logout and refresh-token reuse end access at once.
    var sid: String
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// HS256 access tokens.
public struct JWTAccessTokens: AccessTokenIssuer {
    public let lifetimeSeconds: Int
    private let keys: JWTKeyCollection

    public init(secret: String, lifetimeSeconds: Int) async throws {
        guard secret.utf8.count >= 32 else { throw ConfigurationError("the JWT secret must be at least 32 bytes") }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.keys = keys
        self.lifetimeSeconds = lifetimeSeconds
    }

    public func issue(userID: UUID, sessionID: UUID, now: Date) async throws -> String {
        let claims = AccessClaims(
            sub: .init(value: userID.lowercased),
            sid: sessionID.lowercased,
            iat: .init(value: now),
            exp: .init(value: now.addingTimeInterval(TimeInterval(lifetimeSeconds)))
        )
        return try await keys.sign(claims)
    }

    /// The (user, session) a token was issued for; any failure (bad signature, expired, malformed,
    /// other algorithm) is the same `invalid_token`.
    func verify(_ token: String) async throws -> (userID: UUID, sessionID: UUID) {
        guard token.utf8.count <= 4096,
            let claims = try? await keys.verify(token, as: AccessClaims.self),
            let user = UUID(canonical: claims.sub.value),
            let session = UUID(canonical: claims.sid)
        else {
            throw ParleyError.unauthenticated("Access token is invalid or expired.", code: "invalid_token")
        }
        return (user, session)
    }
}
