import Foundation

/// Issues short-lived access tokens for a session.
public protocol AccessTokenIssuer: Sendable {
    /// Lifetime of an issued token, in seconds.
    var lifetimeSeconds: Int { get }
    func issue(userID: UUID, sessionID: UUID, now: Date) async throws -> String
}
