import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyServer
import ParleyTestSupport
import Testing

@Suite("Health, readiness, metrics, OpenAPI and persistence")
struct OperationsTests {
    @Test("health and readiness answer 200 with a JSON status")
    func healthAndReady() async throws {
        try await TestApp.run { client in
            let health = try await client.request(.get, "/health")
            #expect(health.status == .ok)
            #expect(health.json["status"].string == "ok")
            let ready = try await client.request(.get, "/ready")
            #expect(ready.status == .ok)
            #expect(ready.json["checks"]["store"].string == "ok")
        }
    }

    @Test("metrics are Prometheus text and count sends")
    func metrics() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let id = try await client.createGroup(alice)
            try await client.send(alice, id, "counted")
            let reply = try await client.request(.get, "/metrics")
            #expect(reply.status == .ok)
            #expect(reply.headers[.contentType]?.hasPrefix("text/plain") == true)
            let text = reply.text
            #expect(text.contains("# TYPE parley_sqlite_send_commit_seconds"))
            #expect(text.contains("hb_requests"))
        }
    }

    @Test("the web client is served at / with its modules, under the same security headers")
    func webClient() async throws {
        try await TestApp.run { client in
            let page = try await client.request(.get, "/")
            #expect(page.status == .ok)
            #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
            #expect(page.text.contains(#"<script type="module" src="/js/main.js"></script>"#))
            #expect(page.headers[.contentSecurityPolicy]?.contains("script-src") == false, "scripts fall under default-src 'self'")
            for asset in ["/app.css", "/js/main.js", "/js/api.js", "/js/socket.js", "/js/dom.js"] {
                let reply = try await client.request(.get, asset)
                #expect(reply.status == .ok, "\(asset)")
                #expect(reply.headers[.cacheControl] == "no-cache", "\(asset)")
            }
            // Nothing in the client stores credentials where scripts could read them back.
            let scripts = try await ["/js/main.js", "/js/api.js", "/js/socket.js"].asyncMap { try await client.request(.get, $0).text }
            #expect(scripts.allSatisfy { !$0.contains("localStorage") && !$0.contains("innerHTML") })
        }
    }

    @Test("the OpenAPI document is served and covers every v1 path")
    func openAPI() async throws {
        try await TestApp.run { client in
            let reply = try await client.request(.get, "/api/v1/openapi.yaml")
            #expect(reply.status == .ok)
            let text = reply.text
            #expect(text.hasPrefix("openapi: 3.1"))
            for path in [
                "/api/v1/auth/register:", "/api/v1/auth/login:", "/api/v1/auth/refresh:", "/api/v1/auth/logout:",
                "/api/v1/users/me:", "/api/v1/users:", "/api/v1/conversations:", "/api/v1/conversations/{id}:",
                "/api/v1/conversations/{id}/members:", "/api/v1/conversations/{id}/members/{userId}:",
                "/api/v1/conversations/{id}/join:", "/api/v1/conversations/{id}/messages:", "/api/v1/conversations/{id}/read:",
                "/api/v1/presence:", "/api/v1/ws:",
                "/health:", "/ready:", "/metrics:",
            ] {
                #expect(text.contains("  \(path)\n"), "\(path) is documented")
            }
        }
    }

    @Test("accounts, conversations and messages survive a restart of a live server on the same data directory")
    func persistence() async throws {
        let directory = try TemporaryDirectory(prefix: "parley-restart")
        defer { directory.remove() }
        var config = TestApp.configuration(directory)
        config.jwtSecret = nil  // the generated key must be kept too, so old tokens stay valid

        let first = try await buildApplication(configuration: config, logger: .quiet)
        let (token, conversation) = try await first.test(.live) { raw in
            let client = TestApp.Client(client: raw)
            let alice = try await client.register("alice")
            let id = try await client.createGroup(alice, name: "Durable")
            try await client.send(alice, id, "written before the restart")
            return (alice.accessToken, id)
        }

        let second = try await buildApplication(configuration: config, logger: .quiet)
        try await second.test(.live) { raw in
            let client = TestApp.Client(client: raw)
            let history = try await client.request(.get, "/api/v1/conversations/\(conversation)/messages", token: token)
            #expect(history.status == .ok)
            #expect(history.json["messages"][0]["body"].string == "written before the restart")
            let login = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"alice","password":"password123"}"#)
            #expect(login.status == .ok)
            let next = try await client.send(
                TestApp.Client.Account(id: "", username: "alice", accessToken: token, refreshToken: ""), conversation, "after")
            #expect(next.json["message"]["seq"].int == 2)
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
