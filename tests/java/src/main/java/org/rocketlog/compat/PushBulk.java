package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.rocketmq.client.apis.consumer.ConsumeResult;
import org.apache.rocketmq.client.apis.producer.Producer;

/**
 * A PushConsumer with the client's default settings consumes 10,000 messages without loss.
 *
 * <p>The consumer starts first; the producer then sends N messages with {@code sendAsync}, at
 * most IN_FLIGHT at a time. Every send must succeed with a distinct id, and the listener must
 * see every one of those ids (counted by distinct message id) within the time limit, and no id
 * that was never sent. Redeliveries are counted and printed (at-least-once allows them).
 *
 * <p>On a loaded machine a send or a receive may outlast the client's deadline; the client
 * resends, or receives again, by itself (those warnings are expected here). A batch the broker
 * handed to a receive the client gave up on stays invisible for the push invisible duration,
 * which the harness shortens for this scenario so that such a batch still comes in time.
 */
final class PushBulk {
    private static final int N = 10_000;
    private static final int IN_FLIGHT = 256;
    private static final Duration SEND_WITHIN = Duration.ofSeconds(60);
    private static final Duration CONSUME_WITHIN = Duration.ofSeconds(90);
    private static final Duration PROGRESS_EVERY = Duration.ofSeconds(5);

    private PushBulk() {
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("bulk");
        String group = s.unique("grp-bulk");
        s.allowClientErrorWithAll("would attempt to resend right now", "DEADLINE_EXCEEDED");
        s.allowClientErrorWithAll("Exception raised during message reception", "DEADLINE_EXCEEDED");
        Producer producer = s.producer(topic);
        Map<String, Integer> consumed = new ConcurrentHashMap<>();
        AtomicLong calls = new AtomicLong();
        s.pushConsumer(group, Map.of(topic, "*"), m -> {
            consumed.merge(Scenario.id(m), 1, Integer::sum);
            calls.incrementAndGet();
            return ConsumeResult.SUCCESS;
        });
        s.step("push consumer started with the default settings");

        long sendStarted = System.nanoTime();
        Set<String> sent = ConcurrentHashMap.newKeySet();
        List<String> sendErrors = new CopyOnWriteArrayList<>();
        Semaphore window = new Semaphore(IN_FLIGHT);
        for (int i = 0; i < N; i++) {
            check(window.tryAcquire(SEND_WITHIN.toMillis(), TimeUnit.MILLISECONDS),
                "no send completed for " + SEND_WITHIN.toSeconds() + " s (" + sent.size() + " of " + N + " acknowledged)");
            var msg = s.message(topic, "bulk-" + i + "-" + s.suffix).setTag("bulk").build();
            producer.sendAsync(msg).whenComplete((receipt, error) -> {
                if (error != null) {
                    sendErrors.add(Scenario.errorText(error));
                } else if (!sent.add(Scenario.id(receipt))) {
                    sendErrors.add("duplicate message id " + Scenario.id(receipt) + " in two receipts");
                }
                window.release();
            });
        }
        check(window.tryAcquire(IN_FLIGHT, SEND_WITHIN.toMillis(), TimeUnit.MILLISECONDS),
            "the last sends did not complete within " + SEND_WITHIN.toSeconds() + " s");
        check(sendErrors.isEmpty(), sendErrors.size() + " send(s) failed, first: "
            + (sendErrors.isEmpty() ? "" : sendErrors.get(0)));
        check(sent.size() == N, N + " sends produced " + sent.size() + " distinct message ids");
        double sendSecs = Scenario.secsSince(sendStarted);
        s.step(String.format("%d messages sent in %.1fs (%.0f msg/s, %d in flight)", N, sendSecs, N / sendSecs,
            IN_FLIGHT));

        // Fail with the count rather than at the hard timeout.
        double within = Math.min(CONSUME_WITHIN.toSeconds(), s.secondsLeft() - 5);
        long deadline = System.nanoTime() + (long) (within * 1e9);
        long nextProgress = System.nanoTime() + PROGRESS_EVERY.toNanos();
        while (!consumed.keySet().containsAll(sent)) {
            Set<String> missing = new HashSet<>(sent);
            missing.removeAll(consumed.keySet());
            check(System.nanoTime() < deadline, String.format("%d of %d messages not consumed within %.0f s of the "
                + "last send (listener calls: %d; receives that outlasted the client's deadline: %d)", missing.size(),
                N, within, calls.get(), s.clientLogLines("Exception raised during message reception").size()));
            if (System.nanoTime() >= nextProgress) {
                s.step(consumed.size() + " of " + N + " distinct messages consumed (" + calls.get() + " listener calls)");
                nextProgress += PROGRESS_EVERY.toNanos();
            }
            Thread.sleep(50); // polling the listener's record
        }
        double totalSecs = Scenario.secsSince(sendStarted);
        Set<String> unknown = new HashSet<>(consumed.keySet());
        unknown.removeAll(sent);
        check(unknown.isEmpty(), "the listener got " + unknown.size() + " message(s) never sent: " + unknown);
        long redelivered = consumed.values().stream().filter(c -> c > 1).count();
        s.step(String.format("all %d messages consumed %.1fs after the first send (%.0f msg/s); %d listener calls, "
            + "%d message(s) delivered more than once", N, totalSecs, N / totalSecs, calls.get(), redelivered));
    }
}
