import ArgumentParser
import Foundation
import Hummingbird
import Logging
import ParleyKafka
import ParleyServer

@main
struct Parley: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "A horizontally scalable real-time chat server.",
        subcommands: [Serve.self, Seed.self, Consume.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the REST API, the WebSocket gateway and the web client.",
        discussion: "Every option can also be set with a PARLEY_* environment variable; flags win."
    )

    @Option(help: "Address to listen on (PARLEY_HOST). Default 127.0.0.1.") var host: String?
    @Option(help: "Port to listen on, 0 for any (PARLEY_PORT). Default 8080.") var port: Int?
    @Option(name: .customLong("data-dir"), help: "Directory for the SQLite database and generated key (PARLEY_DATA_DIR). Default ./data.")
    var dataDirectory: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (PARLEY_LOG_LEVEL).")
    var logLevel: String?
    @Option(name: .customLong("log-format"), help: "text or json (PARLEY_LOG_FORMAT).") var logFormat: String?
    @Option(name: .customLong("bcrypt-cost"), help: "bcrypt cost 4–31 (PARLEY_BCRYPT_COST). Default 12.") var bcryptCost: Int?
    @Option(name: .customLong("max-message-bytes"), help: "Largest message body in bytes (PARLEY_MAX_MESSAGE_BYTES).")
    var maxMessageBytes: Int?
    @Option(name: .customLong("cors-origin"), help: "Allowed cross-origin origin; repeatable (PARLEY_CORS_ORIGINS, comma-separated).")
    var corsOrigins: [String] = []
    @Option(help: "Where data lives: sqlite (embedded, under --data-dir) or postgres://user:pass@host:5432/db (PARLEY_STORE).")
    var store: String?
    @Option(
        help: "Redis for cluster mode: redis://[:password@]host:6379[/db] (PARLEY_REDIS). Without it, bus, presence and rate limits are in-process.")
    var redis: String?

    @Option(
        name: .customLong("kafka-brokers"),
        help: "Kafka brokers host:port[,host:port…] for the event stream (PARLEY_KAFKA_BROKERS); needs a build with --traits Kafka.")
    var kafkaBrokers: String?
    @Option(
        name: .customLong("consumers"),
        help:
            "Event consumers to run inside this node: webhooks,notify (PARLEY_CONSUMERS). Default: webhooks when PARLEY_WEBHOOKS is set and Kafka is not."
    )
    var consumers: String?
    @Option(name: .customLong("node-id"), help: "This node's name in logs and /ready (PARLEY_NODE_ID). Default: the host name.")
    var nodeID: String?
    @Flag(name: .customLong("secure-cookies"), help: "Mark cookies Secure (behind TLS) (PARLEY_SECURE_COOKIES).") var secureCookies = false
    @Flag(name: .customLong("trust-proxy"), help: "Take the client IP from X-Real-IP / X-Forwarded-For (PARLEY_TRUST_PROXY).")
    var trustProxy = false

    func run() async throws {
        var config = ParleyConfiguration()
        do {
            try config.apply(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError("\(error)")
        }
        if let host { config.host = host }
        if let port { config.port = port }
        if let dataDirectory { config.dataDirectory = dataDirectory }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
            config.logLevel = level
        }
        if let logFormat {
            guard let format = ParleyConfiguration.LogFormat(rawValue: logFormat) else { throw ValidationError("log format must be text or json") }
            config.logFormat = format
        }
        if let bcryptCost { config.bcryptCost = bcryptCost }
        if let maxMessageBytes { config.limits.maxMessageBytes = maxMessageBytes }
        if !corsOrigins.isEmpty { config.corsAllowedOrigins = corsOrigins }
        if let store {
            do {
                config.store = try .init(parsing: store)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        if let redis { config.redisURL = redis }
        if let kafkaBrokers {
            var kafka = config.kafka ?? KafkaConfiguration(brokers: kafkaBrokers)
            kafka.brokers = kafkaBrokers
            config.kafka = kafka
        }
        if let nodeID { config.nodeID = nodeID }
        if let consumers {
            do {
                config.consumers.inProcess = try ParleyConfiguration.ConsumerName.parseList(consumers, setting: "--consumers")
            } catch {
                throw ValidationError("\(error)")
            }
        }
        if secureCookies { config.secureCookies = true }
        if trustProxy { config.trustProxyHeaders = true }
        do {
            try config.validate()
        } catch {
            throw ValidationError("\(error)")
        }

        Logger.bootstrapParley(format: config.logFormat.rawValue, level: config.logLevel)
        var logger = Logger(label: "parley")
        logger.logLevel = config.logLevel
        let app = try await buildApplication(configuration: config, logger: logger)
        logger.info("Parley listening", metadata: ["parley.address": "http://\(config.host):\(config.port)"])
        try await app.runService()
    }
}
