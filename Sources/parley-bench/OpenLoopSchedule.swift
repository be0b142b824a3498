import NIOCore

/// An open-loop send schedule for one connection: slot k is due at `firstAt + k · interval`, until
/// `stopAt`. It arms one timer for the next due slot at a time (not a polling tick), so 10,000
/// connections that each send every 10 s cost the client 1,000 timer firings a second, not millions,
/// and a slot is sent at its time rather than at the next tick. Confined to its connection's event
/// loop, like the handler that owns it.
final class OpenLoopSchedule: @unchecked Sendable {
    private let firstAt: UInt64
    private let intervalNanos: UInt64
    private let stopAt: UInt64
    private(set) var next = 0
    private var timer: Scheduled<Void>?

    init(firstAt: UInt64, intervalNanos: UInt64, stopAt: UInt64) {
        self.firstAt = firstAt
        self.intervalNanos = max(1, intervalNanos)
        self.stopAt = stopAt
    }

    /// Where connection `index` of `count` starts within the interval: spread evenly, so that the
    /// connections together send at a steady rate instead of in bursts of `count`.
    static func offset(index: Int, of count: Int, intervalNanos: UInt64) -> UInt64 {
        UInt64(index % max(1, count)) * intervalNanos / UInt64(max(1, count))
    }

    /// When slot `k` is due.
    func time(_ k: Int) -> UInt64 { firstAt + UInt64(k) * intervalNanos }

    /// Calls `emit(k, scheduled)` for every slot due by now, then `flush()` if any was, then sleeps
    /// until the next slot. Call on the connection's event loop.
    func run(on loop: any EventLoop, emit: @escaping @Sendable (Int, UInt64) -> Void, flush: @escaping @Sendable () -> Void) {
        let now = uptimeNanos()
        var emitted = false
        while time(next) <= now, time(next) < stopAt {
            emit(next, time(next))
            next += 1
            emitted = true
        }
        if emitted { flush() }
        let upcoming = time(next)
        guard upcoming < stopAt else { return }
        timer = loop.scheduleTask(deadline: .uptimeNanoseconds(upcoming)) { [weak self] in
            self?.run(on: loop, emit: emit, flush: flush)
        }
    }

    func cancel() {
        timer?.cancel()
        timer = nil
    }
}
