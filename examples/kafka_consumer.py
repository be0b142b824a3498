#!/usr/bin/env python3
"""Follow Parley's messages from Kafka: a minimal, correct consumer of the event stream.

    pip install confluent-kafka
    python3 examples/kafka_consumer.py [--brokers 127.0.0.1:9092] [--group my-printer] [--topic-prefix parley.]

Joins its own consumer group, subscribes to `<prefix>messages` and prints one line per
`message.created` event (docs/events.md describes the envelope). It shows the three things every
consumer of the stream needs:

- its own consumer group: each group gets every event, so a search indexer and an analytics job
  each use a group of their own (and several copies of one consumer share the partitions of its
  group between them);
- offsets committed only after the events were processed: a crash re-delivers what was not yet
  committed instead of losing it (at least once);
- de-duplication by event `id`: Parley publishes every change at least once, so the same event can
  arrive twice (a relay retry, a re-delivery after a crash); a repeat always has the same `id`.

Within one conversation events arrive in order (the conversation id is the record key, so one
conversation always lives on one partition). Stop with Ctrl-C: it commits what it processed and
leaves the group.
"""
import argparse
import collections
import json
import os
import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


def parse_arguments():
    parser = argparse.ArgumentParser(description="Print Parley's message.created events from Kafka.")
    parser.add_argument("--brokers", default=os.environ.get("PARLEY_KAFKA_BROKERS", "127.0.0.1:9092"),
                        help="bootstrap brokers, host:port[,host:port…] (default: $PARLEY_KAFKA_BROKERS or 127.0.0.1:9092)")
    parser.add_argument("--group", default="parley-example-printer",
                        help="consumer group id; a new group starts at the oldest retained event (default: %(default)s)")
    parser.add_argument("--topic-prefix", default=os.environ.get("PARLEY_KAFKA_TOPIC_PREFIX", "parley."),
                        help="Parley's PARLEY_KAFKA_TOPIC_PREFIX (default: $PARLEY_KAFKA_TOPIC_PREFIX or parley.)")
    parser.add_argument("--remember", type=int, default=100_000,
                        help="how many recent event ids to remember for de-duplication (default: %(default)s)")
    return parser.parse_args()


class RecentIds:
    """A bounded set of the most recently seen event ids (least recently seen dropped first).

    A repeat usually follows its original closely (a retried batch, a re-delivery after a
    restart), so remembering the last N ids catches repeats without growing forever. A service
    that must never act twice, even across restarts, keeps its processed ids (or the effects
    themselves, keyed by the message id) in its own database instead."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.ids = collections.OrderedDict()

    def seen(self, event_id):
        """True if `event_id` was seen before; remembers it either way."""
        if event_id in self.ids:
            self.ids.move_to_end(event_id)
            return True
        self.ids[event_id] = None
        if len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return False


def process(envelope):
    """What this consumer does with one new message: print it on one line."""
    message = envelope["data"]["message"]
    body = message["body"].replace("\n", " ⏎ ")
    print(f"{message['createdAt']}  conversation {message['conversationId']}  #{message['seq']}  "
          f"from {message['senderId']}: {body}", flush=True)


def main():
    args = parse_arguments()
    topic = args.topic_prefix + "messages"
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        # A group with no committed offset yet starts at the beginning of what Kafka retains.
        "auto.offset.reset": "earliest",
        # Commit ourselves, and only offsets of events we have processed (see below).
        "enable.auto.commit": False,
    })
    recent = RecentIds(args.remember)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    # Partition assignment and revocation happen inside consume(): by then the previous batch was
    # processed and committed, so a partition moving to another member of the group resumes
    # exactly after what this one finished.
    consumer.subscribe([topic], on_assign=lambda _, parts: print(
        f"# assigned {topic} partitions {sorted(p.partition for p in parts)}", file=sys.stderr))
    print(f"# group {args.group} following {topic} on {args.brokers}; Ctrl-C to stop", file=sys.stderr)
    try:
        while not stopping:
            batch = consumer.consume(num_messages=500, timeout=1.0)
            done = {}  # (topic, partition) -> the next offset to read, for what this batch processed
            for record in batch:
                error = record.error()
                if error is not None:
                    # Informational (e.g. a partition end) or retried by the client itself; a
                    # fatal error raises from consume() instead.
                    if error.code() != KafkaError._PARTITION_EOF:
                        print(f"# consumer: {error}", file=sys.stderr)
                    continue
                headers = dict(record.headers() or [])
                event_type = (headers.get("parley-event-type") or b"").decode()
                try:
                    envelope = json.loads(record.value())
                except ValueError:
                    # Not ours to fix: report it and move on (committing past it), rather than
                    # stopping every conversation on this partition forever.
                    print(f"# skipped an unreadable record at {record.topic()}[{record.partition()}]@{record.offset()}",
                          file=sys.stderr)
                else:
                    # Other event types may share the topic one day: skip, don't fail.
                    if event_type == "message.created" and not recent.seen(envelope["id"]):
                        process(envelope)
                done[(record.topic(), record.partition())] = record.offset() + 1
            if done:
                # Synchronous: when commit returns, a restart will not re-deliver this batch. (A
                # crash before it re-delivers the batch: the de-duplication above, or idempotent
                # processing, absorbs that.)
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()], asynchronous=False)
    except KafkaException as error:
        print(f"# consumer stopped: {error}", file=sys.stderr)
        return 1
    finally:
        # Leaves the group at once, so its partitions move to the other members without waiting
        # for a session timeout.
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
