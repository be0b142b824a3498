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
        return BusPair(publisher: publisher, subscriber: subscriber) {}
    }

    public static let all: [BusFactory] = TestEnvironment.redisURL == nil ? [.inProcess] : [.inProcess, .redis]
}

extension BusFactory {
    /// Runs `body` with a fresh pair whose buses are running (the publisher started), then stops them.
    public func with(_ body: (BusPair) async throws -> Void) async throws {
        let pair = try await make()
        let shared = (pair.publisher as AnyObject) === (pair.subscriber as AnyObject)
        let buses: [any Bus] = shared ? [pair.publisher] : [pair.publisher, pair.subscriber]
        let outcome: Result<Void, any Error> = await withTaskGroup(of: Void.self) { group in
            for bus in buses { group.addTask { try? await bus.run() } }
            defer { group.cancelAll() }
            do {
                if !shared { try await pair.publisher.start { _ in } }
                try await body(pair)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        await pair.teardown()
        try outcome.get()
    }
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
