package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Collectors;

import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageBuilder;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;

/**
 * Normal messages with tags, keys and user properties; tag filtering per consumer group.
 *
 * <p>A producer sends N messages tagged A and B alternately, each with one or two keys and two
 * or three user properties (some with non-ASCII values). Independent consumer groups then read
 * the topic with a SimpleConsumer:
 * <ul>
 * <li>filter {@code A}: exactly the A messages, each intact (body, tag, keys, properties, id, no
 * message group or delivery time, first delivery attempt, born time and host), acked; nothing
 * more comes, not even after the invisible time (so the acks held);
 * <li>filter {@code *}: all N messages;
 * <li>filter {@code B||C}: exactly the B messages.
 * </ul>
 */
final class NormalAndTags {
    private static final int N = 10;
    private static final long CONSUME_WITHIN_MS = 20_000;

    private NormalAndTags() {
    }

    private record Sent(int index, String tag, Set<String> keys, byte[] body, Map<String, String> props) {
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("normal");
        Producer producer = s.producer(topic);
        long sentAt = System.currentTimeMillis();
        Map<String, Sent> sent = new LinkedHashMap<>();
        for (int i = 0; i < N; i++) {
            String tag = i % 2 == 0 ? "A" : "B";
            Set<String> keys = new TreeSet<>();
            keys.add("key-" + i + "-" + s.suffix);
            if (i % 3 == 0) {
                keys.add("second-key-" + i);
            }
            byte[] body = ("normal-" + i + "-" + s.suffix).getBytes(StandardCharsets.UTF_8);
            Map<String, String> props = new TreeMap<>();
            props.put("index", String.valueOf(i));
            props.put("scenario", "normal_and_tags");
            if (i % 4 == 0) {
                props.put("unicode", "值-ü-é-🚀");
            }
            MessageBuilder msg = s.message(topic, body).setTag(tag).setKeys(keys.toArray(new String[0]));
            props.forEach(msg::addProperty);
            String id = Scenario.id(s.send(producer, msg.build()));
            sent.put(id, new Sent(i, tag, keys, body, props));
        }
        s.step("sent " + N + " messages to " + topic);
        Set<String> tagA = sent.entrySet().stream().filter(e -> e.getValue().tag.equals("A")).map(Map.Entry::getKey)
            .collect(Collectors.toSet());
        Set<String> tagB = sent.entrySet().stream().filter(e -> e.getValue().tag.equals("B")).map(Map.Entry::getKey)
            .collect(Collectors.toSet());
        consumeExactly(s, s.unique("grp-a"), topic, "A", tagA, sent, sentAt);
        consumeExactly(s, s.unique("grp-all"), topic, "*", sent.keySet(), sent, sentAt);
        consumeExactly(s, s.unique("grp-bc"), topic, "B||C", tagB, sent, sentAt);
    }

    private static void verify(MessageView m, String topic, Sent want, long sentAt) throws Scenario.Failed {
        String where = "message " + want.index + " (" + Scenario.id(m) + ")";
        check(m.getTopic().equals(topic), where + ": topic " + m.getTopic() + ", want " + topic);
        check(Arrays.equals(Scenario.bytes(m.getBody()), want.body), where + ": body differs: " + Scenario.describe(m));
        check(m.getTag().orElse("").equals(want.tag), where + ": tag " + m.getTag() + ", want " + want.tag);
        check(new HashSet<>(m.getKeys()).equals(want.keys), where + ": keys " + m.getKeys() + ", want " + want.keys);
        check(m.getProperties().equals(want.props), where + ": user properties " + m.getProperties()
            + ", want exactly " + want.props + " (broker-internal properties must not leak to users)");
        check(m.getDeliveryAttempt() == 1, where + ": delivery attempt " + m.getDeliveryAttempt() + ", want 1");
        check(m.getMessageGroup().isEmpty(), where + ": message group " + m.getMessageGroup() + " on a normal message");
        check(m.getDeliveryTimestamp().isEmpty(),
            where + ": delivery timestamp " + m.getDeliveryTimestamp() + " on a normal message");
        // The Java client sends born_timestamp in milliseconds.
        long born = m.getBornTimestamp();
        check(born >= sentAt - 2_000 && born <= System.currentTimeMillis() + 1_000,
            where + ": born timestamp " + born + " ms is not the send time (~" + sentAt + " ms)");
        check(m.getBornHost() != null && !m.getBornHost().isEmpty(), where + ": no born host");
    }

    private static void consumeExactly(Scenario s, String group, String topic, String expression, Set<String> want,
        Map<String, Sent> sent, long sentAt) throws Exception {
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, expression));
        Set<String> pending = new HashSet<>(want);
        long deadline = System.nanoTime() + CONSUME_WITHIN_MS * 1_000_000;
        long lastAck = System.nanoTime();
        while (!pending.isEmpty()) {
            check(System.nanoTime() < deadline, "group " + group + " (filter '" + expression + "') still misses "
                + pending.size() + " message(s) after 20 s: "
                + pending.stream().map(id -> String.valueOf(sent.get(id).index)).sorted()
                .collect(Collectors.joining(", ")));
            List<MessageView> msgs = s.receive(consumer);
            for (MessageView m : msgs) {
                String id = Scenario.id(m);
                check(sent.containsKey(id), "group " + group + " got a message never sent: " + Scenario.describe(m));
                check(want.contains(id), "group " + group + " with filter '" + expression + "' got message "
                    + sent.get(id).index + " tagged " + sent.get(id).tag + ": " + Scenario.describe(m));
                check(pending.contains(id), "group " + group + " got message " + sent.get(id).index
                    + " twice before the invisible time ran out: " + Scenario.describe(m));
                verify(m, topic, sent.get(id), sentAt);
                consumer.ack(m);
                lastAck = System.nanoTime();
                pending.remove(id);
            }
        }
        s.step("group " + group + " (filter '" + expression + "') received and acked all " + want.size()
            + " expected messages");
        // Had an ack not held, its message would come back once the invisible time passed.
        s.expectNothing(consumer, s.quietAfter(lastAck), "for group " + group + " after acking everything it should get");
        s.forget(consumer);
    }
}
