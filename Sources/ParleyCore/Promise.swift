import Foundation
import Synchronization

/// A value that will be set once and can be awaited by any number of tasks.
public final class Promise<Value: Sendable>: Sendable {
    public typealias Callback = @Sendable (Result<Value, any Error>) -> Void

    private enum State {
        /// Waiters by key, so that a cancelled one can be taken out.
        case waiting([UUID: CheckedContinuation<Value, any Error>], [Callback])
        case done(Result<Value, any Error>)
    }

    // Guarded by its Mutex; callbacks and continuations run outside the lock.
    private let state = Mutex(State.waiting([:], []))

    public init() {}

    public func resolve(_ result: Result<Value, any Error>) {
        let (waiters, callbacks): ([CheckedContinuation<Value, any Error>], [Callback]) = state.withLock { state in
            guard case .waiting(let waiters, let callbacks) = state else { return ([], []) }
            state = .done(result)
            return (Array(waiters.values), callbacks)
        }
        for callback in callbacks { callback(result) }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// Runs `callback` synchronously when the promise resolves (at once if it already has), on the
    /// resolving thread, before any awaiting task resumes.
    public func whenResolved(_ callback: @escaping Callback) {
        let done: Result<Value, any Error>? = state.withLock { state in
            switch state {
            case .waiting(let waiters, var callbacks):
                callbacks.append(callback)
                state = .waiting(waiters, callbacks)
                return nil
            case .done(let result):
                return result
            }
        }
        if let done { callback(done) }
    }

    /// The result if already resolved, without waiting.
    public var resolved: Result<Value, any Error>? {
        state.withLock { state in
            if case .done(let result) = state { return result }
            return nil
        }
    }

    /// Waits for the result. A waiting task that is cancelled stops waiting with `CancellationError`
    /// (the promise itself stays unresolved for everyone else).
    public var value: Value {
        get async throws {
            let key = UUID()
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let done: Result<Value, any Error>? = state.withLock { state in
                        switch state {
                        case .waiting(var waiters, let callbacks):
                            if Task.isCancelled { return .failure(CancellationError()) }
                            waiters[key] = continuation
                            state = .waiting(waiters, callbacks)
                            return nil
                        case .done(let result):
                            return result
                        }
                    }
                    if let done { continuation.resume(with: done) }
                }
            } onCancel: {
                let waiter: CheckedContinuation<Value, any Error>? = state.withLock { state in
                    guard case .waiting(var waiters, let callbacks) = state, let waiter = waiters.removeValue(forKey: key) else { return nil }
                    state = .waiting(waiters, callbacks)
                    return waiter
                }
                waiter?.resume(throwing: CancellationError())
            }
        }
    }
}
