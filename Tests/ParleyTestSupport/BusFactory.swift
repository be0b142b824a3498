import Foundation
import Logging
import ParleyCore
import ParleyRedis
import Testing

/// One adapter of the `Bus` port for the conformance suite: two nodes on the same bus (for the
/// in-process bus, both are the same instance, since it is the whole cluster).
public struct BusFactory: Sendable, CustomTestStringConvertible {
    public let name: String
    public let make: @Sendable () async throws -> BusPair

    public var testDescription: String { name }

    public static let inProcess = BusFactory(name: "in-process") {
        let bus = InProcessBus()
        return BusPair(publisher: bus, subscriber: bus) {}
    }

    /// Two nodes, each with its own `RedisBus`, on the server at `PARLEY_TEST_REDIS_URL` (a fresh key prefix per test).
    public static let redis = BusFactory(name: "Redis") {
        let configuration = try RedisFixtures.configuration()
        let publisher = RedisBus(configuration: configuration, logger: .quiet)
        let subscriber = RedisBus(configuration: configuration, logger: .quiet)
        try await publisher.start { _ in }
        return BusPair(publisher: publisher, subscriber: subscriber) { await publisher.shutdown() }
    }

    public static let all: [BusFactory] = TestEnvironment.redisURL == nil ? [.inProcess] : [.inProcess, .redis]
}

public struct BusPair: Sendable {
    /// The node that publishes.
    public let publisher: any Bus
    /// The node whose handler the test watches.
    public let subscriber: any Bus
    public let teardown: @Sendable () async -> Void

    public init(publisher: any Bus, subscriber: any Bus, teardown: @escaping @Sendable () async -> Void) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.teardown = teardown
    }
}
