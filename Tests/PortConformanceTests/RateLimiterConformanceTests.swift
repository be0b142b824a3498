import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("RateLimiter conformance")
struct RateLimiterConformanceTests {
    @Test("a burst passes, the next request waits, and the bucket refills over time", arguments: RateLimiterFactory.all)
    func burstAndRefill(factory: RateLimiterFactory) async throws {
        let (limiter, _, teardown) = try await factory.make()
        defer { teardown() }
        let policy = RateLimitPolicy(name: "test", burst: 5, perSecond: 0.5)
        let key = "user-" + UUID().uuidString
        let now = Date()
        for _ in 0..<5 { #expect(await limiter.acquire(key, policy: policy, now: now) == .allowed) }
        #expect(await limiter.acquire(key, policy: policy, now: now) == .limited(retryAfterSeconds: 2))
        // Another caller has a bucket of their own.
        #expect(await limiter.acquire("other-" + UUID().uuidString, policy: policy, now: now) == .allowed)
        // Two seconds at 0.5/s refill one token.
        #expect(await limiter.acquire(key, policy: policy, now: now.addingTimeInterval(2)) == .allowed)
        #expect(await limiter.acquire(key, policy: policy, now: now.addingTimeInterval(2)) != .allowed)
    }

    @Test("requests racing on two nodes get exactly the burst through", arguments: RateLimiterFactory.all)
    func atomicAcrossNodes(factory: RateLimiterFactory) async throws {
        let (nodeA, nodeB, teardown) = try await factory.make()
        defer { teardown() }
        let policy = RateLimitPolicy(name: "race", burst: 50, perSecond: 0.001)
        let key = "user-" + UUID().uuidString
        let now = Date()
        let allowed = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<120 {
                let limiter = i.isMultiple(of: 2) ? nodeA : nodeB
                group.addTask { await limiter.acquire(key, policy: policy, now: now) == .allowed }
            }
            var count = 0
            for await ok in group where ok { count += 1 }
            return count
        }
        #expect(allowed == 50)
    }
}

@Suite("Port conformance: which adapters ran")
struct PortCoverageTests {
    @Test("Redis runs the bus, presence and rate-limit suites when every integration suite is required (CI)")
    func redisIsCovered() {
        if TestEnvironment.requireAll {
            #expect(
                BusFactory.all.contains { $0.name == "Redis" } && PresenceFactory.all.contains { $0.name == "Redis" },
                "PARLEY_TEST_REQUIRE_ALL=1 but PARLEY_TEST_REDIS_URL is not set: the Redis adapters would go untested"
            )
        }
    }
}
