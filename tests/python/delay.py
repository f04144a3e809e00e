"""Delayed messages through the official Python client.

Sends DELAY messages due 1 s, 5 s and 30 s ahead (all at once, so the run takes ~32 s) to a
DELAY topic and checks that each becomes visible at its time, never before, with its
``delivery_timestamp`` set, exactly once; lateness is printed per delay (precision is
measured by the bench, never asserted: CI machines are loaded). The Python client sends
``delivery_timestamp`` in whole seconds, so a message is due at ``target`` seconds sharp.

Also: a recalled message (``SendReceipt.recall_handle`` + ``Producer.recall_message``) never
arrives; a bad recall handle is refused with BAD_REQUEST (40000); a delayed message to a
NORMAL-only topic is refused (by the client's own route check, or the broker's 40014); a delivery time
beyond the broker's maximum (40 days) is refused with ILLEGAL_DELIVERY_TIME (40012).

The harness creates ``delay-<suffix>`` (DELAY) and ``plain-<suffix>`` (NORMAL).
"""

import os
import time

from scenario import Scenario, describe

DELAYS = [int(d) for d in os.environ.get("ROCKETLOG_DELAYS", "1,5,30").split(",")]
PER_DELAY = 3
# The consumer's host and the broker share a clock; allow for timestamp rounding only.
EARLY_SLACK_SECS = 0.05


def error_text(e):
    """The exception and its causes, as the client formats them (code first)."""
    parts = []
    while e is not None and len(parts) < 5:
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)


def expect_refused(s, what, accepted, call):
    """``call`` must raise an error whose text has the code (or one of the fragments)."""
    accepted = (str(accepted),) if isinstance(accepted, int) else accepted
    try:
        result = call()
    except Exception as e:  # noqa: BLE001 - the client raises its own exception types
        text = error_text(e)
        s.step(f"{what} refused: {text}")
        s.check(any(a in text for a in accepted), f"{what}: expected {accepted}, got {text}")
        return
    raise AssertionError(f"{what} was accepted: {result!r}")


def body(s):
    topic = s.unique("delay")
    plain = s.unique("plain")
    group = s.unique("delay-group")
    producer = s.producer((topic, plain))
    consumer = s.simple_consumer(group, {topic: "*"})
    # Refused sends and recalls are logged by the client as errors: expected here.
    s.allow_client_errors("40000", "40012", "40014", "recall", "Recall", "send message", "Send message")

    expected = {}  # message id -> (due seconds, delay)
    # Whole seconds, as the client sends them: start from the next second so that a "1 s"
    # message is due 1-2 s ahead, never already past (which would make it immediate).
    now = int(time.time()) + 1
    for delay in DELAYS:
        for i in range(PER_DELAY):
            msg = s.message(topic, f"delay {delay}s #{i}".encode(), tag=f"d{delay}",
                            properties={"delay": str(delay)})
            msg.delivery_timestamp = now + delay
            receipt = s.send(producer, msg)
            s.check(receipt.recall_handle, f"no recall handle for delayed message {receipt.message_id}")
            expected[receipt.message_id] = (now + delay, delay)
    s.step(f"sent {len(expected)} delayed messages due at +{DELAYS} s")

    # Recall one before its time.
    doomed = s.message(topic, b"recall me", tag="recalled")
    doomed.delivery_timestamp = now + 4
    doomed_receipt = s.send(producer, doomed)
    recalled_id = producer.recall_message(topic, doomed_receipt.recall_handle)
    s.check(recalled_id == doomed_receipt.message_id,
            f"recall returned {recalled_id}, expected {doomed_receipt.message_id}")
    s.step(f"recalled {recalled_id}")
    expect_refused(s, "recall with a bad handle", 40000,
                   lambda: producer.recall_message(topic, "not-a-handle"))

    wrong = s.message(plain, b"delayed to a NORMAL topic")
    wrong.delivery_timestamp = now + 5
    # The Python client checks the route's accepted types itself; the broker's own check
    # (MESSAGE_PROPERTY_CONFLICT_WITH_TYPE) is covered by client/tests/delay.rs.
    expect_refused(s, "delayed message to a NORMAL topic",
                   ("40014", "not match with queue accept message types"),
                   lambda: producer.send(wrong))
    too_far = s.message(topic, b"too far")
    too_far.delivery_timestamp = now + 41 * 24 * 3600
    expect_refused(s, "delivery time 41 days ahead", 40012, lambda: producer.send(too_far))

    lateness = {d: [] for d in DELAYS}
    seen = set()
    deadline = time.time() + max(DELAYS) + 15
    while len(seen) < len(expected):
        s.check(time.time() < deadline,
                f"only {len(seen)} of {len(expected)} delayed messages arrived: missing "
                f"{sorted(set(expected) - seen)}")
        msgs = s.receive(consumer, max_num=16)
        arrived = time.time()
        for m in msgs:
            s.check(m.message_id != recalled_id, f"the recalled message arrived: {describe(m)}")
            s.check(m.message_id in expected, f"unexpected message {describe(m)}")
            s.check(m.message_id not in seen, f"delivered twice: {describe(m)}")
            due, delay = expected[m.message_id]
            late = arrived - due
            s.check(late >= -EARLY_SLACK_SECS, f"arrived {-late:.3f}s early: {describe(m)}")
            s.check(m.delivery_timestamp == due * 1000,
                    f"delivery_timestamp {m.delivery_timestamp} != {due * 1000}: {describe(m)}")
            s.check(m.properties.get("delay") == str(delay), f"lost properties: {describe(m)}")
            consumer.ack(m)
            seen.add(m.message_id)
            lateness[delay].append(late)
    for delay in DELAYS:
        values = sorted(lateness[delay])
        s.step(f"delay {delay}s: lateness min {values[0] * 1000:.0f} ms, "
               f"max {values[-1] * 1000:.0f} ms over {len(values)} messages")
    s.expect_nothing(consumer, 1, why="after every delayed message was acked")


if __name__ == "__main__":
    Scenario("delay").run(body)
