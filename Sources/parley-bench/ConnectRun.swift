import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// The `connect` scenario: open C authenticated WebSockets, hold them idle, then check that every
/// one still answers. Reports connect latency (TCP + upgrade + auth + first ping/pong), how many
/// survived the hold, and what the idle sockets cost the server in memory.
struct ConnectRun {
    var url: String
    /// Access tokens, used round-robin (a user with several sockets is several devices).
    var tokens: [String]
    var connections: Int
    var hold: Double
    var serverPID: Int32?
    var concurrency = 100

    func run() async throws -> ConnectReport {
        raiseOpenFileLimit()
        let target = try Target(url: url)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let board = StatsBoard(group: group)
        let progress = Progress()
        let clockBox = ClockBox()
        let startedAt = Date()
        let baseline = serverPID.flatMap { ProcessSampler.rssMB(pid: $0) }
        let sampler = serverPID.map { ProcessSampler(pid: $0) }
        let done = DoneFlag()
        let samplerTask = Task { await sampler?.run(until: { done.isSet }) }
        let openBySecond = Mutex<[Int]>([])
        let timelineTask = Task {
            while !done.isSet {
                try? await Task.sleep(for: .seconds(1))
                openBySecond.withLock { $0.append(progress.connected.load(ordering: .relaxed)) }
            }
        }

        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var open: [(any Channel, BenchConnection)] = []
        open.reserveCapacity(connections)
        var failures: [String: Int] = [:]
        let connectStarted = ContinuousClock.now
        var index = 0
        while index < connections {
            let range = index..<min(connections, index + concurrency)
            let results = await withTaskGroup(of: Result<(any Channel, BenchConnection, UInt64), any Error>.self) { tasks in
                for i in range {
                    let token = tokens[i % tokens.count]
                    tasks.addTask {
                        let began = uptimeNanos()
                        do {
                            let (channel, handler) = try await Connector.openProbed(
                                target: target, token: token, query: nil, group: group,
                                plan: ConnectionPlan(index: i, connections: 1, conversationID: "", interval: nil, padding: 0, runID: ""),
                                board: board, progress: progress, clock: clockBox)
                            return .success((channel, handler, (uptimeNanos() - began) / 1000))
                        } catch {
                            return .failure(error)
                        }
                    }
                }
                return await tasks.reduce(into: []) { $0.append($1) }
            }
            for result in results {
                switch result {
                case .success(let (channel, handler, micros)):
                    open.append((channel, handler))
                    _ = latency.record(max(1, micros))
                case .failure(let error):
                    failures[String(describing: error), default: 0] += 1
                }
            }
            index = range.upperBound
            FileHandle.standardError.write(Data("\rconnected \(open.count)/\(connections), failed \(failures.values.reduce(0, +))   ".utf8))
        }
        let connectSeconds = Self.seconds(ContinuousClock.now - connectStarted)
        FileHandle.standardError.write(Data("\n".utf8))

        // Hold: nothing is sent; the server's heartbeat pings are answered by the client.
        let holdStarted = ContinuousClock.now
        while ContinuousClock.now - holdStarted < .seconds(hold) {
            try await Task.sleep(for: .seconds(1))
            let rss = serverPID.flatMap { ProcessSampler.rssMB(pid: $0) }.map { String(format: ", server RSS %.0f MB", $0) } ?? ""
            let active = open.filter { $0.0.isActive }.count
            FileHandle.standardError.write(
                Data(String(format: "\r[hold %3.0f/%3.0f s] open %d%@   ", Self.seconds(ContinuousClock.now - holdStarted), hold, active, rss).utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        let heldRSS = serverPID.flatMap { ProcessSampler.rssMB(pid: $0) }

        // Every connection that survived must still answer a ping with a pong.
        let pongsBefore = progress.pongs.load(ordering: .relaxed)
        for (channel, handler) in open { channel.eventLoop.execute { handler.probe() } }
        let probeDeadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < probeDeadline, progress.pongs.load(ordering: .relaxed) - pongsBefore < open.count {
            try await Task.sleep(for: .milliseconds(100))
        }
        let alive = progress.pongs.load(ordering: .relaxed) - pongsBefore

        done.set()
        _ = await samplerTask.value
        _ = await timelineTask.value
        for (channel, _) in open { try? await channel.close() }
        try? await group.shutdownGracefully()

        let (cpu, rss) = sampler?.result ?? ([], [])
        let opened = open.count
        let perConnectionKB: Double? =
            if let baseline, let heldRSS, opened > 0 { (heldRSS - baseline) * 1024 / Double(opened) } else { nil }
        let timeline = openBySecond.withLock { $0 }.enumerated().map { second, count in
            ConnectReport.Second(
                second: second + 1, open: count, rssMB: second < rss.count ? rss[second] : nil, cpuPercent: second < cpu.count ? cpu[second] : nil)
        }
        return ConnectReport(
            target: url,
            startedAt: ISO8601DateFormatter().string(from: startedAt),
            requested: connections,
            opened: opened,
            failed: connections - opened,
            failureKinds: failures,
            aliveAfterHold: alive,
            connectSeconds: connectSeconds,
            holdSeconds: hold,
            connect: Report.Latency(latency),
            serverBaselineRSSMB: baseline,
            serverHeldRSSMB: heldRSS,
            serverRSSPerConnectionKB: perConnectionKB,
            timeline: timeline
        )
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Lifts this process's soft open-file limit to its hard limit (each socket is a file).
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

struct ConnectReport: Codable {
    struct Second: Codable {
        var second: Int
        var open: Int
        var rssMB: Double?
        var cpuPercent: Double?
    }

    var scenario = "connect"
    var target: String
    var startedAt: String
    var requested: Int
    var opened: Int
    var failed: Int
    var failureKinds: [String: Int]
    var aliveAfterHold: Int
    var connectSeconds: Double
    var holdSeconds: Double
    var connect: Report.Latency
    var serverBaselineRSSMB: Double?
    var serverHeldRSSMB: Double?
    var serverRSSPerConnectionKB: Double?
    var timeline: [Second]

    var consistent: Bool { failed == 0 && aliveAfterHold == opened }

    func summary() -> String {
        var lines = [
            "parley-bench connect → \(target)",
            String(
                format: "  requested %d   opened %d in %.1f s (%.0f/s)   failed %d   alive after %.0f s idle %d", requested, opened, connectSeconds,
                Double(opened) / max(0.001, connectSeconds), failed, holdSeconds, aliveAfterHold),
            String(
                format: "  connect      p50 %8.2f ms   p90 %8.2f ms   p99 %8.2f ms   p99.9 %8.2f ms   max %8.2f ms", connect.p50, connect.p90,
                connect.p99, connect.p999, connect.max),
        ]
        if let serverBaselineRSSMB, let serverHeldRSSMB {
            lines.append(
                String(
                    format: "  server RSS %.0f MB before, %.0f MB holding (%.1f KB per connection)", serverBaselineRSSMB, serverHeldRSSMB,
                    serverRSSPerConnectionKB ?? 0))
        }
        let holding = timeline.suffix(max(1, Int(holdSeconds) - 1)).compactMap(\.cpuPercent)
        if !holding.isEmpty {
            lines.append(String(format: "  server CPU while idle: mean %.1f%%", holding.reduce(0, +) / Double(holding.count)))
        }
        for (kind, count) in failureKinds.sorted(by: { $0.value > $1.value }).prefix(3) {
            lines.append("  failure ×\(count): \(kind)")
        }
        return lines.joined(separator: "\n")
    }

    func html() -> String {
        HTMLReport.page(
            scenario: scenario,
            target: target,
            startedAt: startedAt,
            verdict: consistent ? nil : "NOT consistent: \(failed) failed, \(opened - aliveAfterHold) lost while idle",
            good: "consistent (every connection opened and still answers)",
            summary: summary(),
            charts: [
                Chart(
                    title: "Open connections over time",
                    series: [("open", "#1f5fbf", timeline.map { (Double($0.second), Double($0.open)) })],
                    xLabel: "second of the run"
                ),
                Chart(
                    title: "Server resident memory over time (MB)",
                    series: [("RSS", "#7a4d00", timeline.compactMap { s in s.rssMB.map { (Double(s.second), $0) } })],
                    xLabel: "second of the run"
                ),
                HTMLReport.distribution([("connect", "#1f5fbf", connect)]),
            ]
        )
    }
}
