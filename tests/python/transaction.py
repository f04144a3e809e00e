"""Transactional messages: commit, rollback and the server's check-back.

The broker is tuned (tests/tests/python_transaction.rs) to check an open transaction 4 s after
its half message was stored, then every 1 s.

1. A transaction committed by the producer is delivered once; one rolled back never is; a half
   message is invisible until its commit.
2. A transaction left open is checked back over the producer's Telemetry stream: the checker
   answers UNKNOWN first (the client then sends EndTransaction with an unspecified resolution),
   so the broker asks again; the second answer is COMMIT and the message is delivered once.
   Transactions the producer resolved itself are never checked.
3. Committing the committed transaction again changes nothing (answered OK, no second
   delivery); committing the rolled-back one fails with INVALID_TRANSACTION_ID.
4. A topic that does not accept TRANSACTION messages is refused (its route says so).
In the end exactly the committed messages were consumed, each once.
"""

import threading
import time

from rocketmq import TransactionChecker, TransactionResolution
from rocketmq.grpc_protocol import Code
from rocketmq.v5.exception import ClientException, IllegalArgumentException

from scenario import Scenario, ScenarioFailed, describe


class Checker(TransactionChecker):
    """Answers UNKNOWN to the first check of each message, COMMIT to the next ones."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}

    def check(self, message):
        body = message.body.decode(errors="replace")
        with self.lock:
            n = self.calls.get(body, 0) + 1
            self.calls[body] = n
        print(f"           checker called for {body!r} (call {n}), topic={message.topic} "
              f"id={message.message_id}", flush=True)
        return TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED if n == 1 else TransactionResolution.COMMIT

    def count(self, body):
        with self.lock:
            return self.calls.get(body, 0)

    def snapshot(self):
        with self.lock:
            return dict(self.calls)


def send_half(s, producer, topic, body):
    tx = producer.begin_transaction()
    msg = s.message(topic, body.encode(), tag="tx", keys=[f"{body}-key"], properties={"kind": body})
    receipt = producer.send(msg, tx)
    s.check(receipt.message_id == msg.message_id,
            f"half message receipt id {receipt.message_id} != sent id {msg.message_id}")
    s.check(receipt.transaction_id, f"no transaction id for {body}")
    return tx, receipt


def main(s):
    topic = s.unique("tx")
    normal = s.unique("txnormal")
    group = s.unique("grp-tx")
    checker = Checker()
    consumer = s.simple_consumer(group, {topic: "*"})
    producer = s.producer([topic, normal], checker)
    # The client logs every EndTransaction the broker refuses (step 3 provokes one).
    s.allow_client_errors("transaction commit or rollback error", "end transaction error")

    # 1. commit and rollback by the producer
    tx1, r1 = send_half(s, producer, topic, "committed")
    tx2, r2 = send_half(s, producer, topic, "rolled-back")
    s.step(f"sent two half messages: {r1.message_id} (tx {r1.transaction_id}), "
           f"{r2.message_id} (tx {r2.transaction_id})")
    s.expect_nothing(consumer, 0.1, why="before any commit (half messages are hidden)")
    tx1.commit()
    tx2.rollback()
    s.step("committed the first, rolled back the second")

    # 2. one left open for the checker
    tx3, r3 = send_half(s, producer, topic, "checked")
    s.step(f"left {r3.message_id} (tx {r3.transaction_id}) open for the broker to check")

    want = {r1.message_id: "committed", r3.message_id: "checked"}
    got = {}
    deadline = time.monotonic() + 40
    while set(got) != set(want):
        s.check(time.monotonic() < deadline,
                f"committed messages not all delivered within 40 s: got {sorted(got)}, want {sorted(want)}; "
                f"checker calls {checker.snapshot()}")
        for m in s.receive(consumer):
            s.check(m.message_id in want, f"delivered a message that was not committed: {describe(m)}")
            s.check(m.message_id not in got, f"delivered {m.message_id} twice")
            s.check(m.body == want[m.message_id].encode(), f"wrong body: {describe(m)}")
            s.check(m.topic == topic, f"delivered on topic {m.topic}, want {topic}")
            s.check(m.tag == "tx" and m.properties.get("kind") == want[m.message_id],
                    f"tag or properties lost: {describe(m)}")
            got[m.message_id] = m
            consumer.ack(m)
    s.step("both committed messages delivered once")
    s.check(checker.count("checked") == 2,
            f"the open transaction was checked {checker.count('checked')} times; want 2 "
            f"(UNKNOWN, then COMMIT): {checker.snapshot()}")
    s.check(checker.count("committed") == 0 and checker.count("rolled-back") == 0,
            f"the broker checked a transaction the producer had resolved: {checker.snapshot()}")

    # 3. resolving again
    tx1.commit()
    s.step("committing the committed transaction again was answered OK")
    try:
        tx2.commit()
    except ClientException as e:
        s.check(e.code == Code.INVALID_TRANSACTION_ID,
                f"commit after rollback failed with code {e.code}, want INVALID_TRANSACTION_ID (40008)")
    else:
        raise ScenarioFailed("committing a rolled-back transaction succeeded")
    s.step("committing the rolled-back transaction failed with INVALID_TRANSACTION_ID")

    # 4. a NORMAL-only topic
    try:
        send_half(s, producer, normal, "wrong-topic")
    except IllegalArgumentException as e:
        s.check("message type" in str(e), f"unexpected refusal: {e}")
    else:
        raise ScenarioFailed("a NORMAL-only topic accepted a transactional message")
    s.step("a NORMAL-only topic refused the transactional message")

    s.expect_nothing(consumer, 3, why="after the committed messages (no second delivery, no rolled-back one)")
    s.check(checker.count("checked") == 2,
            f"the committed transaction was checked again: {checker.snapshot()}")


if __name__ == "__main__":
    Scenario("transaction").run(main)
