#if Kafka
    import CRdKafka
    import Foundation
    import Logging
    import Metrics
    import ParleyCore
    import ServiceLifecycle
    import Synchronization

    /// Feeds an `EventConsumer` from a Kafka consumer group, at least once and in order per partition.
    ///
    /// The group is `<topic prefix><consumer name>`; it subscribes to `<topic prefix><topic>` for each
    /// of the consumer's topics. A thread of its own polls librdkafka; each assigned partition has a
    /// worker task that hands its events to `handle` one at a time, retries a failing event with
    /// backoff (never skipping it) and stores its offset only once `handle` returned, for
    /// librdkafka's auto-commit to commit. A partition whose worker falls 256 events behind is
    /// paused and resumed below 32, so a failing partition stops being fetched while the others go on.
    ///
    /// On a rebalance, revoked partitions' workers stop (their queued events are dropped, an event in
    /// flight may finish but is not committed): the partition's next owner gets them again. On
    /// graceful shutdown it stops polling, lets events in flight finish (up to 5 s, then cancels
    /// them), commits what was handled, leaves the group and destroys the client.
    public final class KafkaConsumerRunner: Service, @unchecked Sendable {
        // @unchecked: `handle` is used through librdkafka's thread-safe API only, and destroyed once,
        // by `run()` after every worker ended (or by deinit if `run()` never closed it); everything
        // else is immutable or atomic, and `callbacks`' state is behind its Mutexes.
        private let handle: OpaquePointer
        private let callbacks: Callbacks
        private let consumer: any EventConsumer
        private let logger: Logger
        private let topics: [String]
        private let retryBackoff: (min: Duration, max: Duration)
        private let handled: Counter
        private let retries: Counter
        private let started = Atomic<Bool>(false)
        private let stopping = Atomic<Bool>(false)
        private let destroyed = Atomic<Bool>(false)

        /// How long graceful shutdown waits for events in flight before cancelling their `handle`.
        private static let drainTimeout: Duration = .seconds(5)
        /// A partition is paused above this many events not yet handled…
        fileprivate static let pauseAbove = 256
        /// …and resumed below this many.
        fileprivate static let resumeBelow = 32

        /// Creates the client (it joins the group once `run()` starts); a bad property (name or
        /// value) is an error naming the property, never showing its value.
        public init(
            configuration: KafkaConfiguration, consumer: any EventConsumer, logger: Logger,
            retryBackoff: (min: Duration, max: Duration) = (.milliseconds(100), .seconds(30))
        ) throws {
            let groupID = configuration.topicPrefix + consumer.name
            var logger = logger
            logger[metadataKey: "parley.consumer"] = "\(consumer.name)"
            self.logger = logger
            self.consumer = consumer
            var topics: [String] = []
            for topic in consumer.topics where !topics.contains(configuration.topicPrefix + topic.rawValue) {
                topics.append(configuration.topicPrefix + topic.rawValue)
            }
            guard !topics.isEmpty else { throw KafkaError("Kafka consumer \(consumer.name) has no topics", isRetryable: false) }
            self.topics = topics
            let low = max(retryBackoff.min, .milliseconds(1))
            self.retryBackoff = (low, max(retryBackoff.max, low))
            handled = Counter(label: "parley_consumer_events_total", dimensions: [("consumer", consumer.name)])
            retries = Counter(label: "parley_consumer_retries_total", dimensions: [("consumer", consumer.name)])
            let callbacks = Callbacks(logger: logger, topicPrefix: configuration.topicPrefix)
            self.callbacks = callbacks

            guard let conf = rd_kafka_conf_new() else { throw KafkaError("librdkafka could not allocate a configuration", isRetryable: false) }
            var settings: [(String, String)] = [
                ("bootstrap.servers", configuration.brokers),
                ("client.id", "parley"),
                ("enable.auto.commit", "true"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1000"),
            ]
            settings += configuration.properties.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            // Not overridable: offsets are stored only after `handle` returned (at least once), and the
            // group is this consumer's own.
            settings += [("enable.auto.offset.store", "false"), ("group.id", groupID)]
            for (name, value) in settings {
                var message = [CChar](repeating: 0, count: 512)
                if rd_kafka_conf_set(conf, name, value, &message, message.count) != RD_KAFKA_CONF_OK {
                    rd_kafka_conf_destroy(conf)
                    // librdkafka quotes the value it refused; values may be secrets.
                    let reason = value.isEmpty ? bufferText(message) : bufferText(message).replacingOccurrences(of: value, with: "…")
                    throw KafkaError("Kafka property \(name): \(reason)", isRetryable: false)
                }
            }
            rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
            rd_kafka_conf_set_rebalance_cb(conf) { client, error, partitions, opaque in
                guard let client, let opaque else { return }
                Unmanaged<Callbacks>.fromOpaque(opaque).takeUnretainedValue().rebalance(client, error, partitions)
            }
            rd_kafka_conf_set_error_cb(conf) { _, code, reason, opaque in
                guard let opaque else { return }
                let callbacks = Unmanaged<Callbacks>.fromOpaque(opaque).takeUnretainedValue()
                let error = rd_kafka_resp_err_t(code)
                callbacks.warnOnce("Kafka client error", reason.map { String(cString: $0) } ?? String(cString: rd_kafka_err2str(error)))
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
            guard let handle = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &message, message.count) else {
                // rd_kafka_new frees the configuration only when it succeeds.
                rd_kafka_conf_destroy(conf)
                throw KafkaError("Kafka consumer \(consumer.name): \(bufferText(message))", isRetryable: false)
            }
            // Client errors (the main queue) are served by rd_kafka_consumer_poll too.
            rd_kafka_poll_set_consumer(handle)
            self.handle = handle
        }

        deinit {
            if !destroyed.load(ordering: .acquiring) { rd_kafka_destroy(handle) }
        }

        /// Joins the group and feeds the consumer until graceful shutdown (or cancellation), then
        /// drains, commits and leaves the group. Runs once.
        public func run() async throws {
            guard started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
                throw KafkaError("Kafka consumer \(consumer.name) was already run", isRetryable: false)
            }
            try subscribe()
            logger.info("Kafka consumer joining its group", metadata: ["parley.kafka_topics": "\(topics.joined(separator: ","))"])

            let polled = Promise<Void>()
            // rd_kafka_consumer_poll blocks, so it gets a thread of its own rather than one of the
            // cooperative pool's. The thread holds the runner, so the handle outlives its last call.
            let thread = Thread { [self] in
                poll()
                polled.resolve(.success(()))
            }
            thread.name = "parley-kafka-consume"
            thread.start()

            await withDiscardingTaskGroup { group in
                let workersEnded = Promise<Void>()
                group.addTask {
                    await withDiscardingTaskGroup { workers in
                        for await worker in self.callbacks.starts {
                            workers.addTask { await self.serve(worker) }
                        }
                    }
                    workersEnded.resolve(.success(()))
                }
                try? await gracefulShutdown()
                stopping.store(true, ordering: .releasing)
                // The poll thread ends within its 100 ms poll; after it no rebalance starts a worker.
                await settled(polled)
                callbacks.drainAll()
                let drained = await withTaskGroup(of: Bool.self) { race in
                    race.addTask { (try? await workersEnded.value) != nil }
                    race.addTask {
                        try? await Task.sleep(for: Self.drainTimeout)
                        return false
                    }
                    defer { race.cancelAll() }
                    return await race.next() ?? false
                }
                if !drained {
                    logger.warning("Kafka consumer cancelled events still in flight at shutdown; they will be delivered again")
                    group.cancelAll()
                }
            }

            // Committing and leaving the group block (up to session.timeout.ms): a thread again.
            let closed = Promise<Void>()
            let closer = Thread { [self] in
                close()
                closed.resolve(.success(()))
            }
            closer.name = "parley-kafka-close"
            closer.start()
            await settled(closed)
            logger.info("Kafka consumer left its group")
        }

        private func subscribe() throws {
            guard let list = rd_kafka_topic_partition_list_new(Int32(topics.count)) else {
                throw KafkaError("librdkafka could not allocate a topic list", isRetryable: false)
            }
            defer { rd_kafka_topic_partition_list_destroy(list) }
            // -1 is RD_KAFKA_PARTITION_UA: the whole topic.
            for topic in topics { rd_kafka_topic_partition_list_add(list, topic, -1) }
            let error = rd_kafka_subscribe(handle, list)
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw KafkaError("Kafka consumer \(consumer.name): subscribe: \(String(cString: rd_kafka_err2str(error)))", isRetryable: false)
            }
        }

        /// The poll thread: hands each message to its partition's worker and applies pauses, until
        /// `stopping`. Rebalance callbacks run in here too.
        private func poll() {
            while !stopping.load(ordering: .acquiring) {
                callbacks.applyPauses(handle)
                // Returns as soon as a message is ready; the bound only lets the loop notice `stopping`.
                guard let message = rd_kafka_consumer_poll(handle, 100) else { continue }
                callbacks.receive(message)
                rd_kafka_message_destroy(message)
            }
        }

        /// Commits what was handled, leaves the group (its revocation runs the rebalance callback on
        /// this thread) and destroys the client.
        private func close() {
            let committed = rd_kafka_commit(handle, nil, 0)
            // __NO_OFFSET: nothing handled since the last commit.
            if committed != RD_KAFKA_RESP_ERR_NO_ERROR && committed != RD_KAFKA_RESP_ERR__NO_OFFSET {
                logger.warning(
                    "Kafka consumer could not commit at shutdown; the last events will be delivered again",
                    metadata: ["parley.kafka_error": "\(String(cString: rd_kafka_err2str(committed)))"])
            }
            let closed = rd_kafka_consumer_close(handle)
            if closed != RD_KAFKA_RESP_ERR_NO_ERROR {
                logger.warning(
                    "Kafka consumer did not leave its group cleanly", metadata: ["parley.kafka_error": "\(String(cString: rd_kafka_err2str(closed)))"]
                )
            }
            rd_kafka_destroy(handle)
            destroyed.store(true, ordering: .releasing)
        }

        /// A partition's worker task: its events in order, each retried until handled, its offset
        /// stored after. Starts once its predecessor for the partition (revoked earlier, maybe still
        /// in `handle`) ended, so one partition's events never run concurrently here.
        private func serve(_ worker: PartitionWorker) async {
            defer { callbacks.ended(worker) }
            if let predecessorEnded = worker.predecessorEnded { try? await predecessorEnded.value }
            while let next = await worker.next() {
                guard await deliver(next, on: worker), worker.mayStore else { return }
                storeOffset(worker, next.offset + 1)
                handled.increment()
                if worker.handledOne() { callbacks.pausesChanged.store(true, ordering: .releasing) }
            }
        }

        /// Calls `handle` until it succeeds; false if the worker stopped (or was cancelled) first.
        private func deliver(_ pending: PartitionWorker.Pending, on worker: PartitionWorker) async -> Bool {
            var failures = 0
            while true {
                do {
                    try await consumer.handle(pending.event)
                    if failures > 0 {
                        logger.info(
                            "Kafka consumer handled the event it was retrying", metadata: worker.metadata(pending, ["parley.failures": "\(failures)"])
                        )
                    }
                    return true
                } catch {
                    if Task.isCancelled { return false }
                    failures += 1
                    let metadata = worker.metadata(pending, ["parley.error": "\(error)", "parley.failures": "\(failures)"])
                    if failures == 1 {
                        logger.warning("Kafka consumer could not handle an event; retrying it, the partition's later events wait", metadata: metadata)
                    } else {
                        logger.debug("Kafka consumer could not handle an event again", metadata: metadata)
                    }
                    guard worker.isRunning else { return false }
                    retries.increment()
                    await worker.wait(backoff(after: failures))
                    guard worker.isRunning, !Task.isCancelled else { return false }
                }
            }
        }

        /// Exponential from `retryBackoff.min`, capped at `.max`, jittered down by up to half.
        private func backoff(after failures: Int) -> Duration {
            let exponential = retryBackoff.min * (1 << min(failures - 1, 30))
            return max(min(exponential, retryBackoff.max) * Double.random(in: 0.5...1), retryBackoff.min)
        }

        /// Stores `offset` (the next one to read) for auto-commit. Fails when the partition was
        /// revoked meanwhile: its next owner gets the event again.
        private func storeOffset(_ worker: PartitionWorker, _ offset: Int64) {
            guard let list = rd_kafka_topic_partition_list_new(1) else { return }
            defer { rd_kafka_topic_partition_list_destroy(list) }
            guard let entry = rd_kafka_topic_partition_list_add(list, worker.topic, worker.partition) else { return }
            entry.pointee.offset = offset
            let error = rd_kafka_offsets_store(handle, list)
            let failure = error != RD_KAFKA_RESP_ERR_NO_ERROR ? error : entry.pointee.err
            if failure != RD_KAFKA_RESP_ERR_NO_ERROR {
                logger.debug(
                    "Kafka consumer could not store an offset",
                    metadata: [
                        "parley.kafka_topic": "\(worker.topic)", "parley.kafka_partition": "\(worker.partition)",
                        "parley.kafka_offset": "\(offset)", "parley.kafka_error": "\(String(cString: rd_kafka_err2str(failure)))",
                    ])
            }
        }
    }

    extension KafkaConsumerRunner {
        /// One partition of one topic.
        fileprivate struct PartitionKey: Hashable, Sendable {
            var topic: String
            var partition: Int32
        }

        /// What librdkafka's callbacks and the poll thread reach: the logger and the partitions'
        /// workers. Retained by the runner, passed to librdkafka as its opaque pointer.
        fileprivate final class Callbacks: Sendable {
            let logger: Logger
            let topicPrefix: String
            /// The last error logged: librdkafka repeats an error on every reconnect attempt.
            let lastLogged = Mutex<String?>(nil)
            /// The assigned partitions' workers.
            let workers = Mutex<[PartitionKey: PartitionWorker]>([:])
            /// Workers stopped but still running their task (an event in flight), by partition: a
            /// new worker for the partition waits for them.
            let retiring = Mutex<[PartitionKey: PartitionWorker]>([:])
            /// Set when a worker's wish to be paused changed; the poll thread applies it.
            let pausesChanged = Atomic<Bool>(false)
            /// Workers to start; `run()` gives each a task.
            let starts: AsyncStream<PartitionWorker>
            private let startsContinuation: AsyncStream<PartitionWorker>.Continuation

            init(logger: Logger, topicPrefix: String) {
                self.logger = logger
                self.topicPrefix = topicPrefix
                (starts, startsContinuation) = AsyncStream.makeStream()
            }

            func warnOnce(_ message: Logger.Message, _ text: String) {
                let changed = lastLogged.withLock { last in
                    defer { last = text }
                    return last != text
                }
                if changed { logger.warning(message, metadata: ["parley.kafka_error": "\(text)"]) }
            }

            /// A message from the poll: to its partition's worker, or logged if it is an error.
            func receive(_ message: UnsafeMutablePointer<rd_kafka_message_t>) {
                let fields = message.pointee
                guard fields.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    if fields.err != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        warnOnce(
                            "Kafka consumer error",
                            rd_kafka_message_errstr(message).map { String(cString: $0) } ?? String(cString: rd_kafka_err2str(fields.err)))
                    }
                    return
                }
                lastLogged.withLock { last in
                    if last != nil { last = nil }
                }
                guard let rkt = fields.rkt else { return }
                let key = PartitionKey(topic: String(cString: rd_kafka_topic_name(rkt)), partition: fields.partition)
                // No worker: the partition is not (or no longer) ours, or its topic is not a stream
                // topic (logged at assignment). Its owner gets it.
                guard let worker = workers.withLock({ $0[key] }) else { return }
                var type = ""
                var headers: OpaquePointer?
                if rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR, let headers {
                    var value: UnsafeRawPointer?
                    var size = 0
                    if rd_kafka_header_get_last(headers, "parley-event-type", &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR, let value {
                        type = String(decoding: UnsafeRawBufferPointer(start: value, count: size), as: UTF8.self)
                    }
                }
                let event = ConsumedEvent(
                    topic: worker.streamTopic,
                    key: fields.key.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: fields.key_len), as: UTF8.self) } ?? "",
                    type: type,
                    envelope: fields.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: fields.len)) } ?? [],
                    partition: Int(fields.partition))
                if worker.enqueue(PartitionWorker.Pending(event: event, offset: fields.offset)) {
                    pausesChanged.store(true, ordering: .releasing)
                }
            }

            /// Pauses and resumes partitions as their workers wish (poll thread only, so librdkafka
            /// sees the calls in the order they were decided).
            func applyPauses(_ client: OpaquePointer) {
                guard pausesChanged.exchange(false, ordering: .acquiringAndReleasing) else { return }
                for worker in workers.withLock({ Array($0.values) }) {
                    if let pause = worker.takePauseChange() { setPaused(pause, worker, client) }
                }
            }

            private func setPaused(_ paused: Bool, _ worker: PartitionWorker, _ client: OpaquePointer) {
                guard let list = rd_kafka_topic_partition_list_new(1) else { return }
                defer { rd_kafka_topic_partition_list_destroy(list) }
                guard let entry = rd_kafka_topic_partition_list_add(list, worker.topic, worker.partition) else { return }
                let error = paused ? rd_kafka_pause_partitions(client, list) : rd_kafka_resume_partitions(client, list)
                let failure = error != RD_KAFKA_RESP_ERR_NO_ERROR ? error : entry.pointee.err
                var metadata: Logger.Metadata = ["parley.kafka_topic": "\(worker.topic)", "parley.kafka_partition": "\(worker.partition)"]
                if failure != RD_KAFKA_RESP_ERR_NO_ERROR { metadata["parley.kafka_error"] = "\(String(cString: rd_kafka_err2str(failure)))" }
                logger.debug(paused ? "Kafka partition paused: its events wait to be handled" : "Kafka partition resumed", metadata: metadata)
            }

            /// The rebalance callback (on the poll thread, or the closing one): assigns or revokes,
            /// eagerly or incrementally as the group's protocol says, starting and stopping workers.
            func rebalance(
                _ client: OpaquePointer, _ error: rd_kafka_resp_err_t, _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
            ) {
                let cooperative = rd_kafka_rebalance_protocol(client).map { String(cString: $0) } == "COOPERATIVE"
                let keys = partitions.map(Self.keys) ?? []
                let described = keys.map { "\($0.topic)[\($0.partition)]" }.joined(separator: ",")
                switch error {
                case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                    let failure: String?
                    if cooperative {
                        failure = withPartitions(partitions) { rd_kafka_incremental_assign(client, $0) }.map(consumeError)
                    } else {
                        let code = rd_kafka_assign(client, partitions)
                        failure = code == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : String(cString: rd_kafka_err2str(code))
                    }
                    if let failure {
                        logger.error(
                            "Kafka partition assignment failed",
                            metadata: ["parley.kafka_partitions": "\(described)", "parley.kafka_error": "\(failure)"])
                        return
                    }
                    start(keys, client)
                    logger.info("Kafka partitions assigned", metadata: ["parley.kafka_partitions": "\(described)"])
                case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                    let lost = rd_kafka_assignment_lost(client) != 0
                    // Eager: the whole assignment goes, whatever the list says.
                    stop(cooperative ? keys : nil, client)
                    let failure: String?
                    if cooperative {
                        failure = withPartitions(partitions) { rd_kafka_incremental_unassign(client, $0) }.map(consumeError)
                    } else {
                        let code = rd_kafka_assign(client, nil)
                        failure = code == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : String(cString: rd_kafka_err2str(code))
                    }
                    var metadata: Logger.Metadata = ["parley.kafka_partitions": "\(described)", "parley.kafka_lost": "\(lost)"]
                    if let failure { metadata["parley.kafka_error"] = "\(failure)" }
                    logger.info("Kafka partitions revoked", metadata: metadata)
                default:
                    logger.warning(
                        "Kafka rebalance failed; dropping the assignment",
                        metadata: ["parley.kafka_error": "\(String(cString: rd_kafka_err2str(error)))"])
                    stop(nil, client)
                    rd_kafka_assign(client, nil)
                }
            }

            /// Creates and starts workers for newly assigned partitions of stream topics.
            private func start(_ keys: [PartitionKey], _ client: OpaquePointer) {
                var replaced: [PartitionWorker] = []
                var started: [PartitionWorker] = []
                for key in keys {
                    guard key.topic.hasPrefix(topicPrefix), let topic = StreamTopic(rawValue: String(key.topic.dropFirst(topicPrefix.count))) else {
                        logger.warning(
                            "Kafka consumer was assigned a partition of an unknown topic; ignoring it",
                            metadata: ["parley.kafka_topic": "\(key.topic)"])
                        continue
                    }
                    let predecessor = retiring.withLock { $0[key] }
                    let worker = PartitionWorker(key: key, streamTopic: topic, predecessorEnded: predecessor?.ended)
                    if let old = workers.withLock({ $0.updateValue(worker, forKey: key) }) { replaced.append(old) }
                    started.append(worker)
                }
                // An assignment over a partition still assigned (not expected): the old worker stops.
                for old in replaced where retire(old, draining: false) { setPaused(false, old, client) }
                for worker in started { startsContinuation.yield(worker) }
            }

            /// Stops the workers of revoked partitions (all of them when `keys` is nil): their queued
            /// events are dropped; one in flight may finish, uncommitted. A partition paused here is
            /// resumed first: librdkafka keeps an application's pause across reassignment.
            private func stop(_ keys: [PartitionKey]?, _ client: OpaquePointer) {
                let stopped: [PartitionWorker] = workers.withLock { workers in
                    guard let keys else {
                        defer { workers.removeAll() }
                        return Array(workers.values)
                    }
                    return keys.compactMap { workers.removeValue(forKey: $0) }
                }
                for worker in stopped where retire(worker, draining: false) {
                    setPaused(false, worker, client)
                }
            }

            /// Shutdown: every worker finishes the event in flight (and stores its offset), takes no
            /// more. No new worker starts.
            func drainAll() {
                startsContinuation.finish()
                for worker in workers.withLock({ Array($0.values) }) { retire(worker, draining: true) }
            }

            /// Stops a worker; true if it had its partition paused.
            @discardableResult
            private func retire(_ worker: PartitionWorker, draining: Bool) -> Bool {
                if !draining { retiring.withLock { $0[worker.key] = worker } }
                return worker.stop(draining: draining)
            }

            /// A worker's task ended.
            func ended(_ worker: PartitionWorker) {
                worker.ended.resolve(.success(()))
                retiring.withLock { retiring in
                    if retiring[worker.key] === worker { retiring[worker.key] = nil }
                }
            }

            private static func keys(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [PartitionKey] {
                guard let elements = list.pointee.elems else { return [] }
                return (0..<Int(list.pointee.cnt)).map { index in
                    PartitionKey(topic: String(cString: elements[index].topic), partition: elements[index].partition)
                }
            }
        }

        /// One assigned partition's queue of events and their state; served by one task.
        fileprivate final class PartitionWorker: Sendable {
            struct Pending: Sendable {
                var event: ConsumedEvent
                var offset: Int64
            }

            private enum Phase {
                /// Taking events.
                case running
                /// Shutdown: finishing the event in flight, which may still be stored.
                case draining
                /// Revoked: the event in flight, if any, is not stored.
                case stopped
            }

            private struct State {
                var queue: [Pending] = []
                var head = 0
                /// Queued plus in flight.
                var unhandled = 0
                var phase = Phase.running
                var waiter: CheckedContinuation<Pending?, Never>?
                var wantsPause = false
                /// What the poll thread last told librdkafka.
                var isPaused = false
            }

            let key: PartitionKey
            let streamTopic: StreamTopic
            /// When the partition's previous worker here (revoked, maybe still in `handle`) ended.
            let predecessorEnded: Promise<Void>?
            /// Resolved when the worker's task ended.
            let ended = Promise<Void>()
            /// Resolved when the worker leaves `.running`: ends a backoff early.
            private let stopped = Promise<Void>()
            private let state = Mutex(State())

            var topic: String { key.topic }
            var partition: Int32 { key.partition }

            init(key: PartitionKey, streamTopic: StreamTopic, predecessorEnded: Promise<Void>?) {
                self.key = key
                self.streamTopic = streamTopic
                self.predecessorEnded = predecessorEnded
            }

            var isRunning: Bool { state.withLock { $0.phase == .running } }
            /// Whether a handled event's offset may be stored (not revoked).
            var mayStore: Bool { state.withLock { $0.phase != .stopped } }

            /// Queues an event (poll thread); true if the partition should now be paused.
            func enqueue(_ pending: Pending) -> Bool {
                let (waiter, pause): (CheckedContinuation<Pending?, Never>?, Bool) = state.withLock { state in
                    guard state.phase == .running else { return (nil, false) }
                    state.unhandled += 1
                    let pause = !state.wantsPause && state.unhandled > KafkaConsumerRunner.pauseAbove
                    if pause { state.wantsPause = true }
                    if let waiter = state.waiter {
                        state.waiter = nil
                        return (waiter, pause)
                    }
                    state.queue.append(pending)
                    return (nil, pause)
                }
                waiter?.resume(returning: pending)
                return pause
            }

            /// The next event, waiting for one; nil once the worker stopped or drains.
            func next() async -> Pending? {
                await withCheckedContinuation { (continuation: CheckedContinuation<Pending?, Never>) in
                    let now: Pending?? = state.withLock { state in
                        guard state.phase == .running else { return .some(nil) }
                        guard state.head < state.queue.count else {
                            state.waiter = continuation
                            return .none
                        }
                        let pending = state.queue[state.head]
                        state.head += 1
                        if state.head == state.queue.count {
                            state.queue.removeAll(keepingCapacity: true)
                            state.head = 0
                        } else if state.head >= 1024 {
                            state.queue.removeFirst(state.head)
                            state.head = 0
                        }
                        return .some(pending)
                    }
                    if let now { continuation.resume(returning: now) }
                }
            }

            /// One event handled; true if the partition should now be resumed.
            func handledOne() -> Bool {
                state.withLock { state in
                    state.unhandled -= 1
                    guard state.wantsPause, state.unhandled < KafkaConsumerRunner.resumeBelow else { return false }
                    state.wantsPause = false
                    return true
                }
            }

            /// The pause (true) or resume (false) to apply, if the wish differs from what was applied.
            func takePauseChange() -> Bool? {
                state.withLock { state in
                    guard state.phase == .running, state.wantsPause != state.isPaused else { return nil }
                    state.isPaused = state.wantsPause
                    return state.isPaused
                }
            }

            /// Drops the queue and takes no more events; true if the partition was paused.
            func stop(draining: Bool) -> Bool {
                let (waiter, wasPaused): (CheckedContinuation<Pending?, Never>?, Bool) = state.withLock { state in
                    if state.phase == .running || !draining { state.phase = draining ? .draining : .stopped }
                    state.queue = []
                    state.head = 0
                    defer {
                        state.waiter = nil
                        state.isPaused = false
                        state.wantsPause = false
                    }
                    return (state.waiter, state.isPaused)
                }
                waiter?.resume(returning: nil)
                stopped.resolve(.success(()))
                return wasPaused
            }

            /// Sleeps for `delay`, or less if the worker stops or the task is cancelled.
            func wait(_ delay: Duration) async {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { try? await Task.sleep(for: delay) }
                    group.addTask { _ = try? await self.stopped.value }
                    await group.next()
                    group.cancelAll()
                }
            }

            func metadata(_ pending: Pending, _ extra: Logger.Metadata) -> Logger.Metadata {
                extra.merging(
                    [
                        "parley.kafka_topic": "\(topic)", "parley.kafka_partition": "\(partition)", "parley.kafka_offset": "\(pending.offset)",
                        "parley.event_type": "\(pending.event.type)",
                    ], uniquingKeysWith: { first, _ in first })
            }
        }
    }

    /// Calls `body` with the callback's list, or an empty one if librdkafka passed none (the
    /// incremental calls want a list).
    private func withPartitions<R>(
        _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> R
    ) -> R {
        if let partitions { return body(partitions) }
        let empty = rd_kafka_topic_partition_list_new(0)
        defer { if let empty { rd_kafka_topic_partition_list_destroy(empty) } }
        return body(empty)
    }

    /// An error object's text; destroys it.
    private func consumeError(_ error: OpaquePointer) -> String {
        defer { rd_kafka_error_destroy(error) }
        return String(cString: rd_kafka_error_string(error))
    }

    /// Waits for a promise to resolve, even if the task is cancelled: what it waits for (a thread)
    /// must end before the handle goes.
    private func settled(_ promise: Promise<Void>) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            promise.whenResolved { _ in continuation.resume() }
        }
    }

    /// The text librdkafka wrote into an error buffer.
    private func bufferText(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
#endif
