import Foundation
import ParleyCore

/// Inbound frame budget of one socket: a token bucket, not shared, so it needs no lock.
struct FrameBudget {
    private var tokens: Double
    private var updated: ContinuousClock.Instant
    let perSecond: Double
    let burst: Double

    init(perSecond: Double, burst: Double) {
        self.perSecond = perSecond
        self.burst = burst
        self.tokens = burst
        self.updated = .now
    }

    mutating func take() -> Bool {
        let now = ContinuousClock.now
        let elapsed = now - updated
        let seconds = elapsed.inSeconds
        tokens = min(burst, tokens + seconds * perSecond)
        updated = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
