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

    @Test("a user's live sessions are listed with their browser, most recently used first", arguments: StoreFactory.all)
    func sessionsList(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let now = Date().truncatedToMillis
            let laptop = try await store.createSession(
                id: .v7(), userID: alice.id, refreshTokenHash: "l1", expiresAt: now + 3600, userAgent: "Laptop", now: now - 20)
            let phone = try await store.createSession(
                id: .v7(), userID: alice.id, refreshTokenHash: "p1", expiresAt: now + 3600, userAgent: "Phone", now: now - 10)
            _ = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "x1", expiresAt: now - 1, now: now - 30)
            let revoked = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "r1", expiresAt: now + 3600, now: now - 5)
            try await store.revokeSession(id: revoked.id, now: now)
            _ = try await store.createSession(id: .v7(), userID: bob.id, refreshTokenHash: "b1", expiresAt: now + 3600, now: now)

            #expect(
                try await store.sessions(userID: alice.id, now: now).map(\.id) == [phone.id, laptop.id],
                "newest first; no expired, revoked or other users'")
            _ = try await store.rotateRefreshToken(presentedHash: "l1", newHash: "l2", now: now)
            let listed = try await store.sessions(userID: alice.id, now: now)
            #expect(listed.map(\.id) == [laptop.id, phone.id], "the laptop refreshed last")
            #expect(listed.first?.userAgent == "Laptop")
            #expect(listed.first?.lastUsedAt == now)
            #expect(listed.last?.lastUsedAt == nil)
        }
    }

    @Test("setting a password stores the hash and revokes every other live session in one step", arguments: StoreFactory.all)
    func setPassword(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let now = Date()
            let current = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "c", expiresAt: now + 3600, now: now)
            let other1 = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "o1", expiresAt: now + 3600, now: now)
            let other2 = try await store.createSession(id: .v7(), userID: alice.id, refreshTokenHash: "o2", expiresAt: now + 3600, now: now)
            let bobs = try await store.createSession(id: .v7(), userID: bob.id, refreshTokenHash: "b", expiresAt: now + 3600, now: now)

            let revoked = try await store.setPassword(userID: alice.id, passwordHash: "new-hash", keeping: current.id, now: now)
            #expect(Set(revoked) == [other1.id, other2.id])
            #expect(try await store.credentials(login: "alice")?.passwordHash == "new-hash")
            #expect(try await store.credentials(login: "bob")?.passwordHash == "hash-bob")
            #expect(try await store.sessions(userID: alice.id, now: now).map(\.id) == [current.id])
            #expect(try await store.session(id: bobs.id)?.isActive(at: now) == true)
            #expect(try await store.rotateRefreshToken(presentedHash: "o1", newHash: "o1b", now: now) == .invalid)
            #expect(try await store.setPassword(userID: alice.id, passwordHash: "newer", keeping: current.id, now: now).isEmpty)
        }
    }

    @Test(
        "login attempts are counted before they are checked, wait once past the free ones, and are forgotten or cleared", arguments: StoreFactory.all)
    func loginAttempts(factory: StoreFactory) async throws {
        try await factory.with { store in
            let delay = LoginDelay(freeFailures: 2, firstSeconds: 60, maxSeconds: 600, forgetSeconds: 3600)
            let now = Date().truncatedToMillis
            func reserve(_ key: String, at time: Date) async throws -> LoginAttempt {
                try await store.reserveLoginAttempt(key: key, now: time, forgetBefore: time - 3600, delay: delay)
            }
            #expect(try await store.loginFailures(key: "user:a") == nil)
            #expect(try await reserve("login:ghost", at: now - 7200) == .counted(1))
            #expect(try await reserve("user:a", at: now) == .counted(1))
            #expect(try await store.loginFailures(key: "login:ghost") == nil, "an old record of another key was dropped")
            #expect(try await reserve("user:a", at: now + 1) == .counted(2))
            #expect(try await store.loginFailures(key: "user:a") == LoginFailures(count: 2, lastFailureAt: now + 1, nextAllowedAt: now + 61))
            // Past the free ones: wait, and waiting attempts are not counted.
            #expect(try await reserve("user:a", at: now + 2) == .delayed(until: now + 61))
            #expect(try await reserve("user:a", at: now + 60) == .delayed(until: now + 61))
            #expect(try await store.loginFailures(key: "user:a")?.count == 2)
            #expect(try await reserve("user:a", at: now + 61) == .counted(3))
            #expect(try await reserve("user:a", at: now + 62) == .delayed(until: now + 181), "twice as long")
            // An hour after the last attempt it starts again; a success clears it at once.
            #expect(try await reserve("user:a", at: now + 3700) == .counted(1))
            #expect(try await reserve("user:b", at: now + 3700) == .counted(1))
            try await store.clearLoginFailures(key: "user:a")
            #expect(try await store.loginFailures(key: "user:a") == nil)
            #expect(try await store.loginFailures(key: "user:b")?.count == 1)
        }
    }

    @Test("attempts made at the same moment cannot all pass one opening", arguments: StoreFactory.all)
    func concurrentLoginAttempts(factory: StoreFactory) async throws {
        try await factory.with { store in
            let delay = LoginDelay(freeFailures: 1, firstSeconds: 60, maxSeconds: 600, forgetSeconds: 3600)
            let now = Date().truncatedToMillis
            let results = try await withThrowingTaskGroup(of: LoginAttempt.self) { group in
                for _ in 0..<10 {
                    group.addTask { try await store.reserveLoginAttempt(key: "user:raced", now: now, forgetBefore: now - 3600, delay: delay) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { $0 == .counted(1) }.count == 1, "\(results)")
            #expect(results.filter { $0 == .delayed(until: now + 60) }.count == 9)
        }
    }
}
