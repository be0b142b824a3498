import Foundation
import Synchronization

/// A token bucket: `burst` tokens, refilled at `perSecond`.
public struct RateLimitPolicy: Sendable, Equatable {
    public var name: String
    public var burst: Double
    public var perSecond: Double

    public init(name: String, burst: Double, perSecond: Double) {
        self.name = name
        self.burst = burst
        self.perSecond = perSecond
    }
}

public enum RateLimitDecision: Sendable, Equatable {
    case allowed
    case limited(retryAfterSeconds: Int)
}

/// Token buckets keyed by caller (user id, client IP). In-memory here; Redis-backed in cluster mode.
public protocol RateLimiter: Sendable {
    func acquire(_ key: String, policy: RateLimitPolicy, now: Date) async -> RateLimitDecision
    /// Whether `acquireAtOnce` answers without waiting (a limiter in this process's memory).
    var answersAtOnce: Bool { get }
    /// The decision without suspending, or nil when this limiter must be awaited (Redis).
    func acquireAtOnce(_ key: String, policy: RateLimitPolicy, now: Date) -> RateLimitDecision?
}

extension RateLimiter {
    public var answersAtOnce: Bool { false }
    public func acquireAtOnce(_ key: String, policy: RateLimitPolicy, now: Date) -> RateLimitDecision? { nil }
}

extension RateLimiter {
    /// Throws `rate_limited` when the bucket is empty.
    public func enforce(_ key: String, policy: RateLimitPolicy, now: Date = .now) async throws {
        if case .limited(let retry) = await acquire(key, policy: policy, now: now) {
            throw ParleyError.rateLimited(retryAfterSeconds: retry)
        }
    }
}

/// Process-local token buckets. Buckets that have refilled completely are dropped lazily,
/// so memory stays proportional to recently active keys.
public final class InMemoryRateLimiter: RateLimiter {
    private struct Bucket {
        var tokens: Double
        var updated: Date
    }

    private struct State {
        var buckets: [String: Bucket] = [:]
        var operations = 0
    }

    private let state = Mutex(State())
    private let sweepEvery: Int

    public init(sweepEvery: Int = 10_000) {
        self.sweepEvery = sweepEvery
    }

    public func acquire(_ key: String, policy: RateLimitPolicy, now: Date) async -> RateLimitDecision {
        take(key, policy: policy, now: now)
    }

    public var answersAtOnce: Bool { true }

    public func acquireAtOnce(_ key: String, policy: RateLimitPolicy, now: Date) -> RateLimitDecision? {
        take(key, policy: policy, now: now)
    }

    private func take(_ key: String, policy: RateLimitPolicy, now: Date) -> RateLimitDecision {
        state.withLock { state in
            let fullKey = policy.name + "|" + key
            var bucket = state.buckets[fullKey] ?? Bucket(tokens: policy.burst, updated: now)
            let elapsed = max(0, now.timeIntervalSince(bucket.updated))
            bucket.tokens = min(policy.burst, bucket.tokens + elapsed * policy.perSecond)
            bucket.updated = now
            let decision: RateLimitDecision
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                decision = .allowed
            } else {
                let wait = (1 - bucket.tokens) / max(policy.perSecond, 0.000_001)
                decision = .limited(retryAfterSeconds: max(1, Int(wait.rounded(.up))))
            }
            state.buckets[fullKey] = bucket
            state.operations += 1
            if state.operations % sweepEvery == 0 {
                Self.sweep(&state, now: now)
            }
            return decision
        }
    }

    private static func sweep(_ state: inout State, now: Date) {
        // A bucket idle for a minute has refilled under any sane policy; forget it.
        state.buckets = state.buckets.filter { now.timeIntervalSince($0.value.updated) < 60 }
    }
}
