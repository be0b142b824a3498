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

/// Every loop's numbers added up, once the run is over.
struct MergedStats {
    var ack = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var endToEnd = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var perSecond: [Histogram<UInt64>] = []
    var sentPerSecond: [Int] = []
    var counts = Report.Counts(
        connections: 0, sent: 0, acked: 0, expectedDeliveries: 0, delivered: 0, lost: 0, duplicates: 0, outOfOrder: 0, errors: 0)

    var timeline: [Report.Second] {
        (0..<max(perSecond.count, sentPerSecond.count)).map { second in
            let histogram = second < perSecond.count ? perSecond[second] : nil
            return Report.Second(
                second: second,
                sent: second < sentPerSecond.count ? sentPerSecond[second] : 0,
                delivered: Int(histogram?.totalCount ?? 0),
                p50: histogram.map { $0.totalCount == 0 ? 0 : Double($0.valueAtPercentile(50)) / 1000 } ?? 0,
                p99: histogram.map { $0.totalCount == 0 ? 0 : Double($0.valueAtPercentile(99)) / 1000 } ?? 0
            )
        }
    }

    private func measured(warmup: Double, duration: Double) -> [Report.Second] {
        timeline.filter { Double($0.second) >= warmup && Double($0.second) < warmup + duration }
    }

    func sendRate(warmup: Double, duration: Double) -> Double {
        Double(measured(warmup: warmup, duration: duration).map(\.sent).reduce(0, +)) / max(1, duration)
    }

    func deliveryRate(warmup: Double, duration: Double) -> Double {
        Double(measured(warmup: warmup, duration: duration).map(\.delivered).reduce(0, +)) / max(1, duration)
    }
}

extension StatsBoard {
    /// Adds up every loop's stats. Call only after each loop has run a final task.
    func merge() -> MergedStats {
        var merged = MergedStats()
        for stats in byLoop.values {
            merged.ack.add(stats.ackLatency)
            merged.endToEnd.add(stats.endToEnd)
            for (second, histogram) in stats.perSecond.enumerated() {
                while merged.perSecond.count <= second {
                    merged.perSecond.append(
                        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .two))
                }
                merged.perSecond[second].add(histogram)
            }
            for (second, sent) in stats.sentPerSecond.enumerated() {
                while merged.sentPerSecond.count <= second { merged.sentPerSecond.append(0) }
                merged.sentPerSecond[second] += sent
            }
            merged.counts.sent += stats.sent
            merged.counts.acked += stats.acked
            merged.counts.delivered += stats.delivered
            merged.counts.duplicates += stats.duplicates
            merged.counts.outOfOrder += stats.outOfOrder
            merged.counts.errors += stats.errors
        }
        return merged
    }
}
