import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("ChatStore conformance: messages, idempotency, paging and watermarks")
struct MessageConformanceTests {
    @Test("seq starts at 1 and grows by one; the conversation tracks the last message", arguments: StoreFactory.all)
    func seqOrder(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            var seqs: [Int64] = []
            for i in 1...5 {
                seqs.append(try await store.post("m\(i)", from: i.isMultiple(of: 2) ? bob : alice, to: group).message.seq)
            }
            #expect(seqs == [1, 2, 3, 4, 5])
            let after = try #require(try await store.conversation(id: group.id))
            #expect(after.lastSeq == 5)
            #expect(after.lastMessage?.body == "m5")
            #expect(after.lastMessage?.senderID == alice.id)
        }
    }

    @Test("a replayed clientMsgId returns the original and writes nothing", arguments: StoreFactory.all)
    func idempotentSend(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let first = try await store.post("hello", from: alice, to: group, clientMsgID: "c-1")
            #expect(!first.replayed)
            let replay = try await store.post("hello (edited?)", from: alice, to: group, clientMsgID: "c-1")
            #expect(replay.replayed)
            #expect(replay.message == first.message)
            // The same clientMsgId from another sender is a different message.
            let other = try await store.post("hi", from: bob, to: group, clientMsgID: "c-1")
            #expect(!other.replayed)
            #expect(other.message.seq == 2)
            #expect(try await store.conversation(id: group.id)?.lastSeq == 2)
        }
    }

    @Test("a non-member cannot send and the seq does not move", arguments: StoreFactory.all)
    func nonMemberSend(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let mallory = try await store.makeUser("mallory")
            let group = try await store.makeGroup(owner: alice)
            await expectParleyError("conversation_not_found") { try await store.post("sneaky", from: mallory, to: group) }
            #expect(try await store.conversation(id: group.id)?.lastSeq == 0)
        }
    }

    @Test("one commit batch mixing conversations, a non-member, replays and a duplicate in the batch", arguments: StoreFactory.all)
    func mixedBatch(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let mallory = try await store.makeUser("mallory")
            let team = try await store.makeGroup(owner: alice, members: [bob])
            let pair = try await store.makeGroup(owner: bob, name: "Pair")
            let earlier = try await store.post("earlier", from: alice, to: team, clientMsgID: "e-1")
            func request(_ body: String, _ sender: User, _ conversation: Conversation, _ clientMsgID: String?) -> SendRequest {
                SendRequest(conversationID: conversation.id, senderID: sender.id, clientMsgID: clientMsgID, body: body)
            }
            // One batch, so one transaction: each request still gets its own outcome.
            let outcomes = try await store.appendBatch([
                request("one", alice, team, "b-1"),
                request("sneaky", mallory, team, "m-1"),
                request("two", bob, pair, "b-1"),
                request("earlier again", alice, team, "e-1"),
                request("three", bob, team, nil),
                request("one again", alice, team, "b-1"),
                request("four", bob, pair, "b-2"),
            ])
            #expect(outcomes.count == 7)

            #expect(try outcomes[0].get().message.seq == 2)
            #expect(!(try outcomes[0].get().replayed))
            #expect(Set(try outcomes[0].get().recipients) == [alice.id, bob.id])
            #expect((outcomes[1].failureCode) == "conversation_not_found")
            #expect(try outcomes[2].get().message.seq == 1)
            #expect(try outcomes[3].get().replayed)
            #expect(try outcomes[3].get().message == earlier.message)
            #expect(try outcomes[4].get().message.seq == 3)
            #expect(try outcomes[5].get().replayed)
            #expect(try outcomes[5].get().message == outcomes[0].get().message)
            #expect(try outcomes[6].get().message.seq == 2)

            let teamPage = try await store.messages(conversationID: team.id, cursor: .after(0), limit: 10)
            #expect(teamPage.messages.map(\.body) == ["earlier", "one", "three"])
            #expect(try await store.conversation(id: team.id)?.lastSeq == 3)
            #expect(try await store.conversation(id: pair.id)?.lastSeq == 2)
            // Senders have read their own messages; others have not.
            #expect(try await store.member(conversationID: team.id, userID: bob.id)?.readSeq == 3)
            #expect(try await store.member(conversationID: team.id, userID: alice.id)?.readSeq == 2)
        }
    }

    @Test("200 concurrent sends from several users get seqs 1…200, no gap, no duplicate", arguments: StoreFactory.all)
    func concurrentSends(factory: StoreFactory) async throws {
        try await factory.with { store in
            var users: [User] = []
            for name in ["ann", "ben", "cat", "dan"] { users.append(try await store.makeUser(name)) }
            let group = try await store.makeGroup(owner: users[0], members: Array(users.dropFirst()))
            let senders = users
            let seqs = try await withThrowingTaskGroup(of: Int64.self) { tasks in
                for i in 0..<200 {
                    tasks.addTask {
                        try await store.post("msg \(i)", from: senders[i % senders.count], to: group, clientMsgID: "k\(i)").message.seq
                    }
                }
                // Replays racing with the originals never create a second message.
                for i in 0..<50 {
                    tasks.addTask {
                        try await store.post("msg \(i)", from: senders[i % senders.count], to: group, clientMsgID: "k\(i)").message.seq
                    }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(seqs) == Set(1...200))
            let page = try await store.messages(conversationID: group.id, cursor: .after(0), limit: 200)
            #expect(page.messages.map(\.seq) == Array(1...200))
            #expect(!page.hasMore)
            #expect(Set(page.messages.compactMap(\.clientMsgID)).count == 200)
        }
    }

    @Test("two nodes on one database sending batches to one conversation at once: seqs stay gapless", arguments: StoreFactory.all)
    func twoNodesOneConversation(factory: StoreFactory) async throws {
        try await factory.withTwoNodes { nodeA, nodeB in
            let alice = try await nodeA.makeUser("alice")
            let bob = try await nodeA.makeUser("bob")
            let group = try await nodeA.makeGroup(owner: alice, members: [bob])
            // Each node commits 20 batches of 10, both at the same time, as two pipelines would.
            func sendAll(from node: any ChatStore, sender: User, tag: String) async throws -> [Int64] {
                var seqs: [Int64] = []
                for batch in 0..<20 {
                    let requests = (0..<10).map { i in
                        SendRequest(conversationID: group.id, senderID: sender.id, clientMsgID: "\(tag)-\(batch)-\(i)", body: "\(tag) \(batch).\(i)")
                    }
                    let outcomes = try await node.appendBatch(requests)
                    let batchSeqs = try outcomes.map { try $0.get().message.seq }
                    #expect(batchSeqs == batchSeqs.sorted(), "within a batch, request order is seq order")
                    seqs += batchSeqs
                }
                return seqs
            }
            async let fromA = sendAll(from: nodeA, sender: alice, tag: "a")
            async let fromB = sendAll(from: nodeB, sender: bob, tag: "b")
            let (seqsA, seqsB) = try await (fromA, fromB)
            #expect(Set(seqsA).isDisjoint(with: seqsB), "no seq was handed out twice")
            #expect(Set(seqsA + seqsB) == Set(1...400), "no gap")
            let page = try await nodeB.messages(conversationID: group.id, cursor: .after(0), limit: 500)
            #expect(page.messages.map(\.seq) == Array(1...400))
            #expect(try await nodeA.conversation(id: group.id)?.lastSeq == 400)
        }
    }

    @Test("paging before, after and latest, with hasMore", arguments: StoreFactory.all)
    func paging(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            for i in 1...25 { try await store.post("m\(i)", from: alice, to: group) }

            let latest = try await store.messages(conversationID: group.id, cursor: .latest, limit: 10)
            #expect(latest.messages.map(\.seq) == Array(16...25))
            #expect(latest.hasMore)
            let older = try await store.messages(conversationID: group.id, cursor: .before(16), limit: 10)
            #expect(older.messages.map(\.seq) == Array(6...15))
            #expect(older.hasMore)
            let oldest = try await store.messages(conversationID: group.id, cursor: .before(6), limit: 10)
            #expect(oldest.messages.map(\.seq) == Array(1...5))
            #expect(!oldest.hasMore)
            let newer = try await store.messages(conversationID: group.id, cursor: .after(20), limit: 10)
            #expect(newer.messages.map(\.seq) == Array(21...25))
            #expect(!newer.hasMore)
            let exact = try await store.messages(conversationID: group.id, cursor: .after(15), limit: 10)
            #expect(exact.messages.map(\.seq) == Array(16...25))
            #expect(!exact.hasMore)
            #expect(newer.messages.first?.body == "m21")
        }
    }

    @Test("watermarks only move forward, are clamped to lastSeq, and read implies delivered", arguments: StoreFactory.all)
    func watermarks(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            for i in 1...10 { try await store.post("m\(i)", from: alice, to: group) }

            var conversation = try #require(try await store.conversation(id: group.id))
            #expect(conversation.member(alice.id)?.readSeq == 10, "own sends count as read")
            #expect(conversation.unreadCount(for: bob.id) == 10)

            #expect(
                try await store.advanceWatermark(.delivered, conversationID: group.id, userID: bob.id, to: 8)
                    == WatermarkUpdate(value: 8, advanced: true))
            #expect(
                try await store.advanceWatermark(.read, conversationID: group.id, userID: bob.id, to: 4) == WatermarkUpdate(value: 4, advanced: true))
            #expect(
                try await store.advanceWatermark(.read, conversationID: group.id, userID: bob.id, to: 2)
                    == WatermarkUpdate(value: 4, advanced: false), "never backwards")
            #expect(
                try await store.advanceWatermark(.read, conversationID: group.id, userID: bob.id, to: 99)
                    == WatermarkUpdate(value: 10, advanced: true), "clamped")
            conversation = try #require(try await store.conversation(id: group.id))
            #expect(conversation.member(bob.id)?.readSeq == 10)
            #expect(conversation.member(bob.id)?.deliveredSeq == 10)
            #expect(conversation.unreadCount(for: bob.id) == 0)
            #expect(
                try await store.advanceWatermark(.delivered, conversationID: group.id, userID: bob.id, to: 10)
                    == WatermarkUpdate(value: 10, advanced: false),
                "read already moved delivered"
            )
            await expectParleyError("conversation_not_found") {
                try await store.advanceWatermark(.read, conversationID: group.id, userID: UUID(), to: 1)
            }
        }
    }

    @Test("a page read as a member checks membership in the same read; outsiders get not-found", arguments: StoreFactory.all)
    func memberPage(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let mallory = try await store.makeUser("mallory")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            for i in 1...3 { _ = try await store.post("m\(i)", from: alice, to: group) }
            let page = try await store.messages(conversationID: group.id, member: bob.id, cursor: .latest, limit: 2)
            #expect(page.messages.map(\.body) == ["m2", "m3"])
            #expect(page.hasMore)
            await expectParleyError("conversation_not_found") {
                try await store.messages(conversationID: group.id, member: mallory.id, cursor: .latest, limit: 2)
            }
            await expectParleyError("conversation_not_found") {
                try await store.messages(conversationID: UUID(), member: alice.id, cursor: .latest, limit: 2)
            }
        }
    }
}

extension Result where Failure == any Error {
    /// The ParleyError code of a failure, nil for a success.
    var failureCode: String? {
        if case .failure(let error) = self { return (error as? ParleyError)?.code }
        return nil
    }
}
