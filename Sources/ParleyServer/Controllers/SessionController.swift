import Foundation
import Hummingbird
import ParleyCore

/// `/api/v1/sessions`: the caller's signed-in sessions (devices and browsers), and signing one out.
struct SessionController {
    let accounts: AccountService

    struct SessionDTO: Encodable {
        var id: String
        var createdAt: Date
        var lastUsedAt: Date?
        var expiresAt: Date
        var userAgent: String?
        /// The session making this request.
        var current: Bool
    }

    struct SessionsResponse: Encodable {
        var sessions: [SessionDTO]
    }

    func addRoutes(to group: RouterGroup<ParleyRequestContext>) {
        group.get(use: list)
        group.delete(":id", use: revoke)
    }

    @Sendable func list(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        let sessions = try await accounts.sessions(userID: identity.userID)
        return try APIJSON.response(
            SessionsResponse(
                sessions: sessions.map {
                    SessionDTO(
                        id: $0.id.lowercased, createdAt: $0.createdAt, lastUsedAt: $0.lastUsedAt, expiresAt: $0.expiresAt, userAgent: $0.userAgent,
                        current: $0.id == identity.sessionID)
                }))
    }

    /// Signs one of the caller's sessions out: its refresh token stops working and its sockets
    /// close. Revoking the current session is a logout (its cookies stay until they expire or
    /// `POST /auth/logout` clears them).
    @Sendable func revoke(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        let id = try context.parameters.uuid("id")
        try await accounts.revokeSession(id, userID: identity.userID)
        return Response(status: .noContent)
    }
}
