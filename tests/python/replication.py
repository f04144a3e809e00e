"""Sends to a replicated broker group's master and reads back, driven in phases by the harness
(``ROCKETLOG_REPL_PHASE``). Acknowledged message ids are appended to ``ROCKETLOG_REPL_STATE``
(one per line) so that later phases and the harness can count them.

- ``send``: ``ROCKETLOG_REPL_PRODUCERS`` producers (threads, default 1) each send
  ``ROCKETLOG_REPL_COUNT`` messages (default 20). ``ROCKETLOG_REPL_EXPECT`` says what the
  sends must meet: ``ok`` (every send succeeds), ``ha`` (the first send fails with
  HA_NOT_AVAILABLE, 50002: too few slaves connected), ``timeout`` (the first send fails with
  SLAVE_PERSISTENCE_TIMEOUT, 50402), ``until-failure`` (each producer stops at its first failure,
  whatever it is: the harness kills the master meanwhile), ``slave`` (the first send fails with INTERNAL_SERVER_ERROR,
  50001, saying the broker is a replica: sent to a slave), or ``any`` (failures allowed; counted and reported, as while
  a master is being killed). With ``ROCKETLOG_REPL_DELAY_SECS`` the messages are delayed: due
  that many whole seconds after the next second. Prints ``SENT <acked> FAILED <failed>``.
- ``read``: a new consumer group receives and acks every message of the topic until it has
  seen every acknowledged id (or nothing more comes); prints ``READ <distinct> MISSING <n>
  DUPLICATES <n>``, and fails if an acknowledged id is missing (with ``ROCKETLOG_REPL_EXPECT=any``
  the missing ids are only counted: the loss async replication allows).
- ``consume``: the consumer group ``ROCKETLOG_REPL_GROUP`` receives and acks, at most
  ``ROCKETLOG_REPL_LIMIT`` distinct messages when that is set (else until it has seen every
  acknowledged id, counting those this group acked in earlier phases, or nothing more comes).
  The ids it acks are appended to ``ROCKETLOG_REPL_CONSUMED``; deliveries of ids already in that
  file (acked before, on another master) are counted as redelivered. With
  ``ROCKETLOG_REPL_DRAIN=1`` it receives until nothing more comes even when every acknowledged id
  was acked before (to catch redeliveries). Prints ``CONSUMED <n>
  REDELIVERED <n> MISSING <n> DUPLICATES <n>`` and, without a limit, fails if an acknowledged id
  was never delivered to the group (unless ``ROCKETLOG_REPL_EXPECT=any``).
- ``failover``: ``ROCKETLOG_REPL_PRODUCERS`` producers send without pause until the file
  ``ROCKETLOG_REPL_STOP`` exists (or ``ROCKETLOG_REPL_SECONDS`` pass), failures allowed, while
  the harness breaks the group. Every send's outcome is appended to ``ROCKETLOG_REPL_TIMELINE``
  as ``<started unix ms> <ended unix ms> ok|fail`` so the harness can measure how long each
  failover kept producers from succeeding. Prints ``SENT <acked> FAILED <failed>``.
"""

import os
import threading
import time

from scenario import Scenario, ScenarioFailed

HA_NOT_AVAILABLE = "50002"
SLAVE_PERSISTENCE_TIMEOUT = "50402"
INTERNAL_SERVER_ERROR = "50001"


def acked(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def send(s, topic, state):
    expect = os.environ.get("ROCKETLOG_REPL_EXPECT", "ok")
    count = int(os.environ.get("ROCKETLOG_REPL_COUNT", "20"))
    producers = int(os.environ.get("ROCKETLOG_REPL_PRODUCERS", "1"))
    delay = os.environ.get("ROCKETLOG_REPL_DELAY_SECS")
    lock = threading.Lock()
    results = {"acked": 0, "failed": 0, "errors": []}
    out = open(state, "a")

    def one_producer(p):
        producer = s.producer([topic])
        for n in range(count):
            msg = s.message(topic, f"repl-{p}-{n}-{s.suffix}".encode(), tag="R", keys=(f"k-{p}-{n}",))
            if delay is not None:
                msg.delivery_timestamp = int(time.time()) + 1 + int(delay)
            try:
                receipt = producer.send(msg)
            except Exception as e:  # noqa: BLE001 - the client raises a plain Exception
                with lock:
                    results["failed"] += 1
                    results["errors"].append(str(e))
                if expect in ("ha", "timeout", "slave", "until-failure"):
                    return
                if expect == "ok":
                    return
                continue
            with lock:
                out.write(receipt.message_id + "\n")
                out.flush()
                results["acked"] += 1

    threads = [threading.Thread(target=one_producer, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    errors = results["errors"]
    print(f"SENT {results['acked']} FAILED {results['failed']}", flush=True)
    if errors:
        s.step(f"first failure: {errors[0]}")
    if expect == "ok":
        s.check(not errors, f"a send failed: {errors[:1]}")
    elif expect == "slave":
        s.check(errors, "a send to a slave succeeded")
        s.check(all(INTERNAL_SERVER_ERROR in e and "replica" in e for e in errors),
                f"a send to a slave should be INTERNAL_SERVER_ERROR saying it is a replica: {errors[:1]}")
    elif expect in ("ha", "timeout"):
        code = HA_NOT_AVAILABLE if expect == "ha" else SLAVE_PERSISTENCE_TIMEOUT
        s.check(errors, f"every send succeeded; expected {code}")
        s.check(all(code in e for e in errors), f"expected {code} for every failure, got {errors[:1]}")
        s.check("replicated" in errors[0], f"the message should say what happened to the message: {errors[0]}")


def failover(s, topic, state):
    producers = int(os.environ.get("ROCKETLOG_REPL_PRODUCERS", "2"))
    stop = os.environ["ROCKETLOG_REPL_STOP"]
    limit = time.monotonic() + float(os.environ.get("ROCKETLOG_REPL_SECONDS", "600"))
    lock = threading.Lock()
    results = {"acked": 0, "failed": 0}
    out = open(state, "a")
    timeline = open(os.environ["ROCKETLOG_REPL_TIMELINE"], "a")

    def one_producer(p):
        producer = s.producer([topic])
        n = 0
        while not os.path.exists(stop) and time.monotonic() < limit:
            n += 1
            msg = s.message(topic, f"fo-{p}-{n}-{s.suffix}".encode(), tag="F", keys=(f"k-{p}-{n}",))
            started = int(time.time() * 1000)
            try:
                receipt = producer.send(msg)
            except Exception:  # noqa: BLE001 - the client raises a plain Exception
                with lock:
                    results["failed"] += 1
                    timeline.write(f"{started} {int(time.time() * 1000)} fail\n")
                    timeline.flush()
                time.sleep(0.05)
                continue
            with lock:
                out.write(receipt.message_id + "\n")
                out.flush()
                timeline.write(f"{started} {int(time.time() * 1000)} ok\n")
                timeline.flush()
                results["acked"] += 1

    threads = [threading.Thread(target=one_producer, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    timeline.close()
    print(f"SENT {results['acked']} FAILED {results['failed']}", flush=True)


def read(s, topic, state):
    expected = set(acked(state))
    consumer = s.simple_consumer(s.unique(f"reader-{os.getpid()}"), {topic: "*"})
    seen = set()
    deliveries = 0
    idle = 0
    while not expected <= seen and idle < 3:
        msgs = consumer.receive(32, s.invisible)
        idle = 0 if msgs else idle + 1
        for m in msgs:
            deliveries += 1
            seen.add(m.message_id)
            consumer.ack(m)
    missing = expected - seen
    print(f"READ {len(seen)} MISSING {len(missing)} DUPLICATES {deliveries - len(seen)}", flush=True)
    # ``any``: the loss is what is measured (async replication), reported rather than failed.
    if os.environ.get("ROCKETLOG_REPL_EXPECT", "ok") != "any":
        s.check(not missing, f"{len(missing)} of {len(expected)} acknowledged messages not readable, "
                             f"e.g. {sorted(missing)[:3]}")


def consume(s, topic, state):
    group = os.environ["ROCKETLOG_REPL_GROUP"]
    limit = int(os.environ.get("ROCKETLOG_REPL_LIMIT", "0")) or None
    drain = os.environ.get("ROCKETLOG_REPL_DRAIN") == "1"
    consumed_path = os.environ["ROCKETLOG_REPL_CONSUMED"]
    before = set(acked(consumed_path))
    expected = set(acked(state))
    consumer = s.simple_consumer(group, {topic: "*"})
    seen = set()
    deliveries = 0
    redelivered = 0
    idle = 0
    with open(consumed_path, "a") as out:
        while idle < 3:
            if limit is not None and len(seen) >= limit:
                break
            if limit is None and not drain and expected <= before | seen:
                break
            batch = 32 if limit is None else max(1, min(32, limit - len(seen)))
            msgs = consumer.receive(batch, s.invisible)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                deliveries += 1
                if m.message_id in before:
                    redelivered += 1
                consumer.ack(m)
                if m.message_id not in seen:
                    seen.add(m.message_id)
                    out.write(m.message_id + "\n")
                    out.flush()
    missing = set() if limit is not None else expected - before - seen
    print(f"CONSUMED {len(seen)} REDELIVERED {redelivered} MISSING {len(missing)} "
          f"DUPLICATES {deliveries - len(seen)}", flush=True)
    if os.environ.get("ROCKETLOG_REPL_EXPECT", "ok") != "any":
        s.check(not missing, f"{len(missing)} of {len(expected)} acknowledged messages never delivered "
                             f"to group {group}, e.g. {sorted(missing)[:3]}")


def main(s):
    # Failed sends are logged by the client too (with its retries).
    s.allow_client_errors(HA_NOT_AVAILABLE, SLAVE_PERSISTENCE_TIMEOUT, INTERNAL_SERVER_ERROR, "replicated", "replica",
                          "service not available", "run out of attempt times", "failed to send",
                          "UNAVAILABLE", "Connection refused", "connection", "Deadline")
    topic = os.environ.get("ROCKETLOG_REPL_TOPIC", f"repl-{s.suffix}")
    state = os.environ["ROCKETLOG_REPL_STATE"]
    phase = os.environ["ROCKETLOG_REPL_PHASE"]
    if os.environ.get("ROCKETLOG_REPL_EXPECT") == "until-failure" or phase == "failover":
        # The master is killed under the producers: whatever the client logs about it is expected.
        s.allow_client_errors("")
    if phase == "send":
        send(s, topic, state)
    elif phase == "failover":
        failover(s, topic, state)
    elif phase == "read":
        read(s, topic, state)
    elif phase == "consume":
        consume(s, topic, state)
    else:
        raise ScenarioFailed(f"unknown phase {phase!r}")


if __name__ == "__main__":
    Scenario("replication").run(main)
