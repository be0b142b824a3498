import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Account security: password changes, sessions, the delay after failed logins")
struct AccountSecurityTests {
    private static func login(
        _ client: TestApp.Client, _ login: String, _ password: String, userAgent: String? = nil, ip: String? = nil
    ) async throws -> TestApp.Client.Reply {
        var headers = HTTPFields()
        if let userAgent { headers[.userAgent] = userAgent }
        if let ip { headers[HTTPField.Name("X-Forwarded-For")!] = ip }
        return try await client.request(
            .post, "/api/v1/auth/login", json: #"{"login":"\#(login)","password":"\#(password)"}"#, headers: headers)
    }

    @Test("changing the password signs out every other session (REST, refresh and sockets) and keeps this one")
    func changePassword() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let phone = try await Self.login(client, "alice", "password123", userAgent: "Phone")
            let phoneToken = try #require(phone.json["accessToken"].string)
            let phoneRefresh = try #require(phone.json["refreshToken"].string)
            let phoneSocket = try await WSTestClient.ready(port: client.port, token: phoneToken)
            let ownSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)

            let changed = try await client.request(
                .put, "/api/v1/users/me/password", token: alice.accessToken,
                json: #"{"currentPassword":"password123","newPassword":"correct horse"}"#)
            #expect(changed.status == .noContent)

            #expect(try await phoneSocket.closed() == 4001)
            #expect(try await client.request(.get, "/api/v1/users/me", token: phoneToken).errorCode == "session_revoked")
            let refreshed = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(phoneRefresh)"}"#)
            #expect(refreshed.status == .unauthorized)
            // The session that changed it carries on.
            #expect(try await client.request(.get, "/api/v1/users/me", token: alice.accessToken).status == .ok)
            try await ownSocket.send(#"{"type":"ping"}"#)
            #expect(try await ownSocket.next()["type"].string == "pong")
            let refreshedOwn = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(alice.refreshToken)"}"#)
            #expect(refreshedOwn.status == .ok)

            #expect(try await Self.login(client, "alice", "password123").status == .unauthorized)
            #expect(try await Self.login(client, "alice", "correct horse").status == .ok)
            await ownSocket.close()
        }
    }

    @Test("a wrong current password is 403 and a too short new one 400; neither changes anything")
    func changePasswordRefused() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let other = try #require(try await Self.login(client, "alice", "password123").json["accessToken"].string)
            let wrong = try await client.request(
                .put, "/api/v1/users/me/password", token: alice.accessToken, json: #"{"currentPassword":"guess1234","newPassword":"new password"}"#)
            #expect(wrong.status == .forbidden)
            #expect(wrong.errorCode == "wrong_password")
            let short = try await client.request(
                .put, "/api/v1/users/me/password", token: alice.accessToken, json: #"{"currentPassword":"password123","newPassword":"short"}"#)
            #expect(short.status == .badRequest)
            #expect(short.errorCode == "invalid_password")
            let missing = try await client.request(.put, "/api/v1/users/me/password", token: alice.accessToken, json: #"{"newPassword":"whatever1"}"#)
            #expect(missing.status == .badRequest)
            #expect(try await Self.login(client, "alice", "password123").status == .ok)
            #expect(try await client.request(.get, "/api/v1/users/me", token: other).status == .ok, "no session was signed out")
        }
    }

    @Test("the sessions list shows each signed-in browser, marks this one, and signs one out; others' sessions are 404")
    func sessions() async throws {
        try await TestApp.run(.live) { client in
            _ = try await client.register("alice")
            let bob = try await client.register("bob")
            let laptop = try #require(try await Self.login(client, "alice", "password123", userAgent: "Laptop Firefox").json["accessToken"].string)
            let phoneReply = try await Self.login(client, "alice", "password123", userAgent: "Phone Safari")
            let phone = try #require(phoneReply.json["accessToken"].string)
            let phoneRefresh = try #require(phoneReply.json["refreshToken"].string)
            // Refreshing marks the phone's session as used most recently.
            let refreshed = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(phoneRefresh)"}"#)
            let phoneNow = try #require(refreshed.json["accessToken"].string)
            _ = phone

            let list = try await client.request(.get, "/api/v1/sessions", token: laptop)
            #expect(list.status == .ok)
            let sessions = list.json["sessions"].array
            #expect(sessions.count == 3, "register, laptop and phone")
            #expect(sessions.first?["userAgent"].string == "Phone Safari")
            #expect(sessions.first?["lastUsedAt"].string != nil)
            #expect(sessions.filter { $0["current"].bool == true }.map { $0["userAgent"].string } == ["Laptop Firefox"])
            let phoneID = try #require(sessions.first?["id"].string)

            let phoneSocket = try await WSTestClient.ready(port: client.port, token: phoneNow)
            #expect(try await client.request(.delete, "/api/v1/sessions/\(phoneID)", token: bob.accessToken).status == .notFound)
            #expect(try await client.request(.get, "/api/v1/users/me", token: phoneNow).status == .ok, "bob could not sign it out")
            #expect(try await client.request(.delete, "/api/v1/sessions/\(phoneID)", token: laptop).status == .noContent)
            #expect(try await phoneSocket.closed() == 4001)
            #expect(try await client.request(.get, "/api/v1/users/me", token: phoneNow).errorCode == "session_revoked")
            let after = try await client.request(.get, "/api/v1/sessions", token: laptop)
            #expect(after.json["sessions"].array.count == 2)
            #expect(!after.json["sessions"].array.contains { $0["id"].string == phoneID })
            let badID = try await client.request(.delete, "/api/v1/sessions/not-an-id", token: laptop)
            #expect(badID.status == .badRequest)
            #expect(badID.errorCode == "invalid_id")
        }
    }

    @Test("after repeated failures an account waits, from any address and even with the right password; unknown logins the same")
    func loginDelay() async throws {
        try await TestApp.run(configure: {
            $0.loginDelay = .init(freeFailures: 3, firstSeconds: 60, maxSeconds: 600, forgetSeconds: 3600)
            $0.trustProxyHeaders = true
        }) { client in
            _ = try await client.register("alice")
            for attempt in 1...3 {
                let reply = try await Self.login(client, "alice", "wrong-\(attempt)", ip: "192.0.2.\(attempt)")
                #expect(reply.status == .unauthorized, "attempt \(attempt)")
            }
            // The third failure costs a delay: the next attempt, from yet another address and with the
            // right password, is refused without being checked.
            let delayed = try await Self.login(client, "alice@example.com", "password123", ip: "198.51.100.7")
            #expect(delayed.status == .tooManyRequests)
            #expect(delayed.errorCode == "login_delayed")
            #expect((59...60).contains(delayed.headers[.retryAfter].flatMap(Int.init) ?? 0))

            for attempt in 1...3 {
                #expect(try await Self.login(client, "nobody", "wrong-\(attempt)").status == .unauthorized)
            }
            let unknown = try await Self.login(client, "nobody", "wrong")
            #expect(unknown.status == .tooManyRequests, "a login that names no account looks the same")
            #expect(unknown.errorCode == "login_delayed")
            // Another account is not affected.
            _ = try await client.register("bob")
            #expect(try await Self.login(client, "bob", "password123").status == .ok)
        }
    }
}
