"""Queue selection: the broker spreads an official client's sends over the topic's queues.

The Python client leaves ``system_properties.queue_id`` unset, so the broker picks the queue,
as the Apache proxy does: round robin for messages without a message group, a consistent hash
of the group for FIFO messages. The harness creates ``spread-<suffix>`` (8 queues, normal and
FIFO) and, after this script passes, looks every message up by key through the admin API to
check where it landed. The script sends NORMAL messages keyed ``n-<i>`` and, for each of
GROUPS message groups ``g<g>``, PER_GROUP FIFO messages keyed ``g<g>-<i>``, and prints one
``SENT`` line with the counts.
"""

from scenario import Scenario

NORMAL = 64
GROUPS = 6
PER_GROUP = 8


def main(s):
    topic = s.unique("spread")
    producer = s.producer([topic])
    for i in range(NORMAL):
        s.send(producer, s.message(topic, f"normal {i}".encode(), tag="N", keys=(f"n-{i}",)))
    s.step(f"sent {NORMAL} normal messages")
    for i in range(PER_GROUP):
        for g in range(GROUPS):
            s.send(producer, s.message(topic, f"group {g} #{i}".encode(), tag="F",
                                       keys=(f"g{g}-{i}",), group=f"g{g}"))
    s.step(f"sent {GROUPS} groups x {PER_GROUP} FIFO messages")
    print(f"SENT normal={NORMAL} groups={GROUPS} per_group={PER_GROUP}")


if __name__ == "__main__":
    Scenario("queue_spread").run(main)
