import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Accounts: register, login, refresh, logout")
struct AuthTests {
    @Test("register returns the user, tokens and HttpOnly cookies")
    func register() async throws {
        try await TestApp.run { client in
            let reply = try await client.request(
                .post,
                "/api/v1/auth/register",
                json: #"{"username":"Alice","email":"Alice@Example.com","password":"password123","displayName":"Alice A."}"#
            )
            #expect(reply.status == .created)
            let user = reply.json["user"]
            #expect(user["username"].string == "alice")
            #expect(user["email"].string == "alice@example.com")
            #expect(user["displayName"].string == "Alice A.")
            #expect(user["id"].string.flatMap(UUID.init(uuidString:)) != nil)
            #expect(user["createdAt"].string?.hasSuffix("Z") == true)
            #expect(reply.json["expiresIn"].int == 900)
            #expect(reply.json["accessToken"].string?.split(separator: ".").count == 3)
            #expect((reply.json["refreshToken"].string?.count ?? 0) >= 43)
            let cookies = reply.headers[values: .setCookie]
            #expect(cookies.contains { $0.hasPrefix("parley_access=") && $0.contains("HttpOnly") && $0.contains("SameSite=Lax") })
            #expect(cookies.contains { $0.hasPrefix("parley_refresh=") && $0.contains("HttpOnly") && $0.contains("Path=/api/v1/auth") })
            // The web client's hint that a session exists holds no credential, so scripts may read it.
            #expect(cookies.contains { $0.hasPrefix("parley_signed_in=1;") && !$0.contains("HttpOnly") && $0.contains("SameSite=Strict") })
            #expect(!reply.text.contains("password"))
        }
    }

    @Test("a taken username or email is 409 with its own code")
    func conflicts() async throws {
        try await TestApp.run { client in
            _ = try await client.register("alice")
            let sameName = try await client.request(
                .post, "/api/v1/auth/register", json: #"{"username":"ALICE","email":"other@example.com","password":"password123"}"#)
            #expect(sameName.status == .conflict)
            #expect(sameName.errorCode == "username_taken")
            let sameEmail = try await client.request(
                .post, "/api/v1/auth/register", json: #"{"username":"alice2","email":"alice@example.com","password":"password123"}"#)
            #expect(sameEmail.status == .conflict)
            #expect(sameEmail.errorCode == "email_taken")
        }
    }

    @Test(
        "bad usernames, emails and passwords are 400 with specific codes",
        arguments: [
            (#"{"username":"a","email":"a@example.com","password":"password123"}"#, "invalid_username"),
            (#"{"username":"has space","email":"a@example.com","password":"password123"}"#, "invalid_username"),
            (#"{"username":"alice","email":"not-an-email","password":"password123"}"#, "invalid_email"),
            (#"{"username":"alice","email":"a@example.com","password":"short"}"#, "invalid_password"),
            (#"{"username":"alice","email":"a@example.com","password":"\#(String(repeating: "x", count: 73))"}"#, "invalid_password"),
            (#"{"username":"alice","email":"a@example.com","password":"password123","displayName":""}"#, "invalid_display_name"),
        ])
    func invalidRegistration(body: String, code: String) async throws {
        try await TestApp.run { client in
            let reply = try await client.request(.post, "/api/v1/auth/register", json: body)
            #expect(reply.status == .badRequest)
            #expect(reply.errorCode == code)
            let search = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"alice","password":"password123"}"#)
            #expect(search.status == .unauthorized, "nothing was created")
        }
    }

    @Test("login works with username or email, case-insensitively; wrong password is 401")
    func login() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            for login in ["alice", "ALICE", "alice@example.com", "Alice@Example.COM"] {
                let reply = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"\#(login)","password":"password123"}"#)
                #expect(reply.status == .ok, "login as \(login)")
                #expect(reply.json["user"]["id"].string == alice.id)
                #expect(reply.json["accessToken"].string != nil)
            }
            let wrong = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"alice","password":"wrong-password"}"#)
            #expect(wrong.status == .unauthorized)
            #expect(wrong.errorCode == "invalid_credentials")
            let unknown = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"nobody","password":"password123"}"#)
            #expect(unknown.status == .unauthorized)
            #expect(unknown.errorCode == "invalid_credentials", "unknown users look the same as wrong passwords")
        }
    }

    @Test("refresh rotates the token; reusing a rotated token revokes the whole session")
    func refreshRotationAndReuse() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let first = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(alice.refreshToken)"}"#)
            #expect(first.status == .ok)
            let newRefresh = try #require(first.json["refreshToken"].string)
            let newAccess = try #require(first.json["accessToken"].string)
            #expect(newRefresh != alice.refreshToken)
            #expect(first.json["expiresIn"].int == 900)
            #expect(try await client.request(.get, "/api/v1/users/me", token: newAccess).status == .ok)

            let reuse = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(alice.refreshToken)"}"#)
            #expect(reuse.status == .unauthorized)
            #expect(reuse.errorCode == "refresh_token_reused")
            // The family is revoked: the newest refresh token and every access token of the session stop working.
            let after = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(newRefresh)"}"#)
            #expect(after.status == .unauthorized)
            #expect(try await client.request(.get, "/api/v1/users/me", token: newAccess).status == .unauthorized)
            #expect(try await client.request(.get, "/api/v1/users/me", token: alice.accessToken).status == .unauthorized)
            // Other sessions of the same user are unaffected.
            let login = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"alice","password":"password123"}"#)
            let otherToken = try #require(login.json["accessToken"].string)
            #expect(try await client.request(.get, "/api/v1/users/me", token: otherToken).status == .ok)
        }
    }

    @Test("refresh with the cookie needs a same-site Origin")
    func refreshWithCookie() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            var headers = HTTPFields()
            headers[.cookie] = "parley_refresh=\(alice.refreshToken)"
            let noOrigin = try await client.request(.post, "/api/v1/auth/refresh", headers: headers)
            #expect(noOrigin.status == .forbidden)
            #expect(noOrigin.errorCode == "csrf_rejected")
            headers[.origin] = "http://localhost"
            let ok = try await client.request(.post, "/api/v1/auth/refresh", headers: headers)
            #expect(ok.status == .ok, "\(ok.json)")
            #expect(ok.headers[values: .setCookie].contains { $0.hasPrefix("parley_refresh=") })
        }
    }

    @Test("logout revokes the session and clears the cookies")
    func logout() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let reply = try await client.request(.post, "/api/v1/auth/logout", token: alice.accessToken)
            #expect(reply.status == .noContent)
            #expect(reply.headers[values: .setCookie].contains { $0.hasPrefix("parley_access=;") && $0.contains("Max-Age=0") })
            #expect(reply.headers[values: .setCookie].contains { $0.hasPrefix("parley_signed_in=;") && $0.contains("Max-Age=0") })
            let me = try await client.request(.get, "/api/v1/users/me", token: alice.accessToken)
            #expect(me.status == .unauthorized)
            #expect(me.errorCode == "session_revoked")
            let refresh = try await client.request(.post, "/api/v1/auth/refresh", json: #"{"refreshToken":"\#(alice.refreshToken)"}"#)
            #expect(refresh.status == .unauthorized)
            #expect(try await client.request(.post, "/api/v1/auth/logout").status == .unauthorized)
        }
    }

    @Test("users/me shows the caller's email; search shows others without it")
    func users() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            _ = try await client.register("bob")
            _ = try await client.register("bobby")
            _ = try await client.register("carol")
            let me = try await client.request(.get, "/api/v1/users/me", token: alice.accessToken)
            #expect(me.status == .ok)
            #expect(me.json["email"].string == "alice@example.com")
            #expect(me.json.keys == ["id", "username", "displayName", "createdAt", "email"])

            let search = try await client.request(.get, "/api/v1/users?query=bob&limit=10", token: alice.accessToken)
            #expect(search.status == .ok)
            #expect(search.json["users"].array.compactMap { $0["username"].string } == ["bob", "bobby"])
            #expect(search.json["users"].array.allSatisfy { !$0.keys.contains("email") })
            let limited = try await client.request(.get, "/api/v1/users?query=b&limit=1", token: alice.accessToken)
            #expect(limited.json["users"].array.count == 1)
            let bobID = try #require(search.json["users"][0]["id"].string)
            let byID = try await client.request(.get, "/api/v1/users?ids=\(bobID),\(alice.id),\(UUID())", token: alice.accessToken)
            #expect(Set(byID.json["users"].array.compactMap { $0["username"].string }) == ["alice", "bob"])
            #expect(try await client.request(.get, "/api/v1/users?ids=nope", token: alice.accessToken).status == .badRequest)
            let bad = try await client.request(.get, "/api/v1/users?query=b&limit=1000", token: alice.accessToken)
            #expect(bad.status == .badRequest)
            #expect(bad.errorCode == "invalid_limit")
        }
    }
}
