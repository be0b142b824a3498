import Foundation
import Hummingbird
import ParleyCore

/// `/api/v1/users`: the caller's profile, their password, and user search.
struct UserController {
    let accounts: AccountService
    let maxRequestBytes: Int

    struct PasswordRequest: StrictDecodable {
        static let fields: Set<String> = ["currentPassword", "newPassword"]
        var currentPassword: String
        var newPassword: String
    }

    struct UsersResponse: Encodable {
        var users: [UserDTO]
    }

    func addRoutes(to group: RouterGroup<ParleyRequestContext>) {
        group.get("me", use: me)
        group.put("me/password", use: changePassword)
        group.get(use: search)
    }

    @Sendable func me(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        let user = try await accounts.profile(of: identity.userID)
        return try APIJSON.response(UserDTO(user, includeEmail: true))
    }

    /// `PUT /users/me/password` `{currentPassword, newPassword}` → 204. Every other session of the
    /// caller is signed out; this one stays.
    @Sendable func changePassword(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let identity = try context.requireIdentity()
        let body = try await APIJSON.decode(PasswordRequest.self, from: request, maxBytes: maxRequestBytes)
        try await accounts.changePassword(
            userID: identity.userID, sessionID: identity.sessionID, current: body.currentPassword, new: body.newPassword)
        context.logger.info("password changed", metadata: ["parley.user_id": "\(identity.userID.lowercased)"])
        return Response(status: .noContent)
    }

    @Sendable func search(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        _ = try context.requireIdentity()
        if let raw = request.uri.queryParameters["ids"] {
            return try await lookUp(String(raw))
        }
        let query = request.uri.queryParameters["query"].map(String.init) ?? ""
        let users = try await accounts.searchUsers(query: query, limit: try request.queryInt("limit") ?? 20)
        return try APIJSON.response(UsersResponse(users: users.map { UserDTO($0) }))
    }

    /// `?ids=a,b,c`: profiles by id (at most 200), for showing member and sender names.
    private func lookUp(_ raw: String) async throws -> Response {
        let parts = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard parts.count <= 200 else { throw ParleyError.invalid("At most 200 ids.", code: "too_many_user_ids") }
        let ids = try parts.map { part in
            guard let id = UUID(uuidString: part) else { throw ParleyError.invalid("\(part) is not a user id.", code: "invalid_id") }
            return id
        }
        let users = try await accounts.users(ids: ids)
        return try APIJSON.response(UsersResponse(users: users.map { UserDTO($0) }))
    }
}
