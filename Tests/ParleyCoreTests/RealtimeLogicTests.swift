import Foundation
import ParleyCore
import Synchronization
import Testing

@Suite("Typing tracker")
struct TypingTrackerTests {
    let conversation = UUID()
    let alice = UUID()

    @Test("the first start is relayed, repeats inside the throttle window are not")
    func throttle() {
        let tracker = TypingTracker(throttle: 3, ttl: 6)
        let t0 = Date(timeIntervalSince1970: 1_000)
        #expect(tracker.start(conversationID: conversation, userID: alice, now: t0))
        #expect(!tracker.start(conversationID: conversation, userID: alice, now: t0 + 1))
        #expect(!tracker.start(conversationID: conversation, userID: alice, now: t0 + 2.9))
        #expect(tracker.start(conversationID: conversation, userID: alice, now: t0 + 3.1))
        #expect(tracker.start(conversationID: UUID(), userID: alice, now: t0 + 3.1), "other conversations are separate")
    }

    @Test("stop is relayed only when typing; a quiet indicator expires once")
    func stopAndExpiry() {
        let tracker = TypingTracker(throttle: 3, ttl: 6)
        let t0 = Date(timeIntervalSince1970: 1_000)
        #expect(!tracker.stop(conversationID: conversation, userID: alice), "not typing")
        _ = tracker.start(conversationID: conversation, userID: alice, now: t0)
        #expect(tracker.stop(conversationID: conversation, userID: alice))
        _ = tracker.start(conversationID: conversation, userID: alice, now: t0)
        _ = tracker.start(conversationID: conversation, userID: alice, now: t0 + 4)  // refreshes the expiry
        #expect(tracker.expire(now: t0 + 7).isEmpty)
        let expired = tracker.expire(now: t0 + 10.5)
        #expect(expired.count == 1 && expired.first?.userID == alice)
        #expect(tracker.expire(now: t0 + 20).isEmpty)
    }
}

@Suite("In-memory presence registry")
struct PresenceRegistryTests {
    @Test("online with the first connection, offline after the last")
    func transitions() async throws {
        let registry = InMemoryPresenceRegistry()
        let alice = UUID()
        let now = Date()
        let phone = UUID()
        let laptop = UUID()
        #expect(try await registry.connect(userID: alice, connectionID: phone, now: now))
        #expect(!(try await registry.connect(userID: alice, connectionID: laptop, now: now)))
        #expect(try await registry.online([alice, UUID()], now: now) == [alice])
        #expect(!(try await registry.disconnect(userID: alice, connectionID: phone, now: now)))
        #expect(!(try await registry.disconnect(userID: alice, connectionID: phone, now: now)), "twice is harmless")
        #expect(try await registry.disconnect(userID: alice, connectionID: laptop, now: now))
        #expect(try await registry.online([alice], now: now).isEmpty)
    }
}

@Suite("Promise")
struct PromiseTests {
    @Test("callbacks run before waiters resume; late callbacks run at once; only the first result counts")
    func ordering() async throws {
        let promise = Promise<Int>()
        let seen = Mutex<[String]>([])
        promise.whenResolved { _ in seen.withLock { $0.append("callback") } }
        async let waited: Int = promise.value
        promise.resolve(.success(7))
        promise.resolve(.success(8))
        #expect(try await waited == 7)
        promise.whenResolved { result in seen.withLock { $0.append("late \((try? result.get()) ?? 0)") } }
        #expect(seen.withLock { $0 } == ["callback", "late 7"])
    }
}
