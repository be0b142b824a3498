import Foundation
import ParleyCore
import ParleyRedis
import Testing

/// Two nodes' view of one presence registry (the same instance in-process, two clients on one
/// Redis in cluster mode), with a TTL of `PortFactories.presenceTTL` seconds.
public struct PresenceFactory: Sendable, CustomTestStringConvertible {
    public let name: String
    public let make: @Sendable () async throws -> (nodeA: any PresenceRegistry, nodeB: any PresenceRegistry, teardown: @Sendable () -> Void)
    public var testDescription: String { name }

    public static let inMemory = PresenceFactory(name: "in-memory") {
        let registry = InMemoryPresenceRegistry(ttl: PortFactories.presenceTTL)
        return (registry, registry, {})
    }

    public static let redis = PresenceFactory(name: "Redis") {
        let configuration = try RedisFixtures.configuration()
        let a = RedisClient(configuration: configuration, logger: .quiet)
        let b = RedisClient(configuration: configuration, logger: .quiet)
        return (
            RedisPresenceRegistry(client: a, ttl: PortFactories.presenceTTL), RedisPresenceRegistry(client: b, ttl: PortFactories.presenceTTL),
            {
                a.close()
                b.close()
            }
        )
    }

    public static let all: [PresenceFactory] = TestEnvironment.redisURL == nil ? [.inMemory] : [.inMemory, .redis]
}

/// Two nodes' view of one rate limiter.
public struct RateLimiterFactory: Sendable, CustomTestStringConvertible {
    public let name: String
    public let make: @Sendable () async throws -> (nodeA: any RateLimiter, nodeB: any RateLimiter, teardown: @Sendable () -> Void)
    public var testDescription: String { name }

    public static let inMemory = RateLimiterFactory(name: "in-memory") {
        let limiter = InMemoryRateLimiter()
        return (limiter, limiter, {})
    }

    public static let redis = RateLimiterFactory(name: "Redis") {
        let configuration = try RedisFixtures.configuration()
        let a = RedisClient(configuration: configuration, logger: .quiet)
        let b = RedisClient(configuration: configuration, logger: .quiet)
        return (
            RedisRateLimiter(client: a, logger: .quiet), RedisRateLimiter(client: b, logger: .quiet),
            {
                a.close()
                b.close()
            }
        )
    }

    public static let all: [RateLimiterFactory] = TestEnvironment.redisURL == nil ? [.inMemory] : [.inMemory, .redis]
}

public enum PortFactories {
    public static let presenceTTL: TimeInterval = 30
}
