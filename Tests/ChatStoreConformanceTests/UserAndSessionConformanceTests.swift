import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("ChatStore conformance: users and sessions")
struct UserAndSessionConformanceTests {
    @Test("a registered user can be found by id, username and email", arguments: StoreFactory.all)
    func createAndLookUp(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            #expect(try await store.user(id: alice.id) == alice)
            #expect(try await store.credentials(login: "alice")?.user == alice)
            #expect(try await store.credentials(login: "alice@example.com")?.passwordHash == "hash-alice")
            #expect(try await store.credentials(login: "nobody") == nil)
            #expect(try await store.user(id: UUID()) == nil)
        }
    }

    @Test("usernames and emails are unique, with distinct conflict codes", arguments: StoreFactory.all)
    func uniqueness(factory: StoreFactory) async throws {
        try await factory.with { store in
            _ = try await store.makeUser("alice")
            let sameName = NewUser(username: "alice", email: "other@example.com", displayName: "A", passwordHash: "h")
            await expectParleyError("username_taken") { try await store.createUser(sameName) }
            let sameEmail = NewUser(username: "alice2", email: "alice@example.com", displayName: "A", passwordHash: "h")
            await expectParleyError("email_taken") { try await store.createUser(sameEmail) }
        }
    }

    @Test("search matches username and display name, prefix matches first, wildcards literal", arguments: StoreFactory.all)
    func search(factory: StoreFactory) async throws {
        try await factory.with { store in
            let bob = try await store.makeUser("bob")
            let robert = try await store.makeUser("robert")
            _ = try await store.makeUser("carol")
            let found = try await store.searchUsers(query: "bob", limit: 10)
            #expect(found.map(\.id) == [bob.id])
            let ob = try await store.searchUsers(query: "ob", limit: 10)
            #expect(Set(ob.map(\.id)) == [bob.id, robert.id])
            #expect(try await store.searchUsers(query: "%", limit: 10).isEmpty)
            #expect(try await store.searchUsers(query: "o", limit: 1).count == 1)
            #expect(Set(try await store.users(ids: [bob.id, robert.id, UUID()]).map(\.id)) == [bob.id, robert.id])
        }
    }

    @Test("refresh tokens rotate once; replaying a spent one revokes the session", arguments: StoreFactory.all)
    func rotation(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let now = Date()
            let session = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "t1", expiresAt: now + 3600, now: now)
            #expect(try await store.session(id: session.id)?.isActive(at: now) == true)

            guard case .rotated(let rotated) = try await store.rotateRefreshToken(presentedHash: "t1", newHash: "t2", now: now) else {
                Issue.record("first rotation should succeed")
                return
            }
            #expect(rotated.id == session.id)
            #expect(try await store.rotateRefreshToken(presentedHash: "t1", newHash: "t3", now: now) == .reused(rotated))
            #expect(try await store.session(id: session.id)?.revokedAt != nil)
            // The family is gone: even the newest token no longer works.
            #expect(try await store.rotateRefreshToken(presentedHash: "t2", newHash: "t4", now: now) == .invalid)
            #expect(try await store.rotateRefreshToken(presentedHash: "unknown", newHash: "t5", now: now) == .invalid)
        }
    }

    @Test("expired and revoked sessions do not rotate", arguments: StoreFactory.all)
    func expiredAndRevoked(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let now = Date()
            _ = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "old", expiresAt: now - 1, now: now - 100)
            #expect(try await store.rotateRefreshToken(presentedHash: "old", newHash: "x", now: now) == .invalid)
            let live = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "live", expiresAt: now + 100, now: now)
            try await store.revokeSession(id: live.id, now: now)
            #expect(try await store.rotateRefreshToken(presentedHash: "live", newHash: "y", now: now) == .invalid)
            #expect(try await store.session(id: live.id)?.isActive(at: now) == false)
        }
    }
}
