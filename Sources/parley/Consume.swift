import ArgumentParser
import Foundation
import Logging
import ParleyCore
import ParleyKafka
import ParleyServer
import ServiceLifecycle
import UnixSignals

/// `parley consume <name>`: one event consumer in a process of its own, reading the Kafka topics in
/// its consumer group (`<prefix><name>`), so that it scales apart from the chat nodes: start more
/// of them and Kafka shares the partitions out.
struct Consume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an event consumer (webhooks or notify) against the Kafka event stream.",
        discussion: """
            Reads PARLEY_* settings like `serve` (PARLEY_KAFKA_*, PARLEY_STORE, PARLEY_REDIS, PARLEY_WEBHOOKS…). \
            notify needs the cluster's presence (PARLEY_REDIS); without Kafka, run consumers inside `parley serve --consumers`.
            """
    )

    @Argument(help: "webhooks or notify.") var name: String
    @Option(name: .customLong("kafka-brokers"), help: "Kafka brokers host:port[,host:port…] (PARLEY_KAFKA_BROKERS).") var kafkaBrokers: String?
    @Option(help: "sqlite (in --data-dir) or postgres://… (PARLEY_STORE).") var store: String?
    @Option(help: "redis://… (PARLEY_REDIS): the cluster's presence, for notify.") var redis: String?
    @Option(name: .customLong("data-dir"), help: "The data directory of an embedded node (PARLEY_DATA_DIR).") var dataDirectory: String?
    @Option(name: .customLong("node-id"), help: "This process's name in events and logs (PARLEY_NODE_ID).") var nodeID: String?
    @Option(name: .customLong("log-level"), help: "trace … critical (PARLEY_LOG_LEVEL).") var logLevel: String?

    func run() async throws {
        var config = ParleyConfiguration()
        do {
            try config.apply(environment: ProcessInfo.processInfo.environment)
            if let store { config.store = try .init(parsing: store) }
        } catch {
            throw ValidationError("\(error)")
        }
        guard let consumer = ParleyConfiguration.ConsumerName(rawValue: name) else {
            throw ValidationError("unknown consumer \"\(name)\" (known: webhooks, notify)")
        }
        if let kafkaBrokers { config.kafka = KafkaConfiguration(brokers: kafkaBrokers, properties: config.kafka?.properties ?? [:]) }
        if let redis { config.redisURL = redis }
        if let dataDirectory { config.dataDirectory = dataDirectory }
        if let nodeID { config.nodeID = nodeID }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
            config.logLevel = level
        }
        guard let kafka = config.kafka else {
            throw ValidationError(
                "parley consume reads the Kafka topics: set PARLEY_KAFKA_BROKERS (without Kafka, run it inside the node: parley serve --consumers \(name))"
            )
        }
        if consumer == .webhooks && config.consumers.webhooks.isEmpty {
            throw ValidationError("the webhooks consumer needs endpoints: set PARLEY_WEBHOOKS")
        }

        Logger.bootstrapParley(format: config.logFormat.rawValue, level: config.logLevel)
        var logger = Logger(label: "parley-consume")
        logger.logLevel = config.logLevel
        let adapters = try Adapters.make(configuration: config, relay: false, logger: logger)
        let made = try adapters.makeConsumers([consumer], config, logger: logger)
        var services = adapters.services + made.services
        services += try made.consumers.map { try KafkaConsumerFactory.make(kafka, consumer: $0, logger: logger) }
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("consumer starting", metadata: ["parley.consumer": "\(name)", "parley.group": "\(kafka.topicPrefix)\(name)"])
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await adapters.prepare()
            try await tasks.waitForAll()
        }
    }
}
