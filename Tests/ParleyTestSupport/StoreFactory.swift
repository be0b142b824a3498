import Foundation
import Logging
import ParleyCore
import ParleyPostgres
import ParleySQLite
import PostgresNIO
import Testing

/// One adapter of the `ChatStore` port, as the conformance suite sees it: a way to get a fresh,
/// empty store and to throw it away. Add the PostgreSQL adapter to `all` and the whole suite
/// runs against it unchanged.
public struct StoreFactory: Sendable, CustomTestStringConvertible {
    public let name: String
    public let make: @Sendable () async throws -> StoreHandle

    public var testDescription: String { name }

    public static let sqlite = StoreFactory(name: "SQLite") {
        let directory = try TemporaryDirectory(prefix: "parley-store")
        let store = try SQLiteChatStore(
            configuration: .init(path: directory.file("parley.sqlite"), synchronousFull: false),
            logger: .quiet
        )
        return StoreHandle(store: store) { directory.remove() }
    }

    /// PostgreSQL at `PARLEY_TEST_POSTGRES_URL`: every store gets a schema of its own, dropped afterwards.
    public static let postgres = StoreFactory(name: "PostgreSQL") {
        guard let url = TestEnvironment.postgresURL else { throw TestEnvironmentError("PARLEY_TEST_POSTGRES_URL is not set") }
        var configuration = try PostgresChatStore.Configuration(url: url)
        let schema = "parley_test_" + UUID().uuidString.prefix(8).lowercased()
        configuration.schema = schema
        configuration.maxConnections = 4
        try await PostgresAdmin.execute("CREATE SCHEMA \(schema)", url: url)
        let store = try await PostgresChatStore(configuration: configuration, logger: .quiet)
        return StoreHandle(store: store) {
            store.close()
            try? await PostgresAdmin.execute("DROP SCHEMA \(schema) CASCADE", url: url)
        }
    }

    /// SQLite always; PostgreSQL when `PARLEY_TEST_POSTGRES_URL` names a server.
    public static let all: [StoreFactory] = TestEnvironment.postgresURL == nil ? [.sqlite] : [.sqlite, .postgres]
}

/// One-off statements against a test server (creating and dropping schemas).
public enum PostgresAdmin {
    public static func execute(_ sql: String, url: String) async throws {
        let configuration = try PostgresChatStore.Configuration(url: url)
        let client = PostgresClient(
            configuration: .init(
                host: configuration.host, port: configuration.port, username: configuration.username, password: configuration.password,
                database: configuration.database, tls: .disable),
            backgroundLogger: .quiet
        )
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        for try await _ in try await client.query(PostgresQuery(unsafeSQL: sql)) {}
    }
}

public struct TestEnvironmentError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public struct StoreHandle: Sendable {
    public let store: any ChatStore
    public let teardown: @Sendable () async -> Void

    public init(store: any ChatStore, teardown: @escaping @Sendable () async -> Void) {
        self.store = store
        self.teardown = teardown
    }
}

extension StoreFactory {
    /// Runs `body` with a fresh store and always tears it down.
    public func with<T: Sendable>(_ body: (any ChatStore) async throws -> T) async throws -> T {
        let handle = try await make()
        do {
            let result = try await body(handle.store)
            await handle.teardown()
            return result
        } catch {
            await handle.teardown()
            throw error
        }
    }
}

extension Logger {
    /// A logger for tests: warnings and worse only.
    public static var quiet: Logger {
        var logger = Logger(label: "parley-test")
        logger.logLevel = .warning
        return logger
    }
}
