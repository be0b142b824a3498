import Foundation
import Hummingbird
import ParleyCore

/// `GET /api/v1/presence?userIds=a,b`: online state and last-seen times.
struct PresenceController {
    let presence: PresenceService
    let maxUsers = 200

    struct PresenceResponse: Encodable {
        var presence: [PresenceDTO]
    }

    func addRoutes(to group: RouterGroup<ParleyRequestContext>) {
        group.get(use: show)
    }

    @Sendable func show(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        _ = try context.requireIdentity()
        let raw = request.uri.queryParameters["userIds"].map(String.init) ?? ""
        let parts = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw ParleyError.invalid("userIds is required: a comma-separated list of user ids.", code: "invalid_query") }
        guard parts.count <= maxUsers else { throw ParleyError.invalid("At most \(maxUsers) user ids.", code: "too_many_user_ids") }
        var ids: [UUID] = []
        for part in parts {
            guard let id = UUID(uuidString: part) else { throw ParleyError.invalid("\(part) is not a user id.", code: "invalid_id") }
            if !ids.contains(id) { ids.append(id) }
        }
        let states = try await presence.presence(of: ids)
        return try APIJSON.response(
            PresenceResponse(
                presence: states.map { PresenceDTO(presence: $0) }
            )
        )
    }
}
