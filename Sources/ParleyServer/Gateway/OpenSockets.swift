import ParleyCore
import Synchronization

/// How many gateway sockets are open on this node (authenticated or not), so that shutdown can wait
/// for the last one to close.
final class OpenSockets: Sendable {
    private struct State {
        var count = 0
        /// Resolved when the count next reaches zero; made by the first waiter.
        var drained: Promise<Void>?
    }

    // Guarded by its Mutex; the promise is resolved outside it.
    private let state = Mutex(State())

    var count: Int { state.withLock { $0.count } }

    func opened() {
        state.withLock { $0.count += 1 }
    }

    func closed() {
        let drained: Promise<Void>? = state.withLock { state in
            state.count -= 1
            guard state.count == 0 else { return nil }
            defer { state.drained = nil }
            return state.drained
        }
        drained?.resolve(.success(()))
    }

    /// Returns once no socket is open (or the waiting task is cancelled).
    func allClosed() async {
        let drained: Promise<Void>? = state.withLock { state in
            guard state.count > 0 else { return nil }
            if state.drained == nil { state.drained = Promise() }
            return state.drained
        }
        _ = try? await drained?.value
    }
}
