import Foundation
import ParleyRedis

/// The Redis server the tests use, with a key prefix of their own so that tests never see each
/// other's keys or channels.
public enum RedisFixtures {
    public static func configuration(poolSize: Int = 2) throws -> RedisConfiguration {
        guard let url = TestEnvironment.redisURL else { throw TestEnvironmentError("PARLEY_TEST_REDIS_URL is not set") }
        var configuration = try RedisConfiguration(url: url)
        configuration.poolSize = poolSize
        let name = "parley-test-\(UUID().uuidString.prefix(8).lowercased())"
        configuration.keyPrefix = name + ":"
        configuration.clientName = name
        return configuration
    }
}
