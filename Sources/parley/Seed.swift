import ArgumentParser
import Foundation
import Logging
import ParleyCore
import ParleyPostgres
import ParleySQLite
import ParleyServer

/// `parley seed`: writes users, live sessions and conversations straight into a node's store, for
/// load tests. Every user gets the same password hash (hashed once at a low cost) and an access
/// token signed with the node's key, so a 10,000-user run starts in seconds. The tokens and ids go
/// to a JSON file that `parley-bench` reads.
struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create load-test users, sessions and conversations in a data directory (for parley-bench).",
        discussion: "Run it against the same --data-dir as the server (before or while it runs). Not for production data."
    )

    @Option(name: .customLong("data-dir"), help: "The node's data directory.") var dataDirectory = "./data"
    @Option(help: "sqlite (in --data-dir) or the cluster's postgres:// URL (PARLEY_STORE); PostgreSQL needs PARLEY_JWT_SECRET.")
    var store: String?
    @Option(help: "Number of users.") var users = 100
    @Option(help: "Conversation layout: direct (users paired off) or group (groups of --group-size).") var layout = "direct"
    @Option(name: .customLong("group-size"), help: "Members per group with --layout group.") var groupSize = 100
    @Option(name: .customLong("prefix"), help: "Username prefix (runs with different prefixes can share a store).") var prefix = "bench"
    @Option(name: .customLong("token-hours"), help: "Lifetime of the minted access tokens.") var tokenHours = 12
    @Option(name: .customLong("messages"), help: "Messages of history written into every conversation (for `parley-bench history`).")
    var messagesPerConversation = 0
    @Option(help: "Where to write the seed description.") var out = "seed.json"

    struct SeedUser: Codable {
        var id: String
        var username: String
        var token: String
    }

    struct SeedConversation: Codable {
        var id: String
        /// Indexes into `users`.
        var members: [Int]
        /// Messages of seeded history (0 without --messages).
        var lastSeq: Int = 0
    }

    struct SeedFile: Codable {
        var password: String
        var users: [SeedUser]
        var conversations: [SeedConversation]
        /// Words of the history, for `parley-bench search` (with --messages).
        var searchTerms: [String]?
    }

    func run() async throws {
        guard users >= 2, layout == "direct" || layout == "group", groupSize >= 2, messagesPerConversation >= 0 else {
            throw ValidationError("need at least 2 users, a layout of direct or group, a group size of at least 2, and --messages ≥ 0")
        }
        var logger = Logger(label: "parley-seed")
        logger.logLevel = .warning
        var config = ParleyConfiguration()
        try config.apply(environment: ProcessInfo.processInfo.environment)
        config.dataDirectory = dataDirectory
        if let store = self.store { config.store = try .init(parsing: store) }
        if config.store != .sqlite {
            guard config.jwtSecret != nil else { throw ValidationError("seeding PostgreSQL needs the cluster's PARLEY_JWT_SECRET") }
        } else {
            config.sqliteSynchronousFull = false
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        }
        // Only the store: seeding needs no bus, presence or rate limits.
        config.redisURL = nil
        let adapters = try Adapters.make(configuration: config, relay: false, logger: logger)
        let summary = try await adapters.withRunning { [self, config, logger] in
            try await seed(into: adapters.store, config: config, logger: logger)
        }
        print(summary)
    }

    /// Writes the users, sessions, conversations and history; returns the summary line.
    private func seed(into store: any ChatStore, config: ParleyConfiguration, logger: Logger) async throws -> String {
        let secret = try config.jwtSecret ?? JWTSecretFile.loadOrCreate(directory: dataDirectory, logger: logger)
        let tokens = try await JWTAccessTokens(secret: secret, lifetimeSeconds: tokenHours * 3600)
        let password = "bench-password"
        let hash = try await BcryptPasswordHasher(cost: 4).hash(password)
        let started = ContinuousClock.now
        let now = Date()
        let run = String(UUID().uuidString.prefix(6)).lowercased()

        var seeded: [SeedUser] = []
        seeded.reserveCapacity(users)
        for index in 0..<users {
            let username = "\(prefix)\(run)_\(index)"
            let user = try await store.createUser(
                NewUser(username: username, email: "\(username)@bench.invalid", displayName: "Bench \(index)", passwordHash: hash, createdAt: now)
            )
            let session = try await store.createSession(
                id: .v7(),
                userID: user.id,
                refreshTokenHash: AccountService.hashRefreshToken(AccountService.makeRefreshToken()),
                expiresAt: now.addingTimeInterval(TimeInterval(tokenHours * 3600)),
                now: now
            )
            let token = try await tokens.issue(userID: user.id, sessionID: session.id, now: now)
            seeded.append(SeedUser(id: user.id.lowercased, username: username, token: token))
        }

        var conversations: [SeedConversation] = []
        let ids = seeded.compactMap { UUID(uuidString: $0.id) }
        if layout == "direct" {
            for pair in stride(from: 0, to: users - 1, by: 2) {
                let (conversation, _) = try await store.findOrCreateDirectConversation(between: ids[pair], and: ids[pair + 1], now: now)
                conversations.append(SeedConversation(id: conversation.id.lowercased, members: [pair, pair + 1], lastSeq: messagesPerConversation))
            }
        } else {
            for start in stride(from: 0, to: users, by: groupSize) {
                let members = Array(start..<min(users, start + groupSize))
                guard members.count >= 2 else { break }
                let group = try await store.createGroup(
                    id: .v7(),
                    name: "bench group \(start / groupSize)",
                    ownerID: ids[members[0]],
                    memberIDs: members.dropFirst().map { ids[$0] },
                    passcodeHash: nil,
                    now: now
                )
                conversations.append(SeedConversation(id: group.id.lowercased, members: members, lastSeq: messagesPerConversation))
            }
        }
        if messagesPerConversation > 0 {
            for (number, conversation) in conversations.enumerated() {
                var text = BenchText(seed: UInt64(number))
                let conversationID = UUID(uuidString: conversation.id)!
                let senders = conversation.members.prefix(2).map { ids[$0] }
                if let store = store as? SQLiteChatStore {
                    try await store.seedHistory(conversationID: conversationID, senderIDs: senders, count: messagesPerConversation) { _ in
                        text.sentence()
                    }
                } else if let store = store as? PostgresChatStore {
                    try await store.seedHistory(conversationID: conversationID, senderIDs: senders, count: messagesPerConversation) { _ in
                        text.sentence()
                    }
                }
                if number % 100 == 99 || number == conversations.count - 1 {
                    FileHandle.standardError.write(Data("\rhistory: \(number + 1)/\(conversations.count) conversations".utf8))
                }
            }
            FileHandle.standardError.write(Data("\n".utf8))
        }
        let data = try JSONEncoder().encode(
            SeedFile(
                password: password, users: seeded, conversations: conversations,
                searchTerms: messagesPerConversation > 0 ? BenchText.searchTerms : nil))
        try data.write(to: URL(fileURLWithPath: out))
        let history = messagesPerConversation > 0 ? ", \(messagesPerConversation * conversations.count) messages" : ""
        return "seed: \(users) users, \(conversations.count) \(layout) conversations\(history) in \(ContinuousClock.now - started) → \(out)"
    }
}

/// Chat-like filler for seeded history: sentences of 4–16 words drawn from a vocabulary of made-up
/// words with a skewed frequency (the word of rank r is used about 1/r as often as the first), so
/// searches for seeded words find some messages and not all. Deterministic for a given seed.
struct BenchText {
    static let vocabulary: [String] = {
        let syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "de", "po", "gu", "ba", "fe", "ri", "to", "la", "ze", "mo", "chi", "an"]
        var generator = SplitMix64(state: 0x5EED)
        var words: [String] = []
        var seen = Set<String>()
        while words.count < 4000 {
            let count = 2 + Int(generator.next() % 2)
            let word = (0..<count).map { _ in syllables[Int(generator.next() % UInt64(syllables.count))] }.joined()
            if seen.insert(word).inserted { words.append(word) }
        }
        return words
    }()

    /// Words for search queries: ranks 20 to 2,000, every tenth (common to rare).
    static let searchTerms: [String] = stride(from: 20, to: 2000, by: 10).map { vocabulary[$0] }

    private var generator: SplitMix64

    init(seed: UInt64) {
        generator = SplitMix64(state: seed &* 0x9E37_79B9_7F4A_7C15 &+ 1)
    }

    mutating func sentence() -> String {
        let count = 4 + Int(generator.next() % 13)
        return (0..<count).map { _ in
            // Log-uniform rank: P(rank r) ∝ 1/r.
            let u = Double(generator.next() >> 11) / Double(1 << 53)
            let rank = min(Self.vocabulary.count - 1, Int(pow(Double(Self.vocabulary.count), u)) - 1)
            return Self.vocabulary[max(0, rank)]
        }.joined(separator: " ")
    }
}

/// A small, fast, seedable generator (SplitMix64).
struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
