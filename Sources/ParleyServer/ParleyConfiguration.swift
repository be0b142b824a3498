import Foundation
import Logging
import ParleyBlobs
import ParleyCore
import ParleyKafka

/// Everything a node needs to start, read once at launch (defaults ← `PARLEY_*` environment ← flags).
/// Defaults are safe for a laptop; no secret has a default.
public struct ParleyConfiguration: Sendable {
    public enum LogFormat: String, Sendable, CaseIterable {
        case text
        case json
    }

    public struct RateLimits: Sendable {
        /// Login and register, per client IP.
        public var auth = RateLimitPolicy(name: "auth", burst: 10, perSecond: 0.2)
        /// Every authenticated API call, per user.
        public var api = RateLimitPolicy(name: "api", burst: 200, perSecond: 50)
        /// Message sends, per user.
        public var send = RateLimitPolicy(name: "send", burst: 100, perSecond: 30)
        /// File uploads, per user (`PARLEY_UPLOADS_PER_MINUTE`).
        public var upload = RateLimitPolicy(name: "upload", burst: 20, perSecond: 1)
        /// Every request, per client IP.
        public var ip = RateLimitPolicy(name: "ip", burst: 500, perSecond: 200)
        /// Inbound WebSocket frames per socket (a local token bucket). Far past it, the socket is closed.
        public var webSocketFrames = RateLimitPolicy(name: "ws_frames", burst: 400, perSecond: 200)

        public init() {}

        /// Limits high enough to never trigger; for load tests and test suites.
        public static var unlimited: RateLimits {
            var limits = RateLimits()
            for keyPath in [\RateLimits.auth, \.api, \.send, \.upload, \.ip, \.webSocketFrames] {
                limits[keyPath: keyPath].burst = 1_000_000
                limits[keyPath: keyPath].perSecond = 1_000_000
            }
            return limits
        }
    }

    /// The WebSocket gateway.
    public struct Gateway: Sendable {
        /// Largest inbound frame / message in bytes; larger ones close the socket with 1009.
        public var maxFrameBytes = 64 * 1024
        /// Frames waiting to be written to one socket; a reader this far behind is disconnected (4008).
        public var outboundQueueLimit = 1024
        /// Time allowed for the first `auth` frame when the upgrade carried no credentials.
        public var authTimeoutSeconds = 5.0
        /// Slow clients on HTTP (`RequestTimeoutHandler`): a new connection's first request head must
        /// be complete within `requestHeadTimeoutSeconds`; a request body may pause at most
        /// `requestBodyTimeoutSeconds` between reads; an idle keep-alive connection is closed after
        /// `keepAliveTimeoutSeconds`.
        public var requestHeadTimeoutSeconds = 10.0
        public var requestBodyTimeoutSeconds = 30.0
        public var keepAliveTimeoutSeconds = 75.0
        /// WebSocket ping period; a peer that misses a pong for this long is closed.
        public var heartbeatSeconds = 30
        /// Sends of one socket awaiting their commit before the socket stops reading.
        public var maxInFlightSends = 512
        /// Messages per conversation per `sync` reply; the client asks again while `hasMore`.
        public var syncPageSize = 200
        /// Conversations in one `sync` frame.
        public var maxSyncCursors = 200
        /// A `typing start` is relayed at most once per throttle interval and expires after the TTL.
        public var typingThrottleSeconds = 3.0
        public var typingTTLSeconds = 6.0
        /// How often expired typing indicators are swept and presence heartbeats are sent.
        public var maintenanceIntervalSeconds = 1.0
        /// A socket counts as online this long after its last presence heartbeat (sent every third of
        /// it): how long a crashed node's users still look online.
        public var presenceTTLSeconds = 30.0
        /// Reported in `hello`; set from the node's id.
        public var nodeID = ""

        public init() {}
    }

    /// Where a node keeps its data.
    public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
        /// The embedded SQLite file in the data directory.
        case sqlite
        /// A PostgreSQL database shared by the cluster: `postgres://user:password@host:5432/database`.
        case postgres(url: String)

        /// Parses `sqlite` or a `postgres://` / `postgresql://` URL.
        public init(parsing text: String) throws {
            if text.lowercased() == "sqlite" {
                self = .sqlite
            } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
                self = .postgres(url: text)
            } else {
                throw ConfigurationError("store must be sqlite or a postgres:// URL")
            }
        }

        /// Without the password.
        public var description: String {
            guard case .postgres(let url) = self else { return "sqlite" }
            guard var components = URLComponents(string: url) else { return "postgres://…" }
            if components.password != nil { components.password = "…" }
            return components.string ?? "postgres://…"
        }
    }

    public var host = "127.0.0.1"
    /// Embedded SQLite (in the data directory) or PostgreSQL (cluster mode).
    public var store = StoreLocation.sqlite
    /// A `redis://` URL: with it the bus, presence and rate limits are shared by every node.
    public var redisURL: String?
    /// The Kafka event stream (`PARLEY_KAFKA_BROKERS`): with it, every change is written to the
    /// outbox and relayed to the `parley.*` topics.
    public var kafka: KafkaConfiguration?
    public var outbox = Outbox()
    public var consumers = Consumers()
    public var uploads = Uploads()
    /// This node's name in logs and readiness output.
    public var nodeID = ProcessInfo.processInfo.hostName
    public var port = 8080
    /// Holds the SQLite database and the generated JWT key.
    public var dataDirectory = "./data"
    /// `FULL`: every acknowledged message survives power loss. `NORMAL`: survives process crashes.
    public var sqliteSynchronousFull = true
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text
    /// HS256 key for access tokens (≥ 32 bytes). When unset, a random key is generated once and kept
    /// in the data directory.
    public var jwtSecret: String?
    public var accessTokenSeconds = 900
    public var refreshTokenSeconds = 30 * 24 * 3600
    public var bcryptCost = 12
    /// The delay after repeated failed logins of one account (`PARLEY_LOGIN_FREE_FAILURES`,
    /// `PARLEY_LOGIN_MAX_DELAY_SECONDS`, `PARLEY_LOGIN_FORGET_SECONDS`).
    public var loginDelay = LoginDelay()
    /// Mark cookies `Secure` (set when serving over TLS or behind a TLS-terminating proxy).
    public var secureCookies = false
    /// Trust `X-Forwarded-For` / `X-Real-IP` from a reverse proxy for the client IP.
    public var trustProxyHeaders = false
    /// Origins allowed for cross-origin requests (CORS) and cookie-authenticated unsafe requests.
    public var corsAllowedOrigins: [String] = []
    /// Largest request body in bytes.
    public var maxRequestBytes = 64 * 1024
    public var limits = Limits()
    /// `PARLEY_SEARCH_LANGUAGE`: the PostgreSQL text search configuration messages are indexed with
    /// (`simple` by default: no stemming, fine for any language). SQLite ignores it.
    public var searchLanguage = "simple"
    /// Serve the web client from this directory instead of the bundled copy (for working on it).
    public var webDirectory: String?
    public var rateLimits = RateLimits()
    public var gateway = Gateway()
    /// Group commit and admission control of sends.
    public var sendPipeline = SendPipeline.Configuration()

    public init() {}

    /// File uploads (attachments) and where their bytes are kept.
    public struct Uploads: Sendable {
        /// `PARLEY_MAX_UPLOAD_BYTES`: the largest file (25 MiB).
        public var maxBytes: Int64 = 25 << 20
        /// `PARLEY_UPLOAD_QUOTA_BYTES`: bytes each user may keep in uploads; nil (0): no quota.
        public var quotaBytes: Int64?
        /// `PARLEY_UNSENT_UPLOAD_SECONDS`: uploads never sent are deleted after this long (24 h).
        public var unsentSeconds = 24 * 3600
        /// How often the janitor looks for blobs to remove (besides right after deletions).
        public var janitorInterval: Duration { .seconds(min(60, max(1, unsentSeconds / 4))) }
        /// `PARLEY_UPLOADS_DIR`: where the directory store keeps files (default `blobs` in the
        /// data directory). Ignored with S3.
        public var directory: String?
        /// `PARLEY_S3_ENDPOINT`, `_BUCKET`, `_REGION`, `_ACCESS_KEY_ID`, `_SECRET_ACCESS_KEY`,
        /// `_PATH_STYLE`: S3-compatible storage shared by the nodes of a cluster.
        public var s3: S3BlobStore.Configuration?
    }

    /// The outbox the event stream is fed from.
    public struct Outbox: Sendable {
        /// `PARLEY_OUTBOX_LEASE_SECONDS`: how long a node's claim on its share of a shared
        /// (PostgreSQL) outbox lasts unrenewed; a dead node's share moves to the others after it.
        public var leaseSeconds = 10
        /// `PARLEY_OUTBOX_MAX_EVENTS`: the most events kept while the stream is away; beyond it the
        /// oldest are dropped. Nil (0 in the environment) keeps everything.
        public var maxPending: Int? = 1_000_000
    }

    /// The event consumers (webhooks, notify) and their settings.
    public struct Consumers: Sendable {
        /// `PARLEY_CONSUMERS` / `--consumers`: the consumers `serve` runs in-process. Nil picks
        /// the default: `webhooks` when endpoints are configured and there is no Kafka (with Kafka,
        /// consumers usually run as `parley consume <name>`).
        public var inProcess: [ConsumerName]?
        /// `PARLEY_WEBHOOKS`: a JSON array of `{"url", "secret", "events"?, "concurrency"?}`.
        public var webhooks: [WebhookEndpoint] = []
        /// `PARLEY_WEBHOOK_MAX_ATTEMPTS`, `PARLEY_WEBHOOK_RETRY_MS`, `PARLEY_WEBHOOK_TIMEOUT_MS`.
        public var webhookMaxAttempts = 8
        public var webhookRetryMilliseconds = 1000
        public var webhookTimeoutMilliseconds = 10_000
        /// `PARLEY_NOTIFY_PREVIEW_CHARS`: characters of the body in a notification (0: none).
        public var notifyPreviewCharacters = 140
        /// `PARLEY_DEADLETTER_FILE`: where dead letters go without Kafka (JSON lines); default
        /// `deadletter.jsonl` in the data directory.
        public var deadLetterPath: String?

        /// The consumers `serve` runs, given whether Kafka is configured.
        public func running(withKafka: Bool) -> [ConsumerName] {
            inProcess ?? (!withKafka && !webhooks.isEmpty ? [.webhooks] : [])
        }
    }

    public enum ConsumerName: String, Sendable, CaseIterable {
        case webhooks, notify

        public static func parseList(_ text: String, setting: String) throws -> [ConsumerName] {
            try text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { name in
                guard let consumer = ConsumerName(rawValue: name) else {
                    throw ConfigurationError("\(setting): unknown consumer \"\(name)\" (known: webhooks, notify)")
                }
                return consumer
            }
        }
    }

    /// Whether the store writes an outbox: with Kafka, or with consumers running in-process.
    public var writesOutbox: Bool { kafka != nil || !consumers.running(withKafka: kafka != nil).isEmpty }

    /// Whether other nodes may share this node's users: then tokens must verify on every node.
    public var isClustered: Bool { store != .sqlite || redisURL != nil }

    public var deadLetterPath: String {
        consumers.deadLetterPath ?? (dataDirectory as NSString).appendingPathComponent("deadletter.jsonl")
    }

    public var databasePath: String { (dataDirectory as NSString).appendingPathComponent("parley.sqlite") }

    public var uploadsDirectory: String { uploads.directory ?? (dataDirectory as NSString).appendingPathComponent("blobs") }

    /// Applies `PARLEY_*` variables over the current values. Unparsable values are reported, not ignored.
    public mutating func apply(environment: [String: String]) throws {
        func value(_ name: String) -> String? { environment["PARLEY_" + name].flatMap { $0.isEmpty ? nil : $0 } }
        func int(_ name: String) throws -> Int? {
            guard let raw = value(name) else { return nil }
            guard let parsed = Int(raw) else { throw ConfigurationError("PARLEY_\(name) must be an integer, got \"\(raw)\"") }
            return parsed
        }
        func bool(_ name: String) throws -> Bool? {
            guard let raw = value(name)?.lowercased() else { return nil }
            switch raw {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default: throw ConfigurationError("PARLEY_\(name) must be true or false, got \"\(raw)\"")
            }
        }
        if let v = value("HOST") { host = v }
        if let v = value("STORE") { store = try StoreLocation(parsing: v) }
        if let v = value("REDIS") { redisURL = v }
        if let v = value("NODE_ID") { nodeID = v }
        if let v = value("KAFKA_BROKERS") { kafka = KafkaConfiguration(brokers: v) }
        if var kafka {
            if let v = environment["PARLEY_KAFKA_TOPIC_PREFIX"] { kafka.topicPrefix = v }
            kafka.properties = KafkaConfiguration.properties(fromEnvironment: environment)
            self.kafka = kafka
        }
        if let v = try int("OUTBOX_LEASE_SECONDS") {
            guard v >= 1 else { throw ConfigurationError("PARLEY_OUTBOX_LEASE_SECONDS must be at least 1, got \(v)") }
            outbox.leaseSeconds = v
        }
        if let v = try int("OUTBOX_MAX_EVENTS") {
            guard v >= 0 else { throw ConfigurationError("PARLEY_OUTBOX_MAX_EVENTS must be 0 (no bound) or more, got \(v)") }
            outbox.maxPending = v == 0 ? nil : v
        }
        if let v = value("CONSUMERS") { consumers.inProcess = try ConsumerName.parseList(v, setting: "PARLEY_CONSUMERS") }
        if let v = value("WEBHOOKS") {
            do {
                consumers.webhooks = try WebhookEndpoint.parse(v)
            } catch let error as ParleyError {
                throw ConfigurationError(error.message)
            }
        }
        if let v = try int("WEBHOOK_MAX_ATTEMPTS") { consumers.webhookMaxAttempts = v }
        if let v = try int("WEBHOOK_RETRY_MS") { consumers.webhookRetryMilliseconds = v }
        if let v = try int("WEBHOOK_TIMEOUT_MS") { consumers.webhookTimeoutMilliseconds = v }
        if let v = try int("NOTIFY_PREVIEW_CHARS") { consumers.notifyPreviewCharacters = v }
        if let v = value("DEADLETTER_FILE") { consumers.deadLetterPath = v }
        if let v = try int("PORT") { port = v }
        if let v = value("DATA_DIR") { dataDirectory = v }
        if let v = value("SQLITE_SYNCHRONOUS") {
            switch v.lowercased() {
            case "full": sqliteSynchronousFull = true
            case "normal": sqliteSynchronousFull = false
            default: throw ConfigurationError("PARLEY_SQLITE_SYNCHRONOUS must be full or normal")
            }
        }
        if let v = value("LOG_LEVEL") {
            guard let level = Logger.Level(rawValue: v.lowercased()) else { throw ConfigurationError("PARLEY_LOG_LEVEL is not a log level: \(v)") }
            logLevel = level
        }
        if let v = value("LOG_FORMAT") {
            guard let format = LogFormat(rawValue: v.lowercased()) else { throw ConfigurationError("PARLEY_LOG_FORMAT must be text or json") }
            logFormat = format
        }
        if let v = value("JWT_SECRET") { jwtSecret = v }
        if let v = try int("ACCESS_TOKEN_SECONDS") { accessTokenSeconds = v }
        if let v = try int("REFRESH_TOKEN_SECONDS") { refreshTokenSeconds = v }
        if let v = try int("BCRYPT_COST") { bcryptCost = v }
        if let v = try int("LOGIN_FREE_FAILURES") {
            guard (1...1000).contains(v) else { throw ConfigurationError("PARLEY_LOGIN_FREE_FAILURES must be 1–1000, got \(v)") }
            loginDelay.freeFailures = v
        }
        if let v = try int("LOGIN_MAX_DELAY_SECONDS") {
            guard (1...86_400).contains(v) else { throw ConfigurationError("PARLEY_LOGIN_MAX_DELAY_SECONDS must be 1–86400, got \(v)") }
            loginDelay.maxSeconds = v
        }
        if let v = try int("LOGIN_FORGET_SECONDS") {
            guard (60...604_800).contains(v) else { throw ConfigurationError("PARLEY_LOGIN_FORGET_SECONDS must be 60–604800, got \(v)") }
            loginDelay.forgetSeconds = v
        }
        guard loginDelay.forgetSeconds > loginDelay.maxSeconds else {
            throw ConfigurationError(
                "PARLEY_LOGIN_FORGET_SECONDS (\(loginDelay.forgetSeconds)) must be longer than PARLEY_LOGIN_MAX_DELAY_SECONDS (\(loginDelay.maxSeconds)): failures would be forgotten before the longest wait"
            )
        }
        if let v = try bool("SECURE_COOKIES") { secureCookies = v }
        if let v = try bool("TRUST_PROXY") { trustProxyHeaders = v }
        if let v = value("CORS_ORIGINS") {
            corsAllowedOrigins = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if let v = try int("MAX_REQUEST_BYTES") { maxRequestBytes = v }
        if let v = value("WEB_DIR") { webDirectory = v }
        if let v = try int("MAX_MESSAGE_BYTES") { limits.maxMessageBytes = v }
        if let v = try int("MAX_REACTIONS_PER_MESSAGE") {
            guard (1...100).contains(v) else { throw ConfigurationError("PARLEY_MAX_REACTIONS_PER_MESSAGE must be 1–100, got \(v)") }
            limits.maxReactionsPerMessage = v
        }
        if let v = value("SEARCH_LANGUAGE") {
            guard v.utf8.count <= 63, v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                throw ConfigurationError("PARLEY_SEARCH_LANGUAGE must name a text search configuration such as simple or english, got \"\(v)\"")
            }
            searchLanguage = v.lowercased()
        }
        if let v = try int("MAX_UPLOAD_BYTES") {
            guard v >= 1 else { throw ConfigurationError("PARLEY_MAX_UPLOAD_BYTES must be at least 1, got \(v)") }
            uploads.maxBytes = Int64(v)
        }
        if let v = try int("UPLOAD_QUOTA_BYTES") {
            guard v >= 0 else { throw ConfigurationError("PARLEY_UPLOAD_QUOTA_BYTES must be 0 (no quota) or more, got \(v)") }
            uploads.quotaBytes = v == 0 ? nil : Int64(v)
        }
        if let v = try int("UNSENT_UPLOAD_SECONDS") {
            guard v >= 1 else { throw ConfigurationError("PARLEY_UNSENT_UPLOAD_SECONDS must be at least 1, got \(v)") }
            uploads.unsentSeconds = v
        }
        if let v = value("UPLOADS_DIR") { uploads.directory = v }
        if let bucket = value("S3_BUCKET") {
            guard let key = value("S3_ACCESS_KEY_ID"), let secret = value("S3_SECRET_ACCESS_KEY") else {
                throw ConfigurationError("PARLEY_S3_BUCKET needs PARLEY_S3_ACCESS_KEY_ID and PARLEY_S3_SECRET_ACCESS_KEY")
            }
            uploads.s3 = .init(
                endpoint: value("S3_ENDPOINT"), bucket: bucket, region: value("S3_REGION") ?? "us-east-1", accessKeyID: key, secretAccessKey: secret,
                pathStyle: try bool("S3_PATH_STYLE") ?? true)
        } else if value("S3_ENDPOINT") != nil {
            throw ConfigurationError("PARLEY_S3_ENDPOINT is set without PARLEY_S3_BUCKET")
        }
        if let v = try bool("RATE_LIMITS"), !v { rateLimits = .unlimited }
        if let v = try int("UPLOADS_PER_MINUTE") {
            guard v >= 1 else { throw ConfigurationError("PARLEY_UPLOADS_PER_MINUTE must be at least 1, got \(v)") }
            rateLimits.upload = RateLimitPolicy(name: "upload", burst: Double(max(1, v / 3)), perSecond: Double(v) / 60)
        }
        if let v = try int("WS_MAX_FRAME_BYTES") { gateway.maxFrameBytes = v }
        if let v = try int("WS_QUEUE_LIMIT") { gateway.outboundQueueLimit = v }
        if let v = try int("WS_HEARTBEAT_SECONDS") { gateway.heartbeatSeconds = v }
        for (name, keyPath) in [
            ("HTTP_HEADER_TIMEOUT_SECONDS", \Gateway.requestHeadTimeoutSeconds), ("HTTP_BODY_TIMEOUT_SECONDS", \.requestBodyTimeoutSeconds),
            ("HTTP_KEEPALIVE_SECONDS", \.keepAliveTimeoutSeconds), ("WS_AUTH_TIMEOUT_SECONDS", \.authTimeoutSeconds),
        ] {
            guard let v = try int(name) else { continue }
            guard (1...3600).contains(v) else { throw ConfigurationError("PARLEY_\(name) must be 1–3600, got \(v)") }
            gateway[keyPath: keyPath] = Double(v)
        }
        if let v = try int("PRESENCE_TTL_SECONDS") { gateway.presenceTTLSeconds = Double(v) }
        if let v = try int("SEND_MAX_QUEUE_DELAY_MS") {
            guard v >= 1 else { throw ConfigurationError("PARLEY_SEND_MAX_QUEUE_DELAY_MS must be at least 1") }
            sendPipeline.maxQueueDelay = .milliseconds(v)
        }
        if let v = try int("SEND_COMMIT_WINDOW_MS") {
            guard (0...50).contains(v) else { throw ConfigurationError("PARLEY_SEND_COMMIT_WINDOW_MS must be 0–50") }
            sendPipeline.commitWindow = .milliseconds(v)
        }
    }

    /// Rejects values that would make the node insecure or unable to work.
    public func validate() throws {
        guard (0...65535).contains(port) else { throw ConfigurationError("port must be 0–65535") }
        if let redisURL, !redisURL.hasPrefix("redis://") { throw ConfigurationError("the Redis URL must start with redis://") }
        if isClustered && jwtSecret == nil {
            throw ConfigurationError("cluster mode (PostgreSQL or Redis) needs a JWT secret shared by every node: set PARLEY_JWT_SECRET")
        }
        guard (1...100).contains(consumers.webhookMaxAttempts), consumers.webhookRetryMilliseconds >= 1,
            consumers.webhookTimeoutMilliseconds >= 1, consumers.notifyPreviewCharacters >= 0
        else {
            throw ConfigurationError("webhooks: max attempts 1–100, retry and timeout ≥ 1 ms; notify preview chars ≥ 0")
        }
        if consumers.running(withKafka: kafka != nil).contains(.webhooks) && consumers.webhooks.isEmpty {
            throw ConfigurationError("the webhooks consumer needs endpoints: set PARLEY_WEBHOOKS")
        }
        guard (4...31).contains(bcryptCost) else { throw ConfigurationError("bcrypt cost must be 4–31") }
        if let jwtSecret, jwtSecret.utf8.count < 32 {
            throw ConfigurationError("the JWT secret must be at least 32 bytes")
        }
        guard accessTokenSeconds >= 30, refreshTokenSeconds > accessTokenSeconds else {
            throw ConfigurationError("token lifetimes: access ≥ 30 s and refresh longer than access")
        }
        guard maxRequestBytes >= 1024, limits.maxMessageBytes >= 1, limits.maxMessageBytes < maxRequestBytes else {
            throw ConfigurationError("max request bytes must be ≥ 1024 and larger than the max message bytes")
        }
        guard gateway.maxFrameBytes > limits.maxMessageBytes, gateway.outboundQueueLimit >= 16, gateway.heartbeatSeconds >= 1,
            gateway.presenceTTLSeconds >= 3
        else {
            throw ConfigurationError(
                "WebSocket: max frame bytes must exceed the max message bytes, queue limit ≥ 16, heartbeat ≥ 1 s, presence TTL ≥ 3 s")
        }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
