import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// The seed file written by `parley seed`.
struct SeedFile: Decodable {
    struct User: Decodable {
        var id: String
        var token: String
    }

    struct Conversation: Decodable {
        var id: String
        var members: [Int]
        var lastSeq: Int?
    }

    var users: [User]
    /// Words of the seeded history, for search queries (`parley seed --messages`).
    var searchTerms: [String]?
    var conversations: [Conversation]
}

/// One message-load run: connect every member of the chosen conversations, send at a fixed total
/// rate for warm-up + duration, drain, and report.
struct MessageRun {
    struct Member {
        var token: String?
        var query: String?
        var conversationID: String
        var recipients: Int
        var sends: Bool
    }

    var scenario: String
    var url: String
    var members: [Member]
    var rate: Double
    var warmup: Double
    var duration: Double
    var padding: Int
    var serverPID: Int32?
    var connectConcurrency = 64

    func run() async throws -> Report {
        let target = try Target(url: url)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let board = StatsBoard(group: group)
        let progress = Progress()
        let senders = members.filter(\.sends).count
        let interval = senders > 0 && rate > 0 ? Double(senders) / rate : nil
        // The clock starts once everyone is connected; until then nothing is sent.
        let clockBox = ClockBox()
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)

        var connections: [(any Channel, BenchConnection)] = []
        var index = 0
        while index < members.count {
            let batch = members[index..<min(members.count, index + connectConcurrency)].enumerated().map { ($0.offset + index, $0.element) }
            let opened = try await withThrowingTaskGroup(of: (any Channel, BenchConnection).self) { tasks in
                for (i, member) in batch {
                    tasks.addTask {
                        try await Connector.openProbed(
                            target: target, token: member.token, query: member.query, group: group,
                            plan: ConnectionPlan(
                                index: i,
                                connections: members.count,
                                conversationID: member.conversationID,
                                interval: member.sends ? interval : nil,
                                padding: padding,
                                runID: runID
                            ),
                            board: board, progress: progress, clock: clockBox)
                    }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            connections += opened
            index += batch.count
            FileHandle.standardError.write(Data("\rconnected \(connections.count)/\(members.count)".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))

        let start = uptimeNanos() + 200_000_000
        clockBox.set(RunClock(start: start, measureFrom: start + UInt64(warmup * 1e9), stopSending: start + UInt64((warmup + duration) * 1e9)))
        let startedAt = Date()
        for (channel, handler) in connections {
            channel.eventLoop.execute { handler.start() }
        }

        let sampler = serverPID.map { ProcessSampler(pid: $0) }
        let done = DoneFlag()
        let samplerTask = Task { await sampler?.run(until: { done.isSet }) }

        // Progress once a second while sending, then wait for the last deliveries.
        // Every scenario uses conversations of one size, so each message has the same recipient count.
        let recipientsPerMessage = members.first?.recipients ?? 1
        let total = warmup + duration
        var previousDelivered = 0
        // Server CPU per message over the measured window (after the warm-up, until the drain ends).
        var windowStart: (cpu: Double, sent: Int)?
        if warmup == 0, let pid = serverPID, let cpu = ProcessSampler.cpuSeconds(pid: pid) { windowStart = (cpu, 0) }
        for second in 1...Int(total.rounded(.up)) {
            try await Task.sleep(until: .now + .seconds(1))
            if second == Int(warmup.rounded()), let pid = serverPID, let cpu = ProcessSampler.cpuSeconds(pid: pid) {
                windowStart = (cpu, progress.sent.load(ordering: .relaxed))
            }
            let delivered = progress.delivered.load(ordering: .relaxed)
            FileHandle.standardError.write(
                Data(
                    String(
                        format: "\r[%3d/%3.0f s] sent %d  acked %d  delivered %d (%d/s)  errors %d   ",
                        second, total, progress.sent.load(ordering: .relaxed), progress.acked.load(ordering: .relaxed), delivered,
                        delivered - previousDelivered, progress.errors.load(ordering: .relaxed)
                    ).utf8
                )
            )
            previousDelivered = delivered
        }
        // Sending stops at the run clock's stop time (a little after the loop above); only then drain.
        let stopAt = clockBox.value.stopSending
        let now = uptimeNanos()
        if stopAt > now { try await Task.sleep(for: .nanoseconds(Int64(stopAt - now) + 50_000_000)) }
        let drainDeadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < drainDeadline {
            let expected = progress.sent.load(ordering: .relaxed) * recipientsPerMessage
            if progress.delivered.load(ordering: .relaxed) >= expected
                && progress.acked.load(ordering: .relaxed) >= progress.sent.load(ordering: .relaxed)
            {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        var cpuMicrosPerMessage: Double?
        if let windowStart, let pid = serverPID, let cpu = ProcessSampler.cpuSeconds(pid: pid) {
            let messages = progress.sent.load(ordering: .relaxed) - windowStart.sent
            if messages > 0 { cpuMicrosPerMessage = (cpu - windowStart.cpu) / Double(messages) * 1e6 }
        }
        done.set()
        _ = await samplerTask.value

        // Close everything, let every loop finish its last task, then merge the loops' numbers.
        for (channel, _) in connections { try? await channel.close() }
        for loop in group.makeIterator() { try await loop.submit {}.get() }
        let merged = board.merge()
        try? await group.shutdownGracefully()
        var counts = merged.counts
        counts.connections = members.count
        counts.expectedDeliveries = counts.sent * recipientsPerMessage
        counts.lost = max(0, counts.expectedDeliveries - counts.delivered)
        return Report(
            scenario: scenario,
            target: url,
            startedAt: ISO8601DateFormatter().string(from: startedAt),
            rate: rate,
            warmupSeconds: warmup,
            durationSeconds: duration,
            counts: counts,
            sendRate: merged.sendRate(warmup: warmup, duration: duration),
            deliveryRate: merged.deliveryRate(warmup: warmup, duration: duration),
            ack: Report.Latency(merged.ack),
            endToEnd: Report.Latency(merged.endToEnd),
            timeline: merged.timeline,
            server: sampler.map { Report.Server($0, cpuMicrosPerMessage: cpuMicrosPerMessage) },
            notes: []
        )
    }
}

final class DoneFlag: Sendable {
    private let flag = Synchronization.Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}
