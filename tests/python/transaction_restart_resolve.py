"""Second half of "a restart in the middle of an open transaction still resolves it".

Runs after transaction_restart_open.py left a transaction open and the broker restarted: the
broker rebuilt its open transactions from the commit log and checks this one back; a new
producer of the topic answers COMMIT, and the message is delivered exactly once.
"""

import threading
import time

from rocketmq import TransactionChecker, TransactionResolution

from scenario import Scenario, describe


class Committer(TransactionChecker):
    def __init__(self, body):
        self.body = body
        self.calls = 0
        self.lock = threading.Lock()

    def check(self, message):
        with self.lock:
            self.calls += 1
        print(f"           checker called for {message.body!r} id={message.message_id}", flush=True)
        if message.body == self.body:
            return TransactionResolution.COMMIT
        return TransactionResolution.ROLLBACK


def main(s):
    topic = s.unique("txrestart")
    group = s.unique("grp-txrestart")
    body = f"open-across-restart-{s.suffix}".encode()
    checker = Committer(body)
    consumer = s.simple_consumer(group, {topic: "*"})
    s.producer([topic], checker)
    s.step("producer with a committing checker started; waiting for the broker's check")

    got = None
    deadline = time.monotonic() + 40
    while got is None:
        s.check(time.monotonic() < deadline,
                f"the open transaction was not delivered within 40 s of the restart (checker calls: {checker.calls})")
        for m in s.receive(consumer):
            s.check(m.body == body and m.topic == topic, f"unexpected message: {describe(m)}")
            s.check(got is None, f"delivered twice: {describe(m)}")
            got = m
            consumer.ack(m)
    s.step(f"delivered {got.message_id} after {checker.calls} check(s)")
    s.check(checker.calls >= 1, "delivered without a check (nobody committed it)")
    s.expect_nothing(consumer, 3, why="after the committed message (no second delivery)")


if __name__ == "__main__":
    Scenario("transaction_restart_resolve").run(main)
