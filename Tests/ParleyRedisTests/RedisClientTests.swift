import Foundation
import ParleyRedis
import ParleyTestSupport
import Synchronization
import Testing

/// Against the real redis-server at `PARLEY_TEST_REDIS_URL` (started by scripts/services.sh).
@Suite("Redis client against a real redis-server", .enabled(if: TestEnvironment.redisURL != nil))
struct RedisClientTests {
    @Test("commands round-trip; error replies surface as errors")
    func basics() async throws {
        let configuration = try RedisFixtures.configuration()
        let client = RedisClient(configuration: configuration, logger: .quiet)
        defer { client.close() }
        let key = configuration.keyPrefix + "k"
        try await client.command(["SET", key, "välue\r\n"])
        #expect(try await client.command(["GET", key]).string == "välue\r\n")
        #expect(try await client.command(["GET", key + ":missing"]).isNull)
        await #expect(throws: RedisError.self) { try await client.command(["INCR", key]) }
        #expect(try await client.command(["DEL", key]).integer == 1)
    }

    @Test("a pipeline of 10,000 commands returns every reply in order")
    func pipelining() async throws {
        let configuration = try RedisFixtures.configuration()
        let client = RedisClient(configuration: configuration, logger: .quiet)
        defer { client.close() }
        let key = configuration.keyPrefix + "counter"
        let replies = try await client.pipeline((0..<10_000).map { _ in ["INCR", key] })
        #expect(replies.map { $0.integer ?? -1 } == (1...10_000).map(Int64.init))
        try await client.command(["DEL", key])
    }

    @Test("concurrent callers share the pool without mixing up replies")
    func concurrentCallers() async throws {
        let configuration = try RedisFixtures.configuration(poolSize: 3)
        let client = RedisClient(configuration: configuration, logger: .quiet)
        defer { client.close() }
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<50 {
                group.addTask {
                    var wrong = 0
                    for i in 0..<40 {
                        let value = "\(task)-\(i)"
                        if try await client.command(["ECHO", value]).string != value { wrong += 1 }
                    }
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    @Test("the pool replaces a killed connection; pub/sub resubscribes after its connection is killed")
    func recovery() async throws {
        let configuration = try RedisFixtures.configuration(poolSize: 1)
        let client = RedisClient(configuration: configuration, logger: .quiet)
        var adminConfiguration = configuration
        adminConfiguration.clientName = nil
        let admin = RedisClient(configuration: adminConfiguration, logger: .quiet)
        defer {
            client.close()
            admin.close()
        }
        let received = Mutex<[String]>([])
        let subscriber = RedisSubscriber(configuration: configuration, logger: .quiet) { _, payload in
            received.withLock { $0.append(String(buffer: payload)) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await subscriber.run() }
            defer { group.cancelAll() }
            try await subscriber.waitUntilConnected(timeout: .seconds(5))
            let channel = configuration.keyPrefix + "news"
            try await subscriber.subscribe(channel)
            #expect(try await admin.command(["PUBLISH", channel, "one"]).integer == 1)
            #expect(try await client.command(["PING"]).string == "PONG")

            // Kill both of this test's connections (the pool's and the subscriber's), found by client name.
            let list = try await admin.command(["CLIENT", "LIST"]).string ?? ""
            var killed = 0
            for line in list.split(separator: "\n") where line.contains(" name=\(configuration.clientName ?? "-") ") {
                guard let id = line.split(separator: " ").first?.split(separator: "=").last else { continue }
                killed += Int(try await admin.command(["CLIENT", "KILL", "ID", String(id)]).integer ?? 0)
            }
            #expect(killed == 2)
            _ = try? await client.command(["PING"])  // may fail once: the connection was killed under it
            #expect(try await client.command(["ECHO", "back"]).string == "back")

            // The subscriber comes back by itself; wait until Redis counts it again, then publish.
            var subscribers: Int64 = 0
            for _ in 0..<100 where subscribers == 0 {
                try await Task.sleep(for: .milliseconds(50))
                subscribers = try await admin.command(["PUBSUB", "NUMSUB", channel]).array?.last?.integer ?? 0
            }
            #expect(subscribers == 1)
            _ = try await admin.command(["PUBLISH", channel, "two"])
            for _ in 0..<100 where received.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(received.withLock { $0 } == ["one", "two"])
        }
    }

    @Test("URLs are parsed, and bad ones rejected with a clear error")
    func urls() throws {
        let full = try RedisConfiguration(url: "redis://:s%40cret@10.0.0.5:6380/2")
        #expect(full.host == "10.0.0.5" && full.port == 6380 && full.password == "s@cret" && full.database == 2)
        let plain = try RedisConfiguration(url: "redis://localhost")
        #expect(plain.host == "localhost" && plain.port == 6379 && plain.password == nil && plain.database == 0)
        #expect(throws: RedisError.badURL) { try RedisConfiguration(url: "http://localhost") }
        #expect(throws: RedisError.badURL) { try RedisConfiguration(url: "redis://host:notaport") }
    }
}
