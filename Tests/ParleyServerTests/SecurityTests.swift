import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("Cookies, CSRF, CORS, security headers and rate limits")
struct SecurityTests {
    @Test("cookie-authenticated reads work; cookie-authenticated writes need a same-site or allowed Origin")
    func cookieCSRF() async throws {
        try await TestApp.run(configure: { $0.corsAllowedOrigins = ["https://chat.example.com"] }) { client in
            let alice = try await client.register("alice")
            var cookie = HTTPFields()
            cookie[.cookie] = "parley_access=\(alice.accessToken)"
            #expect(try await client.request(.get, "/api/v1/users/me", headers: cookie).status == .ok)

            let create = #"{"type":"group","name":"Via cookie"}"#
            let noOrigin = try await client.request(.post, "/api/v1/conversations", json: create, headers: cookie)
            #expect(noOrigin.status == .forbidden)
            #expect(noOrigin.errorCode == "csrf_rejected")

            var evil = cookie
            evil[.origin] = "https://evil.example"
            #expect(try await client.request(.post, "/api/v1/conversations", json: create, headers: evil).status == .forbidden)

            var sameSite = cookie
            sameSite[.origin] = "http://localhost"
            #expect(try await client.request(.post, "/api/v1/conversations", json: create, headers: sameSite).status == .created)

            var allowed = cookie
            allowed[.origin] = "https://chat.example.com"
            #expect(try await client.request(.post, "/api/v1/conversations", json: create, headers: allowed).status == .created)

            // Bearer tokens are not sent by browsers on their own, so they need no Origin.
            #expect(try await client.request(.post, "/api/v1/conversations", token: alice.accessToken, json: create).status == .created)
            let list = try await client.request(.get, "/api/v1/conversations", token: alice.accessToken)
            #expect(list.json["conversations"].array.count == 3, "the rejected attempts created nothing")
        }
    }

    @Test("CORS headers only for allowed origins; preflight from others refused")
    func cors() async throws {
        try await TestApp.run(configure: { $0.corsAllowedOrigins = ["https://chat.example.com"] }) { client in
            var preflight = HTTPFields()
            preflight[.origin] = "https://chat.example.com"
            preflight[.accessControlRequestMethod] = "POST"
            let ok = try await client.request(.options, "/api/v1/conversations", headers: preflight)
            #expect(ok.status == .noContent)
            #expect(ok.headers[.accessControlAllowOrigin] == "https://chat.example.com")
            #expect(ok.headers[.accessControlAllowCredentials] == "true")
            #expect(ok.headers[.accessControlAllowHeaders]?.contains("Authorization") == true)

            preflight[.origin] = "https://evil.example"
            let refused = try await client.request(.options, "/api/v1/conversations", headers: preflight)
            #expect(refused.status == .forbidden)
            #expect(refused.headers[.accessControlAllowOrigin] == nil)

            var simple = HTTPFields()
            simple[.origin] = "https://evil.example"
            let health = try await client.request(.get, "/health", headers: simple)
            #expect(health.headers[.accessControlAllowOrigin] == nil)
        }
    }

    @Test("every response carries security headers; API responses are not cached")
    func headers() async throws {
        try await TestApp.run { client in
            for path in ["/health", "/api/v1/users/me", "/api/v1/missing"] {
                let reply = try await client.request(.get, path)
                #expect(reply.headers[.xContentTypeOptions] == "nosniff", "\(path)")
                #expect(reply.headers[HTTPField.Name("X-Frame-Options")!] == "DENY", "\(path)")
                #expect(reply.headers[.contentSecurityPolicy]?.contains("default-src 'self'") == true, "\(path)")
            }
            #expect(try await client.request(.get, "/api/v1/users/me").headers[.cacheControl] == "no-store")
        }
    }

    @Test("login is rate limited per IP with 429 and Retry-After")
    func loginRateLimit() async throws {
        try await TestApp.run(configure: { $0.rateLimits.auth = RateLimitPolicy(name: "auth", burst: 3, perSecond: 0.01) }) { client in
            var statuses: [HTTPResponse.Status] = []
            var retryAfter: String?
            for _ in 0..<5 {
                let reply = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"alice","password":"password123"}"#)
                statuses.append(reply.status)
                if reply.status == .tooManyRequests {
                    retryAfter = reply.headers[.retryAfter]
                    #expect(reply.errorCode == "rate_limited")
                }
            }
            #expect(statuses == [.unauthorized, .unauthorized, .unauthorized, .tooManyRequests, .tooManyRequests])
            #expect(Int(retryAfter ?? "") ?? 0 >= 1)
        }
    }

    @Test("sends are rate limited per user, and a limited send stores nothing")
    func sendRateLimit() async throws {
        try await TestApp.run(configure: { $0.rateLimits.send = RateLimitPolicy(name: "send", burst: 5, perSecond: 0.01) }) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let id = try await client.createGroup(alice, members: [bob])
            var statuses: [HTTPResponse.Status] = []
            for i in 0..<7 { statuses.append(try await client.send(alice, id, "m\(i)").status) }
            #expect(statuses == Array(repeating: .created, count: 5) + [.tooManyRequests, .tooManyRequests])
            #expect(try await client.send(bob, id, "bob has his own bucket").status == .created)
            let conversation = try await client.request(.get, "/api/v1/conversations/\(id)", token: alice.accessToken)
            #expect(conversation.json["conversation"]["lastSeq"].int == 6)
        }
    }
}
