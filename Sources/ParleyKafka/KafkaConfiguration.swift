import Foundation
import Logging
import ParleyCore
import ServiceLifecycle

/// Where the Kafka cluster is and how to talk to it.
///
/// `properties` are passed to librdkafka as they are, so managed Kafka (SASL, TLS) needs no code:
/// `PARLEY_KAFKA_PROPERTY_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`.
public struct KafkaConfiguration: Sendable, Equatable {
    /// `host:port[,host:port…]`.
    public var brokers: String
    /// Prepended to every topic name (`parley.` gives `parley.messages`).
    public var topicPrefix: String
    /// librdkafka properties by their dotted lower-case names. Values may be secrets: never log them.
    public var properties: [String: String]

    public init(brokers: String, topicPrefix: String = "parley.", properties: [String: String] = [:]) {
        self.brokers = brokers
        self.topicPrefix = topicPrefix
        self.properties = properties
    }

    /// The environment's `PARLEY_KAFKA_PROPERTY_<NAME>` variables as librdkafka properties:
    /// `<NAME>` lower-cased, underscores turned into dots.
    public static func properties(fromEnvironment environment: [String: String]) -> [String: String] {
        let prefix = "PARLEY_KAFKA_PROPERTY_"
        var properties: [String: String] = [:]
        for (key, value) in environment where key.hasPrefix(prefix) && key.count > prefix.count {
            let name = key.dropFirst(prefix.count).lowercased().replacingOccurrences(of: "_", with: ".")
            properties[name] = value
        }
        return properties
    }

    /// Whether this build can talk to Kafka (it was built with the `Kafka` package trait).
    public static var isSupported: Bool {
        #if Kafka
            true
        #else
            false
        #endif
    }

    /// What to tell someone who configured Kafka on a build without it.
    public static let rebuildHint =
        "this build of parley has no Kafka support; install librdkafka-dev and rebuild with `swift build --traits Kafka` (or `swift run --traits Kafka parley`)"
}

/// A Kafka failure, with librdkafka's own message.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// False for errors a retry cannot fix (bad configuration, a fatal producer error).
    public var isRetryable: Bool

    public init(_ description: String, isRetryable: Bool = true) {
        self.description = description
        self.isRetryable = isRetryable
    }
}

/// Builds the Kafka event stream for a configuration: the stream the relay publishes to and the
/// producer service that must run beside it.
///
/// A configuration librdkafka refuses (an unknown property, a bad value) does not stop the node:
/// chat works without the stream, so the error is logged once, naming the property, and the
/// stream stays degraded (events wait in the outbox) until the configuration is fixed. On a build
/// without the `Kafka` trait it throws an error that says how to rebuild.
public enum KafkaStreamFactory {
    public static func make(_ configuration: KafkaConfiguration, logger: Logger) throws -> (stream: any EventStream, service: (any Service)?) {
        #if Kafka
            do {
                let producer = try KafkaProducer(configuration: configuration, logger: logger)
                return (KafkaEventStream(producer: producer, topicPrefix: configuration.topicPrefix), producer)
            } catch let error as KafkaError {
                logger.error("Kafka configuration refused; the event stream is off until it is fixed", metadata: ["parley.error": "\(error)"])
                return (UnavailableStream(error: error), nil)
            }
        #else
            throw KafkaError("PARLEY_KAFKA_BROKERS is set, but " + KafkaConfiguration.rebuildHint, isRetryable: false)
        #endif
    }
}

/// Builds the service that runs one consumer in its consumer group (`<prefix><name>`).
public enum KafkaConsumerFactory {
    public static func make(_ configuration: KafkaConfiguration, consumer: any EventConsumer, logger: Logger) throws -> any Service {
        #if Kafka
            return try KafkaConsumerRunner(configuration: configuration, consumer: consumer, logger: logger)
        #else
            throw KafkaError("Kafka consumers need a build with Kafka support: " + KafkaConfiguration.rebuildHint, isRetryable: false)
        #endif
    }
}

/// The stream when Kafka could not be configured: every publish fails with that error, so events
/// stay in the outbox and `/ready` reports the stream degraded.
struct UnavailableStream: EventStream {
    let error: KafkaError

    func publish(_ events: [OutboxRecord]) async throws { throw error }
    var problem: String? { error.description }
}
