package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;

/**
 * FIFO with a SimpleConsumer: per message group order, and nothing of a group while an earlier
 * message of it is in flight.
 *
 * <p>The topic {@code fifo-<suffix>} is a FIFO topic (created by the harness). A producer sends
 * PER_GROUP messages for each of several message groups, interleaved. The consumer then runs
 * four phases, and every message it receives is checked against a model of what may be
 * delivered: within a group, messages arrive in send order without gaps; no message of a group
 * arrives while an earlier one is in flight (received, neither acked nor returned, invisible
 * time not over); a redelivery repeats the same message with delivery attempt + 1.
 *
 * <p>Phases: (1) receive one at a time without acking until the broker has nothing more: every
 * group's head is in flight and nothing else comes; (2) ack group 0, receive one at a time
 * again: only group 0 moves on; (3) nack group 1 (changeInvisibleDuration to the shortest
 * invisible time): group 1 comes back from the same message, attempt 2, not before that time;
 * (4) ack everything as it comes until all messages are consumed, then nothing more comes.
 */
final class Fifo {
    private static final int GROUPS = 3;
    private static final int PER_GROUP = 4;
    /** Invisible time of held messages: nothing held expires during phases 1-3. */
    private static final Duration HOLD = Duration.ofSeconds(25);
    private static final double EARLY_TOLERANCE_SECS = 0.25;

    private Fifo() {
    }

    private record Held(MessageView message, long invisibleUntil) {
    }

    /** What the consumer group may be delivered next, per message group. */
    private static final class Model {
        final Scenario s;
        final String[] names;
        final Map<String, String> ids;
        final int[] acked = new int[GROUPS];
        final List<List<Held>> inflight = new ArrayList<>();
        final Map<String, Integer> attempts = new HashMap<>();
        final Long[] returnedAt = new Long[GROUPS];

        Model(Scenario s, String[] names, Map<String, String> ids) {
            this.s = s;
            this.names = names;
            this.ids = ids;
            for (int g = 0; g < GROUPS; g++) {
                inflight.add(new ArrayList<>());
            }
        }

        int[] parse(MessageView m) throws Scenario.Failed {
            String[] parts = Scenario.bodyText(m).split(":");
            try {
                int g = Integer.parseInt(parts[1]);
                int seq = Integer.parseInt(parts[2]);
                check(g >= 0 && g < GROUPS && seq >= 0 && seq < PER_GROUP, "unexpected message: " + Scenario.describe(m));
                return new int[] {g, seq};
            } catch (NumberFormatException | ArrayIndexOutOfBoundsException e) {
                throw new Scenario.Failed("unexpected message: " + Scenario.describe(m));
            }
        }

        List<MessageView> receive(SimpleConsumer consumer, Duration invisible, int maxNum) throws Exception {
            long started = System.nanoTime();
            List<MessageView> msgs = s.receive(consumer, maxNum, invisible);
            long arrived = System.nanoTime();
            int[] inBatch = new int[GROUPS];
            for (MessageView m : msgs) {
                int[] gs = parse(m);
                int g = gs[0];
                int seq = gs[1];
                String where = "group " + g + " message " + seq + " (" + Scenario.describe(m) + ")";
                check(m.getMessageGroup().orElse("").equals(names[g]),
                    where + ": message group " + m.getMessageGroup() + ", want " + names[g]);
                check(Scenario.id(m).equals(ids.get(g + ":" + seq)), where + ": id, want " + ids.get(g + ":" + seq));
                if (inBatch[g] == 0 && !inflight.get(g).isEmpty()) {
                    long holding = inflight.get(g).stream().mapToLong(Held::invisibleUntil).min().getAsLong();
                    if (arrived < holding) {
                        String held = inflight.get(g).stream().map(h -> Scenario.bodyText(h.message).split(":")[2])
                            .collect(Collectors.joining(", "));
                        throw new Scenario.Failed(String.format("%s was delivered while message(s) %s of the same "
                            + "group were in flight (invisible for %.1fs more)", where, held, (holding - arrived) / 1e9));
                    }
                    // Everything held of this group timed out: the group starts over at its head.
                    inflight.get(g).clear();
                }
                int expected = acked[g] + inBatch[g];
                check(seq == expected, where + " arrived out of order: the next message of group " + g + " is "
                    + expected);
                Integer previous = attempts.get(g + ":" + seq);
                int wantAttempt = previous == null ? 1 : previous + 1;
                check(m.getDeliveryAttempt() == wantAttempt,
                    where + ": delivery attempt " + m.getDeliveryAttempt() + ", want " + wantAttempt);
                if (previous != null && returnedAt[g] != null) {
                    long early = returnedAt[g] - (long) (EARLY_TOLERANCE_SECS * 1e9);
                    check(arrived >= early, String.format("%s came back %.2fs before the invisible time set by "
                        + "changeInvisibleDuration ended", where, (returnedAt[g] - arrived) / 1e9));
                }
                attempts.put(g + ":" + seq, m.getDeliveryAttempt());
                inflight.get(g).add(new Held(m, started + invisible.toNanos()));
                inBatch[g]++;
            }
            for (int g = 0; g < GROUPS; g++) {
                if (inBatch[g] > 0) {
                    returnedAt[g] = null;
                }
            }
            return msgs;
        }

        void receiveUntilEmpty(SimpleConsumer consumer, Duration invisible, int deadlineSecs, int maxNum)
            throws Exception {
            long deadline = System.nanoTime() + Duration.ofSeconds(deadlineSecs).toNanos();
            while (!receive(consumer, invisible, maxNum).isEmpty()) {
                check(System.nanoTime() < deadline, "the broker kept delivering for " + deadlineSecs
                    + "s; it should have run dry");
            }
        }

        void ackGroup(SimpleConsumer consumer, int g) throws Exception {
            for (Held h : inflight.get(g)) {
                consumer.ack(h.message);
                acked[g]++;
            }
            inflight.get(g).clear();
        }

        void nackGroup(SimpleConsumer consumer, int g, Duration after) throws Exception {
            returnedAt[g] = System.nanoTime() + after.toNanos();
            for (Held h : inflight.get(g)) {
                consumer.changeInvisibleDuration(h.message, after);
            }
            inflight.get(g).clear();
        }

        void checkHeadsInFlight(int[] groups, String phase) throws Scenario.Failed {
            for (int g : groups) {
                if (acked[g] < PER_GROUP) {
                    check(!inflight.get(g).isEmpty(), phase + ": group " + g + " has message " + acked[g]
                        + " ready, but receive came back empty without delivering it");
                }
            }
        }

        boolean done() {
            for (int a : acked) {
                if (a != PER_GROUP) {
                    return false;
                }
            }
            return true;
        }
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("fifo");
        String group = s.unique("grp-fifo");
        String[] names = new String[GROUPS];
        for (int g = 0; g < GROUPS; g++) {
            names[g] = s.unique("mg" + g);
        }
        Producer producer = s.producer(topic);
        Map<String, String> ids = new HashMap<>();
        for (int seq = 0; seq < PER_GROUP; seq++) {
            for (int g = 0; g < GROUPS; g++) {
                var msg = s.message(topic, "fifo:" + g + ":" + seq + ":" + s.suffix).setTag("F")
                    .setMessageGroup(names[g]).build();
                ids.put(g + ":" + seq, Scenario.id(s.send(producer, msg)));
            }
        }
        s.step("sent " + PER_GROUP + " messages for each of " + GROUPS + " message groups, interleaved");

        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));
        Model model = new Model(s, names, ids);

        s.step("phase 1: receive one at a time without acking until nothing more comes");
        model.receiveUntilEmpty(consumer, HOLD, 15, 1);
        model.checkHeadsInFlight(new int[] {0, 1, 2}, "phase 1");

        s.step("phase 2: ack group 0 only; only group 0 may move on");
        model.ackGroup(consumer, 0);
        model.receiveUntilEmpty(consumer, HOLD, 15, 1);
        model.checkHeadsInFlight(new int[] {0}, "phase 2");

        Duration nack = Duration.ofSeconds(s.invisibleSecs);
        s.step("phase 3: nack group 1 for " + s.invisibleSecs + "s; it must restart from the same message");
        int head = model.acked[1];
        model.nackGroup(consumer, 1, nack);
        long deadline = System.nanoTime() + Duration.ofSeconds(s.invisibleSecs + 15).toNanos();
        while (model.inflight.get(1).isEmpty()) {
            check(System.nanoTime() < deadline, "group 1 message " + head + " did not come back within "
                + (s.invisibleSecs + 15) + "s of its nack");
            model.receive(consumer, HOLD, 32);
        }
        check(model.attempts.get(1 + ":" + head) == 2, "group 1 message " + head + " came back with attempt "
            + model.attempts.get(1 + ":" + head) + ", want 2");

        s.step("phase 4: ack everything as it comes");
        deadline = System.nanoTime() + Duration.ofSeconds(25).toNanos();
        while (!model.done()) {
            check(System.nanoTime() < deadline, "not all messages consumed within 25s; acked per group: "
                + java.util.Arrays.toString(model.acked));
            for (int g = 0; g < GROUPS; g++) {
                model.ackGroup(consumer, g);
            }
            if (model.done()) {
                break;
            }
            model.receive(consumer, HOLD, 32);
        }
        s.step("all " + GROUPS * PER_GROUP + " messages consumed in order");
        s.expectNothing(consumer, 0, "after every message was acked");
    }
}
