import AsyncHTTPClient
import Foundation
import Histogram
import NIOCore
import Synchronization

/// `parley-bench upload`: closed-loop uploads of one file size by several seeded users at once, for
/// a fixed time. Reports the sustained throughput (MB/s of file bytes stored, each upload answered
/// 201 with the right size), the latency of an upload, and the server's RSS and CPU each second.
struct UploadRun {
    let baseURL: String
    let tokens: [String]
    let size: Int
    let concurrency: Int
    let warmup: Double
    let duration: Double
    let serverPID: Int32?

    func run() async throws -> UploadReport {
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(timeout: .init(connect: .seconds(10), read: .seconds(120))))
        do {
            let report = try await measure(client)
            try await client.shutdown()
            return report
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func measure(_ client: HTTPClient) async throws -> UploadReport {
        var generator = SystemRandomNumberGenerator()
        let payload = ByteBuffer(bytes: (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) })
        let stats = UploadStats()
        let start = ContinuousClock.now
        let measureFrom = start + .seconds(warmup)
        let end = measureFrom + .seconds(duration)
        let baselineRSS = serverPID.flatMap(ProcessSampler.rssMB)
        let sampler = serverPID.map(ProcessSampler.init)
        let stopped = Atomic(false)
        async let sampling: Void = { await sampler?.run(until: { stopped.load(ordering: .relaxed) }) }()
        let cpuBefore = serverPID.flatMap(ProcessSampler.cpuSeconds)
        var cpuAtMeasure: Double?

        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                let token = tokens[worker % tokens.count]
                group.addTask {
                    while ContinuousClock.now < end {
                        var request = HTTPClientRequest(url: baseURL + "/api/v1/uploads")
                        request.method = .POST
                        request.headers.add(name: "authorization", value: "Bearer \(token)")
                        request.headers.add(name: "content-type", value: "application/octet-stream")
                        request.headers.add(name: "x-filename", value: "bench-\(worker).bin")
                        request.body = .bytes(payload)
                        let began = ContinuousClock.now
                        var failure: String?
                        do {
                            let response = try await client.execute(request, timeout: .seconds(120))
                            let body = try await response.body.collect(upTo: 1 << 20)
                            if response.status != .created {
                                failure = "HTTP \(response.status.code)"
                            } else if !String(buffer: body).contains("\"size\":\(size)") {
                                failure = "wrong size in the answer"
                            }
                        } catch {
                            failure = "\(type(of: error))"
                        }
                        let finished = ContinuousClock.now
                        guard began >= measureFrom, finished <= end else { continue }
                        let micros = UInt64(max(1, (finished - began).inSeconds * 1e6))
                        stats.state.withLock { stats in
                            if let failure {
                                stats.failed += 1
                                stats.failures[failure, default: 0] += 1
                            } else {
                                stats.done += 1
                                _ = stats.latency.record(micros)
                            }
                        }
                    }
                }
            }
            // The server's CPU over the measured window only.
            try? await Task.sleep(until: measureFrom)
            cpuAtMeasure = serverPID.flatMap(ProcessSampler.cpuSeconds)
        }
        let cpuAfter = serverPID.flatMap(ProcessSampler.cpuSeconds)
        stopped.store(true, ordering: .relaxed)
        await sampling
        let samples: (cpu: [Double], rss: [Double]) = sampler?.result ?? ([], [])
        let result = stats.state.withLock { $0 }
        let megabytes = Double(result.done) * Double(size) / 1_000_000
        let cpu = (cpuAtMeasure ?? cpuBefore).flatMap { from in cpuAfter.map { $0 - from } }
        return UploadReport(
            target: baseURL, startedAt: ISO8601DateFormatter().string(from: Date()), size: size, concurrency: concurrency,
            durationSeconds: duration, uploads: result.done, failed: result.failed, failureKinds: result.failures,
            megabytesPerSecond: megabytes / duration, latency: Report.Latency(result.latency),
            serverCPUPercent: cpu.map { $0 / duration * 100 }, serverCPUMillisPerMB: cpu.map { megabytes > 0 ? $0 * 1000 / megabytes : 0 },
            serverBaselineRSSMB: baselineRSS, serverPeakRSSMB: samples.rss.max(),
            timeline: samples.rss.indices.map { UploadReport.Second(second: $0 + 1, rssMB: samples.rss[$0], cpuPercent: samples.cpu[$0]) })
    }
}

/// What the upload clients found, shared by them.
final class UploadStats: Sendable {
    struct State {
        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var done = 0
        var failed = 0
        var failures: [String: Int] = [:]
    }
    let state = Mutex(State())
}

struct UploadReport: Codable, BenchReport {
    struct Second: Codable {
        var second: Int
        var rssMB: Double
        var cpuPercent: Double
    }

    var scenario = "upload"
    var target: String
    var startedAt: String
    var size: Int
    var concurrency: Int
    var durationSeconds: Double
    var uploads: Int
    var failed: Int
    var failureKinds: [String: Int]
    var megabytesPerSecond: Double
    var latency: Report.Latency
    var serverCPUPercent: Double?
    var serverCPUMillisPerMB: Double?
    var serverBaselineRSSMB: Double?
    var serverPeakRSSMB: Double?
    var timeline: [Second]

    func summary() -> String {
        var lines = [
            "parley-bench upload → \(target)",
            String(
                format: "  %d uploads of %d bytes by %d clients in %.0f s: %.1f MB/s   failed %d", uploads, size, concurrency, durationSeconds,
                megabytesPerSecond, failed),
            String(format: "  upload       p50 %8.1f ms   p99 %8.1f ms   max %8.1f ms", latency.p50, latency.p99, latency.max),
        ]
        if let serverCPUPercent, let serverCPUMillisPerMB {
            lines.append(String(format: "  server CPU %.0f%% (%.1f ms per MB stored)", serverCPUPercent, serverCPUMillisPerMB))
        }
        if let serverBaselineRSSMB, let serverPeakRSSMB {
            lines.append(String(format: "  server RSS %.0f MB before, %.0f MB at most during the run", serverBaselineRSSMB, serverPeakRSSMB))
        }
        for (kind, count) in failureKinds.sorted(by: { $0.value > $1.value }).prefix(3) { lines.append("  failure ×\(count): \(kind)") }
        return lines.joined(separator: "\n")
    }

    func html() -> String {
        HTMLReport.page(
            scenario: scenario, target: target, startedAt: startedAt,
            verdict: failed == 0 ? nil : "\(failed) uploads failed", good: "every upload stored", summary: summary(),
            charts: [
                Chart(
                    title: "Server resident memory over time (MB)",
                    series: [("RSS", "#7a4d00", timeline.map { (Double($0.second), $0.rssMB) })], xLabel: "second of the run"),
                Chart(
                    title: "Server CPU over time (%)",
                    series: [("CPU", "#1f5fbf", timeline.map { (Double($0.second), $0.cpuPercent) })], xLabel: "second of the run"),
                HTMLReport.distribution([("upload", "#1f5fbf", latency)]),
            ])
    }
}
