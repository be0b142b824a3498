import Foundation
import Hummingbird
import ParleyCore

/// `GET /api/v1/search?q=&conversationId=&limit=&before=`: full-text search over the messages of
/// the caller's conversations.
struct SearchController {
    let chat: ChatService

    struct Hit: Encodable {
        var message: MessageDTO
        var highlight: String
    }

    struct SearchResponse: Encodable {
        var results: [Hit]
        var hasMore: Bool
    }

    func addRoutes(to group: RouterGroup<ParleyRequestContext>) {
        group.get(use: search)
    }

    @Sendable func search(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let parameters = request.uri.queryParameters
        let query = parameters["q"].map(String.init) ?? ""
        func id(_ name: String) throws -> UUID? {
            guard let raw = parameters[name[...]].map(String.init), !raw.isEmpty else { return nil }
            guard let id = UUID(canonical: raw) else { throw ParleyError.invalid("\(name) must be a UUID.", code: "invalid_id") }
            return id
        }
        let page = try await chat.search(
            caller: caller, query: query, conversationID: try id("conversationId"), before: try id("before"), limit: try request.queryInt("limit"))
        return try APIJSON.response(
            SearchResponse(
                results: page.results.map { Hit(message: MessageDTO(message: $0.message), highlight: $0.highlight) }, hasMore: page.hasMore))
    }
}
