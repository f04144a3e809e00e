package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.RecallReceipt;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.java.exception.BadRequestException;
import org.apache.rocketmq.client.java.message.MessageViewImpl;

/**
 * Delayed messages ({@code setDeliveryTimestamp}, millisecond precision).
 *
 * <p>Sends DELAY messages due 1 s and 3 s ahead to a DELAY topic and checks that each is
 * delivered at its time, never before (by our clock at arrival and by the broker's delivery
 * time on the receive stream, both with a small tolerance), with its delivery timestamp intact,
 * exactly once; lateness is printed (precision is measured by the bench, never asserted).
 *
 * <p>Also: a recalled message ({@code SendReceipt.getRecallHandle} +
 * {@code Producer.recallMessage}) never arrives; a bad recall handle is refused with
 * BadRequestException, code BAD_REQUEST (40000); a delayed message to a NORMAL-only topic is
 * refused by the client's own check of the route's accepted types; a delivery time beyond the
 * broker's maximum (40 days) is refused with BadRequestException, code ILLEGAL_DELIVERY_TIME
 * (40012). The harness creates {@code delay-<suffix>} (DELAY) and {@code plain-<suffix>} (NORMAL).
 */
final class Delay {
    private static final long[] DELAYS_MS = {1_000, 3_000};
    private static final int PER_DELAY = 3;
    /** The consumer and the broker share a clock; allow for timestamp rounding only. */
    private static final long EARLY_SLACK_MS = 50;

    private Delay() {
    }

    private record Due(long dueMs, long delayMs) {
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("delay");
        String plain = s.unique("plain");
        String group = s.unique("delay-group");
        Producer producer = s.producer(topic, plain);
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));
        // The producer logs each attempt of the send refused with ILLEGAL_DELIVERY_TIME (it
        // resends any failure up to its max attempts).
        s.allowClientErrors("response-code=40012");

        Map<String, Due> expected = new HashMap<>();
        long now = System.currentTimeMillis();
        for (long delay : DELAYS_MS) {
            for (int i = 0; i < PER_DELAY; i++) {
                long due = now + delay;
                var msg = s.message(topic, "delay " + delay + "ms #" + i).setTag("d" + delay)
                    .addProperty("delay", String.valueOf(delay)).setDeliveryTimestamp(due).build();
                SendReceipt receipt = s.send(producer, msg);
                check(receipt.getRecallHandle() != null && !receipt.getRecallHandle().isEmpty(),
                    "no recall handle for delayed message " + Scenario.id(receipt));
                expected.put(Scenario.id(receipt), new Due(due, delay));
            }
        }
        s.step("sent " + expected.size() + " delayed messages due " + java.util.Arrays.toString(DELAYS_MS) + " ms ahead");

        // Recall one before its time.
        var doomed = s.message(topic, "recall me").setTag("recalled").setDeliveryTimestamp(now + 2_000).build();
        SendReceipt doomedReceipt = s.send(producer, doomed);
        RecallReceipt recalled = producer.recallMessage(topic, doomedReceipt.getRecallHandle());
        String recalledId = recalled.getMessageId().toString();
        check(Scenario.id(doomedReceipt).equals(recalledId), "recall returned " + recalledId + ", expected "
            + Scenario.id(doomedReceipt));
        s.step("recalled " + recalledId);
        try {
            producer.recallMessage(topic, "not-a-handle");
            throw new Scenario.Failed("recall with a bad handle was accepted");
        } catch (BadRequestException e) {
            check(Scenario.responseCode(e) == 40000, "recall with a bad handle: code " + Scenario.responseCode(e)
                + ", want 40000: " + Scenario.errorText(e));
            s.step("recall with a bad handle refused: " + Scenario.errorText(e));
        }

        var wrong = s.message(plain, "delayed to a NORMAL topic").setDeliveryTimestamp(now + 5_000).build();
        try {
            producer.send(wrong);
            throw new Scenario.Failed("a delayed message to a NORMAL-only topic was accepted");
        } catch (IllegalArgumentException e) {
            check(String.valueOf(e.getMessage()).contains("not match with topic accept message types"),
                "delayed message to a NORMAL topic: unexpected refusal " + Scenario.errorText(e));
            s.step("delayed message to a NORMAL topic refused by the client: " + e.getMessage());
        }
        var tooFar = s.message(topic, "too far").setDeliveryTimestamp(now + Duration.ofDays(41).toMillis()).build();
        try {
            producer.send(tooFar);
            throw new Scenario.Failed("a delivery time 41 days ahead was accepted");
        } catch (BadRequestException e) {
            check(Scenario.responseCode(e) == 40012, "delivery time 41 days ahead: code " + Scenario.responseCode(e)
                + ", want 40012 (ILLEGAL_DELIVERY_TIME): " + Scenario.errorText(e));
            s.step("delivery time 41 days ahead refused: " + Scenario.errorText(e));
        } catch (ClientException e) {
            throw new Scenario.Failed("delivery time 41 days ahead: " + Scenario.errorText(e)
                + "; want BadRequestException with code 40012");
        }

        Map<Long, List<Long>> lateness = new TreeMap<>();
        Set<String> seen = new HashSet<>();
        long maxDelay = java.util.Arrays.stream(DELAYS_MS).max().getAsLong();
        long deadline = System.nanoTime() + Duration.ofMillis(maxDelay + 15_000).toNanos();
        while (seen.size() < expected.size()) {
            Set<String> missing = new HashSet<>(expected.keySet());
            missing.removeAll(seen);
            check(System.nanoTime() < deadline, "only " + seen.size() + " of " + expected.size()
                + " delayed messages arrived: missing " + missing);
            List<MessageView> msgs = s.receive(consumer, 16, Duration.ofSeconds(s.invisibleSecs));
            long arrived = System.currentTimeMillis();
            for (MessageView m : msgs) {
                String id = Scenario.id(m);
                check(!id.equals(recalledId), "the recalled message arrived: " + Scenario.describe(m));
                check(expected.containsKey(id), "unexpected message " + Scenario.describe(m));
                check(seen.add(id), "delivered twice: " + Scenario.describe(m));
                Due due = expected.get(id);
                long late = arrived - due.dueMs;
                check(late >= -EARLY_SLACK_MS, String.format("arrived %.3fs early: %s", -late / 1e3, Scenario.describe(m)));
                // The broker's own clock when it handed the message out (the receive stream's
                // delivery_timestamp), if it sent one.
                var transport = ((MessageViewImpl) m).getTransportDeliveryTimestamp();
                if (transport.isPresent()) {
                    check(transport.get() >= due.dueMs - EARLY_SLACK_MS, String.format(
                        "the broker handed the message out %.3fs before its delivery time: %s",
                        (due.dueMs - transport.get()) / 1e3, Scenario.describe(m)));
                }
                check(m.getDeliveryTimestamp().orElse(-1L) == due.dueMs, "delivery timestamp "
                    + m.getDeliveryTimestamp() + " != " + due.dueMs + ": " + Scenario.describe(m));
                check(String.valueOf(due.delayMs).equals(m.getProperties().get("delay")),
                    "lost properties: " + Scenario.describe(m));
                consumer.ack(m);
                lateness.computeIfAbsent(due.delayMs, k -> new ArrayList<>()).add(late);
            }
        }
        for (Map.Entry<Long, List<Long>> e : lateness.entrySet()) {
            List<Long> values = new ArrayList<>(e.getValue());
            Collections.sort(values);
            s.step("delay " + e.getKey() + "ms: lateness min " + values.get(0) + " ms, max "
                + values.get(values.size() - 1) + " ms over " + values.size() + " messages");
        }
        s.expectNothing(consumer, 1, "after every delayed message was acked");
    }
}
