import Foundation
import Synchronization

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
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        tokens = min(burst, tokens + seconds * perSecond)
        updated = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

/// A counting semaphore for async code: at most `limit` holders; `acquire` waits for a slot.
final class InFlightLimiter: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        var cancelled = false
    }

    // Guarded by its Mutex; waiters are resumed outside the lock.
    private let state: Mutex<State>

    init(limit: Int) {
        state = Mutex(State(available: limit))
    }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let granted = state.withLock { state in
                if state.cancelled { return true }
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    func release() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume()
    }
}

extension InFlightLimiter {
    /// Lets every current and future `acquire` through: the socket is closing.
    func cancelAll() {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { state in
            state.cancelled = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
