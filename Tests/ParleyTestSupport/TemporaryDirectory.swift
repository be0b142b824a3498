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
}
