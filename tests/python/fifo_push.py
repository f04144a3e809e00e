"""FIFO PushConsumer: ordered consumption, local retries, ForwardMessageToDeadLetterQueue.

The topic ``fifopush-<suffix>`` must be a FIFO topic and the broker's max delivery attempts
small (``ROCKETLOG_MAX_ATTEMPTS``, 2 in the harness). The settings reply must tell the push
consumer its group is FIFO (the client then consumes each message group in order and retries
failures locally). The listener always fails one message of group 0: after the allowed
attempts (backoff delay between them from the settings' retry policy) the client calls
ForwardMessageToDeadLetterQueue, the broker moves the message to ``%DLQ%<group>`` and releases
the rest of group 0. Checked:

- the settings reply said FIFO (the client logs ``fifo: True``);
- each message group's listener calls follow send order exactly (the failing message repeated
  max_attempts times, nothing of its group in between, nothing delivered twice);
- the failed message can be read from ``%DLQ%<group>`` with its id and body.
"""

import threading
import time

from rocketmq import (ConsumeResult, FilterExpression, MessageListener,
                      PushConsumer)

from scenario import Scenario, describe

GROUPS = 2
PER_GROUP = 4
FAIL = (0, 1)  # (message group, seq) the listener always fails
FIRST_RETRY_DELAY_SECS = 1
EARLY_TOLERANCE_SECS = 0.25


class Recorder(MessageListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (monotonic time, group, seq, message)

    def consume(self, message):
        body = message.body.decode(errors="replace").split(":")
        try:
            g, seq = int(body[1]), int(body[2])
        except (IndexError, ValueError):
            g, seq = -1, -1
        with self.lock:
            self.calls.append((time.monotonic(), g, seq, message))
        return ConsumeResult.FAILURE if (g, seq) == FAIL else ConsumeResult.SUCCESS

    def snapshot(self):
        with self.lock:
            return list(self.calls)


def expected_calls(max_attempts):
    want = {}
    for g in range(GROUPS):
        seqs = []
        for seq in range(PER_GROUP):
            seqs.extend([seq] * (max_attempts if (g, seq) == FAIL else 1))
        want[g] = seqs
    return want


def main(s):
    s.check(2 <= s.max_attempts <= 3,
            f"ROCKETLOG_MAX_ATTEMPTS={s.max_attempts}: this scenario needs the broker set to 2 or 3 attempts")
    topic = s.unique("fifopush")
    group = s.unique("grp-fifopush")
    names = [s.unique(f"pmg{g}") for g in range(GROUPS)]
    producer = s.producer([topic])
    ids = {}
    for seq in range(PER_GROUP):
        for g in range(GROUPS):
            msg = s.message(topic, f"fifopush:{g}:{seq}:{s.suffix}".encode(), tag="F", group=names[g])
            ids[(g, seq)] = s.send(producer, msg).message_id
    s.step(f"sent {PER_GROUP} messages for each of {GROUPS} message groups, interleaved")

    recorder = Recorder()
    consumer = PushConsumer(s.configuration(), group, recorder, {topic: FilterExpression("*")})
    consumer.startup()
    s.clients.append(consumer)
    s.check(s.client_log_lines("fifo: True"),
            "the settings reply did not mark the group FIFO (the client logged no 'fifo: True'); "
            "a FIFO topic's consumer group must get subscription.fifo = true")
    s.step("push consumer started; the settings reply says FIFO")

    want = expected_calls(s.max_attempts)
    total = sum(len(v) for v in want.values())
    deadline = time.monotonic() + 40
    while len(recorder.snapshot()) < total:
        calls = recorder.snapshot()
        s.check(time.monotonic() < deadline,
                f"after 40 s the listener saw {len(calls)}/{total} calls: "
                + ", ".join(f"{g}:{seq}" for _, g, seq, _ in calls))
        time.sleep(0.1)  # polling the listener's record
    quiet_until = time.monotonic() + 3  # room for a wrong extra delivery to show
    while time.monotonic() < quiet_until:
        time.sleep(0.1)
    calls = recorder.snapshot()
    for g in range(GROUPS):
        got = [seq for _, cg, seq, _ in calls if cg == g]
        s.check(got == want[g], f"message group {g}: listener calls in order {got}, want {want[g]}")
    for _, g, seq, m in calls:
        s.check(g in range(GROUPS), f"unexpected message: {describe(m)}")
        s.check(m.message_id == ids[(g, seq)], f"group {g} message {seq}: id {m.message_id}, want {ids[(g, seq)]}")
        s.check(m.message_group == names[g], f"group {g} message {seq}: message_group {m.message_group!r}")
    failing = [t for t, g, seq, _ in calls if (g, seq) == FAIL]
    s.check(failing[1] - failing[0] >= FIRST_RETRY_DELAY_SECS - EARLY_TOLERANCE_SECS,
            f"the local retry came {failing[1] - failing[0]:.2f}s after the failure, before the "
            f"{FIRST_RETRY_DELAY_SECS}s delay of the settings' retry policy")
    s.step("each message group consumed in order; the failing message tried "
           f"{s.max_attempts} times, then the group moved on")

    dlq_topic = f"%DLQ%{group}"
    reader = s.simple_consumer(s.unique("grp-fifopush-dlq"), {dlq_topic: "*"})
    deadline = time.monotonic() + 20
    dead = None
    while dead is None:
        s.check(time.monotonic() < deadline, f"the failed message did not show up in {dlq_topic} within 20 s")
        for m in s.receive(reader):
            s.check(m.message_id == ids[FAIL], f"unexpected message in {dlq_topic}: {describe(m)}")
            dead = m
    want_body = f"fifopush:{FAIL[0]}:{FAIL[1]}:{s.suffix}".encode()
    s.check(dead.body == want_body, f"dead-letter copy body {dead.body!r}, want {want_body!r}")
    reader.ack(dead)
    s.step(f"the failed message was forwarded to {dlq_topic}")


if __name__ == "__main__":
    Scenario("fifo_push").run(main)
