"""Authentication and access rules with real credentials.

The harness starts the broker with ``[broker.auth] enabled = true`` and these users:

- ``app`` / ``app-secret-key``: allow Pub and Sub on topics ``auth-ok-*``, deny Pub on
  ``auth-ok-readonly-*``, allow Sub as groups ``auth-grp-*``;
- ``root`` / ``root-secret-key``: a super user.

Checks, each through the official client:
1. ``app`` sends to ``auth-ok-<suffix>`` and consumes it as ``auth-grp-<suffix>`` (the control).
2. A wrong secret key for ``app``: refused with UNAUTHORIZED (40100), "bad signature".
3. An unknown access key: UNAUTHORIZED, "unknown access key".
4. A client whose clock is an hour behind (the signed ``x-mq-date-time`` is old): UNAUTHORIZED,
   naming the clock.
5. ``app`` sending to a topic no rule allows, and to one a deny rule covers: FORBIDDEN (40300)
   naming the topic; consuming as a group no rule allows: FORBIDDEN naming the group.
6. No credentials at all: UNAUTHORIZED.
7. The broker still serves ``app`` and ``root`` afterwards.
"""

import datetime as real_datetime
import time

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Producer, SimpleConsumer
from rocketmq.v5.util import signature as client_signature

from scenario import Scenario

APP = ("app", "app-secret-key")
ROOT = ("root", "root-secret-key")
UNAUTHORIZED = "40100"
FORBIDDEN = "40300"


def configuration(s, credentials):
    creds = Credentials(*credentials) if credentials else Credentials()
    return ClientConfiguration(s.endpoint, creds, request_timeout=3)


def producer(s, credentials, topic):
    p = Producer(configuration(s, credentials), (topic,))
    p.startup()
    s.clients.append(p)
    return p


def refused(s, what, code, fragment, call):
    """``call`` must fail, and the client must have been told ``code`` with ``fragment``."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the client reports refusals as plain exceptions
        text = str(e)
        s.step(f"{what}: refused: {type(e).__name__}: {text[:200]}")
    else:
        s.check(False, f"{what}: succeeded, should be refused with {code}")
    seen = [line for line in s.client_log_lines(code) if fragment in line] or (
        [text] if code in text and fragment in text else [])
    s.check(seen, f"{what}: the client was never told {code} with {fragment!r}")
    s.step(f"{what}: the client saw {seen[0][:200]}")


def send_one(s, p, topic, body):
    s.send(p, s.message(topic, body, tag="A"))


class _SlowClock(real_datetime.datetime):
    """``datetime`` whose ``now()`` is an hour behind: a client with a wrong clock."""

    @classmethod
    def now(cls, tz=None):
        return real_datetime.datetime.now(tz) - real_datetime.timedelta(hours=1)


def main(s):
    # The client logs each refused call (and, for sends, that it gave up after retrying).
    s.allow_client_errors(UNAUTHORIZED, FORBIDDEN, "failed to fetch topic", "route raise exception",
                          "run out of attempt times")
    topic = f"auth-ok-{s.suffix}"
    readonly = f"auth-ok-readonly-{s.suffix}"
    other = f"auth-other-{s.suffix}"
    group = f"auth-grp-{s.suffix}"

    # 1. The control: the right key publishes and consumes.
    app = producer(s, APP, topic)
    send_one(s, app, topic, b"allowed")
    consumer = SimpleConsumer(configuration(s, APP), group, {topic: FilterExpression("*")},
                              await_duration=s.await_secs)
    consumer.startup()
    s.clients.append(consumer)
    got = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        got = s.receive(consumer)
    s.check([m.body for m in got] == [b"allowed"], f"app consumes what it sent, got {got}")
    consumer.ack(got[0])
    s.step("app publishes to and consumes from its own topic")

    # 2-4. Who sent it cannot be proven.
    refused(s, "wrong secret key", UNAUTHORIZED, "bad signature",
            lambda: send_one(s, producer(s, (APP[0], "not-the-secret"), topic), topic, b"x"))
    refused(s, "unknown access key", UNAUTHORIZED, "unknown access key",
            lambda: send_one(s, producer(s, ("nobody", "nobody-secret"), topic), topic, b"x"))
    client_signature.datetime = _SlowClock
    try:
        refused(s, "a clock an hour behind", UNAUTHORIZED, "clock",
                lambda: send_one(s, producer(s, APP, topic), topic, b"x"))
    finally:
        client_signature.datetime = real_datetime.datetime

    # 5. Known, but not allowed.
    refused(s, "a topic no rule allows", FORBIDDEN, other,
            lambda: send_one(s, producer(s, APP, other), other, b"x"))
    refused(s, "a topic a deny rule covers", FORBIDDEN, "denied by rule",
            lambda: send_one(s, app, readonly, b"x"))

    def consume_as_other_group():
        c = SimpleConsumer(configuration(s, APP), f"other-grp-{s.suffix}", {topic: FilterExpression("*")},
                           await_duration=1)
        c.startup()
        s.clients.append(c)
        c.receive(1, s.invisible)

    refused(s, "a group no rule allows", FORBIDDEN, f"other-grp-{s.suffix}", consume_as_other_group)

    # 6. Anonymous.
    refused(s, "no credentials", UNAUTHORIZED, "authentication is required",
            lambda: send_one(s, producer(s, None, topic), topic, b"x"))

    # 7. The broker is fine and still serves the right keys.
    send_one(s, app, topic, b"after")
    root = producer(s, ROOT, other)
    send_one(s, root, other, b"root may")
    s.step("the broker still serves app and the super user")


if __name__ == "__main__":
    Scenario("auth").run(main)
