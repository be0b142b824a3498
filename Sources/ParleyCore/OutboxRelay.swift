import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Where the outbox relay hands events: Kafka in a cluster or with `PARLEY_KAFKA_BROKERS`.
public protocol EventStream: Sendable {
    /// Publishes the events, keeping their order within each key, and returns once the stream
    /// holds every one durably. A throw means some may not be there: the relay sends them all again
    /// (consumers see a re-send as a repeated event id).
    func publish(_ events: [OutboxRecord]) async throws
    /// What the stream's client reports as wrong with its connection (all brokers down, say), or
    /// nil. A publish in progress may just be waiting for it to clear.
    var problem: String? { get }
    /// Starts publishing: hands the events over in order and returns what to await for their
    /// acknowledgement, so that the relay can hand over the next batch meanwhile. Events handed
    /// over later are written after these (per key), and if some of these fail, the later ones of
    /// the same key fail too (Kafka's idempotent producer guarantees both). The default publishes
    /// when awaited, one batch after the other.
    func startPublishing(_ events: [OutboxRecord]) throws -> any PublishAcknowledgement
}

/// A batch handed to the stream, until the stream acknowledges it.
public protocol PublishAcknowledgement: Sendable {
    func wait() async throws
}

extension EventStream {
    public func startPublishing(_ events: [OutboxRecord]) throws -> any PublishAcknowledgement {
        PublishWhenAwaited(stream: self, events: events)
    }
}

private struct PublishWhenAwaited: PublishAcknowledgement {
    let stream: any EventStream
    let events: [OutboxRecord]
    func wait() async throws { try await stream.publish(events) }
}

/// Moves committed events from the store's outbox to the event stream: reads the oldest pending
/// events, publishes them, and removes them only once the stream acknowledged them. At least once,
/// in commit order per key; nothing that did not commit is ever read.
///
/// The send pipeline wakes it after each commit (`eventsCommitted`); a slow fallback check picks
/// up events written by other processes. While the stream fails, the relay retries with backoff
/// and reports itself degraded; the outbox keeps growing (chat goes on) and drains in order once
/// the stream is back.
public final class OutboxRelay: Service, Sendable {
    public struct Configuration: Sendable {
        /// Most events read and published at once.
        public var batchSize = 1_000
        /// Batches handed to the stream before the oldest of them must be acknowledged (when the
        /// stream can take several; see `EventStream.startPublishing`).
        public var maxInFlight = 4
        /// The shortest time between the starts of two rounds. Each round ends with a store write
        /// (removing what was acknowledged); on a busy node every commit wakes the relay, so
        /// without a floor its writes would nearly double the store's commits. Adds at most this
        /// much to an event's lag.
        public var minRoundInterval: Duration = .milliseconds(20)
        /// How often the outbox is checked when nothing woke the relay.
        public var fallbackInterval: Duration = .seconds(1)
        /// Backoff after a failed publish: doubles from `minBackoff` up to `maxBackoff`.
        public var minBackoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(5)
        /// The most events the outbox keeps while the stream is away. Beyond it the oldest are
        /// dropped (counted in `parley_outbox_dropped_total` and logged): chat goes on, and the
        /// stream misses those events. Nil keeps everything.
        public var maxPending: Int? = 1_000_000
        /// How often the backlog (the metrics and the bound) is measured while events flow: counting
        /// a large outbox is not free, and a relay draining one runs many rounds a second.
        public var backlogInterval: Duration = .seconds(1)

        public init() {}
    }

    private struct State {
        var wake: CheckedContinuation<Void, Never>?
        var pendingWake = false
        var lastError: String?
        var backlogMeasured: ContinuousClock.Instant?
    }

    private let outbox: any OutboxStore
    private let stream: any EventStream
    private let configuration: Configuration
    private let logger: Logger
    // Guarded by its Mutex; the continuation is resumed outside it.
    private let state = Mutex(State())

    /// Resolved by `start()`, once the store's schema is in place.
    private let started = Promise<Void>()
    private let produced = Counter(label: "parley_stream_produced_total")
    private let errors = Counter(label: "parley_stream_errors_total")
    private let pending = Gauge(label: "parley_outbox_pending")
    private let oldestAge = Gauge(label: "parley_outbox_oldest_age_seconds")
    private let dropped = Counter(label: "parley_outbox_dropped_total")
    /// From an event's commit to the stream's acknowledgement.
    private let lag = Timer(label: "parley_outbox_lag_seconds")

    public init(outbox: any OutboxStore, stream: any EventStream, configuration: Configuration = .init(), logger: Logger) {
        self.outbox = outbox
        self.stream = stream
        self.configuration = configuration
        self.logger = logger
    }

    /// Why the stream is degraded (the last failed publish, or the client's own report), nil while
    /// it works; `/ready` shows it.
    public var degradedReason: String? { state.withLock { $0.lastError } ?? stream.problem }

    /// Lets `run()` begin relaying; the node calls it after migrating the store.
    public func start() {
        started.resolve(.success(()))
    }

    /// Wakes the relay: new events were committed.
    public func eventsCommitted() {
        let wake: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard let wake = state.wake else {
                state.pendingWake = true
                return nil
            }
            state.wake = nil
            return wake
        }
        wake?.resume()
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            // The outbox exists once the node has migrated its store.
            guard (try? await self.started.value) != nil else { return }
            await self.relayUntilCancelled()
        }
        // Graceful shutdown (the pipeline has drained by now): relay what it committed last rather
        // than leave it for the next start, for a few seconds at most.
        if !Task.isCancelled {
            _ = try? await withTimeout(.seconds(5)) {
                while try await self.relayOnce() > 0 {}
            }
        }
        await outbox.releaseOutboxShards()
    }

    private func relayUntilCancelled() async {
        var backoff = configuration.minBackoff
        let clock = ContinuousClock()
        while !Task.isCancelled {
            do {
                let began = clock.now
                // relayOnce drains until a read comes back short of a batch: then wait.
                _ = try await relayOnce()
                backoff = configuration.minBackoff
                await waitForEvents()
                try await Task.sleep(until: began + configuration.minRoundInterval, clock: clock)
            } catch is CancellationError {
                return
            } catch {
                errors.increment()
                let first = state.withLock { state in
                    defer { state.lastError = "\(error)" }
                    return state.lastError == nil
                }
                if first {
                    logger.warning("event stream unavailable; events wait in the outbox", metadata: ["parley.error": "\(error)"])
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maxBackoff)
            }
        }
    }

    /// Publishes pending events and removes them, until a read finds fewer than a batch: up to
    /// `maxInFlight` batches are handed to the stream before the oldest is awaited. Returns how
    /// many moved.
    func relayOnce() async throws -> Int {
        var window: [(events: [OutboxRecord], acknowledgement: any PublishAcknowledgement)] = []
        var moved = 0
        var failure: (any Error)?
        do {
            var events = try await firstBatch()
            while !events.isEmpty {
                window.append((events, try stream.startPublishing(events)))
                if window.count >= configuration.maxInFlight {
                    let oldest = window.removeFirst()
                    moved += try await complete(oldest.events, oldest.acknowledgement)
                }
                guard events.count == configuration.batchSize else { break }
                events = try await outbox.pendingEvents(after: events.last?.position, limit: configuration.batchSize)
            }
            while !window.isEmpty {
                let oldest = window.removeFirst()
                moved += try await complete(oldest.events, oldest.acknowledgement)
            }
        } catch {
            failure = error
        }
        if let failure {
            // Let what is still in flight settle (nothing of it is removed, so it goes again) before
            // the caller backs off and reads from the oldest event again.
            for (_, acknowledgement) in window { try? await acknowledgement.wait() }
            throw failure
        }
        let recovered = state.withLock { state in
            defer { state.lastError = nil }
            return state.lastError != nil
        }
        if recovered { logger.info("event stream available again; outbox draining") }
        if backlogDue() {
            let backlog = try await outbox.outboxBacklog()
            updateBacklog(count: backlog.count, oldest: backlog.oldest)
        }
        return moved
    }

    /// Waits for a batch's acknowledgement, then removes it from the outbox.
    private func complete(_ events: [OutboxRecord], _ acknowledgement: any PublishAcknowledgement) async throws -> Int {
        try await acknowledgement.wait()
        let now = Date.now
        for case let createdAt? in events.lazy.map(\.createdAt) {
            lag.recordNanoseconds(Int64(max(0, now.timeIntervalSince(createdAt)) * 1e9))
        }
        try await outbox.removeEvents(events.map(\.position))
        produced.increment(by: Int64(events.count))
        return events.count
    }

    /// The oldest pending events, the outbox trimmed to its bound first when it is past it.
    private func firstBatch() async throws -> [OutboxRecord] {
        let events = try await outbox.pendingEvents(limit: configuration.batchSize)
        guard !events.isEmpty else {
            updateBacklog(count: 0, oldest: nil)
            return []
        }
        if events.count == configuration.batchSize || degradedReason != nil, backlogDue() {
            // A backlog: show it before a publish that may wait for the brokers.
            var backlog = try await outbox.outboxBacklog()
            if let maxPending = configuration.maxPending, backlog.count > maxPending {
                let count = try await outbox.trimOutbox(keepingNewest: maxPending)
                dropped.increment(by: Int64(count))
                logger.error(
                    "outbox full: dropped its oldest events; the stream will miss them",
                    metadata: ["parley.dropped": "\(count)", "parley.max_pending": "\(maxPending)"])
                backlog = try await outbox.outboxBacklog()
                updateBacklog(count: backlog.count, oldest: backlog.oldest)
                return try await outbox.pendingEvents(limit: configuration.batchSize)
            }
            updateBacklog(count: backlog.count, oldest: backlog.oldest)
        }
        return events
    }

    /// Whether the backlog should be measured now (at most once per `backlogInterval`); when it
    /// is, the next measurement is due an interval later.
    private func backlogDue() -> Bool {
        let now = ContinuousClock.now
        return state.withLock { state in
            if let last = state.backlogMeasured, now - last < configuration.backlogInterval { return false }
            state.backlogMeasured = now
            return true
        }
    }

    private func updateBacklog(count: Int, oldest: Date?) {
        pending.record(count)
        oldestAge.record(oldest.map { max(0, Date.now.timeIntervalSince($0)) } ?? 0)
    }

    /// Waits until woken or the fallback interval passes.
    private func waitForEvents() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = self.state.withLock { state in
                            if state.pendingWake || Task.isCancelled {
                                state.pendingWake = false
                                return true
                            }
                            state.wake = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    self.eventsCommitted()
                }
            }
            group.addTask { [fallback = configuration.fallbackInterval] in
                try? await Task.sleep(for: fallback)
            }
            await group.next()
            group.cancelAll()
        }
        state.withLock { $0.pendingWake = false }
    }
}
