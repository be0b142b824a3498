import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

/// The outbox every adapter keeps: an event exists exactly when its change committed, and events
/// of one key come out in commit (seq) order.
@Suite("ChatStore conformance: outbox")
struct OutboxConformanceTests {
    /// An envelope, parsed as any consumer would parse it.
    private func envelope(_ record: OutboxRecord) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(record.envelope)) as? [String: Any])
    }

    @Test("each new message writes one message.created event in its transaction; replays and refusals write none", arguments: StoreFactory.all)
    func messageCreated(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let mallory = try await store.makeUser("mallory")
            let team = try await store.makeGroup(owner: alice, members: [bob], name: "Team")
            let other = try await store.makeGroup(owner: bob, members: [alice], name: "Other")
            let outcomes = try await store.appendBatch([
                SendRequest(conversationID: team.id, senderID: alice.id, clientMsgID: "a1", body: "one"),
                SendRequest(conversationID: other.id, senderID: bob.id, clientMsgID: "b1", body: "elsewhere"),
                SendRequest(conversationID: team.id, senderID: bob.id, clientMsgID: "b2", body: "two \"quoted\" ✓"),
                SendRequest(conversationID: team.id, senderID: mallory.id, clientMsgID: "m1", body: "not a member"),
            ])
            _ = try await store.appendBatch([SendRequest(conversationID: team.id, senderID: alice.id, clientMsgID: "a1", body: "one")])
            let sent = outcomes.compactMap { try? $0.get().message }
            #expect(sent.count == 3)

            let events = try await store.pendingEvents(limit: 100).filter { $0.topic == .messages }
            #expect(events.count == 3, "one event per new message: none for the replay or the refused send")
            #expect(events.map(\.position) == events.map(\.position).sorted())
            for (event, message) in zip(events, sent) {
                #expect(event.type == "message.created")
                #expect(event.topic == .messages)
                #expect(event.key == message.conversationID.lowercased)
                let json = try envelope(event)
                #expect(json["id"] as? String == event.eventID.lowercased)
                #expect(json["type"] as? String == "message.created")
                #expect(json["conversationId"] as? String == message.conversationID.lowercased)
                #expect((json["seq"] as? NSNumber)?.int64Value == message.seq)
                #expect(json["node"] as? String == "node-a")
                #expect(
                    json["occurredAt"] as? String == message.createdAt.truncatedToMillis.formatted(WireJSON.dateStyle),
                    "occurredAt is when the message was created, as the store keeps it")
                let data = try #require(json["data"] as? [String: Any])
                let body = try #require(data["message"] as? [String: Any])
                #expect(body["id"] as? String == message.id.lowercased)
                #expect(body["body"] as? String == message.body)
                #expect(body["senderId"] as? String == message.senderID.lowercased)
                #expect((body["seq"] as? NSNumber)?.int64Value == message.seq)
            }
            #expect(Set(events.map(\.eventID)).count == events.count, "event ids are unique")
        }
    }

    @Test("removed events are gone for good; the backlog counts the rest and dates the oldest", arguments: StoreFactory.all)
    func remove(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let team = try await store.makeGroup(owner: alice)
            try await store.clearOutbox()
            #expect(try await store.outboxBacklog().count == 0)
            #expect(try await store.outboxBacklog().oldest == nil)
            let before = Date.now.addingTimeInterval(-1)
            for i in 1...5 { try await store.post("m\(i)", from: alice, to: team) }
            let events = try await store.pendingEvents(limit: 100)
            #expect(events.count == 5)
            #expect(try await store.pendingEvents(limit: 2).map(\.position) == Array(events.prefix(2).map(\.position)), "oldest first")

            // Not consecutive: the event between the two stays.
            try await store.removeEvents([events[2].position, events[0].position])
            #expect(try await store.pendingEvents(limit: 100).map(\.position) == [1, 3, 4].map { events[$0].position })
            try await store.removeEvents([events[1].position])
            let left = try await store.pendingEvents(limit: 100)
            #expect(left.map(\.position) == Array(events.suffix(2).map(\.position)))
            let backlog = try await store.outboxBacklog()
            #expect(backlog.count == 2)
            #expect(try #require(backlog.oldest) >= before)

            try await store.removeEvents(left.map(\.position))
            try await store.post("m6", from: alice, to: team)
            let fresh = try await store.pendingEvents(limit: 100)
            #expect(fresh.count == 1)
            #expect(fresh[0].position > events.last!.position, "positions are never reused")
        }
    }

    @Test("two nodes writing one conversation at once: its events come out in seq order, gapless", arguments: StoreFactory.all)
    func twoNodesInOrder(factory: StoreFactory) async throws {
        try await factory.withTwoNodes { nodeA, nodeB in
            let alice = try await nodeA.makeUser("alice")
            let bob = try await nodeA.makeUser("bob")
            let group = try await nodeA.makeGroup(owner: alice, members: [bob])
            func sendAll(from node: any ChatStore, sender: User, tag: String) async throws {
                for batch in 0..<10 {
                    let requests = (0..<10).map { i in
                        SendRequest(conversationID: group.id, senderID: sender.id, clientMsgID: "\(tag)-\(batch)-\(i)", body: "\(tag) \(batch).\(i)")
                    }
                    for outcome in try await node.appendBatch(requests) { _ = try outcome.get() }
                }
            }
            async let fromA: Void = sendAll(from: nodeA, sender: alice, tag: "a")
            async let fromB: Void = sendAll(from: nodeB, sender: bob, tag: "b")
            _ = try await (fromA, fromB)

            let events = try await nodeB.pendingEvents(limit: 1000).filter { $0.topic == .messages }
            let seqs = try events.map { event in try #require((try envelope(event)["seq"] as? NSNumber)?.int64Value) }
            #expect(seqs == Array(1...200), "outbox order is commit order: seq 1…200, no gap")
            #expect(Set(try events.map { try envelope($0)["node"] as? String }) == ["node-a", "node-b"], "each event names its node")
        }
    }

    @Test("bounded: trimming drops the oldest events and keeps the newest in order", arguments: StoreFactory.all)
    func trim(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let team = try await store.makeGroup(owner: alice)
            try await store.clearOutbox()
            for i in 1...10 { try await store.post("m\(i)", from: alice, to: team) }
            let all = try await store.pendingEvents(limit: 100)
            #expect(try await store.trimOutbox(keepingNewest: 4) == 6)
            #expect(try await store.pendingEvents(limit: 100).map(\.position) == Array(all.suffix(4).map(\.position)))
            #expect(try await store.trimOutbox(keepingNewest: 4) == 0, "nothing beyond the bound: nothing dropped")
        }
    }

    @Test(
        "PostgreSQL: two nodes share the outbox shards without overlap, and a node that stops renewing loses its share to the other",
        .enabled(if: TestEnvironment.postgresURL != nil))
    func leasedShards() async throws {
        try await StoreFactory.postgres.withTwoNodes { nodeA, nodeB in
            let alice = try await nodeA.makeUser("alice")
            // Enough conversations that both nodes' shares hold some of them.
            var groups: [Conversation] = []
            for i in 1...40 { groups.append(try await nodeA.makeGroup(owner: alice, name: "g\(i)")) }
            try await nodeA.clearOutbox()
            for group in groups { try await nodeA.post("hello", from: alice, to: group) }
            let all = Set(try await nodeA.pendingEvents(limit: 1000).map(\.eventID))
            #expect(all.count == 40, "a node alone relays every shard")

            // Both renew (every 200 ms with 1 s leases) until the first node gave up its excess
            // and the second took it.
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(15)
            var seenA = Set<UUID>()
            var seenB = Set<UUID>()
            while clock.now < deadline {
                seenA = Set(try await nodeA.pendingEvents(limit: 1000).map(\.eventID))
                seenB = Set(try await nodeB.pendingEvents(limit: 1000).map(\.eventID))
                if !seenA.isEmpty, !seenB.isEmpty, seenA.union(seenB) == all { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(!seenA.isEmpty && !seenB.isEmpty, "each node relays a share")
            #expect(seenA.isDisjoint(with: seenB), "no event is relayed by both")
            #expect(seenA.union(seenB) == all, "between them, every event")

            // The first node goes silent (as if killed): once its leases expire, the second takes
            // its shards.
            while clock.now < deadline + .seconds(10) {
                seenB = Set(try await nodeB.pendingEvents(limit: 1000).map(\.eventID))
                if seenB == all { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(seenB == all, "the survivor relays every shard")
        }
    }

    @Test("conversation, membership and receipt changes write their events in their transactions, in order", arguments: StoreFactory.all)
    func conversationEvents(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let team = try await store.makeGroup(owner: alice, members: [bob], name: "Team")
            _ = try await store.updateGroup(id: team.id, name: "Renamed", passcodeHash: nil, now: .now)
            _ = try await store.updateGroup(id: team.id, name: "Renamed", passcodeHash: .some(nil), now: .now)
            #expect(try await store.addMembers(conversationID: team.id, userIDs: [carol.id, bob.id], role: .member, now: .now) == [carol.id])
            try await store.setRole(conversationID: team.id, userID: bob.id, role: .admin)
            try await store.setRole(conversationID: team.id, userID: bob.id, role: .admin)
            try await store.post("hi", from: alice, to: team)
            _ = try await store.advanceWatermark(.read, conversationID: team.id, userID: bob.id, to: 1)
            _ = try await store.advanceWatermark(.read, conversationID: team.id, userID: bob.id, to: 1)
            try await store.removeMember(conversationID: team.id, userID: alice.id, now: .now)
            try await store.deleteConversation(id: team.id)
            let (direct, _) = try await store.findOrCreateDirectConversation(between: alice.id, and: carol.id, now: .now)
            _ = try await store.findOrCreateDirectConversation(between: carol.id, and: alice.id, now: .now)

            let events = try await store.pendingEvents(limit: 100)
            #expect(
                events.map(\.type) == [
                    "conversation.created", "conversation.updated", "member.added", "member.role_changed", "message.created", "receipt.read",
                    "member.removed", "member.role_changed", "conversation.deleted", "conversation.created",
                ], "one event per change, none for changes that changed nothing")
            let json = try events.map(envelope)
            #expect(events.prefix(9).allSatisfy { $0.key == team.id.lowercased }, "keyed by conversation")
            #expect(events.filter { $0.type != "message.created" && $0.type != "receipt.read" }.allSatisfy { $0.topic == .conversations })
            let created = try #require(json[0]["data"] as? [String: Any])
            let conversation = try #require(created["conversation"] as? [String: Any])
            #expect(conversation["name"] as? String == "Team")
            #expect((conversation["members"] as? [[String: Any]])?.count == 2)
            #expect(((json[1]["data"] as? [String: Any])?["conversation"] as? [String: Any])?["name"] as? String == "Renamed")
            #expect((json[2]["data"] as? [String: Any])?["userId"] as? String == carol.id.lowercased)
            #expect((json[3]["data"] as? [String: Any])?["role"] as? String == "admin")
            #expect(events[5].topic == .receipts)
            #expect((json[5]["seq"] as? NSNumber)?.int64Value == 1)
            #expect((json[5]["data"] as? [String: Any])?["userId"] as? String == bob.id.lowercased)
            #expect((json[6]["data"] as? [String: Any])?["userId"] as? String == alice.id.lowercased, "the owner left")
            #expect((json[7]["data"] as? [String: Any])?["userId"] as? String == bob.id.lowercased, "the admin succeeds as owner")
            #expect((json[7]["data"] as? [String: Any])?["role"] as? String == "owner")
            #expect(json[8]["conversationId"] as? String == team.id.lowercased)
            #expect(events[9].key == direct.id.lowercased)
            #expect(json.allSatisfy { $0["node"] as? String == "node-a" })
        }
    }
}
