"""Dead-letter queue: a message never acked goes to ``%DLQ%<group>`` after the max attempts.

The broker under test must use a small max delivery attempts (``ROCKETLOG_MAX_ATTEMPTS``, the
harness configures the broker and the script alike) and allow a short invisible time.

1. One message is received ``max_attempts`` times without an ack; each delivery comes after
   the previous one's invisible time with delivery_attempt 1, 2, ... max_attempts.
2. The group never gets it again (no attempt above the max).
3. A SimpleConsumer of another group on ``%DLQ%<group>`` receives it: same id, body, tag, keys
   and user properties; acking it works and it does not come back.
"""

import time

from scenario import Scenario, describe

EARLY_TOLERANCE_SECS = 0.25


def main(s):
    s.check(1 <= s.max_attempts <= 5,
            f"ROCKETLOG_MAX_ATTEMPTS={s.max_attempts}: this scenario needs the broker set to 1..5 attempts")
    topic = s.unique("dlq")
    group = s.unique("grp-dlq")
    dlq_topic = f"%DLQ%{group}"
    producer = s.producer([topic])
    body = f"dead-letter-{s.suffix}".encode()
    props = {"scenario": "dlq"}
    key = f"key-{s.suffix}"
    mid = s.send(producer, s.message(topic, body, tag="D", keys=[key], properties=props)).message_id
    consumer = s.simple_consumer(group, {topic: "*"})

    # 1. max_attempts deliveries, none acked
    visible_from = 0.0
    for attempt in range(1, s.max_attempts + 1):
        deadline = time.monotonic() + s.invisible + 15
        got = None
        while got is None:
            s.check(time.monotonic() < deadline, f"delivery {attempt} did not come within "
                                                 f"{s.invisible + 15}s")
            started = time.monotonic()
            msgs = s.receive(consumer)
            for m in msgs:
                s.check(m.message_id == mid, f"unexpected message: {describe(m)}")
                s.check(time.monotonic() >= visible_from,
                        f"delivery {attempt} came before the previous delivery's invisible time ended")
                got = m
        s.check(got.delivery_attempt == attempt,
                f"delivery {attempt} has delivery_attempt {got.delivery_attempt}")
        visible_from = started + s.invisible - EARLY_TOLERANCE_SECS
        s.step(f"delivery {attempt}/{s.max_attempts} received, not acking")

    # 2 + 3. the group never sees it again; the DLQ consumer gets it
    dlq_consumer = s.simple_consumer(s.unique("grp-dlq-reader"), {dlq_topic: "*"})
    deadline = time.monotonic() + s.invisible + 25
    dead = None
    while dead is None:
        s.check(time.monotonic() < deadline,
                f"the message did not reach {dlq_topic} within {s.invisible + 25}s after its last delivery")
        again = s.receive(consumer)
        s.check(not again, f"{group} got the message again after its {s.max_attempts} allowed attempts: "
                           + "; ".join(describe(m) for m in again))
        msgs = s.receive(dlq_consumer)
        for m in msgs:
            s.check(m.message_id == mid, f"unexpected message in {dlq_topic}: {describe(m)}")
            dead = m
    s.check(len(msgs) == 1, f"{dlq_topic} delivered the message {len(msgs)} times in one batch")
    s.check(dead.topic == dlq_topic, f"dead-letter copy says topic {dead.topic!r}, want {dlq_topic!r}")
    s.check(dead.body == body, f"dead-letter copy body {dead.body!r}, want {body!r}")
    s.check(dead.tag == "D", f"dead-letter copy tag {dead.tag!r}, want 'D'")
    s.check(dead.keys == {key}, f"dead-letter copy keys {dead.keys}, want {{{key!r}}}")
    s.check(dead.properties == props,
            f"dead-letter copy user properties {dead.properties}, want exactly {props}")
    s.step(f"dead-letter copy received from {dlq_topic}")
    dlq_consumer.ack(dead)
    acked_at = time.monotonic()
    s.expect_nothing(dlq_consumer, max(0.0, acked_at + s.invisible + 1 - time.monotonic()),
                     why=f"from {dlq_topic} after the ack")
    s.expect_nothing(consumer, 0, why=f"for {group} after the message was dead-lettered")


if __name__ == "__main__":
    Scenario("dlq").run(main)
