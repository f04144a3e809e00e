"""Normal messages with tags, keys and user properties; tag filtering per consumer group.

A producer sends N messages tagged A and B alternately, each with one or two keys and two or
three user properties (some with non-ASCII values). Independent consumer groups then read the topic:

- filter ``A``: exactly the A messages, each intact (body, tag, keys, properties, id, type,
  first delivery attempt), acked; nothing more comes, not even after the invisible time
  (so the acks held);
- filter ``*``: all N messages;
- filter ``B||C``: exactly the B messages.
"""

import time

from scenario import Scenario, describe

N = 10
NORMAL = 1  # apache.rocketmq.v2.MessageType.NORMAL


def expected_messages(s, producer, topic):
    """Sends the N messages; returns {message_id: (index, tag, keys, body, properties)}."""
    sent = {}
    for i in range(N):
        tag = "A" if i % 2 == 0 else "B"
        keys = {f"key-{i}-{s.suffix}"} | ({f"second-key-{i}"} if i % 3 == 0 else set())
        body = f"normal-{i}-{s.suffix}".encode()
        props = {"index": str(i), "scenario": "normal_and_tags"}
        if i % 4 == 0:
            props["unicode"] = "值-ü-\u00e9-🚀"
        msg = s.message(topic, body, tag=tag, keys=sorted(keys), properties=props)
        receipt = s.send(producer, msg)
        sent[receipt.message_id] = (i, tag, keys, body, props)
    s.step(f"sent {N} messages to {topic}")
    return sent


def verify(s, msg, topic, want, sent_at):
    i, tag, keys, body, props = want
    where = f"message {i} ({msg.message_id})"
    s.check(msg.topic == topic, f"{where}: topic {msg.topic!r}, want {topic!r}")
    s.check(msg.body == body, f"{where}: body {msg.body!r}, want {body!r}")
    s.check(msg.tag == tag, f"{where}: tag {msg.tag!r}, want {tag!r}")
    s.check(msg.keys == keys, f"{where}: keys {msg.keys}, want {keys}")
    s.check(msg.properties == props,
            f"{where}: user properties {msg.properties}, want exactly {props} "
            "(broker-internal properties must not leak to users)")
    s.check(msg.message_type == NORMAL, f"{where}: message type {msg.message_type}, want NORMAL (1)")
    s.check(msg.delivery_attempt == 1, f"{where}: delivery attempt {msg.delivery_attempt}, want 1")
    s.check(msg.message_group is None, f"{where}: message group {msg.message_group!r} on a normal message")
    # The client sends born_timestamp in whole seconds.
    born = msg.born_timestamp / 1000.0 if msg.born_timestamp else 0
    s.check(sent_at - 2 <= born <= time.time() + 1,
            f"{where}: born timestamp {msg.born_timestamp} ms is not the send time (~{sent_at:.0f} s)")


def consume_exactly(s, group, topic, expression, want, sent, sent_at):
    """Receives exactly the messages ``want`` (ids) with filter ``expression``, acking each."""
    consumer = s.simple_consumer(group, {topic: expression})
    pending = set(want)
    deadline = time.monotonic() + 20
    last_ack = time.monotonic()
    while pending:
        s.check(time.monotonic() < deadline,
                f"group {group} (filter {expression!r}) still misses {len(pending)} message(s) after 20 s: "
                + ", ".join(str(sent[m][0]) for m in sorted(pending)))
        for msg in s.receive(consumer):
            s.check(msg.message_id in sent, f"group {group} got a message never sent: {describe(msg)}")
            s.check(msg.message_id in want,
                    f"group {group} with filter {expression!r} got message {sent[msg.message_id][0]} "
                    f"tagged {sent[msg.message_id][1]!r}: {describe(msg)}")
            s.check(msg.message_id in pending,
                    f"group {group} got message {sent[msg.message_id][0]} twice before the invisible "
                    f"time ran out: {describe(msg)}")
            verify(s, msg, topic, sent[msg.message_id], sent_at)
            consumer.ack(msg)
            last_ack = time.monotonic()
            pending.discard(msg.message_id)
    s.step(f"group {group} (filter {expression!r}) received and acked all {len(want)} expected messages")
    # Had an ack not held, its message would come back once the invisible time passed.
    quiet = max(0.0, last_ack + s.invisible + 1 - time.monotonic())
    s.expect_nothing(consumer, quiet, why=f"for group {group} after acking everything it should get")
    s.forget(consumer)


def main(s):
    topic = s.unique("normal")
    producer = s.producer([topic])
    sent_at = time.time()
    sent = expected_messages(s, producer, topic)
    tag_a = {mid for mid, v in sent.items() if v[1] == "A"}
    tag_b = {mid for mid, v in sent.items() if v[1] == "B"}
    consume_exactly(s, s.unique("grp-a"), topic, "A", tag_a, sent, sent_at)
    consume_exactly(s, s.unique("grp-all"), topic, "*", set(sent), sent, sent_at)
    consume_exactly(s, s.unique("grp-bc"), topic, "B||C", tag_b, sent, sent_at)


if __name__ == "__main__":
    Scenario("normal_and_tags").run(main)
