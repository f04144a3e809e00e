"""Redelivery after the invisible time, ChangeInvisibleDuration, ack, bad receipt handles.

1. One message is received with the shortest invisible duration the broker allows
   (``ROCKETLOG_INVISIBLE_SECS``, whole seconds as the Python client sends it) and not acked.
2. It must not come back before the invisible time ends, and must come back after it: same
   id, same body, delivery_attempt 2, a new receipt handle.
3. ChangeInvisibleDuration on it returns a new receipt handle (the client swaps it in); an ack
   with that handle succeeds, and the message never comes back.
4. Acking with a receipt handle the broker never issued fails with INVALID_RECEIPT_HANDLE.
5. A receive without an invisible duration (the client leaves it out for 0) fails with
   ILLEGAL_INVISIBLE_TIME, as the proxy answers a simple consumer (auto_renew false).
"""

import time

from rocketmq.grpc_protocol import Code
from rocketmq.v5.exception import BadRequestException

from scenario import Scenario, ScenarioFailed, describe

# Slack for "not before the invisible time": the broker's clock and ours start the invisible
# time at slightly different moments within the receive call.
EARLY_TOLERANCE_SECS = 0.25


def main(s):
    topic = s.unique("redelivery")
    group = s.unique("grp-redelivery")
    producer = s.producer([topic])
    body = f"redelivery-{s.suffix}".encode()
    sent = s.send(producer, s.message(topic, body, tag="R", keys=[f"key-{s.suffix}"],
                                      properties={"scenario": "redelivery"}))
    mid = sent.message_id
    consumer = s.simple_consumer(group, {topic: "*"})

    # 1. first delivery
    first = None
    deadline = time.monotonic() + 15
    while first is None:
        s.check(time.monotonic() < deadline, "the message was not delivered within 15 s")
        call_started = time.monotonic()
        msgs = s.receive(consumer)
        if msgs:
            s.check(len(msgs) == 1 and msgs[0].message_id == mid,
                    "first receive: expected only the sent message, got "
                    + "; ".join(describe(m) for m in msgs))
            first = msgs[0]
    s.check(first.delivery_attempt == 1, f"first delivery has delivery_attempt {first.delivery_attempt}, want 1")
    s.check(first.body == body, f"first delivery body {first.body!r}, want {body!r}")
    visible_again = call_started + s.invisible - EARLY_TOLERANCE_SECS
    s.step(f"got first delivery, not acking; it may come back {s.invisible}s after it was handed out")

    # 2. not before the invisible time, then again with attempt 2
    second = None
    deadline = time.monotonic() + s.invisible + 15
    while second is None:
        s.check(time.monotonic() < deadline,
                f"the un-acked message did not come back within {s.invisible + 15}s of its first delivery")
        msgs = s.receive(consumer)
        got_at = time.monotonic()
        for m in msgs:
            s.check(m.message_id == mid, f"unexpected message: {describe(m)}")
            s.check(got_at >= visible_again,
                    f"message came back {visible_again + EARLY_TOLERANCE_SECS - got_at:.2f}s before its "
                    f"invisible time of {s.invisible}s ended")
            second = m
    s.check(second.delivery_attempt == 2,
            f"redelivery has delivery_attempt {second.delivery_attempt}, want 2")
    s.check(second.body == body, f"redelivery body {second.body!r}, want {body!r}")
    s.check(second.properties == {"scenario": "redelivery"},
            f"redelivery user properties {second.properties}, want {{'scenario': 'redelivery'}}")
    s.check(second.receipt_handle != first.receipt_handle,
            "the redelivery reused the first delivery's receipt handle (a handle is per delivery)")
    s.step("redelivered with attempt 2 after the invisible time")

    # 3. change the invisible time (new handle), then ack with the new handle
    old_handle = second.receipt_handle
    consumer.change_invisible_duration(second, s.invisible)
    s.check(second.receipt_handle and second.receipt_handle != old_handle,
            "ChangeInvisibleDuration did not return a new receipt handle "
            f"(got {second.receipt_handle!r}, old {old_handle!r})")
    s.step("ChangeInvisibleDuration returned a new receipt handle")
    consumer.ack(second)
    acked_at = time.monotonic()
    s.step("acked with the new handle")
    s.expect_nothing(consumer, max(0.0, acked_at + s.invisible + 1 - time.monotonic()),
                     why="after the ack (the message was acked and must not come back)")

    # 4. a receipt handle the broker never issued
    second.receipt_handle = "not-a-receipt-handle-" + s.suffix
    try:
        consumer.ack(second)
    except BadRequestException as e:
        s.check(e.code == Code.INVALID_RECEIPT_HANDLE,
                f"ack with a made-up receipt handle failed with code {e.code}, want INVALID_RECEIPT_HANDLE (40013)")
    else:
        raise ScenarioFailed("ack with a made-up receipt handle succeeded; want INVALID_RECEIPT_HANDLE")
    s.step("made-up receipt handle rejected with INVALID_RECEIPT_HANDLE")

    # 5. no invisible duration
    try:
        consumer.receive(1, 0)
    except BadRequestException as e:
        s.check(e.code == Code.ILLEGAL_INVISIBLE_TIME,
                f"receive without an invisible duration failed with code {e.code}, want ILLEGAL_INVISIBLE_TIME (40011)")
    else:
        raise ScenarioFailed("receive without an invisible duration succeeded; want ILLEGAL_INVISIBLE_TIME")
    s.step("receive without an invisible duration rejected with ILLEGAL_INVISIBLE_TIME")


if __name__ == "__main__":
    Scenario("redelivery").run(main)
