import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix

/// The read scenarios: open-loop HTTP GETs at a fixed total rate over keep-alive connections
/// (pipelined, so a slow answer delays the ones behind it and that delay is measured). Latency runs
/// from the scheduled time to the last byte of the answer.
///
/// - `history`: `GET /conversations/{id}/messages?before=S&limit=N`; every page is checked for the
///   right count and the right first seq.
/// - `search`: `GET /search?q=…` with words of the seeded history (one word, two words, or a
///   prefix); every answer must be a 200 with a result list.
struct HistoryRun {
    struct Reader {
        var token: String
        var conversationID: String
        var lastSeq: Int
    }

    enum Workload {
        case history(limit: Int)
        case search(terms: [String])
    }

    var baseURL: String
    var readers: [Reader]
    var rate: Double
    var warmup: Double
    var duration: Double
    var workload: Workload
    var serverPID: Int32?

    func run() async throws -> Report {
        guard let components = URLComponents(string: baseURL), components.scheme == "http", let host = components.host else {
            throw BenchError.badURL(baseURL)
        }
        let port = components.port ?? 80
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let board = StatsBoard(group: group)
        let progress = Progress()
        let clockBox = ClockBox()
        let interval = Double(readers.count) / rate

        var channels: [(any Channel, HistoryClient)] = []
        for (index, reader) in readers.enumerated() {
            let client = HistoryClient(
                index: index, connections: readers.count, reader: reader, host: "\(host):\(port)", workload: workload,
                intervalNanos: UInt64(interval * 1e9), progress: progress,
                clock: clockBox)
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    client.stats = board.stats(for: channel.eventLoop)
                    return channel.pipeline.addHTTPClientHandlers().flatMap { channel.pipeline.addHandler(client) }
                }
                .connect(host: host, port: port).get()
            channels.append((channel, client))
        }

        let start = uptimeNanos() + 200_000_000
        clockBox.set(RunClock(start: start, measureFrom: start + UInt64(warmup * 1e9), stopSending: start + UInt64((warmup + duration) * 1e9)))
        let startedAt = Date()
        for (channel, client) in channels { channel.eventLoop.execute { client.start() } }
        let sampler = serverPID.map { ProcessSampler(pid: $0) }
        let done = DoneFlag()
        let samplerTask = Task { await sampler?.run(until: { done.isSet }) }

        let total = warmup + duration
        var previous = 0
        for second in 1...Int(total.rounded(.up)) {
            try await Task.sleep(until: .now + .seconds(1))
            let answered = progress.delivered.load(ordering: .relaxed)
            FileHandle.standardError.write(
                Data(
                    String(
                        format: "\r[%3d/%3.0f s] requested %d  good pages %d (%d/s)  errors %d   ", second, total,
                        progress.sent.load(ordering: .relaxed), answered, answered - previous, progress.errors.load(ordering: .relaxed)
                    ).utf8))
            previous = answered
        }
        let stopAt = clockBox.value.stopSending
        let now = uptimeNanos()
        if stopAt > now { try await Task.sleep(for: .nanoseconds(Int64(stopAt - now) + 50_000_000)) }
        let drainDeadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < drainDeadline, progress.acked.load(ordering: .relaxed) < progress.sent.load(ordering: .relaxed) {
            try await Task.sleep(for: .milliseconds(100))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        done.set()
        _ = await samplerTask.value
        for (channel, _) in channels { try? await channel.close() }
        for loop in group.makeIterator() { try await loop.submit {}.get() }

        let merged = board.merge()
        try? await group.shutdownGracefully()
        var counts = merged.counts
        counts.connections = readers.count
        counts.expectedDeliveries = counts.sent
        counts.lost = max(0, counts.sent - counts.delivered)
        let (scenario, target) =
            switch workload {
            case .history(let limit): ("history", baseURL + "/api/v1/conversations/{id}/messages?before=S&limit=\(limit)")
            case .search: ("search", baseURL + "/api/v1/search?q=…")
            }
        return Report(
            scenario: scenario,
            target: target,
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
            server: sampler.map { Report.Server($0) },
            notes: [],
            kind: .requests
        )
    }
}

/// One keep-alive HTTP connection reading on an open-loop schedule.
final class HistoryClient: ChannelInboundHandler, @unchecked Sendable {
    // All state is confined to the channel's event loop.
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let index: Int
    private let connections: Int
    private let reader: HistoryRun.Reader
    private let host: String
    private let workload: HistoryRun.Workload
    private let intervalNanos: UInt64
    private let progress: Progress
    private let clockBox: ClockBox
    private var clock = RunClock(start: 0, measureFrom: 0, stopSending: 0)
    var stats: LoopStats!
    private var context: ChannelHandlerContext?
    private var schedule: OpenLoopSchedule?
    private var random = SystemRandomNumberGenerator()
    /// Requests written and not yet answered: (scheduled time, the `before` cursor).
    private var inFlight: [(scheduled: UInt64, before: Int)] = []
    private var inFlightHead = 0
    private var status: HTTPResponseStatus = .ok
    private var body: ByteBuffer?

    init(
        index: Int, connections: Int, reader: HistoryRun.Reader, host: String, workload: HistoryRun.Workload, intervalNanos: UInt64,
        progress: Progress, clock: ClockBox
    ) {
        self.index = index
        self.connections = connections
        self.reader = reader
        self.host = host
        self.workload = workload
        self.intervalNanos = intervalNanos
        self.progress = progress
        self.clockBox = clock
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func start() {
        clock = clockBox.value
        guard let context else { return }
        let schedule = OpenLoopSchedule(
            firstAt: clock.start + OpenLoopSchedule.offset(index: index, of: connections, intervalNanos: intervalNanos), intervalNanos: intervalNanos,
            stopAt: clock.stopSending)
        self.schedule = schedule
        schedule.run(on: context.eventLoop) { [weak self] _, scheduled in
            self?.request(scheduled: scheduled)
        } flush: { [weak self] in
            self?.context?.flush()
        }
    }

    private func request(scheduled: UInt64) {
        guard let context else { return }
        let uri: String
        var before = 0
        switch workload {
        case .history(let limit):
            // A random full page: before ∈ [limit + 1, lastSeq + 1].
            before = Int.random(in: (limit + 1)...max(limit + 1, reader.lastSeq + 1), using: &random)
            uri = "/api/v1/conversations/\(reader.conversationID)/messages?before=\(before)&limit=\(limit)"
        case .search(let terms):
            uri = "/api/v1/search?limit=20&q=" + Self.query(terms, using: &random)
        }
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Authorization", value: "Bearer \(reader.token)")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        inFlight.append((scheduled, before))
        stats.recordSent(second: clock.second(scheduled))
        progress.sent.add(1, ordering: .relaxed)
    }

    /// A search query, URL-encoded: one word (70 %), two words (15 %) or a word's first four
    /// letters as a prefix (15 %).
    static func query(_ terms: [String], using random: inout SystemRandomNumberGenerator) -> String {
        let word = terms.randomElement(using: &random) ?? "a"
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<70: return word
        case 70..<85: return word + "%20" + (terms.randomElement(using: &random) ?? word)
        default: return String(word.prefix(4)) + "%2A"
        }
    }

    /// Whether an answer is what the workload expects.
    private func isGood(_ body: ByteBuffer, before: Int) -> Bool {
        switch workload {
        case .history(let limit): Self.isPage(body, firstSeq: before - limit, count: limit)
        case .search: String(buffer: body).contains(#""results":["#)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
            body = nil
        case .body(var part):
            if body == nil { body = part } else { body!.writeBuffer(&part) }
        case .end:
            guard inFlightHead < inFlight.count else { return }
            let (scheduled, before) = inFlight[inFlightHead]
            inFlightHead += 1
            if inFlightHead > 1024 {
                inFlight.removeFirst(inFlightHead)
                inFlightHead = 0
            }
            let now = uptimeNanos()
            stats.acked += 1
            progress.acked.add(1, ordering: .relaxed)
            if status == .ok, let body, isGood(body, before: before) {
                progress.delivered.add(1, ordering: .relaxed)
                stats.record(
                    endToEndMicros: now > scheduled ? (now - scheduled) / 1000 : 0, second: clock.second(now),
                    measured: scheduled >= clock.measureFrom)
            } else {
                stats.errors += 1
                progress.errors.add(1, ordering: .relaxed)
            }
        }
    }

    /// Whether `body` holds exactly `count` messages starting at `firstSeq`, in ascending order.
    static func isPage(_ body: ByteBuffer, firstSeq: Int, count: Int) -> Bool {
        let text = String(buffer: body)
        var expected = firstSeq
        var found = 0
        var rest = text[...]
        while let range = rest.range(of: #""seq":"#) {
            let digits = rest[range.upperBound...].prefix { $0.isNumber }
            guard Int(digits) == expected else { return false }
            expected += 1
            found += 1
            rest = rest[range.upperBound...]
        }
        return found == count
    }

    func channelInactive(context: ChannelHandlerContext) {
        schedule?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
