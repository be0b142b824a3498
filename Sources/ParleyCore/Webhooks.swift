import Crypto
import Foundation
import Logging
import Metrics
import Synchronization

/// One webhook endpoint: where events go, the secret they are signed with, and which event types it
/// wants (`PARLEY_WEBHOOKS`).
public struct WebhookEndpoint: Sendable, Equatable {
    public var url: URL
    public var secret: String
    /// Event types it receives: exact (`message.created`) or a family (`message.*`); empty means every type.
    public var events: [String]
    /// Requests in flight to it at once, across partitions.
    public var concurrency: Int

    public init(url: URL, secret: String, events: [String] = [], concurrency: Int = 4) {
        self.url = url
        self.secret = secret
        self.events = events
        self.concurrency = concurrency
    }

    /// The URL as logs and dead letters show it: no user info, query or fragment (they may hold tokens).
    public var name: String {
        guard var components = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return "webhook" }
        components.user = nil
        components.password = nil
        components.query = nil
        components.fragment = nil
        return components.string ?? "webhook"
    }

    public func wants(_ type: String) -> Bool {
        events.isEmpty
            || events.contains { pattern in
                pattern == "*" || pattern == type || (pattern.hasSuffix(".*") && type.hasPrefix(pattern.dropLast()))
            }
    }

    /// Parses `PARLEY_WEBHOOKS`: a JSON array of `{"url", "secret", "events"?, "concurrency"?}`.
    /// Anything else, or a URL that is not http(s), is an error naming the setting.
    public static func parse(_ text: String, setting: String = "PARLEY_WEBHOOKS") throws -> [WebhookEndpoint] {
        struct Entry: Decodable {
            var url: String
            var secret: String
            var events: [String]?
            var concurrency: Int?
        }
        let entries: [Entry]
        do {
            entries = try JSONDecoder().decode([Entry].self, from: Data(text.utf8))
        } catch {
            throw ParleyError.invalid(#"\#(setting) must be a JSON array of {"url": "https://…", "secret": "…", "events": ["message.*"]}"#)
        }
        return try entries.enumerated().map { index, entry in
            guard let url = URL(string: entry.url), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
                url.host?.isEmpty == false
            else {
                throw ParleyError.invalid("\(setting)[\(index)].url must be an http:// or https:// URL")
            }
            guard !entry.secret.isEmpty else { throw ParleyError.invalid("\(setting)[\(index)].secret must not be empty") }
            let concurrency = entry.concurrency ?? 4
            guard (1...64).contains(concurrency) else { throw ParleyError.invalid("\(setting)[\(index)].concurrency must be 1…64") }
            return WebhookEndpoint(url: url, secret: entry.secret, events: entry.events ?? [], concurrency: concurrency)
        }
    }

    /// `Parley-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the secret>`.
    public static func signature(body: [UInt8], secret: String, timestamp: Int) -> String {
        var signed = Array("\(timestamp).".utf8)
        signed += body
        let mac = HMAC<SHA256>.authenticationCode(for: signed, using: SymmetricKey(data: Array(secret.utf8)))
        return "t=\(timestamp),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }
}

/// How webhook requests leave the node (AsyncHTTPClient in the server).
public protocol WebhookTransport: Sendable {
    /// POSTs `body` and returns the response status; throws when no response came (connection
    /// refused, timeout).
    func post(_ url: URL, headers: [(String, String)], body: [UInt8], timeout: Duration) async throws -> Int
}

/// The `webhooks` consumer: POSTs every event an endpoint wants to it, signed, with the envelope as
/// the body. A failing endpoint (no 2xx, no answer in time) is retried with jittered exponential
/// backoff while the event's partition waits; after `maxAttempts` the event goes to the
/// dead-letter topic with the last error, and the partition moves on. One endpoint failing does
/// not hold up another's deliveries of the same event: each endpoint's attempts run on their own.
public struct WebhookConsumer: EventConsumer {
    public struct Configuration: Sendable {
        public var endpoints: [WebhookEndpoint]
        /// Attempts per event and endpoint before it is dead-lettered.
        public var maxAttempts = 8
        /// The wait after the first failure; it doubles per attempt up to `maxBackoff`, each wait
        /// drawn at random from its upper half.
        public var baseBackoff: Duration = .seconds(1)
        public var maxBackoff: Duration = .seconds(60)
        /// How long one request may take.
        public var timeout: Duration = .seconds(10)

        public init(endpoints: [WebhookEndpoint]) {
            self.endpoints = endpoints
        }
    }

    public let name = "webhooks"
    public let topics: [StreamTopic] = [.messages, .conversations, .receipts, .presence, .notifications]

    private let configuration: Configuration
    private let transport: any WebhookTransport
    /// Where dead letters are written: the outbox, which relays them to `parley.deadletter`.
    private let deadLetters: any OutboxStore
    private let slots: [AsyncSemaphore]
    private let logger: Logger
    private let delivered = Counter(label: "parley_webhook_deliveries_total", dimensions: [("outcome", "delivered")])
    private let failedAttempts = Counter(label: "parley_webhook_deliveries_total", dimensions: [("outcome", "failed_attempt")])
    private let deadLettered = Counter(label: "parley_webhook_deliveries_total", dimensions: [("outcome", "dead_lettered")])

    public init(configuration: Configuration, transport: any WebhookTransport, deadLetters: any OutboxStore, logger: Logger) {
        self.configuration = configuration
        self.transport = transport
        self.deadLetters = deadLetters
        self.slots = configuration.endpoints.map { AsyncSemaphore(permits: $0.concurrency) }
        self.logger = logger
    }

    public func handle(_ event: ConsumedEvent) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, endpoint) in configuration.endpoints.enumerated() where endpoint.wants(event.type) {
                group.addTask { try await deliver(event, to: endpoint, slot: slots[index]) }
            }
            try await group.waitForAll()
        }
    }

    private func deliver(_ event: ConsumedEvent, to endpoint: WebhookEndpoint, slot: AsyncSemaphore) async throws {
        var lastError = ""
        let attempts = max(1, configuration.maxAttempts)
        for attempt in 1...attempts {
            if attempt > 1 { try await Task.sleep(for: backoff(attempt: attempt - 1)) }
            do {
                let status = try await slot.withPermit { try await post(event, to: endpoint) }
                if (200..<300).contains(status) {
                    delivered.increment()
                    return
                }
                lastError = "HTTP \(status)"
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                lastError = "\(error)"
            }
            failedAttempts.increment()
            logger.debug(
                "webhook delivery failed",
                metadata: ["parley.endpoint": "\(endpoint.name)", "parley.attempt": "\(attempt)", "parley.error": "\(lastError)"])
        }
        logger.warning(
            "webhook delivery gave up; the event goes to the dead-letter topic",
            metadata: ["parley.endpoint": "\(endpoint.name)", "parley.event_type": "\(event.type)", "parley.error": "\(lastError)"])
        // Retried here rather than by the runner, which would deliver the event to every endpoint again.
        var backoff = configuration.baseBackoff
        while true {
            do {
                try await deadLetter(event, endpoint: endpoint, attempts: attempts, error: lastError)
                break
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.warning("could not write a dead letter; retrying", metadata: ["parley.error": "\(error)"])
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maxBackoff)
            }
        }
        deadLettered.increment()
    }

    private func post(_ event: ConsumedEvent, to endpoint: WebhookEndpoint) async throws -> Int {
        let timestamp = Int(Date.now.timeIntervalSince1970)
        return try await transport.post(
            endpoint.url,
            headers: [
                ("Content-Type", "application/json"),
                ("Parley-Signature", WebhookEndpoint.signature(body: event.envelope, secret: endpoint.secret, timestamp: timestamp)),
                ("Parley-Event-Type", event.type),
            ], body: event.envelope, timeout: configuration.timeout)
    }

    /// The wait before retry `n` (1-based): `base · 2^(n-1)` capped at `maxBackoff`, drawn from its upper half.
    func backoff(attempt: Int) -> Duration {
        let ceiling = min(configuration.baseBackoff * (1 << min(attempt - 1, 20)), configuration.maxBackoff)
        return ceiling / 2 + ceiling / 2 * Double.random(in: 0...1)
    }

    /// `webhook.failed` in the dead-letter topic: `{"endpoint", "attempts", "lastError", "event"}`
    /// with the original envelope as `event`, keyed like the original.
    private func deadLetter(_ event: ConsumedEvent, endpoint: WebhookEndpoint, attempts: Int, error: String) async throws {
        struct Head: Decodable {
            var conversationId: UUID?
            var seq: Int64?
        }
        let head = try? JSONDecoder().decode(Head.self, from: Data(event.envelope))
        struct Data_: Encodable {
            var endpoint: String
            var attempts: Int
            var lastError: String
        }
        var data = Array(try WireJSON.encoder.encode(Data_(endpoint: endpoint.name, attempts: attempts, lastError: error)))
        data.removeLast()
        data += Array(#","event":"#.utf8) + event.envelope + [UInt8(ascii: "}")]
        try await deadLetters.appendEvents([
            StreamEvent(
                type: "webhook.failed", occurredAt: Date.now.truncatedToMillis, conversationID: head?.conversationId, seq: head?.seq,
                node: deadLetters.outboxNode ?? "", topic: .deadletter, key: event.key, data: data)
        ])
    }
}

/// A counting semaphore for tasks: at most `permits` bodies run at once; the rest wait in order.
final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: [(id: UUID, continuation: CheckedContinuation<Void, any Error>)] = []
    }
    private let state: Mutex<State>

    init(permits: Int) {
        state = Mutex(State(available: permits))
    }

    func withPermit<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async throws {
        let id = UUID()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let granted = state.withLock { state -> Bool? in
                    if Task.isCancelled { return false }
                    if state.available > 0 {
                        state.available -= 1
                        return true
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                switch granted {
                case true: continuation.resume()
                case false: continuation.resume(throwing: CancellationError())
                case nil: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume()
    }
}
