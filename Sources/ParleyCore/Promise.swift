import Synchronization

/// A value that will be set once and can be awaited by any number of tasks.
public final class Promise<Value: Sendable>: Sendable {
    private enum State {
        case waiting([CheckedContinuation<Value, any Error>])
        case done(Result<Value, any Error>)
    }

    // Guarded by its Mutex; continuations are resumed outside the lock.
    private let state = Mutex(State.waiting([]))

    public init() {}

    public func resolve(_ result: Result<Value, any Error>) {
        let waiters: [CheckedContinuation<Value, any Error>] = state.withLock { state in
            guard case .waiting(let waiters) = state else { return [] }
            state = .done(result)
            return waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// The result if already resolved, without waiting.
    public var resolved: Result<Value, any Error>? {
        state.withLock { state in
            if case .done(let result) = state { return result }
            return nil
        }
    }

    public var value: Value {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let done: Result<Value, any Error>? = state.withLock { state in
                    switch state {
                    case .waiting(var waiters):
                        waiters.append(continuation)
                        state = .waiting(waiters)
                        return nil
                    case .done(let result):
                        return result
                    }
                }
                if let done { continuation.resume(with: done) }
            }
        }
    }
}
