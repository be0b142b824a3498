import Foundation

/// A self-contained HTML page with SVG charts: latency percentiles over time, throughput over
/// time, and the latency distribution. No scripts, no external files.
enum HTMLReport {
    static func render(_ report: Report) -> String {
        let seconds = report.timeline
        let latencyChart = lineChart(
            title: "End-to-end latency over time (ms)",
            series: [
                ("p50", "#1f5fbf", seconds.map { (Double($0.second), $0.p50) }),
                ("p99", "#b3261e", seconds.map { (Double($0.second), $0.p99) }),
            ],
            xLabel: "second of the run"
        )
        let throughputChart = lineChart(
            title: "Throughput over time (messages per second)",
            series: [
                ("sent", "#1f5fbf", seconds.map { (Double($0.second), Double($0.sent)) }),
                ("delivered", "#1e7f3a", seconds.map { (Double($0.second), Double($0.delivered)) }),
            ],
            xLabel: "second of the run"
        )
        let distribution = lineChart(
            title: "Latency distribution (ms by percentile)",
            series: [
                ("end-to-end", "#1f5fbf", report.endToEnd.curve.enumerated().map { (Double($0.offset), $0.element[1]) }),
                ("ack", "#7a4d00", report.ack.curve.enumerated().map { (Double($0.offset), $0.element[1]) }),
            ],
            xLabel: "percentile: " + report.endToEnd.curve.map { String(format: "%g", $0[0]) }.joined(separator: " · ")
        )
        let summary = escape(report.summary())
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>parley-bench \(escape(report.scenario))</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1f24; max-width: 960px; }
            pre { background: #f4f5f7; padding: 1rem; border-radius: 8px; overflow-x: auto; }
            figure { margin: 2rem 0; } figcaption { font-weight: 600; margin-bottom: .5rem; }
            .ok { color: #1e7f3a; } .bad { color: #b3261e; }
            </style></head><body>
            <h1>parley-bench: \(escape(report.scenario))</h1>
            <p>Started \(escape(report.startedAt)) against <code>\(escape(report.target))</code>.
            Counts are <strong class="\(report.consistent ? "ok" : "bad")">\(report.consistent ? "consistent (no loss, duplicates or reordering)" : "NOT consistent")</strong>.</p>
            <pre>\(summary)</pre>
            \(latencyChart)
            \(throughputChart)
            \(distribution)
            </body></html>
            """
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    private static func lineChart(title: String, series: [(String, String, [(Double, Double)])], xLabel: String) -> String {
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
