"""Send one sample with a stock Kafka client and print what triage made of it.

    python examples/send_sample.py examples/sample.json [--bootstrap-servers HOST:PORT]

Produces the JSON file's message to `triage.samples` (keyed by its id), then reads, from their
current end, `triage.predictions`, `triage.review` and `triage.dlq` until a record for that id arrives
(30 s at most) and prints it with its topic. Uses confluent-kafka, nothing from triage.
"""

import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

args = sys.argv[1:]
servers = os.environ.get("TRIAGE_BOOTSTRAP_SERVERS", "localhost:9092")
if "--bootstrap-servers" in args:
    servers = args[args.index("--bootstrap-servers") + 1]
path = next(a for a in args if a.endswith(".json"))
sample = json.load(open(path))
producer = Producer({"bootstrap.servers": servers, "log_level": 0})
deadline = time.monotonic() + 30


def topics() -> set:
    try:
        return set(producer.list_topics(timeout=5).topics)
    except KafkaException:
        return set()


while "triage.samples" not in topics():  # `triage serve` creates it
    if time.monotonic() > deadline:
        sys.exit(f"no topic triage.samples on {servers} after 30 s: is the broker up and `triage serve` running?")
    time.sleep(0.5)
# Read from the current end of every output partition, so only this send's outputs are seen.
consumer = Consumer({"bootstrap.servers": servers, "log_level": 0, "group.id": "send-sample",
                     "enable.auto.commit": False})
start = []
for topic, meta in consumer.list_topics(timeout=10).topics.items():
    if topic in ("triage.predictions", "triage.review", "triage.dlq"):
        for p in meta.partitions:
            start.append(TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]))
consumer.assign(start)
producer.produce("triage.samples", key=str(sample["id"]).encode(), value=json.dumps(sample).encode())
if producer.flush(10):
    sys.exit(f"could not deliver the sample to {servers} within 10 s: is the broker running?")
print(f"sent {sample['id']} to triage.samples")
deadline = time.monotonic() + 30
try:
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() or msg.key() != str(sample["id"]).encode():
            continue
        print(f"{msg.topic()}: {msg.value().decode()}")
        sys.exit(0)
    sys.exit(f"no output for {sample['id']} within 30 s: is `triage serve` running?")
finally:
    consumer.close()
