import Foundation

/// A self-contained HTML page with SVG charts: latency percentiles over time, throughput over
/// time, and the latency distribution. No scripts, no external files.
/// One line chart: named, coloured series of (x, y) points.
struct Chart {
    var title: String
    var series: [(name: String, colour: String, points: [(Double, Double)])]
    var xLabel: String
}

enum HTMLReport {
    static func render(_ report: Report) -> String {
        let seconds = report.timeline
        let requests = report.kind == .requests
        return page(
            scenario: report.scenario,
            target: report.target,
            startedAt: report.startedAt,
            verdict: report.consistent ? nil : "NOT consistent",
            good: requests ? "consistent (every page answered, complete and in order)" : "consistent (no loss, duplicates or reordering)",
            summary: report.summary(),
            charts: [
                Chart(
                    title: requests ? "Page read latency over time (ms)" : "End-to-end latency over time (ms)",
                    series: [
                        ("p50", "#1f5fbf", seconds.map { (Double($0.second), $0.p50) }),
                        ("p99", "#b3261e", seconds.map { (Double($0.second), $0.p99) }),
                    ],
                    xLabel: "second of the run"
                ),
                Chart(
                    title: requests ? "Throughput over time (pages per second)" : "Throughput over time (messages per second)",
                    series: [
                        (requests ? "requested" : "sent", "#1f5fbf", seconds.map { (Double($0.second), Double($0.sent)) }),
                        (requests ? "good pages" : "delivered", "#1e7f3a", seconds.map { (Double($0.second), Double($0.delivered)) }),
                    ],
                    xLabel: "second of the run"
                ),
                distribution(
                    requests
                        ? [("page read", "#1f5fbf", report.endToEnd)] : [("end-to-end", "#1f5fbf", report.endToEnd), ("ack", "#7a4d00", report.ack)]
                ),
            ]
        )
    }

    /// The latency distribution chart: milliseconds by percentile, one series per latency.
    static func distribution(_ latencies: [(String, String, Report.Latency)]) -> Chart {
        Chart(
            title: "Latency distribution (ms by percentile)",
            series: latencies.map { name, colour, latency in
                (name, colour, latency.curve.enumerated().map { (Double($0.offset), $0.element[1]) })
            },
            xLabel: "percentile: " + (latencies.first?.2.curve ?? []).map { String(format: "%g", $0[0]) }.joined(separator: " · ")
        )
    }

    /// The page: a title, a one-line verdict (`verdict` nil means the counts are good), the text
    /// summary, then the charts.
    static func page(scenario: String, target: String, startedAt: String, verdict: String?, good: String, summary: String, charts: [Chart]) -> String
    {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>parley-bench \(escape(scenario))</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1f24; max-width: 960px; }
        pre { background: #f4f5f7; padding: 1rem; border-radius: 8px; overflow-x: auto; }
        figure { margin: 2rem 0; } figcaption { font-weight: 600; margin-bottom: .5rem; }
        .ok { color: #1e7f3a; } .bad { color: #b3261e; }
        </style></head><body>
        <h1>parley-bench: \(escape(scenario))</h1>
        <p>Started \(escape(startedAt)) against <code>\(escape(target))</code>.
        Counts are <strong class="\(verdict == nil ? "ok" : "bad")">\(escape(verdict ?? good))</strong>.</p>
        <pre>\(escape(summary))</pre>
        \(charts.map(lineChart).joined(separator: "\n"))
        </body></html>
        """
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    private static func lineChart(_ chart: Chart) -> String {
        let (title, series, xLabel) = (chart.title, chart.series, chart.xLabel)
        let width = 900.0
        let height = 300.0
        let left = 60.0
        let bottom = 40.0
        let points = series.flatMap { $0.2 }
        let maxX = max(1, points.map(\.0).max() ?? 1)
        let maxY = max(0.001, points.map(\.1).max() ?? 1) * 1.1
        func x(_ v: Double) -> Double { left + v / maxX * (width - left - 20) }
        func y(_ v: Double) -> Double { height - bottom - v / maxY * (height - bottom - 20) }
        var svg = "<svg viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"100%\" role=\"img\" aria-label=\"\(escape(title))\">"
        svg += "<line x1=\"\(left)\" y1=\"\(y(0))\" x2=\"\(width - 20)\" y2=\"\(y(0))\" stroke=\"#888\"/>"
        svg += "<line x1=\"\(left)\" y1=\"20\" x2=\"\(left)\" y2=\"\(y(0))\" stroke=\"#888\"/>"
        for tick in 0...4 {
            let value = maxY * Double(tick) / 4
            svg +=
                "<text x=\"\(left - 6)\" y=\"\(y(value) + 4)\" font-size=\"11\" text-anchor=\"end\">\(String(format: value >= 100 ? "%.0f" : "%.2f", value))</text>"
            svg += "<line x1=\"\(left)\" y1=\"\(y(value))\" x2=\"\(width - 20)\" y2=\"\(y(value))\" stroke=\"#eee\"/>"
        }
        svg += "<text x=\"\(width / 2)\" y=\"\(height - 8)\" font-size=\"12\" text-anchor=\"middle\">\(escape(xLabel))</text>"
        for (index, (name, colour, data)) in series.enumerated() where !data.isEmpty {
            let path = data.map { String(format: "%.1f,%.1f", x($0.0), y($0.1)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(path)\"/>"
            svg += "<text x=\"\(left + 10 + Double(index) * 120)\" y=\"14\" font-size=\"12\" fill=\"\(colour)\">■ \(escape(name))</text>"
        }
        svg += "</svg>"
        return "<figure><figcaption>\(escape(title))</figcaption>\(svg)</figure>"
    }
}
