package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;

/**
 * Dead-letter queue: a message never acked goes to {@code %DLQ%<group>} after the max attempts.
 *
 * <p>The broker uses a small max delivery attempts ({@code ROCKETLOG_MAX_ATTEMPTS}; the harness
 * configures the broker and the program alike) and allows a short invisible time.
 * <ol>
 * <li>One message is received max-attempts times without an ack; each delivery comes after the
 * previous one's invisible time, with delivery attempt 1, 2, ... max.
 * <li>The group never gets it again.
 * <li>A SimpleConsumer of another group on {@code %DLQ%<group>} receives it: same id, body, tag,
 * keys and user properties; acking it works and it does not come back.
 * </ol>
 */
final class Dlq {
    private static final double EARLY_TOLERANCE_SECS = 0.25;

    private Dlq() {
    }

    static void run(Scenario s) throws Exception {
        check(s.maxAttempts >= 1 && s.maxAttempts <= 5, "ROCKETLOG_MAX_ATTEMPTS=" + s.maxAttempts
            + ": this scenario needs the broker set to 1..5 attempts");
        String topic = s.unique("dlq");
        String group = s.unique("grp-dlq");
        String dlqTopic = "%DLQ%" + group;
        Producer producer = s.producer(topic);
        String body = "dead-letter-" + s.suffix;
        String key = "key-" + s.suffix;
        Map<String, String> props = Map.of("scenario", "dlq");
        String mid = Scenario.id(s.send(producer, s.message(topic, body).setTag("D").setKeys(key)
            .addProperty("scenario", "dlq").build()));
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));

        // 1. max-attempts deliveries, none acked
        long visibleFrom = 0;
        for (int attempt = 1; attempt <= s.maxAttempts; attempt++) {
            long deadline = System.nanoTime() + Duration.ofSeconds(s.invisibleSecs + 15).toNanos();
            MessageView got = null;
            long started = 0;
            while (got == null) {
                check(System.nanoTime() < deadline, "delivery " + attempt + " did not come within "
                    + (s.invisibleSecs + 15) + "s");
                started = System.nanoTime();
                for (MessageView m : s.receive(consumer)) {
                    check(Scenario.id(m).equals(mid), "unexpected message: " + Scenario.describe(m));
                    check(attempt == 1 || System.nanoTime() >= visibleFrom,
                        "delivery " + attempt + " came before the previous delivery's invisible time ended");
                    got = m;
                }
            }
            check(got.getDeliveryAttempt() == attempt, "delivery " + attempt + " has delivery attempt "
                + got.getDeliveryAttempt());
            visibleFrom = started + (long) ((s.invisibleSecs - EARLY_TOLERANCE_SECS) * 1e9);
            s.step("delivery " + attempt + "/" + s.maxAttempts + " received, not acking");
        }

        // 2 + 3. the group never sees it again; the DLQ consumer gets it
        SimpleConsumer dlqConsumer = s.simpleConsumer(s.unique("grp-dlq-reader"), Map.of(dlqTopic, "*"));
        long deadline = System.nanoTime() + Duration.ofSeconds(s.invisibleSecs + 25).toNanos();
        MessageView dead = null;
        List<MessageView> msgs = List.of();
        while (dead == null) {
            check(System.nanoTime() < deadline, "the message did not reach " + dlqTopic + " within "
                + (s.invisibleSecs + 25) + "s after its last delivery");
            List<MessageView> again = s.receive(consumer);
            check(again.isEmpty(), group + " got the message again after its " + s.maxAttempts + " allowed attempts: "
                + Scenario.describeAll(again));
            msgs = s.receive(dlqConsumer);
            for (MessageView m : msgs) {
                check(Scenario.id(m).equals(mid), "unexpected message in " + dlqTopic + ": " + Scenario.describe(m));
                dead = m;
            }
        }
        check(msgs.size() == 1, dlqTopic + " delivered the message " + msgs.size() + " times in one batch");
        check(dead.getTopic().equals(dlqTopic), "dead-letter copy says topic " + dead.getTopic() + ", want " + dlqTopic);
        check(Scenario.bodyText(dead).equals(body), "dead-letter copy body " + Scenario.bodyText(dead) + ", want " + body);
        check(dead.getTag().orElse("").equals("D"), "dead-letter copy tag " + dead.getTag() + ", want D");
        Set<String> keys = new HashSet<>(dead.getKeys());
        check(keys.equals(Set.of(key)), "dead-letter copy keys " + keys + ", want [" + key + "]");
        check(dead.getProperties().equals(props), "dead-letter copy user properties " + dead.getProperties()
            + ", want exactly " + props);
        s.step("dead-letter copy received from " + dlqTopic);
        dlqConsumer.ack(dead);
        long ackedAt = System.nanoTime();
        s.expectNothing(dlqConsumer, s.quietAfter(ackedAt), "from " + dlqTopic + " after the ack");
        s.expectNothing(consumer, 0, "for " + group + " after the message was dead-lettered");
    }
}
