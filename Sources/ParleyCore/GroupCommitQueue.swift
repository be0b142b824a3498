import Metrics
import Synchronization

/// Batches concurrent requests into shared transactions.
///
/// Callers `submit` one request each and suspend. While a commit is in flight, new requests
/// queue up; when it finishes, the next commit takes everything queued (up to `maxBatch`). An
/// idle system therefore commits a lone request at once, and a busy one amortises each
/// transaction over many requests without any timer.
public final class GroupCommitQueue<Request: Sendable, Output: Sendable>: Sendable {
    public typealias Commit = @Sendable ([Request]) async throws -> [Result<Output, any Error>]

    private struct Pending {
        var request: Request
        var continuation: CheckedContinuation<Output, any Error>
    }

    private struct State {
        var queue: [Pending] = []
        var draining = false
    }

    // Guarded by its own Mutex; the continuations inside are resumed outside the lock.
    private let state = Mutex(State())
    private let maxBatch: Int
    private let commit: Commit
    private let batchSize: Recorder
    private let commitTimer: Metrics.Timer

    public init(name: String, maxBatch: Int = 512, commit: @escaping Commit) {
        self.maxBatch = maxBatch
        self.commit = commit
        self.batchSize = Recorder(label: "parley_\(name)_batch_size", aggregate: true)
        self.commitTimer = Metrics.Timer(label: "parley_\(name)_commit_seconds")
    }

    public func submit(_ request: Request) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let startDrain = state.withLock { state in
                state.queue.append(Pending(request: request, continuation: continuation))
                if state.draining { return false }
                state.draining = true
                return true
            }
            if startDrain {
                Task { await self.drain() }
            }
        }
    }

    private func drain() async {
        while true {
            let batch: [Pending] = state.withLock { state in
                guard !state.queue.isEmpty else {
                    state.draining = false
                    return []
                }
                let count = min(maxBatch, state.queue.count)
                let batch = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                return batch
            }
            if batch.isEmpty { return }
            batchSize.record(batch.count)
            let started = ContinuousClock.now
            do {
                let results = try await commit(batch.map(\.request))
                commitTimer.recordNanoseconds(Self.nanoseconds(since: started))
                for (pending, result) in zip(batch, results) {
                    pending.continuation.resume(with: result)
                }
                for pending in batch.dropFirst(results.count) {
                    pending.continuation.resume(throwing: ParleyError.internal(detail: "group commit returned too few results"))
                }
            } catch {
                for pending in batch {
                    pending.continuation.resume(throwing: error)
                }
            }
        }
    }

    private static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = ContinuousClock.now - start
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }
}
