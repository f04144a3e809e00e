package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.io.IOException;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Random;
import java.util.Set;

import apache.rocketmq.v2.Code;
import apache.rocketmq.v2.Encoding;
import apache.rocketmq.v2.MessageType;
import apache.rocketmq.v2.SendMessageRequest;
import apache.rocketmq.v2.SendMessageResponse;
import apache.rocketmq.v2.SystemProperties;
import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.java.exception.BadRequestException;
import org.apache.rocketmq.client.java.message.MessageIdCodec;
import org.apache.rocketmq.shaded.com.google.protobuf.ByteString;
import org.apache.rocketmq.shaded.com.google.protobuf.util.Timestamps;

/**
 * Bad input is refused with the client's documented exceptions, and the broker serves on.
 * <ol>
 * <li>A topic name the client accepts (its pattern {@code ^[%a-zA-Z0-9_-]+$}) but the broker
 * does not (128 characters, the limit is 127): the send fails with BadRequestException, code
 * ILLEGAL_TOPIC (40002), from the route query.
 * <li>A body one byte over the broker's max body size: the client refuses it itself, having
 * learnt the limit from the settings reply (a ClientException caused by an IOException naming
 * that limit).
 * <li>The same body sent straight to SendMessage (the client's own gRPC stub, bypassing its
 * check): the broker answers MESSAGE_BODY_TOO_LARGE (41301), which the client maps to
 * PayloadTooLargeException.
 * <li>A body of exactly the max size and a body holding every byte value round-trip intact,
 * and control messages sent before and after all of the above are delivered.
 * </ol>
 */
final class BadInput {
    private static final int ILLEGAL_TOPIC = 40002;

    private BadInput() {
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("badinput");
        String group = s.unique("grp-badinput");
        // The client logs the failed route query and the body it refused.
        s.allowClientErrors("response-code=" + ILLEGAL_TOPIC, "Message body size exceeds the threshold");
        Producer producer = s.producer(topic);
        Map<String, byte[]> bodies = new HashMap<>();
        byte[] control = ("control-before-" + s.suffix).getBytes();
        bodies.put(Scenario.id(s.send(producer, s.message(topic, control).setTag("C").build())), control);
        s.step("send to " + topic + " works");

        // 1. an illegal topic name
        String longTopic = ("t" + s.suffix + "-").repeat(128).substring(0, 128).replaceAll("[^a-zA-Z0-9_-]", "x");
        try {
            producer.send(s.message(longTopic, "nowhere").build());
            throw new Scenario.Failed("a send to a 128-character topic name succeeded");
        } catch (BadRequestException e) {
            check(Scenario.responseCode(e) == ILLEGAL_TOPIC, "send to a 128-character topic: code "
                + Scenario.responseCode(e) + ", want ILLEGAL_TOPIC (40002): " + Scenario.errorText(e));
            s.step("send to a 128-character topic refused: " + Scenario.errorText(e));
        } catch (ClientException e) {
            throw new Scenario.Failed("send to a 128-character topic failed with " + Scenario.errorText(e)
                + "; want BadRequestException with code 40002");
        }

        // 2. one byte over the max body size, through the client
        Random random = new Random(42);
        byte[] over = new byte[s.maxBodyBytes + 1];
        random.nextBytes(over);
        try {
            producer.send(s.message(topic, over).build());
            throw new Scenario.Failed("the client sent a body of max_body_size + 1 bytes");
        } catch (ClientException e) {
            check(e.getCause() instanceof IOException && String.valueOf(e.getCause().getMessage())
                    .contains("max size=" + s.maxBodyBytes + " bytes"),
                "a body of max_body_size + 1 bytes: " + Scenario.errorText(e) + "; want the client's own refusal "
                    + "naming the broker's limit of " + s.maxBodyBytes + " bytes (from the settings reply)");
            s.step("the client refused a body of " + over.length + " bytes: " + Scenario.errorText(e));
        }

        // 3. the same body straight to the broker
        try (RawRpc rpc = new RawRpc(s.endpoint)) {
            // What the client's PublishingMessageImpl.toProtobuf sends for a normal message.
            var message = apache.rocketmq.v2.Message.newBuilder().setTopic(RawRpc.resource(topic))
                .setSystemProperties(SystemProperties.newBuilder()
                    .setMessageId(MessageIdCodec.getInstance().nextMessageId().toString())
                    .setMessageType(MessageType.NORMAL).setBodyEncoding(Encoding.IDENTITY)
                    .setBornTimestamp(Timestamps.fromMillis(System.currentTimeMillis())).setBornHost(rpc.host)
                    .setQueueId(0))
                .setBody(ByteString.copyFrom(over)).build();
            SendMessageResponse response = rpc.stub(10).sendMessage(SendMessageRequest.newBuilder()
                .addMessages(message).build());
            Code code = response.getStatus().getCode();
            if (response.getEntriesCount() == 1 && code == Code.OK) {
                code = response.getEntries(0).getStatus().getCode();
            }
            check(code == Code.MESSAGE_BODY_TOO_LARGE || code == Code.PAYLOAD_TOO_LARGE,
                "SendMessage with a body of max_body_size + 1 bytes answered " + code + " ("
                    + response.getStatus().getMessage() + "); want MESSAGE_BODY_TOO_LARGE (41301), which the client "
                    + "maps to PayloadTooLargeException");
            s.step("SendMessage with a body of " + over.length + " bytes answered " + code + " ("
                + response.getStatus().getMessage() + ")");
        }

        // 4. the largest body and a binary body round-trip; the broker serves on
        byte[] large = Arrays.copyOf(over, s.maxBodyBytes);
        byte[] binary = new byte[256 * 4];
        for (int i = 0; i < binary.length; i++) {
            binary[i] = (byte) i;
        }
        byte[] after = ("control-after-" + s.suffix).getBytes();
        for (byte[] body : new byte[][] {large, binary, after}) {
            bodies.put(Scenario.id(s.send(producer, s.message(topic, body).setTag("L").build())), body);
        }
        s.step("sent a " + large.length + "-byte body, a " + binary.length + "-byte binary body and a control message");
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));
        Set<String> left = new HashSet<>(bodies.keySet());
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (!left.isEmpty()) {
            check(System.nanoTime() < deadline, left.size() + " message(s) not received within 20 s");
            for (MessageView m : s.receive(consumer)) {
                String id = Scenario.id(m);
                check(bodies.containsKey(id), "unexpected message: " + Scenario.describe(m));
                byte[] got = Scenario.bytes(m.getBody());
                byte[] want = bodies.get(id);
                check(got.length == want.length, "body of " + id + " is " + got.length + " bytes, want " + want.length);
                check(Arrays.equals(got, want), "body of " + id + " differs from what was sent");
                consumer.ack(m);
                left.remove(id);
            }
        }
        s.step("all bodies received intact; the broker served on after the refusals");
    }
}
