import Foundation
import Logging
import ParleyCore
import ParleySQLite
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

    public static let all: [StoreFactory] = [.sqlite]
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
