import Foundation
import GRDB
import Logging
import ParleyCore
import ParleyPostgres
import ParleySQLite
import PostgresNIO
import Testing

/// One adapter of the `ChatStore` port, as the conformance suite sees it: a way to get a fresh,
/// empty store and to throw it away. Its stores write the outbox (node ids `node-a`, and `node-b`
/// for `another`). Add the PostgreSQL adapter to `all` and the whole suite
/// runs against it unchanged.
public struct StoreFactory: Sendable, CustomTestStringConvertible {
    public let name: String
    public let make: @Sendable () async throws -> StoreHandle

    public var testDescription: String { name }

    public static let sqlite = StoreFactory(name: "SQLite") {
        let directory = try TemporaryDirectory(prefix: "parley-store")
        let path = directory.file("parley.sqlite")
        let store = try SQLiteChatStore(configuration: .init(path: path, synchronousFull: false, outboxNode: "node-a"), logger: .quiet)
        return StoreHandle(
            store: store,
            another: { try SQLiteChatStore(configuration: .init(path: path, synchronousFull: false, outboxNode: "node-b"), logger: .quiet) },
            teardown: { directory.remove() },
            rawSQL: { query in
                // A connection of its own, read-only, beside the store's pool (WAL lets both read).
                var configuration = GRDB.Configuration()
                configuration.readonly = true
                let queue = try DatabaseQueue(path: path, configuration: configuration)
                return try await queue.read { db in
                    try GRDB.Row.fetchAll(db, sql: query).map { row in row.databaseValues.map(StoreFactory.text) }
                }
            }
        )
    }

    /// PostgreSQL at `PARLEY_TEST_POSTGRES_URL`: every store gets a schema of its own, dropped afterwards.
    public static let postgres = StoreFactory(name: "PostgreSQL") {
        guard let url = TestEnvironment.postgresURL else { throw TestEnvironmentError("PARLEY_TEST_POSTGRES_URL is not set") }
        var configuration = try PostgresChatStore.Configuration(url: url)
        let schema = "parley_test_" + UUID().uuidString.prefix(8).lowercased()
        configuration.schema = schema
        configuration.maxConnections = 4
        configuration.outboxNode = "node-a"
        // Short leases, so that the lease tests see a silent node's shards move within seconds.
        configuration.outboxLease = .seconds(1)
        try await PostgresAdmin.execute("CREATE SCHEMA \(schema)", url: url)
        let store = PostgresChatStore(configuration: configuration, logger: .quiet)
        var second = configuration
        second.outboxNode = "node-b"
        return StoreHandle(
            store: store,
            another: { [second] in PostgresChatStore(configuration: second, logger: .quiet) },
            teardown: { try? await PostgresAdmin.execute("DROP SCHEMA \(schema) CASCADE", url: url) },
            rawSQL: { query in try await PostgresAdmin.rows(query, schema: schema, url: url) }
        )
    }

    /// SQLite always; PostgreSQL when `PARLEY_TEST_POSTGRES_URL` names a server.
    public static let all: [StoreFactory] = TestEnvironment.postgresURL == nil ? [.sqlite] : [.sqlite, .postgres]

    /// A SQLite value as text, as `RawSQL` returns it.
    private static func text(_ value: DatabaseValue) -> String? {
        switch value.storage {
        case .null: nil
        case .int64(let integer): String(integer)
        case .double(let double): String(double)
        case .string(let string): string
        case .blob(let data): String(decoding: data, as: UTF8.self)
        }
    }
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
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            for try await _ in try await client.query(PostgresQuery(unsafeSQL: sql)) {}
        }
    }

    /// The rows of `sql` run in `schema`, each column decoded as text: cast other columns in the
    /// query (`CAST(x AS TEXT)`, which SQLite reads the same).
    public static func rows(_ sql: String, schema: String, url: String) async throws -> [[String?]] {
        let configuration = try PostgresChatStore.Configuration(url: url)
        let client = PostgresClient(
            configuration: .init(
                host: configuration.host, port: configuration.port, username: configuration.username, password: configuration.password,
                database: configuration.database, tls: .disable),
            backgroundLogger: .quiet
        )
        return try await withThrowingTaskGroup(of: Void.self, returning: [[String?]].self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            // One connection, so that the search path set here is the one the query runs with.
            return try await client.withConnection { connection in
                for try await _ in try await connection.query(PostgresQuery(unsafeSQL: "SET search_path TO \(schema)"), logger: .quiet) {}
                var rows: [[String?]] = []
                for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: .quiet) {
                    rows.append(try row.makeRandomAccess().map { try $0.decode(String?.self) })
                }
                return rows
            }
        }
    }
}

public struct TestEnvironmentError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Runs one SQL query against a store's own tables, beside the store, and returns its rows with
/// every column as text (nil for NULL). For checks the port cannot express, such as what a row
/// holds after a deletion. Cast non-text columns (`CAST(COUNT(*) AS TEXT)`).
public typealias RawSQL = @Sendable (_ query: String) async throws -> [[String?]]

public struct StoreHandle: Sendable {
    public let store: any ChatStore
    /// A second adapter instance on the same database: another node of a cluster.
    public let another: @Sendable () throws -> any ChatStore
    public let teardown: @Sendable () async -> Void
    /// Raw reads of the store's database.
    public let rawSQL: RawSQL

    public init(
        store: any ChatStore, another: @escaping @Sendable () throws -> any ChatStore, teardown: @escaping @Sendable () async -> Void,
        rawSQL: @escaping RawSQL
    ) {
        self.store = store
        self.another = another
        self.teardown = teardown
        self.rawSQL = rawSQL
    }
}

extension StoreFactory {
    /// Runs `body` with a fresh, running and migrated store, then stops it (as a node's shutdown
    /// would) and always tears it down.
    public func with<T: Sendable>(_ body: (any ChatStore) async throws -> T) async throws -> T {
        let handle = try await make()
        let outcome: Result<T, any Error> = await StoreHandle.running(handle.store, body)
        await handle.teardown()
        return try outcome.get()
    }
}

extension StoreFactory {
    /// Like `with`, and also hands `body` raw SQL reads of the store's database.
    public func withRawSQL<T: Sendable>(_ body: (any ChatStore, RawSQL) async throws -> T) async throws -> T {
        let handle = try await make()
        let outcome: Result<T, any Error> = await StoreHandle.running(handle.store) { store in try await body(store, handle.rawSQL) }
        await handle.teardown()
        return try outcome.get()
    }
}

extension StoreFactory {
    /// Runs `body` with two running store instances on one fresh database, as two nodes see it.
    public func withTwoNodes<T: Sendable>(_ body: (any ChatStore, any ChatStore) async throws -> T) async throws -> T {
        let handle = try await make()
        let outcome: Result<T, any Error> = await StoreHandle.running(handle.store) { first in
            let second = try handle.another()
            return try await StoreHandle.running(second) { second in try await body(first, second) }.get()
        }
        await handle.teardown()
        return try outcome.get()
    }
}

extension StoreHandle {
    /// Runs `store`'s service around `body`: migrated first, stopped (cancelled) afterwards.
    public static func running<T: Sendable>(_ store: any ChatStore, _ body: (any ChatStore) async throws -> T) async -> Result<T, any Error> {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await store.run() }
            defer { group.cancelAll() }
            do {
                try await store.migrate()
                return .success(try await body(store))
            } catch {
                return .failure(error)
            }
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
