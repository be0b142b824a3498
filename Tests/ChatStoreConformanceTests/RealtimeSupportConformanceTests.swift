import Foundation
import ParleyCore
import ParleyTestSupport
import Synchronization
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

    @Test("sends enqueued in order commit in order; the commit listener sees them in seq order with recipients", arguments: StoreFactory.all)
    func enqueueOrderAndListener(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let committed = CommitLog()
            store.setCommitListener { results in committed.append(results) }

            let promises = (1...100).map { i in
                store.enqueueSend(SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: "k\(i)", body: "m\(i)"))
            }
            var seqs: [Int64] = []
            for promise in promises { seqs.append(try await promise.value.message.seq) }
            #expect(seqs == Array(1...100), "enqueue order is seq order")

            let replay = try await store.send(SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: "k1", body: "m1"))
            #expect(replay.replayed)
            // The listener runs on the commit path, just after the callers are released.
            let seen = try await committed.wait(for: 101)
            let fresh = seen.filter { !$0.replayed }
            #expect(fresh.map(\.message.seq) == Array(1...100))
            #expect(fresh.allSatisfy { Set($0.recipients) == [alice.id, bob.id] })
            #expect(seen.last?.replayed == true, "replays are reported too, flagged")
        }
    }
}

/// What a commit listener was told.
final class CommitLog: Sendable {
    private let results = Mutex<[SendResult]>([])

    func append(_ batch: [SendResult]) {
        results.withLock { $0.append(contentsOf: batch) }
    }

    func wait(for count: Int) async throws -> [SendResult] {
        for _ in 0..<500 {
            let current = results.withLock { $0 }
            if current.count >= count { return current }
            try await Task.sleep(for: .milliseconds(10))
        }
        return results.withLock { $0 }
    }
}
