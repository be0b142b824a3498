import Foundation
import Logging
import ParleyKafka
import ParleyTestSupport
import Testing

@Suite("Kafka configuration")
struct KafkaConfigurationTests {
    @Test("PARLEY_KAFKA_PROPERTY_<NAME> becomes librdkafka's <name>, lower-cased with dots")
    func propertiesFromEnvironment() {
        let properties = KafkaConfiguration.properties(fromEnvironment: [
            "PARLEY_KAFKA_PROPERTY_SECURITY_PROTOCOL": "SASL_SSL",
            "PARLEY_KAFKA_PROPERTY_SASL_MECHANISMS": "PLAIN",
            "PARLEY_KAFKA_PROPERTY_": "ignored",
            "PARLEY_KAFKA_BROKERS": "not a property",
        ])
        #expect(properties == ["security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN"])
    }

    @Test("the Kafka suites run when every integration suite is required (CI)")
    func kafkaIsCovered() {
        if TestEnvironment.requireAll {
            #expect(KafkaConfiguration.isSupported, "PARLEY_TEST_REQUIRE_ALL=1 but this build lacks the Kafka trait (swift build --traits Kafka)")
            #expect(TestEnvironment.kafkaBrokers != nil, "PARLEY_TEST_REQUIRE_ALL=1 but PARLEY_TEST_KAFKA_BROKERS is not set")
        }
    }
}

#if Kafka
    /// Reads a topic back with kcat, a client Parley did not write: one `(partition, key, headers, value)` per record.
    private func consume(topic: String, brokers: String, expecting count: Int) throws -> [(
        partition: Int, key: String, headers: String, value: String
    )] {
        let kcat = Process()
        kcat.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        kcat.arguments = ["kcat", "-b", brokers, "-C", "-t", topic, "-o", "beginning", "-c", String(count), "-q", "-f", "%p\t%k\t%h\t%s\n"]
        let output = Pipe()
        kcat.standardOutput = output
        try kcat.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        kcat.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return (Int(fields[0]) ?? -1, fields[1], fields[2], fields[3])
        }
    }

    @Suite("Kafka producer against a real Kafka protocol (librdkafka's mock cluster)", .enabled(if: TestEnvironment.kafkaBrokers != nil))
    struct KafkaProducerTests {
        @Test("records arrive once each, in order per key, with their headers; kcat reads them back")
        func produceInOrder() async throws {
            let brokers = try #require(TestEnvironment.kafkaBrokers)
            let topic = "parley.test.\(UUID().uuidString.prefix(8).lowercased())"
            let producer = try KafkaProducer(configuration: KafkaConfiguration(brokers: brokers), logger: Logger(label: "test"))
            let keys = ["alpha", "bravo", "charlie", "delta"]
            var records: [KafkaRecord] = []
            for index in 0..<200 {
                let key = keys[index % keys.count]
                records.append(
                    KafkaRecord(
                        topic: topic, key: Array(key.utf8), value: Array("\(key)-\(index)".utf8), headers: [("parley-event-type", "test.event")]))
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await producer.run() }
                defer { group.cancelAll() }
                // Two calls: order holds across calls as well as within one.
                try await producer.produce(Array(records[..<100]))
                try await producer.produce(Array(records[100...]))
            }
            let read = try consume(topic: topic, brokers: brokers, expecting: records.count)
            #expect(read.count == records.count)
            for key in keys {
                let values = read.filter { $0.key == key }.map(\.value)
                let sent = records.filter { String(decoding: $0.key, as: UTF8.self) == key }.map { String(decoding: $0.value, as: UTF8.self) }
                #expect(values == sent, "key \(key): every record once, in produce order")
                #expect(Set(read.filter { $0.key == key }.map(\.partition)).count == 1, "one key, one partition")
            }
            #expect(read.allSatisfy { $0.headers == "parley-event-type=test.event" })
        }

        @Test("a bad property is an error naming it, without showing the values of the others")
        func badProperty() throws {
            let configuration = KafkaConfiguration(
                brokers: "127.0.0.1:1", properties: ["no.such.property": "x", "sasl.password": "hunter2-secret"])
            let error = #expect(throws: KafkaError.self) { try KafkaProducer(configuration: configuration, logger: Logger(label: "test")) }
            #expect(error?.description.contains("no.such.property") == true)
            #expect(error?.description.contains("hunter2-secret") == false)
            #expect(error?.isRetryable == false)
        }
    }
#endif
