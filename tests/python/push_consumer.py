"""PushConsumer: settings reply, QueryAssignment, auto-renewed receives, ack, nack and retry.

A PushConsumer (which waits for the server's settings at start, then asks QueryAssignment
and long-polls with ``auto_renew=true``) consumes N normal messages. Its listener fails the
first delivery of one message: the client nacks it with ChangeInvisibleDuration(backoff delay
of attempt 1 from the server's retry policy), and the message must come back with
delivery_attempt 2, not before that delay. Every other message is consumed once, and no
message is delivered again after it was consumed successfully.
"""

import threading
import time

from rocketmq import (ConsumeResult, FilterExpression, MessageListener,
                      PushConsumer)

from scenario import Scenario, describe

N = 6
FAIL_ONCE = 2  # index of the message whose first delivery the listener fails
EARLY_TOLERANCE_SECS = 0.25
# The first delay of the retry policy in the settings reply (the proxy's: 1 s).
FIRST_RETRY_DELAY_SECS = 1


class Recorder(MessageListener):
    def __init__(self, fail_id):
        self.lock = threading.Lock()
        self.fail_id = fail_id
        self.deliveries = []  # (monotonic time, message)
        self.succeeded = {}   # message id -> count of SUCCESS results
        self.failed_at = None

    def consume(self, message):
        now = time.monotonic()
        with self.lock:
            self.deliveries.append((now, message))
            if message.message_id == self.fail_id and self.failed_at is None:
                self.failed_at = now
                return ConsumeResult.FAILURE
            self.succeeded[message.message_id] = self.succeeded.get(message.message_id, 0) + 1
            return ConsumeResult.SUCCESS

    def snapshot(self):
        with self.lock:
            return list(self.deliveries), dict(self.succeeded), self.failed_at


def main(s):
    topic = s.unique("push")
    group = s.unique("grp-push")
    producer = s.producer([topic])
    bodies = {}
    ids = []
    for i in range(N):
        body = f"push-{i}-{s.suffix}".encode()
        mid = s.send(producer, s.message(topic, body, tag="P", properties={"index": str(i)})).message_id
        bodies[mid] = body
        ids.append(mid)
    s.step(f"sent {N} messages")

    recorder = Recorder(ids[FAIL_ONCE])
    consumer = PushConsumer(s.configuration(), group, recorder, {topic: FilterExpression("*")})
    consumer.startup()  # fails if the broker sends no settings within 10 s
    s.clients.append(consumer)
    s.step("push consumer started (server settings received)")

    deadline = time.monotonic() + 30
    while True:
        deliveries, succeeded, failed_at = recorder.snapshot()
        if set(succeeded) == set(ids):
            break
        s.check(time.monotonic() < deadline,
                f"after 30 s only {len(succeeded)}/{N} messages were consumed; deliveries: "
                + "; ".join(describe(m) for _, m in deliveries))
        time.sleep(0.1)  # polling the listener's record, not synchronizing with the broker
    s.step(f"all {N} messages consumed")

    # No message may come again after it was consumed; give redeliveries a moment to show.
    quiet_until = time.monotonic() + 3
    while time.monotonic() < quiet_until:
        time.sleep(0.1)
    deliveries, succeeded, failed_at = recorder.snapshot()
    for mid, count in succeeded.items():
        s.check(count == 1, f"message {mid} was consumed successfully {count} times")
    by_id = {}
    for at, m in deliveries:
        s.check(m.message_id in bodies, f"unexpected message: {describe(m)}")
        s.check(m.body == bodies[m.message_id], f"body mismatch: {describe(m)}")
        by_id.setdefault(m.message_id, []).append((at, m))
    for mid in ids:
        attempts = [m.delivery_attempt for _, m in by_id[mid]]
        want = [1, 2] if mid == ids[FAIL_ONCE] else [1]
        s.check(attempts == want, f"message {mid} delivered with attempts {attempts}, want {want}")
    retried_at = by_id[ids[FAIL_ONCE]][1][0]
    s.check(retried_at >= failed_at + FIRST_RETRY_DELAY_SECS - EARLY_TOLERANCE_SECS,
            f"the nacked message came back {retried_at - failed_at:.2f}s after the nack, before the "
            f"{FIRST_RETRY_DELAY_SECS}s backoff delay")
    s.step("the failed message came back once with attempt 2 after the backoff delay")


if __name__ == "__main__":
    Scenario("push_consumer").run(main)
