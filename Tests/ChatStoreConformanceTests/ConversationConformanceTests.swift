import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("ChatStore conformance: conversations and membership")
struct ConversationConformanceTests {
    @Test("a direct conversation is created once, whichever side asks", arguments: StoreFactory.all)
    func directIsUnique(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let (first, created) = try await store.findOrCreateDirectConversation(between: alice.id, and: bob.id, now: .now)
            #expect(created)
            #expect(first.type == .direct)
            #expect(Set(first.members.map(\.userID)) == [alice.id, bob.id])
            let (second, createdAgain) = try await store.findOrCreateDirectConversation(between: bob.id, and: alice.id, now: .now)
            #expect(!createdAgain)
            #expect(second.id == first.id)
        }
    }

    @Test("a group has one owner and plain members", arguments: StoreFactory.all)
    func groupRoles(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob], name: "Crew")
            #expect(group.type == .group)
            #expect(group.name == "Crew")
            #expect(group.member(alice.id)?.role == .owner)
            #expect(group.member(bob.id)?.role == .member)
            #expect(group.lastSeq == 0)
            #expect(group.lastMessage == nil)
            #expect(try await store.member(conversationID: group.id, userID: bob.id)?.role == .member)
            #expect(try await store.member(conversationID: group.id, userID: UUID()) == nil)
        }
    }

    @Test("renaming and setting or clearing a passcode", arguments: StoreFactory.all)
    func updateGroup(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            let renamed = try await store.updateGroup(id: group.id, name: "Renamed", passcodeHash: .some("hash"), now: .now)
            #expect(renamed?.name == "Renamed")
            #expect(renamed?.hasPasscode == true)
            #expect(try await store.passcodeHash(conversationID: group.id) == "hash")
            let cleared = try await store.updateGroup(id: group.id, name: nil, passcodeHash: .some(nil), now: .now)
            #expect(cleared?.name == "Renamed")
            #expect(cleared?.hasPasscode == false)
            #expect(try await store.passcodeHash(conversationID: group.id) == nil)
        }
    }

    @Test("adding members is idempotent; roles can change", arguments: StoreFactory.all)
    func members(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let added = try await store.addMembers(conversationID: group.id, userIDs: [bob.id, carol.id], role: .member, now: .now)
            #expect(added == [carol.id])
            try await store.setRole(conversationID: group.id, userID: carol.id, role: .admin)
            #expect(try await store.conversation(id: group.id)?.member(carol.id)?.role == .admin)
            await expectParleyError("conversation_not_found") {
                try await store.addMembers(conversationID: UUID(), userIDs: [bob.id], role: .member, now: .now)
            }
        }
    }

    @Test("when the owner leaves an admin takes over; an empty group disappears", arguments: StoreFactory.all)
    func ownerSuccession(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let group = try await store.makeGroup(owner: alice, members: [bob, carol])
            try await store.setRole(conversationID: group.id, userID: carol.id, role: .admin)
            try await store.removeMember(conversationID: group.id, userID: alice.id, now: .now)
            let after = try #require(try await store.conversation(id: group.id))
            #expect(after.member(alice.id) == nil)
            #expect(after.member(carol.id)?.role == .owner)
            #expect(after.member(bob.id)?.role == .member)
            try await store.removeMember(conversationID: group.id, userID: carol.id, now: .now)
            #expect(try await store.conversation(id: group.id)?.member(bob.id)?.role == .owner)
            try await store.removeMember(conversationID: group.id, userID: bob.id, now: .now)
            #expect(try await store.conversation(id: group.id) == nil)
        }
    }

    @Test("deleting a conversation removes its messages and memberships", arguments: StoreFactory.all)
    func deleteCascades(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            try await store.post("hello", from: alice, to: group)
            try await store.deleteConversation(id: group.id)
            #expect(try await store.conversation(id: group.id) == nil)
            #expect(try await store.conversations(for: alice.id, limit: 10).isEmpty)
            #expect(try await store.messages(conversationID: group.id, cursor: .latest, limit: 10).messages.isEmpty)
            await expectParleyError("conversation_not_found") { try await store.post("again", from: alice, to: group) }
        }
    }

    @Test("a user's conversations come newest activity first", arguments: StoreFactory.all)
    func listingOrder(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let base = Date(timeIntervalSince1970: 1_800_000_000)
            let first = try await store.makeGroup(owner: alice, name: "First", now: base)
            let second = try await store.makeGroup(owner: alice, name: "Second", now: base + 1)
            #expect(try await store.conversations(for: alice.id, limit: 10).map(\.id) == [second.id, first.id])
            try await store.post("bump", from: alice, to: first, now: base + 2)
            let listed = try await store.conversations(for: alice.id, limit: 10)
            #expect(listed.map(\.id) == [first.id, second.id])
            #expect(listed.first?.lastMessage?.body == "bump")
            #expect(try await store.conversations(for: alice.id, limit: 1).count == 1)
        }
    }
}
