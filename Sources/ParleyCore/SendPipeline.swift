import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// The one path every message takes, from a client's send to its recipients' sockets. Read top to
/// bottom, this file is the whole of it:
///
/// 1. `submit` validates the request (body, clientMsgId) and admits it — or refuses it at once with
///    the retryable `overloaded` error when the queue already holds more than the store commits
///    within `maxQueueDelay`, so that what is acknowledged stays fast under overload.
/// 2. The request joins the group-commit queue and `submit` returns a promise.
/// 3. `run()` (a `Service` of the node) takes everything queued, up to `maxBatch`, and hands it to
///    the store's `appendBatch`: one transaction for the batch (dedupe, seq, insert, watermarks). An
///    idle node commits a lone send at once. A busy one (it took a batch less than `commitWindow`
///    ago) lets a batch's first send wait out that window for others to join it, so at moderate
///    load a node pays for one commit (and one fsync) per several sends instead of one per send; at
///    saturation commits run back to back and batches fill without waiting.
/// 4. Each caller's promise resolves with its own outcome. The gateway queues the sender's `ack` in
///    the promise's callback, synchronously, so the sender hears `ack` before `message`.
/// 5. Every new message is published on the `Bus` to the conversation's members, in commit (and so
///    seq) order. A replayed send resolves to the original and publishes nothing.
/// 6. With an event stream, the store wrote each new message's `message.created` event to its
///    outbox in the same transaction; the pipeline wakes the `OutboxRelay`, which produces it.
///
/// On graceful shutdown the pipeline stops admitting (`shutting_down`), commits and acknowledges
/// everything already queued, then returns, before the store closes.
public final class SendPipeline: Service, Sendable {
    public struct Configuration: Sendable {
        /// Most sends in one transaction.
        public var maxBatch = 512
        /// How long a batch's first send may wait for more to join it, when sends arrive at least
        /// once per window on average. Zero commits every batch as soon as the store is free.
        public var commitWindow: Duration = .milliseconds(2)
        /// How long an admitted send may expect to wait for its commit at the measured commit rate;
        /// past that, new sends are refused with `overloaded`.
        public var maxQueueDelay: Duration = .milliseconds(100)
        /// Sends always admitted, whatever the measured rate (a cold node has measured nothing yet).
        public var minQueueLimit = 1024
        /// Sends never queued beyond, however fast commits are.
        public var maxQueueLimit = 20_000
        /// Names the metrics: `parley_<name>_batch_size`, `parley_<name>_commit_seconds`.
        public var metricsName = "send"

        public init() {}
    }

    private struct Pending {
        var request: SendRequest
        var promise: Promise<SendResult>
        var queuedAt: ContinuousClock.Instant
    }

    private struct State {
        var queue: [Pending] = []
        /// The drain loop, parked until a request arrives.
        var waiter: CheckedContinuation<Void, Never>?
        var accepting = true
        /// Commit throughput in sends per second (moving average), for admission.
        var commitRate: Double = 0
        /// When the last batch was taken: a node that took one less than a window ago is busy.
        var lastTaken: ContinuousClock.Instant?
    }

    // Guarded by its Mutex; promises are resolved and the waiter resumed outside the lock.
    private let state = Mutex(State())
    private let store: any MessageStore
    private let bus: any Bus
    private let typing: TypingTracker
    private let limits: Limits
    private let configuration: Configuration
    private let relay: OutboxRelay?
    private let logger: Logger

    private let batchSize: Recorder
    private let commitTimer: Metrics.Timer
    private let refused: Counter

    public init(
        store: any MessageStore, bus: any Bus, typing: TypingTracker, limits: Limits, configuration: Configuration = .init(),
        relay: OutboxRelay? = nil, logger: Logger
    ) {
        self.relay = relay
        self.store = store
        self.bus = bus
        self.typing = typing
        self.limits = limits
        self.configuration = configuration
        self.logger = logger
        batchSize = Recorder(label: "parley_\(configuration.metricsName)_batch_size", aggregate: true)
        commitTimer = Metrics.Timer(label: "parley_\(configuration.metricsName)_commit_seconds")
        refused = Counter(label: "parley_\(configuration.metricsName)_refused_total", dimensions: [("reason", "overloaded")])
    }

    // MARK: 1–2. Validate, admit, queue

    /// Validates and queues a send; the promise resolves once it is committed (or refused). Sends
    /// submitted in order by one caller commit in that order and so get increasing seqs. Membership
    /// is checked inside the write transaction: a non-member gets `conversation_not_found`.
    ///
    /// `whenResolved` (the sender's ack) is attached before the request is queued, so it runs before
    /// the message is published, however fast the commit.
    public func submit(
        caller: UUID, conversationID: UUID, body: String, clientMsgID: String?, replyToID: UUID? = nil, attachmentIDs: [UUID] = [],
        now: Date = .now, whenResolved: Promise<SendResult>.Callback? = nil
    ) throws -> Promise<SendResult> {
        try Validation.messageBody(body, limits: limits, attachments: attachmentIDs.count)
        let clientMsgID = try Validation.clientMsgID(clientMsgID, limits: limits)
        let request = SendRequest(
            conversationID: conversationID, senderID: caller, clientMsgID: clientMsgID, body: body, messageID: .v7(now: now), createdAt: now,
            replyToID: replyToID, attachmentIDs: attachmentIDs)
        return try enqueue(request, whenResolved: whenResolved)
    }

    /// Submits and waits for the commit.
    public func send(
        caller: UUID, conversationID: UUID, body: String, clientMsgID: String?, replyToID: UUID? = nil, attachmentIDs: [UUID] = [],
        now: Date = .now
    ) async throws -> SendResult {
        try await submit(
            caller: caller, conversationID: conversationID, body: body, clientMsgID: clientMsgID, replyToID: replyToID,
            attachmentIDs: attachmentIDs, now: now
        ).value
    }

    /// Queues a validated request, or refuses it when the node cannot commit it in time.
    func enqueue(_ request: SendRequest, whenResolved: Promise<SendResult>.Callback? = nil) throws -> Promise<SendResult> {
        let promise = Promise<SendResult>()
        if let whenResolved { promise.whenResolved(whenResolved) }
        enum Admission { case queued(wake: CheckedContinuation<Void, Never>?), overloaded, closed }
        let admission: Admission = state.withLock { state in
            guard state.accepting else { return .closed }
            guard state.queue.count < queueLimit(commitRate: state.commitRate) else { return .overloaded }
            state.queue.append(Pending(request: request, promise: promise, queuedAt: .now))
            defer { state.waiter = nil }
            return .queued(wake: state.waiter)
        }
        switch admission {
        case .queued(let waiter):
            waiter?.resume()
            return promise
        case .overloaded:
            refused.increment()
            throw ParleyError.overloaded
        case .closed:
            throw ParleyError.shuttingDown
        }
    }

    /// Requests allowed in the queue: what the store commits within `maxQueueDelay` at the measured rate.
    private func queueLimit(commitRate: Double) -> Int {
        let delay = configuration.maxQueueDelay.inSeconds
        let fits = Int(min(commitRate * delay, Double(configuration.maxQueueLimit)))
        return max(configuration.minQueueLimit, fits)
    }

    // MARK: 3–5. Commit, acknowledge, publish

    /// The drain loop: runs for the life of the node.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                while let batch = await nextBatch() {
                    await commit(batch)
                }
            } onCancel: {
                self.stopAccepting()
            }
        } onGracefulShutdown: {
            self.stopAccepting()
        }
    }

    /// The next batch to commit, waiting for one; nil once the pipeline is stopped and drained.
    private func nextBatch() async -> [Pending]? {
        while true {
            enum Next { case batch([Pending]), done, wait, linger(until: ContinuousClock.Instant) }
            let now = ContinuousClock.now
            let next: Next = state.withLock { state in
                guard let oldest = state.queue.first else { return state.accepting ? .wait : .done }
                // Busy (a batch was taken within the window) and the batch is not full: let the
                // oldest send wait out its window so that later ones share its commit.
                let deadline = oldest.queuedAt + configuration.commitWindow
                if state.accepting, state.queue.count < configuration.maxBatch, deadline > now,
                    let last = state.lastTaken, now - last < configuration.commitWindow
                {
                    return .linger(until: deadline)
                }
                let count = min(configuration.maxBatch, state.queue.count)
                let batch = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                state.lastTaken = now
                return .batch(batch)
            }
            switch next {
            case .batch(let batch): return batch
            case .done: return nil
            case .linger(let deadline):
                // Sends arriving meanwhile queue without waking this loop. At most one window, so
                // shutdown is not held up.
                try? await Task.sleep(until: deadline, clock: .continuous)
            case .wait:
                await withCheckedContinuation { continuation in
                    let ready = state.withLock { state in
                        if !state.queue.isEmpty || !state.accepting { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
        }
    }

    private func commit(_ batch: [Pending]) async {
        batchSize.record(batch.count)
        let started = ContinuousClock.now
        let outcomes: [Result<SendResult, any Error>]
        do {
            outcomes = try await store.appendBatch(batch.map(\.request))
        } catch {
            logger.warning("send batch failed", metadata: ["parley.error": "\(error)", "parley.batch_size": "\(batch.count)"])
            for pending in batch { pending.promise.resolve(.failure(error)) }
            return
        }
        let elapsed = ContinuousClock.now - started
        commitTimer.record(duration: elapsed)
        measure(committed: batch.count, in: elapsed)

        // 4. Acks: each caller hears its own outcome, in commit order.
        for (pending, outcome) in zip(batch, outcomes) {
            pending.promise.resolve(outcome)
        }
        for pending in batch.dropFirst(outcomes.count) {
            pending.promise.resolve(.failure(ParleyError.internal(detail: "appendBatch returned too few outcomes")))
        }
        // 5. Fan-out: new messages only, in seq order.
        var published = false
        for case .success(let sent) in outcomes where !sent.replayed {
            typing.clear(conversationID: sent.message.conversationID, userID: sent.message.senderID)
            bus.publish(.message(sent.message), to: sent.recipients)
            published = true
        }
        // 6. The stream: their events are in the outbox, committed with them.
        if published { relay?.eventsCommitted() }
    }

    private func measure(committed count: Int, in elapsed: Duration) {
        let seconds = elapsed.inSeconds
        guard seconds > 0 else { return }
        let rate = Double(count) / seconds
        state.withLock { state in
            state.commitRate = state.commitRate == 0 ? rate : state.commitRate * 0.8 + rate * 0.2
        }
    }

    /// Refuses new sends from now on; what is queued still commits.
    private func stopAccepting() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            state.accepting = false
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}
