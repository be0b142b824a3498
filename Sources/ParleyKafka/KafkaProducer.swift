#if Kafka
    import CRdKafka
    import Foundation
    import Logging
    import ParleyCore
    import ServiceLifecycle
    import Synchronization

    /// One record to produce.
    public struct KafkaRecord: Sendable {
        /// The full topic name (prefix included).
        public var topic: String
        public var key: [UInt8]
        public var value: [UInt8]
        public var headers: [(name: String, value: String)]

        public init(topic: String, key: [UInt8], value: [UInt8], headers: [(name: String, value: String)] = []) {
            self.topic = topic
            self.key = key
            self.value = value
            self.headers = headers
        }
    }

    /// A Kafka producer over librdkafka: idempotent (no duplicates or reordering from its own
    /// retries), `acks=all`, compressed. Messages never time out in the client: while the brokers
    /// are away, `produce` waits and librdkafka keeps retrying, so the caller (the outbox relay)
    /// never has to guess whether a timed-out record was written.
    ///
    /// librdkafka reports deliveries through its poll queue; `run()` (a `Service`) serves that queue
    /// on a thread of its own and, on graceful shutdown, flushes what is in flight (up to
    /// `flushTimeout`), fails the rest and destroys the handle.
    public final class KafkaProducer: Service, @unchecked Sendable {
        // @unchecked: `handle` is used through librdkafka's thread-safe API only; `callbacks` is
        // immutable and its state is behind a Mutex.
        private let handle: OpaquePointer
        private let callbacks: Callbacks
        private let logger: Logger
        public let flushTimeout: Duration

        /// What librdkafka's callbacks reach: the logger and the broker state. Retained by the
        /// producer, passed to librdkafka as its opaque pointer.
        final class Callbacks: Sendable {
            let logger: Logger
            /// The last error that leaves the client unable to deliver (all brokers down, failed
            /// authentication, a fatal error), or nil once a delivery or a metadata probe succeeded.
            let clientError = Mutex<String?>(nil)
            /// The last error logged: librdkafka repeats an error on every reconnect attempt.
            let lastLogged = Mutex<String?>(nil)
            init(logger: Logger) { self.logger = logger }
        }

        /// Outstanding deliveries of one `produce` call; each record's opaque pointer holds one
        /// retain of it. The caller is resumed once: by the last outcome, or earlier by cancellation
        /// (the records are still delivered or failed later; nobody waits for them).
        fileprivate final class Deliveries: Sendable {
            private struct State {
                var remaining: Int
                var error: KafkaError?
                var continuation: CheckedContinuation<Void, any Error>?
            }
            private let state: Mutex<State>

            init(count: Int) {
                state = Mutex(State(remaining: count))
            }

            /// Sets who waits; resumes at once if everything completed (or was cancelled) already.
            func wait(_ continuation: CheckedContinuation<Void, any Error>, cancelled: Bool) {
                let resume: Result<Void, any Error>? = state.withLock { state in
                    if cancelled { return .failure(CancellationError()) }
                    if state.remaining == 0 { return state.error.map { .failure($0) } ?? .success(()) }
                    state.continuation = continuation
                    return nil
                }
                if let resume { continuation.resume(with: resume) }
            }

            /// Records one outcome; the last one resumes the caller.
            func complete(_ error: KafkaError?) {
                let resume: (CheckedContinuation<Void, any Error>, Result<Void, any Error>)? = state.withLock { state in
                    if state.error == nil, let error { state.error = error }
                    state.remaining -= 1
                    guard state.remaining == 0, let continuation = state.continuation else { return nil }
                    state.continuation = nil
                    return (continuation, state.error.map { .failure($0) } ?? .success(()))
                }
                if let (continuation, result) = resume { continuation.resume(with: result) }
            }

            /// Stops waiting: the caller gets `CancellationError`.
            func cancel() {
                let continuation = state.withLock { state in
                    defer { state.continuation = nil }
                    return state.continuation
                }
                continuation?.resume(throwing: CancellationError())
            }
        }

        /// Creates the client; a bad property (name or value) is an error naming the property, never
        /// showing its value.
        public init(configuration: KafkaConfiguration, logger: Logger, flushTimeout: Duration = .seconds(5)) throws {
            self.logger = logger
            self.flushTimeout = flushTimeout
            let callbacks = Callbacks(logger: logger)
            self.callbacks = callbacks

            guard let conf = rd_kafka_conf_new() else { throw KafkaError("librdkafka could not allocate a configuration", isRetryable: false) }
            var settings: [(String, String)] = [
                ("bootstrap.servers", configuration.brokers),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("compression.type", "lz4"),
                ("linger.ms", "5"),
                ("message.timeout.ms", "0"),
                ("client.id", "parley"),
            ]
            settings += configuration.properties.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            for (name, value) in settings {
                var message = [CChar](repeating: 0, count: 512)
                if rd_kafka_conf_set(conf, name, value, &message, message.count) != RD_KAFKA_CONF_OK {
                    rd_kafka_conf_destroy(conf)
                    // librdkafka quotes the value it refused; values may be secrets.
                    let reason = value.isEmpty ? text(message) : text(message).replacingOccurrences(of: value, with: "…")
                    throw KafkaError("Kafka property \(name): \(reason)", isRetryable: false)
                }
            }
            rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, _ in
                guard let message, let opaque = message.pointee._private else { return }
                let deliveries = Unmanaged<Deliveries>.fromOpaque(opaque).takeRetainedValue()
                let err = message.pointee.err
                deliveries.complete(err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(String(cString: rd_kafka_err2str(err))))
            }
            rd_kafka_conf_set_error_cb(conf) { _, code, reason, opaque in
                guard let opaque else { return }
                let callbacks = Unmanaged<Callbacks>.fromOpaque(opaque).takeUnretainedValue()
                let error = rd_kafka_resp_err_t(code)
                let text = reason.map { String(cString: $0) } ?? String(cString: rd_kafka_err2str(error))
                // Errors that stop delivery degrade the stream; others (one broker's connection
                // dropped, say) librdkafka recovers from by itself.
                if [RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__AUTHENTICATION, RD_KAFKA_RESP_ERR__FATAL].contains(error) {
                    callbacks.clientError.withLock { $0 = text }
                }
                let changed = callbacks.lastLogged.withLock { last in
                    defer { last = text }
                    return last != text
                }
                if changed { callbacks.logger.warning("Kafka client error", metadata: ["parley.kafka_error": "\(text)"]) }
            }
            // librdkafka's own log lines go through the node's logger (at debug: the errors that
            // matter arrive through the error callback above) instead of raw to stderr.
            rd_kafka_conf_set_log_cb(conf) { client, _, facility, line in
                guard let client, let opaque = rd_kafka_opaque(client) else { return }
                let callbacks = Unmanaged<Callbacks>.fromOpaque(opaque).takeUnretainedValue()
                callbacks.logger.debug(
                    "librdkafka",
                    metadata: [
                        "parley.kafka_facility": "\(facility.map { String(cString: $0) } ?? "")",
                        "parley.kafka_log": "\(line.map { String(cString: $0) } ?? "")",
                    ])
            }
            var message = [CChar](repeating: 0, count: 512)
            guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &message, message.count) else {
                // rd_kafka_new frees the configuration only when it succeeds.
                rd_kafka_conf_destroy(conf)
                throw KafkaError("Kafka producer: \(text(message))", isRetryable: false)
            }
            self.handle = handle
        }

        deinit {
            rd_kafka_destroy(handle)
        }

        /// The client-wide error librdkafka last reported (all brokers down, authentication…), if
        /// no delivery succeeded since.
        public var clientError: String? { callbacks.clientError.withLock { $0 } }

        /// Produces the records in order and returns once the brokers acknowledged every one (acks
        /// from all in-sync replicas). Records with the same topic and key land on one partition in
        /// this order. Throws the first failure; records of a failed call may still have been
        /// written (a retry can duplicate them, never reorder them). While the brokers are away it
        /// waits; cancelling the task ends the wait with `CancellationError`.
        public func produce(_ records: [KafkaRecord]) async throws {
            try await startProducing(records).wait()
        }

        /// Hands the records to librdkafka now, in order, and returns what to await for their
        /// acknowledgement. Records of a later call land after these on their partitions; the
        /// idempotent producer never writes a later record of a partition after failing an earlier one.
        public func startProducing(_ records: [KafkaRecord]) -> Acknowledgement {
            let deliveries = Deliveries(count: records.count)
            for record in records {
                if let error = enqueue(record, deliveries: deliveries) {
                    deliveries.complete(error)
                }
            }
            return Acknowledgement(deliveries: deliveries, callbacks: callbacks)
        }

        /// The outcome of one `startProducing` call.
        public struct Acknowledgement: Sendable {
            fileprivate let deliveries: Deliveries
            fileprivate let callbacks: Callbacks

            /// Returns once the brokers acknowledged every record; throws the first failure.
            /// Cancelling the task ends the wait with `CancellationError` (the records are still
            /// delivered or failed later).
            public func wait() async throws {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                        deliveries.wait(continuation, cancelled: Task.isCancelled)
                    }
                } onCancel: {
                    deliveries.cancel()
                }
                callbacks.clientError.withLock { $0 = nil }
            }
        }

        /// Hands one record to librdkafka, waiting while its queue is full.
        private func enqueue(_ record: KafkaRecord, deliveries: Deliveries) -> KafkaError? {
            let opaque = Unmanaged.passRetained(deliveries).toOpaque()
            while true {
                let error: OpaquePointer? = record.topic.withCString { topic in
                    record.key.withUnsafeBytes { key in
                        record.value.withUnsafeBytes { value in
                            withHeaders(record.headers) { headers in
                                var fields: [rd_kafka_vu_t] = []
                                fields.reserveCapacity(5 + headers.count)
                                var field = rd_kafka_vu_t()
                                field.vtype = RD_KAFKA_VTYPE_TOPIC
                                field.u.cstr = topic
                                fields.append(field)
                                field = rd_kafka_vu_t()
                                field.vtype = RD_KAFKA_VTYPE_KEY
                                field.u.mem.ptr = UnsafeMutableRawPointer(mutating: key.baseAddress)
                                field.u.mem.size = key.count
                                fields.append(field)
                                field = rd_kafka_vu_t()
                                field.vtype = RD_KAFKA_VTYPE_VALUE
                                field.u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                                field.u.mem.size = value.count
                                fields.append(field)
                                field = rd_kafka_vu_t()
                                field.vtype = RD_KAFKA_VTYPE_MSGFLAGS
                                field.u.i = RD_KAFKA_MSG_F_COPY
                                fields.append(field)
                                field = rd_kafka_vu_t()
                                field.vtype = RD_KAFKA_VTYPE_OPAQUE
                                field.u.ptr = opaque
                                fields.append(field)
                                fields += headers
                                return fields.withUnsafeBufferPointer { rd_kafka_produceva(handle, $0.baseAddress, $0.count) }
                            }
                        }
                    }
                }
                guard let error else { return nil }
                let code = rd_kafka_error_code(error)
                let text = String(cString: rd_kafka_error_string(error))
                rd_kafka_error_destroy(error)
                if code == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                    // librdkafka's local queue is full: serve deliveries for a moment and try again.
                    rd_kafka_poll(handle, 100)
                    continue
                }
                Unmanaged<Deliveries>.fromOpaque(opaque).release()
                return KafkaError("Kafka produce to \(record.topic): \(text)", isRetryable: code != RD_KAFKA_RESP_ERR__FATAL)
            }
        }

        /// Serves delivery reports until graceful shutdown, then flushes and fails what is left.
        public func run() async throws {
            let stopping = Atomic<Bool>(false)
            // The thread holds the producer, so the handle outlives its last call.
            let producer = self
            let flushMilliseconds = Int32(flushTimeout.components.seconds * 1000)
            let logger = self.logger
            let finished = Promise<Void>()
            // librdkafka's calls here block, so they get a thread of their own rather than one of
            // the cooperative pool's.
            let thread = Thread {
                let handle = producer.handle
                // rd_kafka_poll returns as soon as a report is ready; the bound only lets the loop
                // notice that it was asked to stop.
                var lastProbe = ContinuousClock.now
                while !stopping.load(ordering: .acquiring) {
                    rd_kafka_poll(handle, 100)
                    // While degraded, ask the brokers for metadata every 2 s: an idle producer has
                    // no delivery to tell it that they are back.
                    if ContinuousClock.now - lastProbe > .seconds(2), producer.callbacks.clientError.withLock({ $0 }) != nil {
                        lastProbe = .now
                        producer.probe()
                    }
                }
                if rd_kafka_flush(handle, flushMilliseconds) != RD_KAFKA_RESP_ERR_NO_ERROR {
                    logger.warning(
                        "Kafka producer stopped with records unacknowledged; they stay pending",
                        metadata: ["parley.records": "\(rd_kafka_outq_len(handle))"])
                    rd_kafka_purge(handle, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
                    rd_kafka_poll(handle, 0)
                }
                finished.resolve(.success(()))
            }
            thread.name = "parley-kafka-poll"
            thread.start()
            try? await gracefulShutdown()
            stopping.store(true, ordering: .releasing)
            try? await finished.value
        }
    }

    extension KafkaProducer {
        /// Clears the client error once a broker answers a metadata request (1 s at most).
        fileprivate func probe() {
            var metadata: UnsafePointer<rd_kafka_metadata>?
            guard rd_kafka_metadata(handle, 0, nil, &metadata, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR else { return }
            if let metadata { rd_kafka_metadata_destroy(metadata) }
            let was = callbacks.clientError.withLock { error in
                defer { error = nil }
                return error
            }
            if was != nil {
                callbacks.lastLogged.withLock { $0 = nil }
                logger.info("Kafka brokers reachable again")
            }
        }
    }

    /// The text librdkafka wrote into an error buffer.
    private func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Calls `body` with the headers as librdkafka fields, their C strings alive for the call.
    private func withHeaders<R>(_ headers: [(name: String, value: String)], _ body: ([rd_kafka_vu_t]) -> R) -> R {
        var fields: [rd_kafka_vu_t] = []
        fields.reserveCapacity(headers.count)
        return withHeaderFields(headers[...], &fields, body)
    }

    /// Appends each header's field inside the `withCString` scopes that keep its strings alive
    /// (no copies: a record usually has one header).
    private func withHeaderFields<R>(
        _ headers: ArraySlice<(name: String, value: String)>, _ fields: inout [rd_kafka_vu_t], _ body: ([rd_kafka_vu_t]) -> R
    ) -> R {
        guard let header = headers.first else { return body(fields) }
        return header.name.withCString { name in
            header.value.withCString { value in
                var field = rd_kafka_vu_t()
                field.vtype = RD_KAFKA_VTYPE_HEADER
                field.u.header.name = name
                field.u.header.val = UnsafeRawPointer(value)
                field.u.header.size = header.value.utf8.count
                fields.append(field)
                return withHeaderFields(headers.dropFirst(), &fields, body)
            }
        }
    }
#endif

#if Kafka
    /// The Kafka adapter of the `EventStream` port: each event goes to `<prefix><topic>` keyed by its
    /// key, the envelope as the value and its type in the `parley-event-type` header.
    public struct KafkaEventStream: EventStream {
        private let producer: KafkaProducer
        /// Full topic names, built once.
        private let topics: [StreamTopic: String]

        public init(producer: KafkaProducer, topicPrefix: String) {
            self.producer = producer
            self.topics = Dictionary(uniqueKeysWithValues: StreamTopic.allCases.map { ($0, topicPrefix + $0.rawValue) })
        }

        public var problem: String? { producer.clientError }

        public func publish(_ events: [OutboxRecord]) async throws {
            try await startPublishing(events).wait()
        }

        public func startPublishing(_ events: [OutboxRecord]) throws -> any PublishAcknowledgement {
            producer.startProducing(
                events.map { event in
                    KafkaRecord(
                        topic: topics[event.topic]!, key: Array(event.key.utf8), value: event.envelope,
                        headers: [(name: "parley-event-type", value: event.type)])
                })
        }
    }
#endif

#if Kafka
    extension KafkaProducer.Acknowledgement: PublishAcknowledgement {}
#endif
