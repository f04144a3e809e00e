"""FIFO: per message group order, and nothing of a group while an earlier message is in flight.

The topic ``fifo-<suffix>`` must be a FIFO topic (created by the harness: rocketlog consumes a
topic that accepts only FIFO messages in order). A producer sends PER_GROUP messages for each
of several message groups, interleaved. A SimpleConsumer then runs four phases, and every
message it receives is checked against a model of what may be delivered:

- within a message group, messages arrive in send order, without gaps (a batch may carry
  several consecutive messages of one group);
- no message of a group arrives while an earlier message of that group is in flight
  (received, neither acked nor returned, invisible time not over);
- a redelivery repeats the same message id with delivery_attempt + 1.

Phases: (1) receive one message at a time without acking until the broker has nothing more:
every group's head is in flight and nothing else comes (one at a time, so that a broker that
ignores FIFO is caught handing out a later message of a group in a second receive); (2) ack
group 0's messages, receive one at a time again: only group 0 moves on;
(3) nack group 1 (ChangeInvisibleDuration to the shortest invisible time): group 1 comes back
from the same message, attempt 2, not before that time; (4) ack everything as it comes until
all messages are consumed, then nothing more comes.
"""

import time

from scenario import Scenario, ScenarioFailed, describe

GROUPS = 3
PER_GROUP = 4
FIFO = 2  # apache.rocketmq.v2.MessageType.FIFO
# Invisible time of held messages: long enough that nothing held expires during phases 1-3.
HOLD_SECS = 25
EARLY_TOLERANCE_SECS = 0.25


class Model:
    """What the consumer group may be delivered next, per message group."""

    def __init__(self, s, names, ids):
        self.s = s
        self.names = names          # message group names, index = group number
        self.ids = ids              # (group, seq) -> message id
        self.acked = [0] * GROUPS   # messages 0..acked-1 of a group are done
        self.inflight = [[] for _ in range(GROUPS)]  # [(msg, invisible_until)]
        self.attempts = {}          # (group, seq) -> attempt of its latest delivery
        self.returned_at = [None] * GROUPS  # nack: (earliest visible time) of the group's head

    def parse(self, msg):
        try:
            g, seq = msg.body.decode().split(":")[1:3]
            g, seq = int(g), int(seq)
        except (ValueError, UnicodeDecodeError, IndexError):
            raise ScenarioFailed(f"unexpected message: {describe(msg)}")
        self.s.check(0 <= g < GROUPS and 0 <= seq < PER_GROUP, f"unexpected message: {describe(msg)}")
        return g, seq

    def receive(self, consumer, invisible, max_num=32):
        started = time.monotonic()
        msgs = self.s.receive(consumer, max_num=max_num, invisible=invisible)
        arrived = time.monotonic()
        in_batch = [0] * GROUPS
        for msg in msgs:
            g, seq = self.parse(msg)
            where = f"group {g} message {seq} ({describe(msg)})"
            self.s.check(msg.message_group == self.names[g],
                         f"{where}: message_group {msg.message_group!r}, want {self.names[g]!r}")
            self.s.check(msg.message_type == FIFO, f"{where}: message type {msg.message_type}, want FIFO (2)")
            self.s.check(msg.message_id == self.ids[(g, seq)],
                         f"{where}: id {msg.message_id}, want {self.ids[(g, seq)]}")
            if in_batch[g] == 0 and self.inflight[g]:
                holding = min(until for _, until in self.inflight[g])
                if arrived < holding:
                    held = ", ".join(str(self.parse(m)[1]) for m, _ in self.inflight[g])
                    raise ScenarioFailed(
                        f"{where} was delivered while message(s) {held} of the same group were in "
                        f"flight (invisible for {holding - arrived:.1f}s more)")
                # Everything held of this group timed out: the group starts over at its head.
                self.inflight[g] = []
            expected = self.acked[g] + in_batch[g]
            self.s.check(seq == expected,
                         f"{where} arrived out of order: the next message of group {g} is {expected}")
            previous = self.attempts.get((g, seq))
            want_attempt = 1 if previous is None else previous + 1
            self.s.check(msg.delivery_attempt == want_attempt,
                         f"{where}: delivery_attempt {msg.delivery_attempt}, want {want_attempt}")
            if previous is not None and self.returned_at[g] is not None:
                self.s.check(arrived >= self.returned_at[g] - EARLY_TOLERANCE_SECS,
                             f"{where} came back {self.returned_at[g] - arrived:.2f}s before the invisible "
                             "time set by ChangeInvisibleDuration ended")
            self.attempts[(g, seq)] = msg.delivery_attempt
            self.inflight[g].append((msg, started + invisible))
            in_batch[g] += 1
        for g in range(GROUPS):
            if in_batch[g]:
                self.returned_at[g] = None
        return msgs

    def receive_until_empty(self, consumer, invisible, deadline_secs, max_num):
        deadline = time.monotonic() + deadline_secs
        while self.receive(consumer, invisible, max_num):
            self.s.check(time.monotonic() < deadline,
                         f"the broker kept delivering for {deadline_secs}s; it should have run dry")

    def ack_group(self, consumer, g):
        for msg, _ in self.inflight[g]:
            consumer.ack(msg)
            self.acked[g] += 1
        self.inflight[g] = []

    def nack_group(self, consumer, g, secs):
        self.returned_at[g] = time.monotonic() + secs
        for msg, _ in self.inflight[g]:
            consumer.change_invisible_duration(msg, secs)
        self.inflight[g] = []

    def check_heads_in_flight(self, groups, phase):
        for g in groups:
            if self.acked[g] < PER_GROUP:
                self.s.check(self.inflight[g],
                             f"{phase}: group {g} has message {self.acked[g]} ready, but receive came back "
                             "empty without delivering it")

    def done(self):
        return all(a == PER_GROUP for a in self.acked)


def main(s):
    topic = s.unique("fifo")
    group = s.unique("grp-fifo")
    names = [s.unique(f"mg{g}") for g in range(GROUPS)]
    producer = s.producer([topic])
    ids = {}
    for seq in range(PER_GROUP):
        for g in range(GROUPS):
            msg = s.message(topic, f"fifo:{g}:{seq}:{s.suffix}".encode(), tag="F", group=names[g])
            ids[(g, seq)] = s.send(producer, msg).message_id
    s.step(f"sent {PER_GROUP} messages for each of {GROUPS} message groups, interleaved")

    consumer = s.simple_consumer(group, {topic: "*"})
    model = Model(s, names, ids)

    s.step("phase 1: receive one at a time without acking until nothing more comes")
    model.receive_until_empty(consumer, HOLD_SECS, 15, max_num=1)
    model.check_heads_in_flight(range(GROUPS), "phase 1")

    s.step("phase 2: ack group 0 only; only group 0 may move on")
    model.ack_group(consumer, 0)
    model.receive_until_empty(consumer, HOLD_SECS, 15, max_num=1)
    model.check_heads_in_flight([0], "phase 2")

    s.step(f"phase 3: nack group 1 for {s.invisible}s; it must restart from the same message")
    head = model.acked[1]
    model.nack_group(consumer, 1, s.invisible)
    deadline = time.monotonic() + s.invisible + 15
    while not model.inflight[1]:
        s.check(time.monotonic() < deadline,
                f"group 1 message {head} did not come back within {s.invisible + 15}s of its nack")
        model.receive(consumer, HOLD_SECS)
    s.check(model.attempts[(1, head)] == 2, f"group 1 message {head} came back with attempt "
                                            f"{model.attempts[(1, head)]}, want 2")

    s.step("phase 4: ack everything as it comes")
    deadline = time.monotonic() + 25
    while not model.done():
        s.check(time.monotonic() < deadline,
                f"not all messages consumed within 25s; acked per group: {model.acked}")
        for g in range(GROUPS):
            model.ack_group(consumer, g)
        if model.done():
            break
        model.receive(consumer, HOLD_SECS)
    s.step(f"all {GROUPS * PER_GROUP} messages consumed in order")
    s.expect_nothing(consumer, 0, why="after every message was acked")


if __name__ == "__main__":
    Scenario("fifo").run(main)
