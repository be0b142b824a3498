import Foundation

/// A fresh directory under the system temp dir, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(prefix: String = "parley-test") throws {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        self.path = path
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Whether integration suites must run rather than skip (`PARLEY_TEST_REQUIRE_ALL=1`, set by CI).
public enum TestEnvironment {
    public static var requireAll: Bool { ProcessInfo.processInfo.environment["PARLEY_TEST_REQUIRE_ALL"] == "1" }
    /// A PostgreSQL server for the store conformance suite, e.g. `postgres://parley:parley@127.0.0.1:5432/parley_test`.
    public static var postgresURL: String? { ProcessInfo.processInfo.environment["PARLEY_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 } }
    /// A redis-server for the Redis client and the Redis adapters, e.g. `redis://127.0.0.1:6379`.
    public static var redisURL: String? { ProcessInfo.processInfo.environment["PARLEY_TEST_REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 } }
    /// A Kafka cluster (`scripts/kafka-mock.sh start` prints one), e.g. `127.0.0.1:40001,127.0.0.1:40002`.
    public static var kafkaBrokers: String? { ProcessInfo.processInfo.environment["PARLEY_TEST_KAFKA_BROKERS"].flatMap { $0.isEmpty ? nil : $0 } }
}
