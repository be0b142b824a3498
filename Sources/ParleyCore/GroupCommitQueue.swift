import Metrics
import Synchronization

/// Batches concurrent requests into shared transactions.
///
/// Callers `enqueue` one request each (synchronously, so requests enqueued in order by one task
/// commit in that order) and await its promise. While a commit is in flight, new requests queue
/// up; when it finishes, the next commit takes everything queued (up to `maxBatch`). An idle system
/// therefore commits a lone request at once, and a busy one amortises each transaction over many
/// requests without any timer. After each commit the listener sees the successful outputs in
/// commit order, which is how events get published in seq order.
public final class GroupCommitQueue<Request: Sendable, Output: Sendable>: Sendable {
    public typealias Commit = @Sendable ([Request]) async throws -> [Result<Output, any Error>]
    public typealias Listener = @Sendable ([Output]) -> Void

    private struct Pending {
        var request: Request
        var promise: Promise<Output>
    }

    private struct State {
        var queue: [Pending] = []
        var draining = false
        var listener: Listener?
    }

    // Guarded by its own Mutex; promises are resolved outside the lock.
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

    /// Sets the function told about every committed batch.
    public func setListener(_ listener: @escaping Listener) {
        state.withLock { $0.listener = listener }
    }

    /// Queues `request` and returns at once; the promise resolves after its commit.
    public func enqueue(_ request: Request) -> Promise<Output> {
        let promise = Promise<Output>()
        let startDrain = state.withLock { state in
            state.queue.append(Pending(request: request, promise: promise))
            if state.draining { return false }
            state.draining = true
            return true
        }
        if startDrain {
            Task { await self.drain() }
        }
        return promise
    }

    public func submit(_ request: Request) async throws -> Output {
        try await enqueue(request).value
    }

    private func drain() async {
        while true {
            let (batch, listener): ([Pending], Listener?) = state.withLock { state in
                guard !state.queue.isEmpty else {
                    state.draining = false
                    return ([], nil)
                }
                let count = min(maxBatch, state.queue.count)
                let batch = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                return (batch, state.listener)
            }
            if batch.isEmpty { return }
            batchSize.record(batch.count)
            let started = ContinuousClock.now
            do {
                let results = try await commit(batch.map(\.request))
                commitTimer.recordNanoseconds(Self.nanoseconds(since: started))
                var committed: [Output] = []
                committed.reserveCapacity(results.count)
                for (pending, result) in zip(batch, results) {
                    pending.promise.resolve(result)
                    if case .success(let output) = result { committed.append(output) }
                }
                for pending in batch.dropFirst(results.count) {
                    pending.promise.resolve(.failure(ParleyError.internal(detail: "group commit returned too few results")))
                }
                if let listener, !committed.isEmpty { listener(committed) }
            } catch {
                for pending in batch {
                    pending.promise.resolve(.failure(error))
                }
            }
        }
    }

    private static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = ContinuousClock.now - start
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }
}
