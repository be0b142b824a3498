import Foundation
import Logging
import ParleyCore
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

/// A `MessageStore` adapter that keeps messages in memory, so the pipeline's own behaviour (batching,
/// acks, publishing, admission, shutdown) can be checked alone. Commits can be held at a gate.
final class FakeMessageStore: MessageStore {
    struct Failure: Error {}

    private struct State {
        var lastSeq: [UUID: Int64] = [:]
        var seen: [String: Message] = [:]
        var batches: [[SendRequest]] = []
        var held = false
        var heldCommits: [CheckedContinuation<Void, Never>] = []
        var failNext = false
    }

    // Guarded by its Mutex; continuations resumed outside it.
    private let state = Mutex(State())
    let members: [UUID]
    /// Every batch, as it starts committing.
    let started: AsyncStream<Int>
    private let startedContinuation: AsyncStream<Int>.Continuation

    init(members: [UUID]) {
        self.members = members
        (started, startedContinuation) = AsyncStream.makeStream(of: Int.self)
    }

    var batches: [[SendRequest]] { state.withLock { $0.batches } }

    /// Commits wait until `release()`.
    func hold() { state.withLock { $0.held = true } }

    func release() {
        let waiting = state.withLock { state in
            state.held = false
            defer { state.heldCommits = [] }
            return state.heldCommits
        }
        for commit in waiting { commit.resume() }
    }

    /// The next transaction fails as a whole.
    func failNextCommit() { state.withLock { $0.failNext = true } }

    func appendBatch(_ requests: [SendRequest]) async throws -> [Result<SendResult, any Error>] {
        startedContinuation.yield(requests.count)
        await withCheckedContinuation { continuation in
            let wait = state.withLock { state in
                if state.held { state.heldCommits.append(continuation) }
                return state.held
            }
            if !wait { continuation.resume() }
        }
        return try state.withLock { state in
            if state.failNext {
                state.failNext = false
                throw Failure()
            }
            state.batches.append(requests)
            return requests.map { request in
                guard members.contains(request.senderID) else { return .failure(ParleyError.conversationNotFound) }
                let key = "\(request.conversationID)|\(request.senderID)|\(request.clientMsgID ?? UUID().uuidString)"
                if let original = state.seen[key] { return .success(SendResult(message: original, replayed: true)) }
                let seq = state.lastSeq[request.conversationID, default: 0] + 1
                state.lastSeq[request.conversationID] = seq
                let message = request.message(seq: seq)
                state.seen[key] = message
                return .success(SendResult(message: message, replayed: false, recipients: members))
            }
        }
    }

    func messages(conversationID: UUID, member: UUID?, cursor: PageCursor, limit: Int) async throws -> MessagePage {
        throw ParleyError.internal(detail: "not used by the pipeline")
    }

    func advanceWatermark(_ kind: Watermark, conversationID: UUID, userID: UUID, to seq: Int64) async throws -> WatermarkUpdate {
        throw ParleyError.internal(detail: "not used by the pipeline")
    }
}

/// What the bus delivered to the subscribed members, in order.
final class Published: Sendable {
    private let events = Mutex<[ChatEvent]>([])
    let arrivals: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() { (arrivals, continuation) = AsyncStream.makeStream(of: Void.self) }

    func append(_ delivery: BusDelivery) {
        events.withLock { $0.append(delivery.event) }
        continuation.yield()
    }

    var messages: [Message] {
        events.withLock { events in
            events.compactMap { if case .message(let message) = $0 { message } else { nil } }
        }
    }
}

@Suite("Send pipeline")
struct SendPipelineTests {
    let alice = UUID()
    let bob = UUID()
    let mallory = UUID()
    let conversation = UUID()

    /// A pipeline over a fake store and a real in-process bus with alice and bob subscribed, running
    /// for the duration of `body`.
    func withPipeline(
        configure: (inout SendPipeline.Configuration) -> Void = { _ in },
        _ body: (SendPipeline, FakeMessageStore, Published) async throws -> Void
    ) async throws {
        let store = FakeMessageStore(members: [alice, bob])
        let bus = InProcessBus()
        let published = Published()
        try await bus.start { published.append($0) }
        try await bus.subscribe(alice)
        try await bus.subscribe(bob)
        var configuration = SendPipeline.Configuration()
        configure(&configuration)
        let pipeline = SendPipeline(
            store: store, bus: bus, typing: TypingTracker(), limits: Limits(), configuration: configuration, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            defer { group.cancelAll() }
            try await body(pipeline, store, published)
        }
    }

    @Test("concurrent sends share transactions; each sender gets its own ack; members get every new message once, in seq order")
    func batchesAcksAndFanOut() async throws {
        try await withPipeline { pipeline, store, published in
            store.hold()
            let first = try pipeline.submit(caller: alice, conversationID: conversation, body: "first", clientMsgID: "c0")
            // While the first commit is held, more sends queue up behind it.
            for await _ in store.started { break }
            var promises = [first]
            for i in 1..<200 {
                let sender = i.isMultiple(of: 2) ? alice : bob
                promises.append(try pipeline.submit(caller: sender, conversationID: conversation, body: "m\(i)", clientMsgID: "c\(i)"))
            }
            let replay = try pipeline.submit(caller: alice, conversationID: conversation, body: "first", clientMsgID: "c0")
            let stranger = try pipeline.submit(caller: mallory, conversationID: conversation, body: "let me in", clientMsgID: "x")
            store.release()

            var seqs: [Int64] = []
            for promise in promises { seqs.append(try await promise.value.message.seq) }
            #expect(seqs == Array(1...200), "submission order is seq order")
            let replayed = try await replay.value
            #expect(replayed.replayed && replayed.message.seq == 1)
            await #expect(throws: ParleyError.conversationNotFound) { try await stranger.value }
            #expect(store.batches.count == 2, "the 201 sends queued behind the first shared one transaction")

            var arrivals = published.arrivals.makeAsyncIterator()
            for _ in 0..<200 { await arrivals.next() }
            #expect(published.messages.map(\.seq) == Array(1...200), "published once each, in seq order; the replay not again")
        }
    }

    @Test("commit window: an idle node commits a lone send at once, without waiting out the window")
    func commitWindowIdle() async throws {
        // A window far longer than the test may take: had the idle node waited it out, this would fail.
        let window = Duration.seconds(120)
        try await withPipeline(configure: { $0.commitWindow = window }) { pipeline, store, _ in
            let started = ContinuousClock.now
            let lone = try await pipeline.send(caller: alice, conversationID: conversation, body: "lone", clientMsgID: "0")
            #expect(lone.message.seq == 1)
            #expect(ContinuousClock.now - started < window / 2)
            #expect(store.batches.map(\.count) == [1])
        }
    }

    @Test("commit window: sends arriving within a window of the last commit share the next one")
    func commitWindowBusy() async throws {
        try await withPipeline(configure: { $0.commitWindow = .seconds(5) }) { pipeline, store, _ in
            _ = try await pipeline.send(caller: alice, conversationID: conversation, body: "first", clientMsgID: "0")
            // Right after that commit, ten sends arrive one after another: they wait for each other
            // instead of taking a commit each.
            var promises: [Promise<SendResult>] = []
            for i in 1...10 { promises.append(try pipeline.submit(caller: bob, conversationID: conversation, body: "m\(i)", clientMsgID: "\(i)")) }
            for (index, promise) in promises.enumerated() { #expect(try await promise.value.message.seq == Int64(index + 2)) }
            #expect(store.batches.map(\.count) == [1, 10])
        }
    }

    @Test("a failed transaction fails only its own batch; the next sends commit")
    func failedTransaction() async throws {
        try await withPipeline { pipeline, store, published in
            store.failNextCommit()
            await #expect(throws: FakeMessageStore.Failure.self) {
                try await pipeline.send(caller: alice, conversationID: conversation, body: "lost", clientMsgID: "a")
            }
            let sent = try await pipeline.send(caller: alice, conversationID: conversation, body: "kept", clientMsgID: "b")
            #expect(sent.message.seq == 1)
            await published.arrivals.first { _ in true }
            #expect(published.messages.map(\.body) == ["kept"], "nothing that failed to commit is published")
        }
    }

    @Test("bad input is refused before it is queued")
    func validation() async throws {
        try await withPipeline { pipeline, store, _ in
            #expect(throws: ParleyError.self) { try pipeline.submit(caller: alice, conversationID: conversation, body: "", clientMsgID: nil) }
            let tooLong = String(repeating: "x", count: Limits().maxMessageBytes + 1)
            #expect(throws: ParleyError.self) { try pipeline.submit(caller: alice, conversationID: conversation, body: tooLong, clientMsgID: nil) }
            #expect(store.batches.isEmpty)
        }
    }

    @Test("overload: past the queue limit sends are refused at once with overloaded; admitted ones still commit")
    func admission() async throws {
        try await withPipeline(configure: { $0.minQueueLimit = 4 }) { pipeline, store, _ in
            store.hold()
            let inFlight = try pipeline.submit(caller: alice, conversationID: conversation, body: "in flight", clientMsgID: "0")
            for await _ in store.started { break }
            var queued: [Promise<SendResult>] = []
            for i in 1...4 { queued.append(try pipeline.submit(caller: alice, conversationID: conversation, body: "q\(i)", clientMsgID: "\(i)")) }
            #expect(throws: ParleyError.overloaded) {
                try pipeline.submit(caller: alice, conversationID: conversation, body: "one too many", clientMsgID: "5")
            }
            #expect(ParleyError.overloaded.kind == .unavailable && ParleyError.overloaded.retryAfterSeconds == 1, "retryable, with a hint")
            store.release()
            #expect(try await inFlight.value.message.seq == 1)
            for (index, promise) in queued.enumerated() { #expect(try await promise.value.message.seq == Int64(index + 2)) }
            // Once the queue drained, sends are admitted again.
            #expect(try await pipeline.send(caller: alice, conversationID: conversation, body: "later", clientMsgID: "6").message.seq == 6)
        }
    }

    @Test("graceful shutdown: new sends get shutting_down, queued ones still commit and are acknowledged, then run() returns")
    func gracefulShutdown() async throws {
        let store = FakeMessageStore(members: [alice, bob])
        let pipeline = SendPipeline(store: store, bus: InProcessBus(), typing: TypingTracker(), limits: Limits(), logger: Logger(label: "test"))
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await pipeline.run() }
                store.hold()
                let first = try pipeline.submit(caller: alice, conversationID: conversation, body: "a", clientMsgID: "a")
                for await _ in store.started { break }
                let second = try pipeline.submit(caller: alice, conversationID: conversation, body: "b", clientMsgID: "b")
                trigger.triggerGracefulShutdown()
                #expect(throws: ParleyError.shuttingDown) {
                    try pipeline.submit(caller: alice, conversationID: conversation, body: "c", clientMsgID: "c")
                }
                store.release()
                try await group.next()  // run() returned
                #expect(try await first.value.message.seq == 1)
                #expect(try await second.value.message.body == "b")
            }
        }
    }
}
