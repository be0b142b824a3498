import Foundation
import Logging
import ParleyCore
import Synchronization
import Testing

/// An outbox in memory: the relay's view of a store. `rounds` yields the backlog the relay reads at
/// the end of each successful round.
private final class MemoryOutbox: OutboxStore {
    private let records = Mutex<[OutboxRecord]>([])
    private let next = Mutex<Int64>(1)
    let rounds: AsyncStream<Int>
    private let continuation: AsyncStream<Int>.Continuation

    init() { (rounds, continuation) = AsyncStream.makeStream(of: Int.self) }

    func append(key: String, count: Int) {
        records.withLock { records in
            for _ in 0..<count {
                let position = next.withLock { position in
                    defer { position += 1 }
                    return position
                }
                records.append(
                    OutboxRecord(
                        position: position, eventID: .v7(), topic: .messages, key: key, type: "message.created", envelope: Array("\(position)".utf8)))
            }
        }
    }

    var count: Int { records.withLock { $0.count } }
    var outboxNode: String? { "test" }

    func appendEvents(_ events: [StreamEvent]) async throws {
        for event in events {
            let envelope = try event.envelope()
            records.withLock { records in
                let position = next.withLock { position in
                    defer { position += 1 }
                    return position
                }
                records.append(
                    OutboxRecord(position: position, eventID: event.id, topic: event.topic, key: event.key, type: event.type, envelope: envelope))
            }
        }
    }

    func pendingEvents(after position: Int64?, limit: Int) async throws -> [OutboxRecord] {
        records.withLock { Array($0.filter { $0.position > position ?? 0 }.prefix(limit)) }
    }

    func removeEvents(_ positions: [Int64]) async throws {
        let removed = Set(positions)
        records.withLock { $0.removeAll { removed.contains($0.position) } }
    }

    func outboxBacklog() async throws -> (count: Int, oldest: Date?) {
        let count = self.count
        continuation.yield(count)
        return (count, count == 0 ? nil : .now)
    }

    func trimOutbox(keepingNewest limit: Int) async throws -> Int {
        records.withLock { records in
            let dropped = max(0, records.count - limit)
            records.removeFirst(dropped)
            return dropped
        }
    }
}

/// A stream that records what it was given and fails while `failing` is set.
private final class RecordingStream: EventStream {
    struct Down: Error {}
    private let state = Mutex<(published: [OutboxRecord], failing: Bool, batches: [Int])>(([], false, []))
    let attempts: AsyncStream<Bool>
    private let continuation: AsyncStream<Bool>.Continuation

    init() { (attempts, continuation) = AsyncStream.makeStream(of: Bool.self) }

    var published: [OutboxRecord] { state.withLock { $0.published } }
    var batches: [Int] { state.withLock { $0.batches } }
    var problem: String? { nil }
    func setFailing(_ failing: Bool) { state.withLock { $0.failing = failing } }

    func publish(_ events: [OutboxRecord]) async throws {
        let failed = state.withLock { state in
            if state.failing { return true }
            state.published += events
            state.batches.append(events.count)
            return false
        }
        continuation.yield(!failed)
        if failed { throw Down() }
    }
}

@Suite("Outbox relay")
struct OutboxRelayTests {
    private func withRelay(
        _ outbox: MemoryOutbox, _ stream: RecordingStream, maxPending: Int? = nil, _ body: (OutboxRelay) async throws -> Void
    ) async throws {
        var configuration = OutboxRelay.Configuration()
        configuration.maxPending = maxPending
        configuration.backlogInterval = .zero  // every round reports its backlog, which the tests await
        configuration.batchSize = 10
        configuration.minBackoff = .milliseconds(10)
        configuration.maxBackoff = .milliseconds(20)
        let relay = OutboxRelay(outbox: outbox, stream: stream, configuration: configuration, logger: Logger(label: "test"))
        relay.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await relay.run() }
            defer { group.cancelAll() }
            try await body(relay)
        }
    }

    @Test("committed events are published in outbox order, in batches, then removed; a wake-up starts the next round")
    func publishesInOrder() async throws {
        let outbox = MemoryOutbox()
        let stream = RecordingStream()
        outbox.append(key: "c1", count: 25)
        try await withRelay(outbox, stream) { relay in
            var rounds = outbox.rounds.makeAsyncIterator()
            var backlogs: [Int] = []
            while backlogs.last != 0, let backlog = await rounds.next() { backlogs.append(backlog) }
            #expect(backlogs == backlogs.sorted(by: >), "published events leave the outbox")
            #expect(stream.batches == [10, 10, 5], "batches of at most 10")
            #expect(stream.published.map(\.position) == Array(1...25), "in outbox order")
            outbox.append(key: "c2", count: 3)
            relay.eventsCommitted()
            #expect(await rounds.next() == 0)
            #expect(stream.published.map(\.position) == Array(1...28))
        }
    }

    @Test("while the stream fails, events stay in the outbox and the relay reports degraded; after recovery nothing is missing or reordered")
    func survivesOutage() async throws {
        let outbox = MemoryOutbox()
        let stream = RecordingStream()
        stream.setFailing(true)
        outbox.append(key: "c1", count: 5)
        try await withRelay(outbox, stream) { relay in
            var attempts = stream.attempts.makeAsyncIterator()
            #expect(await attempts.next() == false)
            #expect(await attempts.next() == false, "retried with backoff")
            #expect(relay.degradedReason != nil)
            #expect(outbox.count == 5, "nothing removed while the stream is down")
            outbox.append(key: "c1", count: 5)
            stream.setFailing(false)
            var rounds = outbox.rounds.makeAsyncIterator()
            while let backlog = await rounds.next(), backlog > 0 {}
            #expect(stream.published.map(\.position) == Array(1...10))
            #expect(relay.degradedReason == nil)
        }
    }

    @Test("at its bound the outbox drops its oldest events while the stream is down; the newest go out once it is back")
    func boundedWhileDown() async throws {
        let outbox = MemoryOutbox()
        let stream = RecordingStream()
        stream.setFailing(true)
        outbox.append(key: "c1", count: 50)
        try await withRelay(outbox, stream, maxPending: 20) { relay in
            var attempts = stream.attempts.makeAsyncIterator()
            #expect(await attempts.next() == false)
            #expect(outbox.count == 20, "trimmed to the bound before publishing")
            stream.setFailing(false)
            var rounds = outbox.rounds.makeAsyncIterator()
            while let backlog = await rounds.next(), backlog > 0 {}
            #expect(stream.published.map(\.position) == Array(31...50), "the newest 20, in order")
        }
    }
}
