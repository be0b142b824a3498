import Foundation
import Hummingbird
import HummingbirdTesting
import ParleyServer
import ParleyTestSupport
import Testing

/// Every authenticated endpoint, checked against every kind of bad credential and against a
/// caller who is not a member of the conversation.
@Suite("Authorization matrix")
struct AuthorizationMatrixTests {
    struct Endpoint: Sendable, CustomTestStringConvertible {
        var method: HTTPRequest.Method
        var path: String
        var body: String?
        /// Whether a non-member must get 404 (false for endpoints not about one conversation).
        var conversationScoped: Bool

        var testDescription: String { "\(method) \(path)" }

        func resolved(conversation: String, user: String) -> String {
            path.replacingOccurrences(of: "{id}", with: conversation).replacingOccurrences(of: "{userId}", with: user)
        }
    }

    static let endpoints: [Endpoint] = [
        .init(method: .get, path: "/api/v1/users/me", conversationScoped: false),
        .init(method: .get, path: "/api/v1/users?query=a", conversationScoped: false),
        .init(method: .post, path: "/api/v1/auth/logout", conversationScoped: false),
        .init(
            method: .put, path: "/api/v1/users/me/password", body: #"{"currentPassword":"password123","newPassword":"hijacked1"}"#,
            conversationScoped: false),
        .init(method: .get, path: "/api/v1/sessions", conversationScoped: false),
        .init(method: .delete, path: "/api/v1/sessions/{id}", conversationScoped: false),
        .init(method: .get, path: "/api/v1/conversations", conversationScoped: false),
        .init(method: .post, path: "/api/v1/conversations", body: #"{"type":"group","name":"x"}"#, conversationScoped: false),
        .init(method: .get, path: "/api/v1/conversations/{id}", conversationScoped: true),
        .init(method: .patch, path: "/api/v1/conversations/{id}", body: #"{"name":"hijacked"}"#, conversationScoped: true),
        .init(method: .delete, path: "/api/v1/conversations/{id}", conversationScoped: true),
        .init(method: .post, path: "/api/v1/conversations/{id}/members", body: #"{"userIds":[]}"#, conversationScoped: true),
        .init(method: .delete, path: "/api/v1/conversations/{id}/members/{userId}", conversationScoped: true),
        .init(method: .patch, path: "/api/v1/conversations/{id}/members/{userId}", body: #"{"role":"admin"}"#, conversationScoped: true),
        .init(method: .post, path: "/api/v1/conversations/{id}/join", body: #"{"passcode":"wrong"}"#, conversationScoped: false),
        .init(method: .get, path: "/api/v1/conversations/{id}/messages", conversationScoped: true),
        .init(
            method: .post, path: "/api/v1/conversations/{id}/messages", body: #"{"body":"intrusion","clientMsgId":"x1"}"#, conversationScoped: true),
        .init(method: .post, path: "/api/v1/conversations/{id}/read", body: #"{"seq":1}"#, conversationScoped: true),
    ]

    /// The payload of a JWT, for building look-alike tokens.
    static func sessionID(of token: String) throws -> UUID {
        var part = String(token.split(separator: ".")[1]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while part.count % 4 != 0 { part += "=" }
        let data = try #require(Data(base64Encoded: part))
        let payload = try #require(JSONValue.parse(data))
        return try #require(payload["sid"].string.flatMap(UUID.init(uuidString:)))
    }

    @Test("missing, forged, expired and wrong-key tokens are 401 everywhere", arguments: endpoints)
    func badCredentials(endpoint: Endpoint) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let id = try await client.createGroup(alice)
            let path = endpoint.resolved(conversation: id, user: alice.id)
            let userID = try #require(UUID(uuidString: alice.id))
            let sessionID = try Self.sessionID(of: alice.accessToken)
            let expired = try await JWTAccessTokens(secret: TestApp.jwtSecret, lifetimeSeconds: 60)
                .issue(userID: userID, sessionID: sessionID, now: Date() - 3600)
            let wrongKey = try await JWTAccessTokens(secret: String(repeating: "k", count: 48), lifetimeSeconds: 900)
                .issue(userID: userID, sessionID: sessionID, now: Date())
            let parts = alice.accessToken.split(separator: ".")
            let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + "."
            let tampered = parts[0] + "." + parts[1].dropLast(2) + "AA." + parts[2]

            let cases: [(String, String?)] = [
                ("no token", nil),
                ("garbage", "not-a-jwt"),
                ("expired", expired),
                ("wrong key", wrongKey),
                ("alg none", unsigned),
                ("tampered payload", String(tampered)),
            ]
            for (label, token) in cases {
                let reply = try await client.request(endpoint.method, path, token: token, json: endpoint.body)
                #expect(reply.status == .unauthorized, "\(label): \(reply.status)")
                #expect(reply.errorCode != nil, "\(label) has an error body")
            }
            // The group is untouched by any of it.
            let check = try await client.request(.get, "/api/v1/conversations/\(id)", token: alice.accessToken)
            #expect(check.json["conversation"]["name"].string == "Team")
            #expect(check.json["conversation"]["lastSeq"].int == 0)
        }
    }

    @Test("a non-member gets 404 and no data", arguments: endpoints.filter(\.conversationScoped))
    func nonMember(endpoint: Endpoint) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let mallory = try await client.register("mallory")
            let id = try await client.createGroup(alice, name: "Secret", members: [bob])
            try await client.send(alice, id, "classified")
            let reply = try await client.request(
                endpoint.method, endpoint.resolved(conversation: id, user: bob.id), token: mallory.accessToken, json: endpoint.body)
            #expect(reply.status == .notFound)
            #expect(reply.errorCode == "conversation_not_found")
            #expect(reply.json.keys == ["error"])
            let text = reply.text
            #expect(!text.contains("classified") && !text.contains("Secret") && !text.contains(bob.id))

            // Nothing changed for the members.
            let check = try await client.request(.get, "/api/v1/conversations/\(id)", token: alice.accessToken)
            #expect(check.json["conversation"]["name"].string == "Secret")
            #expect(check.json["conversation"]["lastSeq"].int == 1)
            #expect(check.json["conversation"]["members"].array.count == 2)
        }
    }
}
