"""Large and binary bodies round-trip intact.

Sends a body of exactly the broker's max body size (4 MiB, ``ROCKETLOG_MAX_BODY_BYTES``; the
producer learns the limit from the settings reply and refuses anything larger itself), and a
small body holding every byte value. Both must be received byte for byte (the client also
checks the body digest the broker sends).
"""

import os
import time

from scenario import Scenario, env_int, describe


def main(s):
    max_body = env_int("ROCKETLOG_MAX_BODY_BYTES", 4 * 1024 * 1024)
    topic = s.unique("large")
    group = s.unique("grp-large")
    producer = s.producer([topic])
    bodies = {}
    large = os.urandom(max_body)
    binary = bytes(range(256)) * 4
    for body in (large, binary):
        bodies[s.send(producer, s.message(topic, body, tag="L")).message_id] = body
    s.step(f"sent a {len(large)}-byte body and a {len(binary)}-byte binary body")

    consumer = s.simple_consumer(group, {topic: "*"})
    left = set(bodies)
    deadline = time.monotonic() + 20
    while left:
        s.check(time.monotonic() < deadline, f"{len(left)} message(s) not received within 20 s")
        for m in s.receive(consumer):
            s.check(m.message_id in bodies, f"unexpected message: {describe(m)}")
            want = bodies[m.message_id]
            s.check(len(m.body) == len(want), f"body of {m.message_id} is {len(m.body)} bytes, want {len(want)}")
            s.check(m.body == want, f"body of {m.message_id} differs from what was sent")
            consumer.ack(m)
            left.discard(m.message_id)
    s.step("both bodies received intact")


if __name__ == "__main__":
    Scenario("large_body").run(main)
