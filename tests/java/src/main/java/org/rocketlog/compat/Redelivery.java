package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.java.exception.BadRequestException;
import org.apache.rocketmq.client.java.message.MessageViewImpl;

/**
 * Redelivery after the invisible time, changeInvisibleDuration, ack, bad receipt handles.
 * <ol>
 * <li>One message is received with the shortest invisible duration the broker allows
 * ({@code ROCKETLOG_INVISIBLE_SECS}) and not acked.
 * <li>It must not come back before the invisible time ends, and must come back after it: same
 * id and body, delivery attempt 2, a new receipt handle.
 * <li>changeInvisibleDuration on it gives a new receipt handle (the client swaps it in); an ack
 * with that handle succeeds, and the message never comes back.
 * <li>An ack with a receipt handle the broker never issued fails with BadRequestException,
 * code INVALID_RECEIPT_HANDLE (40013).
 * <li>A receive with a zero invisible duration fails with BadRequestException, code
 * ILLEGAL_INVISIBLE_TIME (40011).
 * </ol>
 */
final class Redelivery {
    /** The broker's clock and ours start the invisible time at slightly different moments. */
    private static final double EARLY_TOLERANCE_SECS = 0.25;
    private static final int INVALID_RECEIPT_HANDLE = 40013;
    private static final int ILLEGAL_INVISIBLE_TIME = 40011;

    private Redelivery() {
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("redelivery");
        String group = s.unique("grp-redelivery");
        Producer producer = s.producer(topic);
        byte[] body = ("redelivery-" + s.suffix).getBytes();
        String mid = Scenario.id(s.send(producer, s.message(topic, body).setTag("R").setKeys("key-" + s.suffix)
            .addProperty("scenario", "redelivery").build()));
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));

        // 1. first delivery
        MessageView first = null;
        long callStarted = 0;
        long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
        while (first == null) {
            check(System.nanoTime() < deadline, "the message was not delivered within 15 s");
            callStarted = System.nanoTime();
            List<MessageView> msgs = s.receive(consumer);
            if (!msgs.isEmpty()) {
                check(msgs.size() == 1 && Scenario.id(msgs.get(0)).equals(mid),
                    "first receive: expected only the sent message, got " + Scenario.describeAll(msgs));
                first = msgs.get(0);
            }
        }
        check(first.getDeliveryAttempt() == 1, "first delivery has delivery attempt " + first.getDeliveryAttempt()
            + ", want 1");
        check(Arrays.equals(Scenario.bytes(first.getBody()), body), "first delivery body differs");
        String firstHandle = Scenario.receiptHandle(first);
        long visibleAgain = callStarted + (long) ((s.invisibleSecs - EARLY_TOLERANCE_SECS) * 1e9);
        s.step("got the first delivery, not acking; it may come back " + s.invisibleSecs + "s after it was handed out");

        // 2. not before the invisible time, then again with attempt 2
        MessageView second = null;
        deadline = System.nanoTime() + Duration.ofSeconds(s.invisibleSecs + 15).toNanos();
        while (second == null) {
            check(System.nanoTime() < deadline, "the un-acked message did not come back within "
                + (s.invisibleSecs + 15) + "s of its first delivery");
            List<MessageView> msgs = s.receive(consumer);
            long gotAt = System.nanoTime();
            for (MessageView m : msgs) {
                check(Scenario.id(m).equals(mid), "unexpected message: " + Scenario.describe(m));
                check(gotAt >= visibleAgain, String.format("the message came back %.2fs before its invisible time of "
                    + "%ds ended", (visibleAgain - gotAt) / 1e9 + EARLY_TOLERANCE_SECS, s.invisibleSecs));
                second = m;
            }
        }
        check(second.getDeliveryAttempt() == 2, "the redelivery has delivery attempt " + second.getDeliveryAttempt()
            + ", want 2");
        check(Arrays.equals(Scenario.bytes(second.getBody()), body), "redelivery body differs");
        check(second.getProperties().equals(Map.of("scenario", "redelivery")),
            "redelivery user properties " + second.getProperties() + ", want {scenario=redelivery}");
        check(!Scenario.receiptHandle(second).equals(firstHandle),
            "the redelivery reused the first delivery's receipt handle (a handle is per delivery)");
        s.step("redelivered with attempt 2 after the invisible time");

        // 3. change the invisible time (new handle), then ack with the new handle
        String oldHandle = Scenario.receiptHandle(second);
        consumer.changeInvisibleDuration(second, Duration.ofSeconds(s.invisibleSecs));
        String newHandle = Scenario.receiptHandle(second);
        check(newHandle != null && !newHandle.isEmpty() && !newHandle.equals(oldHandle),
            "changeInvisibleDuration did not return a new receipt handle (got " + newHandle + ", old " + oldHandle + ")");
        s.step("changeInvisibleDuration returned a new receipt handle");
        consumer.ack(second);
        long ackedAt = System.nanoTime();
        s.step("acked with the new handle");
        s.expectNothing(consumer, s.quietAfter(ackedAt), "after the ack (the message was acked and must not come back)");

        // 4. a receipt handle the broker never issued
        MessageViewImpl madeUp = (MessageViewImpl) second;
        madeUp.setReceiptHandle("not-a-receipt-handle-" + s.suffix);
        expectBadRequest("ack with a made-up receipt handle", INVALID_RECEIPT_HANDLE, () -> consumer.ack(madeUp));
        s.step("made-up receipt handle rejected with INVALID_RECEIPT_HANDLE");

        // 5. no invisible time
        expectBadRequest("receive with a zero invisible duration", ILLEGAL_INVISIBLE_TIME,
            () -> consumer.receive(1, Duration.ZERO));
        s.step("receive with a zero invisible duration rejected with ILLEGAL_INVISIBLE_TIME");
    }

    interface Call {
        void call() throws ClientException;
    }

    static void expectBadRequest(String what, int code, Call call) throws Scenario.Failed {
        try {
            call.call();
        } catch (BadRequestException e) {
            check(Scenario.responseCode(e) == code, what + " failed with code " + Scenario.responseCode(e) + ", want "
                + code + ": " + Scenario.errorText(e));
            return;
        } catch (ClientException | RuntimeException e) {
            throw new Scenario.Failed(what + " failed with " + Scenario.errorText(e) + "; want BadRequestException "
                + "with code " + code);
        }
        throw new Scenario.Failed(what + " succeeded; want BadRequestException with code " + code);
    }
}
