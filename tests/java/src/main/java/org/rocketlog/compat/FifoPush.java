package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

import org.apache.rocketmq.client.apis.consumer.ConsumeResult;
import org.apache.rocketmq.client.apis.consumer.MessageListener;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;

/**
 * FIFO with a PushConsumer: ordered consumption, local retries, forward to the dead-letter queue.
 *
 * <p>The topic {@code fifopush-<suffix>} is a FIFO topic and the broker's max delivery attempts
 * small ({@code ROCKETLOG_MAX_ATTEMPTS}, 2 in the harness). The settings reply must tell the push
 * consumer its group is FIFO (the client then logs "Create FIFO consume service", consumes each
 * queue in order and retries failures locally). The listener always fails one message of group
 * 0: after the allowed attempts (with the settings' retry delay between them) the client calls
 * ForwardMessageToDeadLetterQueue, and the rest of group 0 follows. Checked: the listener's calls
 * per message group follow send order exactly (the failing message repeated max-attempts times,
 * nothing of its group in between, nothing twice); the failed message is readable from
 * {@code %DLQ%<group>} with its id and body.
 */
final class FifoPush {
    private static final int GROUPS = 2;
    private static final int PER_GROUP = 4;
    private static final int FAIL_GROUP = 0;
    private static final int FAIL_SEQ = 1;
    /** The first delay of the retry policy in the settings reply (the proxy's: 1 s). */
    private static final double FIRST_RETRY_DELAY_SECS = 1;
    private static final double EARLY_TOLERANCE_SECS = 0.25;

    private FifoPush() {
    }

    private record Call(long at, int group, int seq, MessageView message) {
    }

    private static final class Recorder implements MessageListener {
        private final List<Call> calls = new ArrayList<>();

        @Override
        public ConsumeResult consume(MessageView m) {
            String[] parts = Scenario.bodyText(m).split(":");
            int g = -1;
            int seq = -1;
            try {
                g = Integer.parseInt(parts[1]);
                seq = Integer.parseInt(parts[2]);
            } catch (NumberFormatException | ArrayIndexOutOfBoundsException e) {
                // Recorded as (-1, -1): the scenario reports it as unexpected.
            }
            synchronized (this) {
                calls.add(new Call(System.nanoTime(), g, seq, m));
            }
            return g == FAIL_GROUP && seq == FAIL_SEQ ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
        }

        synchronized List<Call> snapshot() {
            return new ArrayList<>(calls);
        }
    }

    static void run(Scenario s) throws Exception {
        check(s.maxAttempts >= 2 && s.maxAttempts <= 3, "ROCKETLOG_MAX_ATTEMPTS=" + s.maxAttempts
            + ": this scenario needs the broker set to 2 or 3 attempts");
        String topic = s.unique("fifopush");
        String group = s.unique("grp-fifopush");
        String[] names = new String[GROUPS];
        for (int g = 0; g < GROUPS; g++) {
            names[g] = s.unique("pmg" + g);
        }
        Producer producer = s.producer(topic);
        Map<String, String> ids = new HashMap<>();
        for (int seq = 0; seq < PER_GROUP; seq++) {
            for (int g = 0; g < GROUPS; g++) {
                var msg = s.message(topic, "fifopush:" + g + ":" + seq + ":" + s.suffix).setTag("F")
                    .setMessageGroup(names[g]).build();
                ids.put(g + ":" + seq, Scenario.id(s.send(producer, msg)));
            }
        }
        s.step("sent " + PER_GROUP + " messages for each of " + GROUPS + " message groups, interleaved");

        Recorder recorder = new Recorder();
        s.pushConsumer(group, Map.of(topic, "*"), recorder);
        check(!s.clientLogLines("Create FIFO consume service").isEmpty(),
            "the settings reply did not mark the group FIFO (the client logged no 'Create FIFO consume service'); "
                + "a FIFO topic's consumer group must get subscription.fifo = true");
        s.step("push consumer started; the settings reply says FIFO");

        Map<Integer, List<Integer>> want = new HashMap<>();
        int total = 0;
        for (int g = 0; g < GROUPS; g++) {
            List<Integer> seqs = new ArrayList<>();
            for (int seq = 0; seq < PER_GROUP; seq++) {
                int times = g == FAIL_GROUP && seq == FAIL_SEQ ? s.maxAttempts : 1;
                for (int i = 0; i < times; i++) {
                    seqs.add(seq);
                }
            }
            total += seqs.size();
            want.put(g, seqs);
        }
        long deadline = System.nanoTime() + Duration.ofSeconds(40).toNanos();
        while (recorder.snapshot().size() < total) {
            List<Call> calls = recorder.snapshot();
            check(System.nanoTime() < deadline, "after 40 s the listener saw " + calls.size() + "/" + total + " calls: "
                + calls.stream().map(c -> c.group + ":" + c.seq).collect(Collectors.joining(", ")));
            Thread.sleep(100); // polling the listener's record
        }
        long quietUntil = System.nanoTime() + Duration.ofSeconds(3).toNanos(); // room for a wrong extra delivery
        while (System.nanoTime() < quietUntil) {
            Thread.sleep(100);
        }
        List<Call> calls = recorder.snapshot();
        for (int g = 0; g < GROUPS; g++) {
            final int gg = g;
            List<Integer> got = calls.stream().filter(c -> c.group == gg).map(Call::seq).collect(Collectors.toList());
            check(got.equals(want.get(g)), "message group " + g + ": listener calls in order " + got + ", want "
                + want.get(g));
        }
        for (Call c : calls) {
            check(c.group >= 0 && c.group < GROUPS, "unexpected message: " + Scenario.describe(c.message));
            check(Scenario.id(c.message).equals(ids.get(c.group + ":" + c.seq)),
                "group " + c.group + " message " + c.seq + ": id " + Scenario.id(c.message) + ", want "
                    + ids.get(c.group + ":" + c.seq));
            check(c.message.getMessageGroup().orElse("").equals(names[c.group]),
                "group " + c.group + " message " + c.seq + ": message group " + c.message.getMessageGroup());
        }
        List<Long> failing = calls.stream().filter(c -> c.group == FAIL_GROUP && c.seq == FAIL_SEQ).map(Call::at)
            .collect(Collectors.toList());
        double gap = (failing.get(1) - failing.get(0)) / 1e9;
        check(gap >= FIRST_RETRY_DELAY_SECS - EARLY_TOLERANCE_SECS, String.format("the local retry came %.2fs after "
            + "the failure, before the %.0fs delay of the settings' retry policy", gap, FIRST_RETRY_DELAY_SECS));
        s.step("each message group consumed in order; the failing message tried " + s.maxAttempts
            + " times, then the group moved on");

        String dlqTopic = "%DLQ%" + group;
        SimpleConsumer reader = s.simpleConsumer(s.unique("grp-fifopush-dlq"), Map.of(dlqTopic, "*"));
        deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        MessageView dead = null;
        String failId = ids.get(FAIL_GROUP + ":" + FAIL_SEQ);
        while (dead == null) {
            check(System.nanoTime() < deadline, "the failed message did not show up in " + dlqTopic + " within 20 s");
            for (MessageView m : s.receive(reader)) {
                check(Scenario.id(m).equals(failId), "unexpected message in " + dlqTopic + ": " + Scenario.describe(m));
                dead = m;
            }
        }
        String wantBody = "fifopush:" + FAIL_GROUP + ":" + FAIL_SEQ + ":" + s.suffix;
        check(Scenario.bodyText(dead).equals(wantBody), "dead-letter copy body " + Scenario.bodyText(dead) + ", want "
            + wantBody);
        reader.ack(dead);
        s.step("the failed message was forwarded to " + dlqTopic);
    }
}
