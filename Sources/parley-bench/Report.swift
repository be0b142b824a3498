import Foundation
import Histogram

/// The outcome of a run, as printed, saved as JSON, and drawn as HTML.
struct Report: Codable {
    struct Counts: Codable {
        var connections: Int
        var sent: Int
        var acked: Int
        var expectedDeliveries: Int
        var delivered: Int
        var lost: Int
        var duplicates: Int
        var outOfOrder: Int
        var errors: Int
    }

    struct Latency: Codable {
        var samples: UInt64
        var p50: Double
        var p90: Double
        var p99: Double
        var p999: Double
        var max: Double
        /// (percentile, milliseconds) points for the distribution chart.
        var curve: [[Double]]

        init(_ histogram: Histogram<UInt64>) {
            func ms(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }
            samples = histogram.totalCount
            p50 = histogram.totalCount == 0 ? 0 : ms(50)
            p90 = histogram.totalCount == 0 ? 0 : ms(90)
            p99 = histogram.totalCount == 0 ? 0 : ms(99)
            p999 = histogram.totalCount == 0 ? 0 : ms(99.9)
            max = Double(histogram.max) / 1000
            curve = histogram.totalCount == 0 ? [] : [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100].map { [$0, ms($0)] }
        }
    }

    struct Second: Codable {
        var second: Int
        var sent: Int
        var delivered: Int
        var p50: Double
        var p99: Double
    }

    struct Server: Codable {
        var pid: Int32
        var cpuPercent: [Double]
        var rssMB: [Double]
        var meanCPUPercent: Double
        var peakRSSMB: Double
        /// Server CPU time (user + system) over the measured window per message sent in it, in µs.
        var cpuMicrosPerMessage: Double?

        init(_ sampler: ProcessSampler, cpuMicrosPerMessage: Double? = nil) {
            self.cpuMicrosPerMessage = cpuMicrosPerMessage
            let (cpu, rss) = sampler.result
            pid = sampler.pid
            cpuPercent = cpu
            rssMB = rss
            meanCPUPercent = cpu.isEmpty ? 0 : cpu.reduce(0, +) / Double(cpu.count)
            peakRSSMB = rss.max() ?? 0
        }
    }

    /// Message runs count sends, acks and deliveries; request runs (history) count requests,
    /// answers and good pages, and have no ack latency.
    enum Kind: String, Codable {
        case messages
        case requests
    }

    var scenario: String
    var target: String
    var startedAt: String
    var rate: Double
    var warmupSeconds: Double
    var durationSeconds: Double
    var counts: Counts
    var sendRate: Double
    var deliveryRate: Double
    var ack: Latency
    var endToEnd: Latency
    var timeline: [Second]
    var server: Server?
    var notes: [String]
    var kind: Kind = .messages

    var consistent: Bool {
        counts.lost == 0 && counts.duplicates == 0 && counts.outOfOrder == 0 && counts.acked == counts.sent
    }

    func summary() -> String {
        func row(_ name: String, _ l: Latency) -> String {
            String(
                format: "  %-12@ p50 %8.2f ms   p90 %8.2f ms   p99 %8.2f ms   p99.9 %8.2f ms   max %8.2f ms", name as NSString, l.p50, l.p90, l.p99,
                l.p999, l.max)
        }
        var lines = [
            "parley-bench \(scenario) → \(target)",
            "  connections \(counts.connections), target rate \(Int(rate))/s, measured \(Int(durationSeconds)) s after \(Int(warmupSeconds)) s warm-up",
        ]
        switch kind {
        case .messages:
            lines += [
                String(
                    format: "  sent %d (%.0f/s)   acked %d   delivered %d of %d (%.0f/s)", counts.sent, sendRate, counts.acked, counts.delivered,
                    counts.expectedDeliveries, deliveryRate),
                "  lost \(counts.lost)   duplicates \(counts.duplicates)   out of order \(counts.outOfOrder)   errors \(counts.errors)",
                row("ack", ack),
                row("end-to-end", endToEnd),
            ]
        case .requests:
            lines += [
                String(
                    format: "  requested %d (%.0f/s)   answered %d   good pages %d (%.0f/s)", counts.sent, sendRate, counts.acked, counts.delivered,
                    deliveryRate),
                "  unanswered or bad \(counts.lost)   errors \(counts.errors)",
                row("page read", endToEnd),
            ]
        }
        if let server {
            lines.append(String(format: "  server pid %d: mean CPU %.0f%%, peak RSS %.0f MB", server.pid, server.meanCPUPercent, server.peakRSSMB))
            if let perMessage = server.cpuMicrosPerMessage {
                lines.append(String(format: "  server CPU per message: %.1f µs (user + system over the measured window)", perMessage))
            }
        }
        lines.append(contentsOf: notes.map { "  note: \($0)" })
        return lines.joined(separator: "\n")
    }

}
