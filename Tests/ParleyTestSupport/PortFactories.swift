import Foundation
import ParleyCore
import ParleyRedis
import Testing

/// One adapter of a port as two nodes see it: the same instance for an in-process adapter (it is the
/// whole cluster), two instances with their own Redis connections for the Redis adapter.
public struct NodePairFactory<Port: Sendable>: Sendable, CustomTestStringConvertible {
    public typealias Nodes = (nodeA: Port, nodeB: Port, teardown: @Sendable () -> Void)
    public let name: String
    public let make: @Sendable () async throws -> Nodes
    public var testDescription: String { name }

    public init(name: String, make: @escaping @Sendable () async throws -> Nodes) {
        self.name = name
        self.make = make
    }

    /// An in-process adapter: both nodes share `build()`'s one instance.
    static func inProcess(_ build: @escaping @Sendable () -> Port) -> Self {
        Self(name: "in-memory") {
            let port = build()
            return (port, port, {})
        }
    }

    /// A Redis adapter: each node gets its own client on the test server (a fresh key prefix per test).
    static func redis(_ build: @escaping @Sendable (RedisClient) -> Port) -> Self {
        Self(name: "Redis") {
            let configuration = try RedisFixtures.configuration()
            let a = RedisClient(configuration: configuration, logger: .quiet)
            let b = RedisClient(configuration: configuration, logger: .quiet)
            return (
                build(a), build(b),
                {
                    a.close()
                    b.close()
                }
            )
        }
    }

    static func all(inProcess: Self, redis: Self) -> [Self] {
        TestEnvironment.redisURL == nil ? [inProcess] : [inProcess, redis]
    }
}

public typealias PresenceFactory = NodePairFactory<any PresenceRegistry>
public typealias RateLimiterFactory = NodePairFactory<any RateLimiter>

extension NodePairFactory where Port == any PresenceRegistry {
    public static var all: [Self] {
        all(
            inProcess: .inProcess { InMemoryPresenceRegistry(ttl: PortFactories.presenceTTL) },
            redis: .redis { RedisPresenceRegistry(client: $0, ttl: PortFactories.presenceTTL) }
        )
    }
}

extension NodePairFactory where Port == any RateLimiter {
    public static var all: [Self] {
        all(inProcess: .inProcess { InMemoryRateLimiter() }, redis: .redis { RedisRateLimiter(client: $0, logger: .quiet) })
    }
}

public enum PortFactories {
    public static let presenceTTL: TimeInterval = 30
}
