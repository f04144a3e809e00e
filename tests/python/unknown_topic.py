"""With topic auto-creation off, an unknown topic is refused with TOPIC_NOT_FOUND.

The harness starts the broker with ``auto_create_topics = false`` and creates the topic
``existing-<suffix>`` through the admin API. A producer can send to that topic (the control),
but sending to ``missing-<suffix>`` fails promptly: the route query is answered with
TOPIC_NOT_FOUND (40402), which the client reports. A SimpleConsumer subscribed to the missing
topic cannot receive either.
"""

import time

from scenario import Scenario, ScenarioFailed

TOPIC_NOT_FOUND = "40402"
FAIL_WITHIN_SECS = 10


def main(s):
    # The client logs every failed route query and the failures they cause.
    s.allow_client_errors(TOPIC_NOT_FOUND, "failed to fetch topic", "route raise exception")
    existing = s.unique("existing")
    missing = s.unique("missing")
    producer = s.producer([existing])
    s.send(producer, s.message(existing, b"control", tag="C"))
    s.step(f"send to the existing topic {existing} works")

    started = time.monotonic()
    try:
        producer.send(s.message(missing, b"nowhere", tag="C"))
    except Exception as e:  # noqa: BLE001 - the client reports a failed route as a plain Exception
        s.step(f"send to {missing} failed as expected: {type(e).__name__}: {e}")
    else:
        raise ScenarioFailed(f"send to the unknown topic {missing} succeeded with auto-creation off")
    took = time.monotonic() - started
    s.check(took < FAIL_WITHIN_SECS, f"the failed send took {took:.1f}s")
    lines = s.client_log_lines(TOPIC_NOT_FOUND)
    s.check(lines, f"the client never saw code {TOPIC_NOT_FOUND} (TOPIC_NOT_FOUND) for {missing}; "
                   "the route query should be answered with it")
    s.step(f"route query answered with TOPIC_NOT_FOUND: {lines[0]}")

    consumer = s.simple_consumer(s.unique("grp-missing"), {missing: "*"})
    try:
        consumer.receive(1, s.invisible)
    except Exception as e:  # noqa: BLE001 - as above
        s.step(f"receive from {missing} failed as expected: {type(e).__name__}: {e}")
    else:
        raise ScenarioFailed(f"receive from the unknown topic {missing} succeeded")


if __name__ == "__main__":
    Scenario("unknown_topic").run(main)
