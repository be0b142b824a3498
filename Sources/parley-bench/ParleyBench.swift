import ArgumentParser
import Foundation

@main
struct ParleyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley-bench",
        abstract: "Load generator for Parley: open-loop message load, latency from the scheduled send time, loss and order checks.",
        subcommands: [Direct.self, GroupLoad.self, Connect.self, History.self, Search.self, Upload.self, Relay.self, OutboxBench.self]
    )
}

/// What every scenario can do with its report and the server it measures.
struct ReportOptions: ParsableArguments {
    @Option(name: .customLong("server-pid"), help: "Sample this local process's CPU and RSS during the run.") var serverPID: Int32?
    @Option(help: "Write the report as JSON to this file.") var json: String?
    @Option(help: "Write the report as a self-contained HTML page with charts to this file.") var html: String?

    /// Prints the summary and writes the files asked for.
    func finish(_ report: some BenchReport) throws {
        print(report.summary())
        if let json { try report.json().write(to: URL(fileURLWithPath: json)) }
        if let html { try Data(report.html().utf8).write(to: URL(fileURLWithPath: html)) }
    }
}

/// A scenario's result: a text summary, JSON and a self-contained HTML page.
protocol BenchReport {
    func summary() -> String
    func json() throws -> Data
    func html() -> String
}

extension BenchReport where Self: Encodable {
    /// The report as pretty-printed JSON with sorted keys (stable to diff between runs).
    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}

extension Report: BenchReport {
    func html() -> String { HTMLReport.render(self) }
}

extension ConnectReport: BenchReport {}

/// Options shared by the message scenarios.
struct LoadOptions: ParsableArguments {
    @Option(help: "WebSocket URL of the server.") var url = "ws://127.0.0.1:8080/api/v1/ws"
    @Option(help: "Total messages per second, spread evenly over the sending connections (open loop).") var rate = 1000.0
    @Option(help: "Measured seconds, after the warm-up.") var duration = 10.0
    @Option(help: "Warm-up seconds, sent but left out of the latency figures.") var warmup = 2.0
    @Option(help: "Extra bytes of body per message (a ~60-byte body without it).") var padding = 40
    @OptionGroup var output: ReportOptions

    /// Runs the message load for `members` and prints / saves the report.
    func run(_ scenario: String, members: [MessageRun.Member]) async throws {
        raiseOpenFileLimit()
        let report = try await MessageRun(
            scenario: scenario,
            url: url,
            members: members,
            rate: rate,
            warmup: warmup,
            duration: duration,
            padding: padding,
            serverPID: output.serverPID
        ).run()
        try output.finish(report)
    }
}

struct Direct: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pairs of users chatting one to one; both sides of every pair send.",
        discussion:
            "Against Parley: `parley seed --layout direct --users 2N --out seed.json`, then `--seed seed.json --pairs N`. Against the baseline relay: `--relay --pairs N` (no seed)."
    )

    @OptionGroup var load: LoadOptions
    @Option(help: "The file written by `parley seed --layout direct`.") var seed: String?
    @Option(help: "Number of pairs (two connections each).") var pairs = 50
    @Flag(help: "Target a `parley-bench relay` (no accounts, no storage) instead of Parley.") var relay = false

    func run() async throws {
        var members: [MessageRun.Member] = []
        if relay {
            for pair in 0..<pairs {
                for side in 0..<2 {
                    members.append(.init(token: nil, query: "pair=\(pair)&side=\(side)", conversationID: "pair-\(pair)", recipients: 1, sends: true))
                }
            }
        } else {
            guard let seed else { throw ValidationError("--seed is required unless --relay is given") }
            let file = try JSONDecoder().decode(SeedFile.self, from: Data(contentsOf: URL(fileURLWithPath: seed)))
            let direct = file.conversations.filter { $0.members.count == 2 }
            guard direct.count >= pairs else { throw ValidationError("the seed has \(direct.count) direct conversations; \(pairs) needed") }
            for conversation in direct.prefix(pairs) {
                for member in conversation.members {
                    members.append(.init(token: file.users[member].token, query: nil, conversationID: conversation.id, recipients: 1, sends: true))
                }
            }
        }
        try await load.run(relay ? "direct (baseline relay)" : "direct", members: members)
    }
}

struct GroupLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group",
        abstract: "Groups with every member online; a few members send, everyone receives.",
        discussion: "Seed with `parley seed --layout group --users G*S --group-size S`."
    )

    @OptionGroup var load: LoadOptions
    @Option(help: "The file written by `parley seed --layout group`.") var seed: String
    @Option(help: "Number of groups to use.") var groups = 1
    @Option(help: "Sending members per group (the rest only listen).") var senders = 5

    func run() async throws {
        let file = try JSONDecoder().decode(SeedFile.self, from: Data(contentsOf: URL(fileURLWithPath: seed)))
        let chosen = file.conversations.filter { $0.members.count > 2 }.prefix(groups)
        guard chosen.count == groups else { throw ValidationError("the seed has only \(chosen.count) groups") }
        var members: [MessageRun.Member] = []
        for conversation in chosen {
            for (position, member) in conversation.members.enumerated() {
                members.append(
                    .init(
                        token: file.users[member].token,
                        query: nil,
                        conversationID: conversation.id,
                        recipients: conversation.members.count - 1,
                        sends: position < senders
                    )
                )
            }
        }
        try await load.run("group", members: members)
    }
}

struct Connect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open C authenticated WebSockets, hold them idle, check they all still answer; report connect latency and server memory.",
        discussion:
            "Seed users first (`parley seed --users N`); tokens are used round-robin, so C may exceed N. One process holds at most its open-file limit of sockets, and so does the server."
    )

    @Option(help: "WebSocket URL of the server.") var url = "ws://127.0.0.1:8080/api/v1/ws"
    @Option(help: "The file written by `parley seed`.") var seed: String
    @Option(help: "Connections to open.") var connections = 1000
    @Option(help: "Seconds to hold them idle once all are open.") var hold = 10.0
    @Option(help: "Connection attempts in flight at once.") var concurrency = 100
    @OptionGroup var output: ReportOptions

    func run() async throws {
        let file = try JSONDecoder().decode(SeedFile.self, from: Data(contentsOf: URL(fileURLWithPath: seed)))
        guard !file.users.isEmpty, connections > 0, concurrency > 0 else { throw ValidationError("need seeded users and at least one connection") }
        let report = try await ConnectRun(
            url: url, tokens: file.users.map(\.token), connections: connections, hold: hold, serverPID: output.serverPID, concurrency: concurrency
        ).run()
        try output.finish(report)
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open-loop reads of random full history pages over keep-alive HTTP; every page is checked.",
        discussion: "Seed with history first: `parley seed --users 2N --messages M --out seed.json`."
    )

    @Option(help: "HTTP base URL of the server.") var url = "http://127.0.0.1:8080"
    @Option(help: "The file written by `parley seed --messages`.") var seed: String
    @Option(help: "Keep-alive HTTP connections (each reads one conversation as one of its members).") var connections = 32
    @Option(help: "Total page reads per second (open loop).") var rate = 1000.0
    @Option(help: "Measured seconds, after the warm-up.") var duration = 10.0
    @Option(help: "Warm-up seconds, left out of the latency figures.") var warmup = 2.0
    @Option(help: "Messages per page.") var limit = 50
    @OptionGroup var output: ReportOptions

    func run() async throws {
        raiseOpenFileLimit()
        let file = try JSONDecoder().decode(SeedFile.self, from: Data(contentsOf: URL(fileURLWithPath: seed)))
        let seeded = file.conversations.filter { ($0.lastSeq ?? 0) >= limit }
        guard !seeded.isEmpty else { throw ValidationError("the seed has no conversation with at least \(limit) messages; seed with --messages") }
        guard connections > 0, rate > 0, (1...200).contains(limit) else {
            throw ValidationError("need connections > 0, rate > 0 and 1 ≤ limit ≤ 200")
        }
        let readers = (0..<connections).map { index in
            let conversation = seeded[index % seeded.count]
            return HistoryRun.Reader(
                token: file.users[conversation.members[0]].token, conversationID: conversation.id, lastSeq: conversation.lastSeq ?? 0)
        }
        let report = try await HistoryRun(
            baseURL: url, readers: readers, rate: rate, warmup: warmup, duration: duration, workload: .history(limit: limit),
            serverPID: output.serverPID
        ).run()
        try output.finish(report)
    }
}

struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Closed-loop file uploads of one size by seeded users: sustained MB/s stored, upload latency, the server's RSS over time.",
        discussion: "Seed users first: `parley seed --users N --out seed.json`."
    )

    @Option(help: "HTTP base URL of the server.") var url = "http://127.0.0.1:8080"
    @Option(help: "The file written by `parley seed`.") var seed: String
    @Option(help: "Bytes per file.") var size = 1 << 20
    @Option(help: "Uploads in flight at once (one client each).") var concurrency = 4
    @Option(help: "Measured seconds, after the warm-up.") var duration = 20.0
    @Option(help: "Warm-up seconds, left out of the figures.") var warmup = 3.0
    @OptionGroup var output: ReportOptions

    func run() async throws {
        let file = try JSONDecoder().decode(SeedFile.self, from: Data(contentsOf: URL(fileURLWithPath: seed)))
        guard !file.users.isEmpty else { throw ValidationError("the seed has no users") }
        guard size > 0, concurrency > 0, duration > 0 else { throw ValidationError("need size, concurrency and duration > 0") }
        let report = try await UploadRun(
            baseURL: url, tokens: file.users.map(\.token), size: size, concurrency: concurrency, warmup: warmup, duration: duration,
            serverPID: output.serverPID
        ).run()
        try output.finish(report)
    }
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open-loop full-text searches over keep-alive HTTP, each by a seeded user over their conversations.",
        discussion: "Seed with history first: `parley seed --users 2N --messages M --out seed.json` (its words are the queries)."
    )

    @Option(help: "HTTP base URL of the server.") var url = "http://127.0.0.1:8080"
    @Option(help: "The file written by `parley seed --messages`.") var seed: String
    @Option(help: "Keep-alive HTTP connections (each searches as one seeded user).") var connections = 16
    @Option(help: "Total searches per second (open loop).") var rate = 200.0
    @Option(help: "Measured seconds, after the warm-up.") var duration = 20.0
    @Option(help: "Warm-up seconds, left out of the latency figures.") var warmup = 3.0
    @OptionGroup var output: ReportOptions

    func run() async throws {
        raiseOpenFileLimit()
        let file = try JSONDecoder().decode(SeedFile.self, from: Data(contentsOf: URL(fileURLWithPath: seed)))
        guard let terms = file.searchTerms, !terms.isEmpty, !file.conversations.isEmpty else {
            throw ValidationError("the seed has no search terms; seed with --messages")
        }
        guard connections > 0, rate > 0 else { throw ValidationError("need connections > 0 and rate > 0") }
        let readers = (0..<connections).map { index in
            let conversation = file.conversations[index % file.conversations.count]
            return HistoryRun.Reader(
                token: file.users[conversation.members[index % conversation.members.count]].token, conversationID: conversation.id,
                lastSeq: conversation.lastSeq ?? 0)
        }
        let report = try await HistoryRun(
            baseURL: url, readers: readers, rate: rate, warmup: warmup, duration: duration, workload: .search(terms: terms),
            serverPID: output.serverPID
        ).run()
        try output.finish(report)
    }
}
