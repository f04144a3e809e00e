"""A nearly full disk: sends fail with a retriable status, everything acknowledged stays readable.

Driven in phases by the harness (``ROCKETLOG_DISK_PHASE``), which runs the broker on a small
tmpfs and fills that file system from outside between phases. Message ids of acknowledged sends
are appended to ``ROCKETLOG_DISK_STATE`` (one per line) so later phases and the harness see them.

- ``fill``: send BODY-byte messages keyed ``k-<n>`` until a send fails (at most MAX_SENDS); the
  failure must be the status the Apache proxy uses for "service not available" (INTERNAL_SERVER_ERROR,
  50001), not a permission problem (FORBIDDEN, 40300). With ``ROCKETLOG_DISK_COUNT`` set, send
  exactly that many and require all to succeed instead.
- ``read``: a new consumer group receives and acks every acknowledged message.
"""

import os

from scenario import Scenario, ScenarioFailed

BODY = 64 * 1024
MAX_SENDS = 2000
INTERNAL_SERVER_ERROR = "50001"
FORBIDDEN = "40300"


def acked(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def fill(s, topic, state):
    count = os.environ.get("ROCKETLOG_DISK_COUNT")
    producer = s.producer([topic])
    first = len(acked(state))
    limit = int(count) if count else MAX_SENDS
    sent = 0
    with open(state, "a") as out:
        for n in range(first, first + limit):
            msg = s.message(topic, bytes([n % 251]) * BODY, tag="D", keys=(f"k-{n}",))
            try:
                receipt = producer.send(msg)
            except Exception as e:  # noqa: BLE001 - the client raises a plain Exception
                if count:
                    raise ScenarioFailed(f"send {n} failed with room on the disk: {e}")
                text = str(e)
                s.step(f"send {n} failed after {sent} sends: {text}")
                s.check(FORBIDDEN not in text, f"a full disk was reported as FORBIDDEN: {text}")
                s.check(INTERNAL_SERVER_ERROR in text or "service not available" in text,
                        f"a full disk should be INTERNAL_SERVER_ERROR / service not available: {text}")
                print(f"FULL after={sent}", flush=True)
                return
            out.write(receipt.message_id + "\n")
            out.flush()
            sent += 1
    if not count:
        raise ScenarioFailed(f"{limit} sends of {BODY} bytes all succeeded: the disk never filled")
    s.step(f"sent {sent} messages")


def read(s, topic, state):
    expected = set(acked(state))
    s.check(expected, "no acknowledged message to read")
    consumer = s.simple_consumer(s.unique(f"reader-{os.getpid()}"), {topic: "*"})
    seen = set()
    idle = 0
    while seen != expected and idle < 3:
        msgs = consumer.receive(32, s.invisible)
        idle = 0 if msgs else idle + 1
        for m in msgs:
            s.check(len(m.body) == BODY, f"message {m.message_id} has {len(m.body)} bytes")
            seen.add(m.message_id)
            consumer.ack(m)
    missing = expected - seen
    s.check(not missing, f"{len(missing)} of {len(expected)} acknowledged messages not readable, "
                         f"e.g. {sorted(missing)[:3]}")
    print(f"READ {len(seen)} of {len(expected)}", flush=True)


def main(s):
    # The failed sends are logged by the client (with its retries).
    s.allow_client_errors(INTERNAL_SERVER_ERROR, "service not available", "run out of attempt times")
    topic = f"disk-{s.suffix}"
    state = os.environ["ROCKETLOG_DISK_STATE"]
    phase = os.environ["ROCKETLOG_DISK_PHASE"]
    if phase == "fill":
        fill(s, topic, state)
    elif phase == "read":
        read(s, topic, state)
    else:
        raise ScenarioFailed(f"unknown phase {phase!r}")


if __name__ == "__main__":
    Scenario("disk_full").run(main)
