import Histogram
import NIOCore

/// Measurements of the connections on one event loop. Only touched on that loop while the run
/// goes (so no lock); read by the main task after every channel is closed and each loop has run a
/// final (empty) task, which orders those reads after the loop's last write.
final class LoopStats: @unchecked Sendable {
    var ackLatency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var endToEnd = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    /// Per second of the run: end-to-end latencies (µs) of the deliveries in that second.
    var perSecond: [Histogram<UInt64>] = []
    var sentPerSecond: [Int] = []
    var sent = 0
    var acked = 0
    var delivered = 0
    var duplicates = 0
    var outOfOrder = 0
    var errors = 0
    var measuredFrom: UInt64 = 0

    func record(endToEndMicros: UInt64, second: Int, measured: Bool) {
        delivered += 1
        guard measured else { return }
        _ = endToEnd.record(max(1, endToEndMicros))
        while perSecond.count <= second {
            perSecond.append(Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .two))
        }
        _ = perSecond[second].record(max(1, endToEndMicros))
    }

    func recordSent(second: Int) {
        sent += 1
        while sentPerSecond.count <= second { sentPerSecond.append(0) }
        sentPerSecond[second] += 1
    }
}

/// All loops' stats, created up front and read after the run.
struct StatsBoard: @unchecked Sendable {
    // Each LoopStats is only used on its own event loop while the run is going, and only read by
    // the main task after every loop has been asked (through `submit`) for its final numbers.
    let byLoop: [ObjectIdentifier: LoopStats]

    init(group: any EventLoopGroup) {
        var byLoop: [ObjectIdentifier: LoopStats] = [:]
        for loop in group.makeIterator() { byLoop[ObjectIdentifier(loop)] = LoopStats() }
        self.byLoop = byLoop
    }

    func stats(for loop: any EventLoop) -> LoopStats {
        byLoop[ObjectIdentifier(loop)]!
    }
}
