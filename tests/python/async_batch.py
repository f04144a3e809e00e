"""Many concurrent sends, and batched receives that respect the batch size.

The producer sends N messages with ``send_async`` (N SendMessage calls in flight at once);
every receipt must carry its message's id. A SimpleConsumer then receives with a small
``max_message_num``: no batch is larger, every message arrives exactly once and intact, acks
hold, and nothing more comes.
"""

import time

from scenario import Scenario, describe

N = 40
BATCH = 8
SEND_WAIT_SECS = 15


def main(s):
    topic = s.unique("async")
    group = s.unique("grp-async")
    producer = s.producer([topic])
    pending = []
    for i in range(N):
        msg = s.message(topic, f"async-{i}-{s.suffix}".encode(), tag="X", keys=[f"k{i}"])
        pending.append((msg, producer.send_async(msg)))
    bodies = {}
    for msg, future in pending:
        receipt = future.result(timeout=SEND_WAIT_SECS)
        s.check(receipt.message_id == msg.message_id,
                f"async send receipt id {receipt.message_id} != the client-generated id {msg.message_id}")
        bodies[receipt.message_id] = msg.body
    s.check(len(bodies) == N, f"{N} sends produced {len(bodies)} distinct message ids")
    s.step(f"{N} concurrent sends acknowledged")

    consumer = s.simple_consumer(group, {topic: "*"})
    left = set(bodies)
    seen = set()
    deadline = time.monotonic() + 30
    last_ack = time.monotonic()
    while left:
        s.check(time.monotonic() < deadline, f"{len(left)} of {N} messages not received within 30 s")
        for m in s.receive(consumer, max_num=BATCH):
            s.check(m.message_id in bodies, f"unexpected message: {describe(m)}")
            s.check(m.message_id not in seen, f"message delivered twice: {describe(m)}")
            s.check(m.body == bodies[m.message_id], f"body mismatch: {describe(m)}")
            seen.add(m.message_id)
            consumer.ack(m)
            last_ack = time.monotonic()
            left.discard(m.message_id)
    s.step(f"received all {N} messages in batches of at most {BATCH}")
    s.expect_nothing(consumer, max(0.0, last_ack + s.invisible + 1 - time.monotonic()),
                     why="after every message was acked")


if __name__ == "__main__":
    Scenario("async_batch").run(main)
