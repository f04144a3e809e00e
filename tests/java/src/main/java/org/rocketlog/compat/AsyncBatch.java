package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;

/**
 * Many concurrent sends, and batched receives that respect the batch size.
 *
 * <p>The producer sends N messages with {@code sendAsync} (N SendMessage calls in flight at
 * once); every receipt carries a distinct id. A SimpleConsumer then receives with a small
 * {@code maxMessageNum}: no batch is larger, every message arrives exactly once and intact, acks
 * hold, and nothing more comes.
 */
final class AsyncBatch {
    private static final int N = 40;
    private static final int BATCH = 8;
    private static final long SEND_WAIT_SECS = 15;

    private AsyncBatch() {
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("async");
        String group = s.unique("grp-async");
        Producer producer = s.producer(topic);
        List<Message> messages = new ArrayList<>();
        List<CompletableFuture<SendReceipt>> pending = new ArrayList<>();
        for (int i = 0; i < N; i++) {
            Message msg = s.message(topic, "async-" + i + "-" + s.suffix).setTag("X").setKeys("k" + i).build();
            messages.add(msg);
            pending.add(producer.sendAsync(msg));
        }
        Map<String, byte[]> bodies = new HashMap<>();
        for (int i = 0; i < N; i++) {
            SendReceipt receipt = pending.get(i).get(SEND_WAIT_SECS, TimeUnit.SECONDS);
            Scenario.checkReceipt(receipt);
            bodies.put(Scenario.id(receipt), Scenario.bytes(messages.get(i).getBody()));
        }
        check(bodies.size() == N, N + " sends produced " + bodies.size() + " distinct message ids");
        s.step(N + " concurrent sends acknowledged");

        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));
        Set<String> left = new HashSet<>(bodies.keySet());
        Set<String> seen = new HashSet<>();
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        long lastAck = System.nanoTime();
        while (!left.isEmpty()) {
            check(System.nanoTime() < deadline, left.size() + " of " + N + " messages not received within 30 s");
            for (MessageView m : s.receive(consumer, BATCH, Duration.ofSeconds(s.invisibleSecs))) {
                String id = Scenario.id(m);
                check(bodies.containsKey(id), "unexpected message: " + Scenario.describe(m));
                check(seen.add(id), "message delivered twice: " + Scenario.describe(m));
                check(Arrays.equals(Scenario.bytes(m.getBody()), bodies.get(id)), "body mismatch: " + Scenario.describe(m));
                consumer.ack(m);
                lastAck = System.nanoTime();
                left.remove(id);
            }
        }
        s.step("received all " + N + " messages in batches of at most " + BATCH);
        s.expectNothing(consumer, s.quietAfter(lastAck), "after every message was acked");
    }
}
