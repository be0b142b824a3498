/// `withTimeout` gave up.
public struct TimeoutError: Error, Sendable {
    public init() {}
}

/// Runs `body`, cancelling it and throwing `TimeoutError` once `limit` has passed. `body` must end
/// when cancelled (every wait in Parley does: `Promise.value`, `OpenSockets.allClosed`, sleeps).
public func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimeoutError()
        }
        defer { group.cancelAll() }
        guard let result = try await group.next() else { throw CancellationError() }
        return result
    }
}
