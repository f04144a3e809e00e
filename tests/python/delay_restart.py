"""Delayed messages survive a broker restart (official Python client), in two phases around a
restart done by the harness (``tests/tests/python_delay.rs``):

- ``ROCKETLOG_DELAY_PHASE=send``: registers the consumer group, sends DELAY messages due
  ``+2 s`` (due while the broker is down) and ``+10 s`` (due after it is back), and one due at
  ``+6 s`` that it recalls; writes them to ``ROCKETLOG_DELAY_STATE`` (JSON).
- the harness stops the broker, waits until the first ones are overdue, starts it again;
- ``ROCKETLOG_DELAY_PHASE=receive``: every message arrives exactly once, none before its time
  (how soon after the restart the overdue ones came is printed); the recalled one never.
"""

import json
import os
import time

from scenario import Scenario, describe

PER_GROUP = 3


def send_phase(s, state_path):
    topic = s.unique("delay")
    group = s.unique("delay-group")
    consumer = s.simple_consumer(group, {topic: "*"})
    s.expect_nothing(consumer, 0, why="before anything was sent")
    producer = s.producer((topic,))
    now = int(time.time())
    messages = []
    for due_in, kind in [(2, "overdue"), (10, "later")]:
        for i in range(PER_GROUP):
            msg = s.message(topic, f"{kind} #{i}".encode(), tag=kind)
            msg.delivery_timestamp = now + due_in
            receipt = s.send(producer, msg)
            messages.append({"id": receipt.message_id, "due": now + due_in, "kind": kind})
    doomed = s.message(topic, b"recalled", tag="recalled")
    doomed.delivery_timestamp = now + 6
    receipt = s.send(producer, doomed)
    s.check(producer.recall_message(topic, receipt.recall_handle) == receipt.message_id,
            "recall did not return the message id")
    messages.append({"id": receipt.message_id, "due": now + 6, "kind": "recalled"})
    with open(state_path, "w") as f:
        json.dump({"topic": topic, "group": group, "messages": messages,
                   "overdue_at": now + 2}, f)
    s.step(f"sent {len(messages)} messages, recalled {receipt.message_id}")


def receive_phase(s, state_path):
    with open(state_path) as f:
        state = json.load(f)
    started = time.time()
    consumer = s.simple_consumer(state["group"], {state["topic"]: "*"})
    expected = {m["id"]: m for m in state["messages"] if m["kind"] != "recalled"}
    recalled = {m["id"] for m in state["messages"] if m["kind"] == "recalled"}
    seen = set()
    deadline = time.time() + 30
    while len(seen) < len(expected):
        s.check(time.time() < deadline, f"missing after the restart: {sorted(set(expected) - seen)}")
        for m in s.receive(consumer, max_num=16):
            arrived = time.time()
            s.check(m.message_id not in recalled, f"the recalled message arrived: {describe(m)}")
            s.check(m.message_id in expected, f"unexpected message {describe(m)}")
            s.check(m.message_id not in seen, f"delivered twice: {describe(m)}")
            want = expected[m.message_id]
            s.check(arrived >= want["due"] - 0.05, f"arrived before its time: {describe(m)}")
            consumer.ack(m)
            seen.add(m.message_id)
            s.step(f"{want['kind']} {m.message_id}: {arrived - want['due']:+.3f}s vs due, "
                   f"{arrived - started:.3f}s after the receive phase started")
    s.expect_nothing(consumer, 1, why="after every message was acked")


def body(s):
    phase = os.environ.get("ROCKETLOG_DELAY_PHASE", "")
    state_path = os.environ.get("ROCKETLOG_DELAY_STATE", "")
    s.check(state_path, "ROCKETLOG_DELAY_STATE is not set")
    if phase == "send":
        send_phase(s, state_path)
    elif phase == "receive":
        receive_phase(s, state_path)
    else:
        s.check(False, f"ROCKETLOG_DELAY_PHASE must be send or receive, not {phase!r}")


if __name__ == "__main__":
    Scenario("delay_restart").run(body)
