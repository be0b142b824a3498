import Foundation

/// Hashes and checks passwords (bcrypt in production). Implementations must not block the
/// cooperative thread pool.
public protocol PasswordHasher: Sendable {
    func hash(_ password: String) async throws -> String
    func verify(_ password: String, against hash: String) async throws -> Bool
}
