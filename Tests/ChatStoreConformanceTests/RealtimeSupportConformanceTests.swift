import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("ChatStore conformance: what the real-time gateway needs")
struct RealtimeSupportConformanceTests {
    @Test("member ids, and contacts bounded by group size", arguments: StoreFactory.all)
    func membersAndContacts(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            var crowd: [User] = []
            for i in 0..<5 { crowd.append(try await store.makeUser("crowd\(i)")) }
            let small = try await store.makeGroup(owner: alice, members: [bob])
            _ = try await store.makeGroup(owner: alice, members: crowd, name: "Big")
            _ = try await store.findOrCreateDirectConversation(between: alice.id, and: carol.id, now: .now)

            #expect(Set(try await store.memberIDs(conversationID: small.id)) == [alice.id, bob.id])
            #expect(try await store.memberIDs(conversationID: UUID()).isEmpty)
            #expect(Set(try await store.contacts(of: alice.id, maxGroupSize: 3, limit: 100)) == [bob.id, carol.id])
            #expect(Set(try await store.contacts(of: alice.id, maxGroupSize: 10, limit: 100)).count == 7)
            #expect(try await store.contacts(of: alice.id, maxGroupSize: 10, limit: 2).count == 2)
            #expect(try await store.contacts(of: bob.id, maxGroupSize: 10, limit: 100) == [alice.id])
        }
    }

    @Test("last-seen times are kept per user", arguments: StoreFactory.all)
    func lastSeen(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let seen = Date(timeIntervalSince1970: 1_800_000_000.123)
            try await store.setLastSeen(userID: alice.id, at: seen)
            let times = try await store.lastSeen(userIDs: [alice.id, bob.id])
            #expect(times == [alice.id: seen.truncatedToMillis])
        }
    }

    @Test("appendBatch: one outcome per request, in request order, with the members as recipients; a replay is flagged", arguments: StoreFactory.all)
    func appendBatchOrder(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let requests = (1...100).map { i in
                SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: "k\(i)", body: "m\(i)")
            }
            let outcomes = try await store.appendBatch(requests)
            #expect(outcomes.count == 100)
            #expect(try outcomes.map { try $0.get().message.seq } == Array(1...100), "request order is seq order")
            #expect(try outcomes.map { try $0.get().message.body } == requests.map(\.body))
            #expect(try outcomes.allSatisfy { try Set($0.get().recipients) == [alice.id, bob.id] })

            let replay = try await store.appendBatch([requests[0]])
            #expect(try replay[0].get().replayed)
            #expect(try replay[0].get().message == outcomes[0].get().message)
            #expect(try await store.conversation(id: group.id)?.lastSeq == 100, "a replay writes nothing")
        }
    }
}
