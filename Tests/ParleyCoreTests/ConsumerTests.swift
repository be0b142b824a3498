import Foundation
import Logging
import ParleyTestSupport
import Synchronization
import Testing

@testable import ParleyCore

// MARK: - Fakes and helpers

/// Consumers log a warning per failure; the tests provoke failures on purpose.
private let silent: Logger = {
    var logger = Logger(label: "parley-test")
    logger.logLevel = .critical
    return logger
}()

/// An outbox in memory: where the webhooks consumer writes its dead letters.
private final class OutboxFake: OutboxStore {
    private struct State {
        var records: [OutboxRecord] = []
        var next: Int64 = 1
    }
    private let state = Mutex(State())

    var outboxNode: String? { "test-node" }
    var records: [OutboxRecord] { state.withLock { $0.records } }

    func appendEvents(_ events: [StreamEvent]) async throws {
        let envelopes = try events.map { try $0.envelope() }
        state.withLock { state in
            for (event, envelope) in zip(events, envelopes) {
                state.records.append(
                    OutboxRecord(position: state.next, eventID: event.id, topic: event.topic, key: event.key, type: event.type, envelope: envelope))
                state.next += 1
            }
        }
    }

    func pendingEvents(after position: Int64?, limit: Int) async throws -> [OutboxRecord] {
        state.withLock { Array($0.records.filter { $0.position > position ?? 0 }.prefix(limit)) }
    }

    func removeEvents(_ positions: [Int64]) async throws {
        let removed = Set(positions)
        state.withLock { $0.records.removeAll { removed.contains($0.position) } }
    }

    func outboxBacklog() async throws -> (count: Int, oldest: Date?) {
        let count = state.withLock { $0.records.count }
        return (count, count == 0 ? nil : .now)
    }

    func trimOutbox(keepingNewest limit: Int) async throws -> Int {
        state.withLock { state in
            let dropped = max(0, state.records.count - limit)
            state.records.removeFirst(dropped)
            return dropped
        }
    }
}

/// A webhook transport that records every request and answers as `script` says for the n-th
/// (1-based) request to that URL.
private final class ScriptedTransport: WebhookTransport {
    enum Reply: Sendable {
        case status(Int)
        /// No response at all: the transport throws, as AsyncHTTPClient does when the connection is refused.
        case refused
    }
    struct Refused: Error, CustomStringConvertible {
        var description: String { "connection refused" }
    }
    struct Request: Sendable {
        var url: URL
        var headers: [(String, String)]
        var body: [UInt8]
        var timeout: Duration

        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    private let script: @Sendable (URL, Int) -> Reply
    private let log = Mutex<[Request]>([])

    init(_ script: @escaping @Sendable (URL, Int) -> Reply) {
        self.script = script
    }

    var requests: [Request] { log.withLock { $0 } }
    func requests(to url: URL) -> [Request] { requests.filter { $0.url == url } }

    func post(_ url: URL, headers: [(String, String)], body: [UInt8], timeout: Duration) async throws -> Int {
        let attempt = log.withLock { log in
            log.append(Request(url: url, headers: headers, body: body, timeout: timeout))
            return log.filter { $0.url == url }.count
        }
        switch script(url, attempt) {
        case .status(let status): return status
        case .refused: throw Refused()
        }
    }
}

private func webhooks(_ endpoints: [WebhookEndpoint], maxAttempts: Int = 3, transport: ScriptedTransport, outbox: OutboxFake) -> WebhookConsumer {
    var configuration = WebhookConsumer.Configuration(endpoints: endpoints)
    configuration.maxAttempts = maxAttempts
    configuration.baseBackoff = .milliseconds(1)
    configuration.maxBackoff = .milliseconds(4)
    configuration.timeout = .seconds(2)
    return WebhookConsumer(configuration: configuration, transport: transport, deadLetters: outbox, logger: silent)
}

/// A `message.created` event as a store writes it.
private func messageEvent(_ body: String = "hello", conversationID: UUID = .v7(), seq: Int64 = 7) throws -> StreamEvent {
    let request = SendRequest(conversationID: conversationID, senderID: .v7(), clientMsgID: nil, body: body)
    return try StreamEvent.messageCreated(request.message(seq: seq), node: "node-a")
}

private func record(_ event: StreamEvent, position: Int64) throws -> OutboxRecord {
    OutboxRecord(position: position, eventID: event.id, topic: event.topic, key: event.key, type: event.type, envelope: try event.envelope())
}

private func consumed(_ record: OutboxRecord) -> ConsumedEvent {
    ConsumedEvent(topic: record.topic, key: record.key, type: record.type, envelope: record.envelope, partition: StreamEvent.shard(of: record.key))
}

private func consumed(_ event: StreamEvent) throws -> ConsumedEvent {
    consumed(try record(event, position: 1))
}

/// A file's permission bits (Foundation reports them as NSNumber on Darwin, as an integer elsewhere).
private func permissions(ofFile path: String) throws -> Int? {
    let value = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]
    if let number = value as? NSNumber { return number.intValue & 0o777 }
    if let number = value as? Int { return number & 0o777 }
    if let number = value as? UInt { return Int(number) & 0o777 }
    if let number = value as? UInt16 { return Int(number) & 0o777 }
    return nil
}

private func json(_ bytes: [UInt8]) -> JSONValue? { JSONValue.parse(Data(bytes)) }

/// Whether a `Parley-Signature` header is the signature of `body` under `secret`, made within the last minute.
private func signatureVerifies(_ header: String?, body: [UInt8], secret: String) -> Bool {
    guard let header, header.hasPrefix("t="), let comma = header.firstIndex(of: ","),
        let timestamp = Int(header[header.index(header.startIndex, offsetBy: 2)..<comma])
    else { return false }
    let age = Int(Date.now.timeIntervalSince1970) - timestamp
    return (0...60).contains(age) && header == WebhookEndpoint.signature(body: body, secret: secret, timestamp: timestamp)
}

// MARK: - Webhook endpoints

@Suite("Webhook endpoints")
struct WebhookEndpointTests {
    @Test("Parley-Signature is t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">, as a receiver computes it")
    func signatureMatchesReferenceHMAC() {
        // Expected values from Python: hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest()
        let body = Array(#"{"id":"e1","type":"message.created"}"#.utf8)
        #expect(
            WebhookEndpoint.signature(body: body, secret: "whsec_test", timestamp: 1_700_000_000)
                == "t=1700000000,v1=86458c17b94e5d24124982d8ebf3a2fc4a7e27b4bdef9d3aa958e064e346197d")
        #expect(
            WebhookEndpoint.signature(body: [], secret: "s\u{E9}cret", timestamp: 1_700_000_000)
                == "t=1700000000,v1=39f07a424c93b9c87e16bf40534f7f97a77edfb8c0ec78d21b7ff4d562d0a1aa",
            "a non-ASCII secret is keyed by its UTF-8 bytes")
    }

    @Test("PARLEY_WEBHOOKS: a JSON array of endpoints, with their event filters and concurrency (4 unless given)")
    func parsesValidSetting() throws {
        let endpoints = try WebhookEndpoint.parse(
            #"""
            [{"url": "https://hooks.example.com/parley", "secret": "s1", "events": ["message.*", "member.added"], "concurrency": 2},
             {"url": "http://localhost:8080/hook", "secret": "s2"}]
            """#)
        #expect(
            endpoints == [
                WebhookEndpoint(
                    url: URL(string: "https://hooks.example.com/parley")!, secret: "s1", events: ["message.*", "member.added"], concurrency: 2),
                WebhookEndpoint(url: URL(string: "http://localhost:8080/hook")!, secret: "s2", events: [], concurrency: 4),
            ])
        #expect(try WebhookEndpoint.parse("[]").isEmpty)
    }

    @Test("a bad PARLEY_WEBHOOKS is a start-up error that names the setting (and the entry at fault), never the secret")
    func rejectsBadSetting() {
        let cases: [(text: String, names: String)] = [
            (#"[{"url": "https://a.example/h", "secret": "hunter2"}, {"url": "ftp://b.example/h", "secret": "hunter2"}]"#, "PARLEY_WEBHOOKS[1].url"),
            (#"[{"url": "hooks.example.com/h", "secret": "hunter2"}]"#, "PARLEY_WEBHOOKS[0].url"),
            (#"[{"url": "https://", "secret": "hunter2"}]"#, "PARLEY_WEBHOOKS[0].url"),
            (#"[{"url": "https://a.example/h", "secret": ""}]"#, "PARLEY_WEBHOOKS[0].secret"),
            (#"[{"url": "https://a.example/h"}]"#, "PARLEY_WEBHOOKS"),
            (#"[{"url": "https://a.example/h", "secret": "hunter2", "concurrency": 0}]"#, "PARLEY_WEBHOOKS[0].concurrency"),
            (#"[{"url": "https://a.example/h", "secret": "hunter2", "concurrency": 65}]"#, "PARLEY_WEBHOOKS[0].concurrency"),
            (#"{"url": "https://a.example/h", "secret": "hunter2"}"#, "PARLEY_WEBHOOKS"),
            ("https://a.example/h", "PARLEY_WEBHOOKS"),
        ]
        for (text, names) in cases {
            let error = #expect(throws: ParleyError.self, "\(text)") { try WebhookEndpoint.parse(text) }
            #expect(error?.message.contains(names) == true, "\(text) → \(error?.message ?? "no error")")
            #expect(error?.message.contains("hunter2") == false, "the secret stays out of the message")
        }
        let renamed = #expect(throws: ParleyError.self) { try WebhookEndpoint.parse(#"[{"url": "ftp://x", "secret": "s"}]"#, setting: "HOOKS") }
        #expect(renamed?.message.contains("HOOKS[0].url") == true)
    }

    @Test("an endpoint's name, as logs and dead letters show it, drops user info, query and fragment")
    func nameHidesCredentials() {
        let endpoint = { (url: String) in WebhookEndpoint(url: URL(string: url)!, secret: "s") }
        #expect(endpoint("https://u:p@h/x?token=1").name == "https://h/x")
        #expect(endpoint("https://hooks.example.com:8443/in?key=abc#frag").name == "https://hooks.example.com:8443/in")
        #expect(endpoint("http://localhost/hook").name == "http://localhost/hook")
    }

    @Test("event filters: none means every type; `family.*` matches that family only; anything else matches exactly")
    func eventFilters() {
        let endpoint = { (events: [String]) in WebhookEndpoint(url: URL(string: "https://h/x")!, secret: "s", events: events) }
        let everything = endpoint([])
        #expect(everything.wants("message.created") && everything.wants("presence.online") && everything.wants("webhook.failed"))
        #expect(endpoint(["*"]).wants("receipt.read"))

        let messages = endpoint(["message.*"])
        #expect(messages.wants("message.created"))
        #expect(messages.wants("message.deleted"))
        #expect(!messages.wants("messages.x"))
        #expect(!messages.wants("message"))
        #expect(!messages.wants("member.added"))

        let exact = endpoint(["member.added", "receipt.read"])
        #expect(exact.wants("member.added") && exact.wants("receipt.read"))
        #expect(!exact.wants("member.removed"))
        #expect(!exact.wants("member.added.extra"))
        #expect(!exact.wants("receipt.delivered"))
    }
}

// MARK: - Webhook consumer

@Suite("Webhook consumer")
struct WebhookConsumerTests {
    let hook = URL(string: "https://hooks.example.com/parley?token=abc")!

    @Test("an endpoint that fails twice (HTTP 500, then no answer) gets the event on the third attempt; nothing is dead-lettered")
    func retriesUntilDelivered() async throws {
        let transport = ScriptedTransport { _, attempt in
            switch attempt {
            case 1: .status(500)
            case 2: .refused
            default: .status(200)
            }
        }
        let outbox = OutboxFake()
        let consumer = webhooks([WebhookEndpoint(url: hook, secret: "whsec_1")], maxAttempts: 5, transport: transport, outbox: outbox)
        let event = try consumed(try messageEvent("hi there"))
        let envelope = event.envelope

        try await consumer.handle(event)

        let requests = transport.requests
        #expect(requests.count == 3, "two failures, then the delivery; no attempt after it")
        #expect(outbox.records.isEmpty, "a delivered event is not dead-lettered")
        for request in requests {
            #expect(request.url == hook)
            #expect(request.body == envelope, "the body is the envelope, unchanged")
            #expect(request.header("Content-Type") == "application/json")
            #expect(request.header("Parley-Event-Type") == "message.created")
            #expect(signatureVerifies(request.header("Parley-Signature"), body: request.body, secret: "whsec_1"))
            #expect(request.timeout == .seconds(2))
        }
    }

    @Test("an endpoint that always fails gets exactly maxAttempts tries; then the event goes to the dead-letter topic with the last error")
    func deadLettersAfterMaxAttempts() async throws {
        let transport = ScriptedTransport { _, _ in .status(500) }
        let outbox = OutboxFake()
        let endpoint = WebhookEndpoint(url: hook, secret: "whsec_1")
        let consumer = webhooks([endpoint], maxAttempts: 3, transport: transport, outbox: outbox)
        let conversation = UUID.v7()
        let event = try messageEvent("lost", conversationID: conversation, seq: 42)

        try await consumer.handle(try consumed(event))

        #expect(transport.requests.count == 3)
        let deadLetters = outbox.records
        try #require(deadLetters.count == 1)
        let deadLetter = deadLetters[0]
        #expect(deadLetter.topic == .deadletter)
        #expect(deadLetter.type == "webhook.failed")
        #expect(deadLetter.key == event.key, "keyed like the original")
        let envelope = try #require(json(deadLetter.envelope))
        #expect(envelope["type"].string == "webhook.failed")
        #expect(envelope["conversationId"].string == conversation.lowercased)
        #expect(envelope["seq"].int == 42)
        #expect(envelope["node"].string == "test-node")
        let data = envelope["data"]
        #expect(data["endpoint"].string == "https://hooks.example.com/parley", "named without its token")
        #expect(data["attempts"].int == 3)
        #expect(data["lastError"].string == "HTTP 500")
        let original = try #require(json(try event.envelope()))
        #expect(data["event"] == original, "the original envelope, whole")
        #expect(!String(decoding: deadLetter.envelope, as: UTF8.self).contains("whsec_1"), "no secret in the dead letter")
    }

    @Test("one endpoint failing for good does not cost another endpoint its delivery, nor give it extra requests")
    func endpointsAreIndependent() async throws {
        let broken = URL(string: "https://broken.example/hook")!
        let fine = URL(string: "https://fine.example/hook")!
        let transport = ScriptedTransport { url, _ in url == broken ? .refused : .status(204) }
        let outbox = OutboxFake()
        let consumer = webhooks(
            [WebhookEndpoint(url: broken, secret: "a"), WebhookEndpoint(url: fine, secret: "b")], maxAttempts: 3, transport: transport,
            outbox: outbox)

        try await consumer.handle(try consumed(try messageEvent()))

        #expect(transport.requests(to: fine).count == 1)
        #expect(transport.requests(to: broken).count == 3)
        let delivered = try #require(transport.requests(to: fine).first)
        #expect(signatureVerifies(delivered.header("Parley-Signature"), body: delivered.body, secret: "b"))
        let deadLetters = outbox.records
        try #require(deadLetters.count == 1, "only the broken endpoint's delivery is dead-lettered")
        let data = try #require(json(deadLetters[0].envelope))["data"]
        #expect(data["endpoint"].string == "https://broken.example/hook")
        #expect(data["lastError"].string == "connection refused")
    }

    @Test("an endpoint gets only the event types it asked for")
    func filtersByEventType() async throws {
        let messagesOnly = URL(string: "https://messages.example/hook")!
        let deletions = URL(string: "https://deletions.example/hook")!
        let transport = ScriptedTransport { _, _ in .status(200) }
        let outbox = OutboxFake()
        let consumer = webhooks(
            [
                WebhookEndpoint(url: messagesOnly, secret: "a", events: ["message.*"]),
                WebhookEndpoint(url: deletions, secret: "b", events: ["conversation.deleted"]),
            ], transport: transport, outbox: outbox)

        try await consumer.handle(try consumed(StreamEvent.conversationDeleted(.v7(), at: .now, node: "node-a")))
        #expect(transport.requests(to: messagesOnly).isEmpty, "conversation.deleted is not a message.* event")
        #expect(transport.requests(to: deletions).count == 1)

        try await consumer.handle(try consumed(try messageEvent()))
        #expect(transport.requests(to: messagesOnly).count == 1)
        #expect(transport.requests(to: deletions).count == 1, "message.created is not conversation.deleted")
        #expect(transport.requests(to: deletions).first?.header("Parley-Event-Type") == "conversation.deleted")
        #expect(transport.requests(to: messagesOnly).first?.header("Parley-Event-Type") == "message.created")
        #expect(outbox.records.isEmpty)
    }
}

// MARK: - Async semaphore

/// Bodies that hold their permit until the test lets them go, counting how many are inside at once.
private final class Gates: Sendable {
    private struct State {
        var inside = 0
        var maxInside = 0
        var finished = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    /// One element per body that got in (and is now waiting at its gate).
    let entered: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() { (entered, continuation) = AsyncStream.makeStream(of: Void.self) }

    var inside: Int { state.withLock { $0.inside } }
    var maxInside: Int { state.withLock { $0.maxInside } }
    var finished: Int { state.withLock { $0.finished } }

    func body() async {
        await withCheckedContinuation { (gate: CheckedContinuation<Void, Never>) in
            state.withLock { state in
                state.inside += 1
                state.maxInside = max(state.maxInside, state.inside)
                state.waiting.append(gate)
            }
            continuation.yield()
        }
        state.withLock { state in
            state.inside -= 1
            state.finished += 1
        }
    }

    func releaseOne() {
        let gate = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.waiting.isEmpty ? nil : state.waiting.removeFirst()
        }
        gate?.resume()
    }

    func releaseAll() {
        let gates = state.withLock { state in
            defer { state.waiting = [] }
            return state.waiting
        }
        for gate in gates { gate.resume() }
    }
}

@Suite("Async semaphore")
struct AsyncSemaphoreTests {
    @Test("with 2 permits, at most 2 of 10 concurrent bodies run at once; each release lets exactly one more in", .timeLimit(.minutes(1)))
    func boundsConcurrency() async throws {
        let semaphore = AsyncSemaphore(permits: 2)
        let gates = Gates()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<10 {
                group.addTask { try await semaphore.withPermit { await gates.body() } }
            }
            var entered = gates.entered.makeAsyncIterator()
            _ = await entered.next()
            _ = await entered.next()
            #expect(gates.inside == 2, "two bodies run at once")
            for _ in 2..<10 {
                gates.releaseOne()
                _ = await entered.next()
                #expect(gates.inside <= 2)
            }
            gates.releaseAll()
            try await group.waitForAll()
        }
        #expect(gates.maxInside == 2)
        #expect(gates.finished == 10)
    }
}

// MARK: - In-process event stream

/// A consumer that records what it handled and fails the first `failures` attempts at the event
/// whose envelope is `failing`.
private final class RecordingConsumer: EventConsumer {
    struct Unavailable: Error {}
    private struct State {
        var handled: [ConsumedEvent] = []
        var attempts: [String: Int] = [:]
    }
    let name: String
    let topics: [StreamTopic]
    private let failing: String?
    private let failures: Int
    private let state = Mutex(State())

    init(name: String, topics: [StreamTopic], failing: String? = nil, failures: Int = 0) {
        self.name = name
        self.topics = topics
        self.failing = failing
        self.failures = failures
    }

    var handled: [ConsumedEvent] { state.withLock { $0.handled } }
    func handled(key: String) -> [String] { handled.filter { $0.key == key }.map { String(decoding: $0.envelope, as: UTF8.self) } }
    func attempts(_ label: String) -> Int { state.withLock { $0.attempts[label] ?? 0 } }

    func handle(_ event: ConsumedEvent) async throws {
        let label = String(decoding: event.envelope, as: UTF8.self)
        let fail = state.withLock { state in
            state.attempts[label, default: 0] += 1
            if label == failing, state.attempts[label]! <= failures { return true }
            state.handled.append(event)
            return false
        }
        if fail { throw Unavailable() }
    }
}

@Suite("In-process event stream")
struct InProcessEventStreamTests {
    private func labelled(_ label: String, position: Int64, topic: StreamTopic = .messages, key: String) -> OutboxRecord {
        OutboxRecord(position: position, eventID: .v7(), topic: topic, key: key, type: "test.event", envelope: Array(label.utf8))
    }

    @Test("publish returns once every consumer handled every event of its topics; per key in outbox order, a failing event retried in place")
    func handsBatchToConsumers() async throws {
        let messages = RecordingConsumer(name: "messages", topics: [.messages], failing: "c1-1", failures: 2)
        let presence = RecordingConsumer(name: "presence", topics: [.presence])
        let stream = InProcessEventStream(
            consumers: [messages, presence], deadLetterPath: nil, minBackoff: .milliseconds(1), maxBackoff: .milliseconds(4), logger: silent)
        let batch = [
            labelled("c1-1", position: 1, key: "c1"),
            labelled("c2-1", position: 2, key: "c2"),
            labelled("u1-online", position: 3, topic: .presence, key: "u1"),
            labelled("c1-2", position: 4, key: "c1"),
            labelled("c2-2", position: 5, key: "c2"),
            labelled("c1-3", position: 6, key: "c1"),
            labelled("c2-3", position: 7, key: "c2"),
        ]

        try await stream.publish(batch)

        #expect(messages.handled.count == 6, "all handled before publish returned")
        #expect(messages.handled(key: "c1") == ["c1-1", "c1-2", "c1-3"], "the failing event held back its key's later events")
        #expect(messages.handled(key: "c2") == ["c2-1", "c2-2", "c2-3"])
        #expect(messages.attempts("c1-1") == 3, "two failures, then handled")
        #expect(messages.attempts("c1-2") == 1)
        #expect(messages.handled.allSatisfy { $0.topic == .messages }, "no presence events for a messages consumer")
        #expect(presence.handled.map(\.key) == ["u1"], "only its own topic")
        #expect(messages.handled.allSatisfy { $0.partition == StreamEvent.shard(of: $0.key) && $0.type == "test.event" })
    }

    @Test("without Kafka, a webhook's dead letter goes to the dead-letter file as a JSON line on the next batch, appended, not posted")
    func deadLettersGoToFile() async throws {
        let directory = try TemporaryDirectory(prefix: "parley-deadletters")
        defer { directory.remove() }
        let path = directory.file("deadletters.jsonl")
        let transport = ScriptedTransport { _, _ in .status(503) }
        let outbox = OutboxFake()
        let consumer = webhooks(
            [WebhookEndpoint(url: URL(string: "https://down.example/hook")!, secret: "s")], maxAttempts: 2, transport: transport, outbox: outbox)
        let stream = InProcessEventStream(
            consumers: [consumer], deadLetterPath: path, minBackoff: .milliseconds(1), maxBackoff: .milliseconds(4), logger: silent)
        let first = try messageEvent("one")
        let second = try messageEvent("two")

        try await stream.publish([try record(first, position: 1), try record(second, position: 2)])
        #expect(!FileManager.default.fileExists(atPath: path), "nothing dead-lettered reaches the file before the relay hands it over")
        let deadLetters = try await outbox.pendingEvents(limit: 10)
        try #require(deadLetters.count == 2)
        #expect(deadLetters.allSatisfy { $0.topic == .deadletter })

        try await stream.publish(deadLetters)
        #expect(transport.requests.count == 4, "2 attempts per event; dead letters themselves are not posted")
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        try #require(lines.count == 2)
        let parsed = lines.map { JSONValue.parse(Data($0.utf8)) }
        #expect(parsed.allSatisfy { $0?["type"].string == "webhook.failed" })
        #expect(Set(parsed.compactMap { $0?["data"]["event"]["id"].string }) == [first.id.lowercased, second.id.lowercased])
        #expect(parsed.allSatisfy { $0?["data"]["lastError"].string == "HTTP 503" })
        #expect(try permissions(ofFile: path) == 0o600, "dead letters carry message bodies: owner-only")

        try await stream.publish([deadLetters[0]])
        let after = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(after.count == 3, "appended to, not overwritten")
        #expect(Array(after.prefix(2)) == lines)
    }
}

// MARK: - Notify consumer

@Suite("Notify consumer")
struct NotifyConsumerTests {
    private func makeUser(_ store: any ChatStore, _ name: String) async throws -> User {
        try await store.createUser(
            NewUser(username: name, email: "\(name)@example.com", displayName: name.capitalized, passwordHash: "hash-\(name)"))
    }

    /// Reads and removes everything pending in the store's outbox, as a relay would.
    private func drain(_ store: any ChatStore) async throws -> [OutboxRecord] {
        var drained: [OutboxRecord] = []
        while case let records = try await store.pendingEvents(limit: 1000), !records.isEmpty {
            drained += records
            try await store.removeEvents(records.map(\.position))
        }
        return drained
    }

    @Test("a new message asks for a push to each recipient with no open socket: not the sender, not those online; ids are stable across redelivery")
    func requestsPushForOfflineRecipients() async throws {
        try await StoreFactory.sqlite.with { store in
            let alice = try await makeUser(store, "alice")
            let bob = try await makeUser(store, "bob")
            let carol = try await makeUser(store, "carol")
            let group = try await store.createGroup(
                id: .v7(), name: "Team", ownerID: alice.id, memberIDs: [bob.id, carol.id], passcodeHash: nil, now: .now)
            let setUp = try await drain(store)
            let sent = try await store.send(SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: nil, body: "lunch at noon?"))
            let sentEvents = try await drain(store)
            let created = try #require(sentEvents.first { $0.type == "message.created" })

            let presence = InMemoryPresenceRegistry()
            _ = try await presence.connect(userID: bob.id, connectionID: UUID(), now: .now)
            let notify = NotifyConsumer(store: store, presence: presence, logger: silent)

            for other in setUp {
                try await notify.handle(consumed(other))
            }
            #expect(try await drain(store).isEmpty, "events other than message.created ask for nothing")

            try await notify.handle(consumed(created))
            let requested = try await drain(store)
            try #require(requested.count == 1, "carol only: alice sent it, bob is online")
            let request = requested[0]
            #expect(request.type == "notification.requested")
            #expect(request.topic == .notifications)
            #expect(request.key == carol.id.lowercased, "keyed by the recipient")
            #expect(request.eventID != created.eventID)
            let envelope = try #require(json(request.envelope))
            #expect(envelope["id"].string == request.eventID.lowercased)
            #expect(envelope["type"].string == "notification.requested")
            #expect(envelope["node"].string == "node-a")
            #expect(envelope["conversationId"].string == group.id.lowercased)
            #expect(envelope["seq"].int == Int(sent.message.seq))
            let data = envelope["data"]
            #expect(data["userId"].string == carol.id.lowercased)
            #expect(data["conversationId"].string == group.id.lowercased)
            #expect(data["messageId"].string == sent.message.id.lowercased)
            #expect(data["seq"].int == Int(sent.message.seq))
            #expect(data["sender"]["id"].string == alice.id.lowercased)
            #expect(data["sender"]["username"].string == "alice")
            #expect(data["sender"]["displayName"].string == "Alice")
            #expect(data["preview"].string == "lunch at noon?")

            try await notify.handle(consumed(created))
            let again = try await drain(store)
            #expect(again.map(\.eventID) == [request.eventID], "a redelivered message event yields the same notification id")
        }
    }

    @Test("previews are cut to previewLength, or null when off; everyone offline gets one request each, with distinct ids")
    func previewsAndEveryoneOffline() async throws {
        try await StoreFactory.sqlite.with { store in
            let alice = try await makeUser(store, "alice")
            let bob = try await makeUser(store, "bob")
            let carol = try await makeUser(store, "carol")
            let group = try await store.createGroup(
                id: .v7(), name: "Team", ownerID: alice.id, memberIDs: [bob.id, carol.id], passcodeHash: nil, now: .now)
            _ = try await drain(store)
            _ = try await store.send(SendRequest(conversationID: group.id, senderID: alice.id, clientMsgID: nil, body: "lunch at noon?"))
            let sentEvents = try await drain(store)
            let created = try #require(sentEvents.first { $0.type == "message.created" })
            let nobodyOnline = InMemoryPresenceRegistry()

            try await NotifyConsumer(store: store, presence: nobodyOnline, previewLength: 5, logger: silent).handle(consumed(created))
            let cut = try await drain(store)
            #expect(Set(cut.map(\.key)) == [bob.id.lowercased, carol.id.lowercased])
            #expect(Set(cut.map(\.eventID)).count == 2)
            #expect(cut.allSatisfy { json($0.envelope)?["data"]["preview"].string == "lunch" })

            try await NotifyConsumer(store: store, presence: nobodyOnline, previewLength: 0, logger: silent).handle(consumed(created))
            let off = try await drain(store)
            #expect(off.count == 2)
            #expect(
                off.allSatisfy { json($0.envelope)?["data"].keys.contains("preview") == true && json($0.envelope)?["data"]["preview"].isNull == true }
            )

            _ = try await nobodyOnline.connect(userID: bob.id, connectionID: UUID(), now: .now)
            _ = try await nobodyOnline.connect(userID: carol.id, connectionID: UUID(), now: .now)
            try await NotifyConsumer(store: store, presence: nobodyOnline, logger: silent).handle(consumed(created))
            #expect(try await drain(store).isEmpty, "nothing to push when every recipient is online")
        }
    }
}
