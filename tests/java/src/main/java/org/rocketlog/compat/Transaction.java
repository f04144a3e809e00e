package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.TransactionChecker;
import org.apache.rocketmq.client.apis.producer.TransactionResolution;
import org.apache.rocketmq.client.java.impl.producer.SendReceiptImpl;

/**
 * Transactional messages: commit, rollback and the server's check-back through the
 * {@link TransactionChecker}.
 *
 * <p>The broker is tuned (tests/tests/java_compat.rs) to check an open transaction 4 s after its
 * half message was stored, then every 1 s.
 * <ol>
 * <li>A transaction committed by the producer is delivered once; one rolled back never is; a
 * half message is invisible until its commit.
 * <li>A transaction left open is checked back over the producer's Telemetry stream: the checker
 * answers UNKNOWN first (the Java client then sends nothing), so the broker asks again; the
 * second answer is COMMIT and the message is delivered once. Transactions the producer resolved
 * itself are never checked.
 * <li>Committing the committed transaction again changes nothing (OK, no second delivery);
 * committing the rolled-back one fails with code INVALID_TRANSACTION_ID (40008).
 * <li>A topic that does not accept TRANSACTION messages is refused (the client checks its route).
 * </ol>
 * In the end exactly the committed messages were consumed, each once.
 */
final class Transaction {
    private static final int INVALID_TRANSACTION_ID = 40008;

    private Transaction() {
    }

    /** Answers UNKNOWN to the first check of each message, COMMIT to the next ones. */
    private static final class Checker implements TransactionChecker {
        private final Map<String, Integer> calls = new TreeMap<>();

        @Override
        public TransactionResolution check(MessageView m) {
            String body = Scenario.bodyText(m);
            int n;
            synchronized (this) {
                n = calls.merge(body, 1, Integer::sum);
            }
            Scenario.detail("checker called for '" + body + "' (call " + n + "), topic=" + m.getTopic() + " id="
                + Scenario.id(m));
            return n == 1 ? TransactionResolution.UNKNOWN : TransactionResolution.COMMIT;
        }

        synchronized int count(String body) {
            return calls.getOrDefault(body, 0);
        }

        synchronized Map<String, Integer> snapshot() {
            return new TreeMap<>(calls);
        }
    }

    private record Half(org.apache.rocketmq.client.apis.producer.Transaction tx, SendReceipt receipt) {
    }

    private static Half sendHalf(Scenario s, Producer producer, String topic, String body) throws Exception {
        var tx = producer.beginTransaction();
        var msg = s.message(topic, body).setTag("tx").setKeys(body + "-key").addProperty("kind", body).build();
        SendReceipt receipt = producer.send(msg, tx);
        Scenario.checkReceipt(receipt);
        String txId = ((SendReceiptImpl) receipt).getTransactionId();
        check(txId != null && !txId.isEmpty(), "no transaction id for " + body);
        return new Half(tx, receipt);
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("tx");
        String normal = s.unique("txnormal");
        String group = s.unique("grp-tx");
        Checker checker = new Checker();
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));
        Producer producer = s.producer(checker, topic, normal);

        // 1. commit and rollback by the producer
        Half committed = sendHalf(s, producer, topic, "committed");
        Half rolledBack = sendHalf(s, producer, topic, "rolled-back");
        s.step("sent two half messages: " + Scenario.id(committed.receipt) + ", " + Scenario.id(rolledBack.receipt));
        s.expectNothing(consumer, 0.1, "before any commit (half messages are hidden)");
        committed.tx.commit();
        rolledBack.tx.rollback();
        s.step("committed the first, rolled back the second");

        // 2. one left open for the checker
        Half open = sendHalf(s, producer, topic, "checked");
        s.step("left " + Scenario.id(open.receipt) + " open for the broker to check");

        Map<String, String> want = Map.of(Scenario.id(committed.receipt), "committed", Scenario.id(open.receipt),
            "checked");
        Map<String, MessageView> got = new HashMap<>();
        long deadline = System.nanoTime() + Duration.ofSeconds(40).toNanos();
        while (!got.keySet().equals(want.keySet())) {
            check(System.nanoTime() < deadline, "committed messages not all delivered within 40 s: got " + got.keySet()
                + ", want " + want.keySet() + "; checker calls " + checker.snapshot());
            List<MessageView> msgs = s.receive(consumer);
            for (MessageView m : msgs) {
                String id = Scenario.id(m);
                check(want.containsKey(id), "delivered a message that was not committed: " + Scenario.describe(m));
                check(!got.containsKey(id), "delivered " + id + " twice");
                check(Scenario.bodyText(m).equals(want.get(id)), "wrong body: " + Scenario.describe(m));
                check(m.getTopic().equals(topic), "delivered on topic " + m.getTopic() + ", want " + topic);
                check(m.getTag().orElse("").equals("tx") && want.get(id).equals(m.getProperties().get("kind")),
                    "tag or properties lost: " + Scenario.describe(m));
                got.put(id, m);
                consumer.ack(m);
            }
        }
        s.step("both committed messages delivered once");
        check(checker.count("checked") == 2, "the open transaction was checked " + checker.count("checked")
            + " times; want 2 (UNKNOWN, then COMMIT): " + checker.snapshot());
        check(checker.count("committed") == 0 && checker.count("rolled-back") == 0,
            "the broker checked a transaction the producer had resolved: " + checker.snapshot());

        // 3. resolving again
        committed.tx.commit();
        s.step("committing the committed transaction again was answered OK");
        try {
            rolledBack.tx.commit();
            throw new Scenario.Failed("committing a rolled-back transaction succeeded");
        } catch (ClientException e) {
            check(Scenario.responseCode(e) == INVALID_TRANSACTION_ID, "commit after rollback failed with code "
                + Scenario.responseCode(e) + ", want INVALID_TRANSACTION_ID (40008): " + Scenario.errorText(e));
        }
        s.step("committing the rolled-back transaction failed with INVALID_TRANSACTION_ID");

        // 4. a NORMAL-only topic
        try {
            sendHalf(s, producer, normal, "wrong-topic");
            throw new Scenario.Failed("a NORMAL-only topic accepted a transactional message");
        } catch (IllegalArgumentException e) {
            check(String.valueOf(e.getMessage()).contains("message type"), "unexpected refusal: "
                + Scenario.errorText(e));
        }
        s.step("a NORMAL-only topic refused the transactional message");

        s.expectNothing(consumer, 3, "after the committed messages (no second delivery, no rolled-back one)");
        check(checker.count("checked") == 2, "the committed transaction was checked again: " + checker.snapshot());
    }
}
