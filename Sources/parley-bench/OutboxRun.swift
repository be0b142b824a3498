import ArgumentParser
import Foundation
import Logging
import ParleyCore
import ParleyKafka
import ParleySQLite

/// `parley-bench outbox`: the relay on its own. Fills a fresh SQLite outbox with `--events`
/// `message.created` events (as the send pipeline writes them), then runs one `OutboxRelay` into
/// Kafka until the outbox is empty, and reports events per second and this process's CPU per event
/// (the relay, the producer and SQLite all run in it). Needs a build with the Kafka trait.
struct OutboxBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox", abstract: "Measure the outbox relay alone: drain N committed events into Kafka.")

    @Option(name: .customLong("kafka-brokers"), help: "Kafka brokers host:port[,…].") var kafkaBrokers: String
    @Option(help: "Events written to the outbox before the relay starts.") var events = 200_000
    @Option(help: "Conversations the events are spread over (keys).") var conversations = 1_000
    @Option(help: "Body bytes of each message.") var bodyBytes = 60
    @Option(help: "Events the relay reads and publishes per round.") var batch = 1_000
    @Option(name: .customLong("topic-prefix"), help: "Topic prefix; a fresh one per run by default.") var topicPrefix: String?
    @Option(name: .customLong("property"), help: "A librdkafka property name=value for the producer; repeatable.") var properties: [String] = []

    func run() async throws {
        guard events > 0, conversations > 0, batch > 0 else { throw ValidationError("events, conversations and batch must be positive") }
        var logger = Logger(label: "parley-bench")
        logger.logLevel = .warning
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parley-outbox-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteChatStore(
            configuration: .init(path: directory.appendingPathComponent("bench.sqlite").path, synchronousFull: false, outboxNode: "bench"),
            logger: logger)
        let prefix = topicPrefix ?? "bench\(UInt32.random(in: 0...UInt32.max))."
        var kafka = KafkaConfiguration(brokers: kafkaBrokers, topicPrefix: prefix)
        for property in properties {
            let parts = property.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--property takes name=value, got \(property)") }
            kafka.properties[parts[0]] = parts[1]
        }
        let made = try KafkaStreamFactory.make(kafka, logger: logger)
        var relayConfiguration = OutboxRelay.Configuration()
        relayConfiguration.batchSize = batch
        relayConfiguration.maxPending = nil
        let relay = OutboxRelay(outbox: store, stream: made.stream, configuration: relayConfiguration, logger: logger)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await store.run() }
            if let producer = made.service { group.addTask { try await producer.run() } }
            defer { group.cancelAll() }
            try await store.migrate()

            print("writing \(events) events to the outbox…")
            let conversationIDs = (0..<conversations).map { _ in UUID.v7() }
            let sender = UUID.v7()
            let body = String(repeating: "x", count: bodyBytes)
            var written = 0
            while written < events {
                let chunk = try (written..<min(events, written + 5_000)).map { index in
                    try StreamEvent.messageCreated(
                        Message(
                            id: .v7(), conversationID: conversationIDs[index % conversations], seq: Int64(index / conversations + 1),
                            senderID: sender,
                            body: body, clientMsgID: "c\(index)", createdAt: .now), node: "bench")
                }
                try await store.appendEvents(chunk)
                written += chunk.count
            }

            // Warm the producer up (broker connections, topic creation, metadata) before timing.
            let warmUp = try StreamEvent.messageCreated(
                Message(id: .v7(), conversationID: .v7(), seq: 1, senderID: sender, body: body, clientMsgID: nil, createdAt: .now), node: "bench")
            try await made.stream.publish([
                OutboxRecord(position: 0, eventID: warmUp.id, topic: .messages, key: warmUp.key, type: warmUp.type, envelope: try warmUp.envelope())
            ])
            print("relaying to \(prefix)messages…")
            let cpuBefore = ProcessSampler.cpuSeconds(pid: getpid()) ?? 0
            let start = ContinuousClock.now
            relay.start()
            group.addTask { try await relay.run() }
            // Done when the oldest event is gone (cheaper than counting what is left).
            while try await !store.pendingEvents(limit: 1).isEmpty {
                try await Task.sleep(for: .milliseconds(20))
            }
            let elapsed = ContinuousClock.now - start
            let cpu = (ProcessSampler.cpuSeconds(pid: getpid()) ?? 0) - cpuBefore
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(
                String(
                    format: "relayed %d events in %.2f s: %.0f events/s, %.1f µs CPU per event (relay + producer + SQLite, this process)",
                    events, seconds, Double(events) / seconds, cpu / Double(events) * 1e6))
        }
    }
}
