import Foundation
import ParleyCore
import ParleyTestSupport
import Synchronization
import Testing

/// Collects deliveries and lets a test wait for a given number of them.
final class DeliveryLog: Sendable {
    private let deliveries = Mutex<[BusDelivery]>([])

    func append(_ delivery: BusDelivery) {
        deliveries.withLock { $0.append(delivery) }
    }

    var all: [BusDelivery] { deliveries.withLock { $0 } }

    /// Waits until at least `count` deliveries arrived (polling; a remote bus delivers asynchronously).
    func wait(for count: Int, timeout: Duration = .seconds(5)) async throws -> [BusDelivery] {
        try await wait(timeout: timeout) { $0.count >= count }
    }

    /// Waits until the deliveries so far satisfy `done`.
    func wait(timeout: Duration = .seconds(5), until done: ([BusDelivery]) -> Bool) async throws -> [BusDelivery] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let current = all
            if done(current) { return current }
            try await Task.sleep(for: .milliseconds(5))
        }
        return all
    }
}

@Suite("Bus conformance")
struct BusConformanceTests {
    static let sample = Message(
        id: .v7(), conversationID: UUID(), seq: 1, senderID: UUID(), body: "hello", clientMsgID: "c",
        createdAt: Date(timeIntervalSince1970: 1_800_000_000))

    @Test("events reach subscribed recipients only, with the event intact", arguments: BusFactory.all)
    func subscribedOnly(factory: BusFactory) async throws {
        try await factory.with { pair in
            let log = DeliveryLog()
            try await pair.subscriber.start { log.append($0) }
            let alice = UUID()
            let bob = UUID()
            let carol = UUID()
            try await pair.subscriber.subscribe(alice)
            try await pair.subscriber.subscribe(bob)

            pair.publisher.publish(.message(Self.sample), to: [alice, bob, carol])
            pair.publisher.publish(.message(Self.sample), to: [carol])
            // A marker published last: once it arrives, everything before it has too.
            pair.publisher.publish(.typing(conversationID: UUID(), userID: carol, state: .stop), to: [alice])
            let deliveries = try await log.wait { $0.contains { if case .typing = $0.event { true } else { false } } }
            let recipients = deliveries.flatMap(\.recipients)
            #expect(recipients.filter { $0 == alice }.count == 2)
            #expect(recipients.filter { $0 == bob }.count == 1)
            #expect(!recipients.contains(carol))
            #expect(deliveries.first?.event == .message(Self.sample))
        }
    }

    @Test("after unsubscribing, a user's events stop arriving", arguments: BusFactory.all)
    func unsubscribe(factory: BusFactory) async throws {
        try await factory.with { pair in
            let log = DeliveryLog()
            try await pair.subscriber.start { log.append($0) }
            let alice = UUID()
            let bob = UUID()
            try await pair.subscriber.subscribe(alice)
            try await pair.subscriber.subscribe(bob)
            try await pair.subscriber.unsubscribe(alice)
            pair.publisher.publish(.message(Self.sample), to: [alice])
            pair.publisher.publish(.presence(Presence(userID: alice, status: .online, lastSeenAt: nil)), to: [bob])
            let deliveries = try await log.wait(for: 1)
            #expect(deliveries.count == 1)
            #expect(deliveries.first?.recipients == [bob])
        }
    }

    @Test("events from one publisher arrive in the order they were published", arguments: BusFactory.all)
    func ordering(factory: BusFactory) async throws {
        try await factory.with { pair in
            let log = DeliveryLog()
            try await pair.subscriber.start { log.append($0) }
            let alice = UUID()
            try await pair.subscriber.subscribe(alice)
            let conversation = UUID()
            for seq in 1...500 {
                var message = Self.sample
                message.conversationID = conversation
                message.seq = Int64(seq)
                pair.publisher.publish(.message(message), to: [alice])
            }
            let deliveries = try await log.wait(for: 500)
            let seqs = deliveries.compactMap { delivery -> Int64? in
                if case .message(let message) = delivery.event { return message.seq }
                return nil
            }
            #expect(seqs == (1...500).map(Int64.init))
        }
    }

    @Test("every kind of event survives the trip", arguments: BusFactory.all)
    func roundTrip(factory: BusFactory) async throws {
        try await factory.with { pair in
            let log = DeliveryLog()
            try await pair.subscriber.start { log.append($0) }
            let alice = UUID()
            try await pair.subscriber.subscribe(alice)
            let conversation = Conversation(
                id: UUID(),
                type: .group,
                name: "Crew",
                hasPasscode: true,
                lastSeq: 3,
                lastMessage: Self.sample,
                members: [Member(userID: alice, role: .owner, readSeq: 3, deliveredSeq: 3, joinedAt: Date(timeIntervalSince1970: 1_800_000_000))],
                createdAt: Date(timeIntervalSince1970: 1_800_000_000),
                updatedAt: Date(timeIntervalSince1970: 1_800_000_001)
            )
            let events: [ChatEvent] = [
                .message(Self.sample),
                .receipt(conversationID: conversation.id, userID: alice, kind: .read, seq: 3),
                .typing(conversationID: conversation.id, userID: alice, state: .start),
                .presence(Presence(userID: alice, status: .offline, lastSeenAt: Date(timeIntervalSince1970: 1_800_000_002))),
                .conversation(.updated, conversation),
                .sessionRevoked(sessionID: UUID()),
            ]
            for event in events { pair.publisher.publish(event, to: [alice]) }
            let deliveries = try await log.wait(for: events.count)
            #expect(deliveries.map(\.event) == events)
        }
    }
}
