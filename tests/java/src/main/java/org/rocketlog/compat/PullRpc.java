package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import apache.rocketmq.v2.Broker;
import apache.rocketmq.v2.Code;
import apache.rocketmq.v2.FilterExpression;
import apache.rocketmq.v2.FilterType;
import apache.rocketmq.v2.GetOffsetRequest;
import apache.rocketmq.v2.GetOffsetResponse;
import apache.rocketmq.v2.MessageQueue;
import apache.rocketmq.v2.Permission;
import apache.rocketmq.v2.PullMessageRequest;
import apache.rocketmq.v2.PullMessageResponse;
import apache.rocketmq.v2.QueryOffsetPolicy;
import apache.rocketmq.v2.QueryOffsetRequest;
import apache.rocketmq.v2.QueryOffsetResponse;
import apache.rocketmq.v2.QueryRouteRequest;
import apache.rocketmq.v2.QueryRouteResponse;
import apache.rocketmq.v2.Status;
import apache.rocketmq.v2.UpdateOffsetRequest;
import apache.rocketmq.v2.UpdateOffsetResponse;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.java.impl.producer.SendReceiptImpl;
import org.apache.rocketmq.shaded.com.google.protobuf.util.Durations;
import org.apache.rocketmq.shaded.com.google.protobuf.util.Timestamps;
import org.apache.rocketmq.shaded.io.grpc.StatusRuntimeException;

/**
 * The pull RPCs (QueryOffset, PullMessage, UpdateOffset, GetOffset), which no released
 * official client calls, through the official jar's own generated stubs ({@link RawRpc}: TLS,
 * any certificate). Messages are produced by the official producer; queue ids and the broker
 * name come from QueryRoute. The harness creates {@code pull-<suffix>} (NORMAL, 2 queues).
 *
 * <p>{@code pull_rpc}:
 * <ul>
 * <li>QueryOffset: BEGINNING is the queue's min offset, END its max (the next offset to be
 * written), TIMESTAMP the first offset whose store time is at or after the timestamp (END's
 * value if none); the send receipts' offsets agree with the queue.
 * <li>PullMessage: a status first (OK when messages follow), up to batch_size messages in offset
 * order with queue_offset set and the tag filter applied, then next_offset, past the last message
 * examined (filtered-out ones included); MESSAGE_NOT_FOUND (40401) when nothing came within the
 * long-polling timeout; ILLEGAL_OFFSET (40019) beyond the max offset; a pull waiting at END
 * returns a message produced a second later (long polling).
 * <li>UpdateOffset stores a group's committed offset per queue, GetOffset returns it;
 * OFFSET_NOT_FOUND (40404) for a queue or group with none.
 * </ul>
 * {@code pull_rpc_after_restart} (run by the harness after restarting the broker): the committed
 * offset survived, and the queue without one still answers OFFSET_NOT_FOUND.
 */
final class PullRpc {
    private static final int N = 12;
    private static final String TAGS = "ABC";
    /** What the first queue's committed offset ends as (checked again after the restart). */
    private static final long COMMITTED = 3;
    private static final Duration SHORT_POLL = Duration.ofSeconds(1);
    private static final Duration LONG_POLL = Duration.ofSeconds(3);
    /** Our clock against the broker's in timing checks. */
    private static final double TOLERANCE_SECS = 0.3;
    private static final double CALL_SECS = 10;

    private PullRpc() {
    }

    /** A sent message; the broker picks its queue (as the proxy does), so only pulls tell which. */
    private record Sent(int index, String id, String tag, long receiptOffset, boolean secondHalf) {
    }

    /** One PullMessage stream, item by item. */
    private record Pulled(Status status, List<apache.rocketmq.v2.Message> messages, Long nextOffset, String shape,
        double secs) {
        List<Long> offsets() {
            return messages.stream().map(m -> m.getSystemProperties().getQueueOffset()).collect(Collectors.toList());
        }

        List<String> ids() {
            return messages.stream().map(m -> m.getSystemProperties().getMessageId()).collect(Collectors.toList());
        }

        String describe() {
            return "status " + status.getCode() + " (" + status.getMessage() + "), " + messages.size()
                + " message(s) at offsets " + offsets() + ", next_offset " + nextOffset + ", stream " + shape
                + String.format(" in %.2fs", secs);
        }
    }

    // ----- the RPCs ---------------------------------------------------------------------------

    private static List<MessageQueue> route(Scenario s, RawRpc rpc, String topic) throws Scenario.Failed {
        QueryRouteResponse route = rpc.stub(CALL_SECS).queryRoute(QueryRouteRequest.newBuilder()
            .setTopic(RawRpc.resource(topic)).setEndpoints(rpc.endpoints()).build());
        check(route.getStatus().getCode() == Code.OK, "QueryRoute(" + topic + ") answered " + route.getStatus());
        List<MessageQueue> queues = route.getMessageQueuesList().stream()
            .filter(q -> q.getPermission() == Permission.READ || q.getPermission() == Permission.READ_WRITE)
            .sorted(Comparator.comparingInt(MessageQueue::getId)).collect(Collectors.toList());
        check(!queues.isEmpty(), "QueryRoute(" + topic + ") has no readable queue: " + route);
        s.step("QueryRoute(" + topic + "): readable queues " + queues.stream().map(q -> q.getId() + "@"
            + q.getBroker().getName()).collect(Collectors.joining(", ")));
        return queues;
    }

    /** The queue as a pull consumer names it: topic, id and broker name. */
    private static MessageQueue queue(String topic, MessageQueue routed) {
        return MessageQueue.newBuilder().setTopic(RawRpc.resource(topic)).setId(routed.getId())
            .setBroker(Broker.newBuilder().setName(routed.getBroker().getName())).build();
    }

    private static long queryOffset(RawRpc rpc, MessageQueue mq, QueryOffsetPolicy policy, Long timestamp)
        throws Scenario.Failed {
        QueryOffsetRequest.Builder req = QueryOffsetRequest.newBuilder().setMessageQueue(mq)
            .setQueryOffsetPolicy(policy);
        if (timestamp != null) {
            req.setTimestamp(Timestamps.fromMillis(timestamp));
        }
        QueryOffsetResponse resp = rpc.stub(CALL_SECS).queryOffset(req.build());
        String what = "QueryOffset(queue " + mq.getId() + ", " + policy + (timestamp == null ? "" : " " + timestamp)
            + ")";
        check(resp.getStatus().getCode() == Code.OK, what + " answered " + resp.getStatus().getCode() + " ("
            + resp.getStatus().getMessage() + "), want OK");
        return resp.getOffset();
    }

    private static Pulled pull(RawRpc rpc, String group, MessageQueue mq, long offset, int batch, String tags,
        Duration poll) throws Scenario.Failed {
        PullMessageRequest req = PullMessageRequest.newBuilder().setGroup(RawRpc.resource(group)).setMessageQueue(mq)
            .setOffset(offset).setBatchSize(batch)
            .setFilterExpression(FilterExpression.newBuilder().setType(FilterType.TAG).setExpression(tags))
            .setLongPollingTimeout(Durations.fromMillis(poll.toMillis())).build();
        String what = "PullMessage(queue " + mq.getId() + ", offset " + offset + ", batch " + batch + ", filter '"
            + tags + "')";
        long t0 = System.nanoTime();
        Status status = null;
        List<apache.rocketmq.v2.Message> messages = new ArrayList<>();
        Long next = null;
        StringBuilder shape = new StringBuilder();
        try {
            Iterator<PullMessageResponse> items = rpc.stub(poll.toMillis() / 1000.0 + CALL_SECS).pullMessage(req);
            while (items.hasNext()) {
                PullMessageResponse item = items.next();
                switch (item.getContentCase()) {
                    case STATUS -> {
                        check(status == null, what + ": a second status in the stream");
                        check(messages.isEmpty() && next == null, what + ": the status came after other items");
                        status = item.getStatus();
                        shape.append('S');
                    }
                    case MESSAGE -> {
                        check(next == null, what + ": a message after next_offset");
                        messages.add(item.getMessage());
                        shape.append('M');
                    }
                    case NEXT_OFFSET -> {
                        check(next == null, what + ": a second next_offset");
                        next = item.getNextOffset();
                        shape.append('N');
                    }
                    default -> throw new Scenario.Failed(what + ": an item with no content");
                }
            }
        } catch (StatusRuntimeException e) {
            throw new Scenario.Failed(what + " failed with gRPC status " + e.getStatus());
        }
        check(status != null, what + ": the stream carried no status (" + shape + ")");
        Pulled pulled = new Pulled(status, messages, next, shape.toString(), Scenario.secsSince(t0));
        Scenario.detail(what + " -> " + pulled.describe());
        return pulled;
    }

    private static Status updateOffset(RawRpc rpc, String group, MessageQueue mq, long offset) {
        UpdateOffsetResponse resp = rpc.stub(CALL_SECS).updateOffset(UpdateOffsetRequest.newBuilder()
            .setGroup(RawRpc.resource(group)).setMessageQueue(mq).setOffset(offset).build());
        return resp.getStatus();
    }

    private static GetOffsetResponse getOffset(RawRpc rpc, String group, MessageQueue mq) {
        return rpc.stub(CALL_SECS).getOffset(GetOffsetRequest.newBuilder().setGroup(RawRpc.resource(group))
            .setMessageQueue(mq).build());
    }

    private static void expectOffset(RawRpc rpc, String group, MessageQueue mq, long want) throws Scenario.Failed {
        GetOffsetResponse got = getOffset(rpc, group, mq);
        check(got.getStatus().getCode() == Code.OK && got.getOffset() == want, "GetOffset(" + group + ", queue "
            + mq.getId() + ") answered " + got.getStatus().getCode() + " (" + got.getStatus().getMessage()
            + ") offset " + got.getOffset() + ", want OK with " + want);
    }

    private static void expectNoOffset(RawRpc rpc, String group, MessageQueue mq) throws Scenario.Failed {
        GetOffsetResponse got = getOffset(rpc, group, mq);
        check(got.getStatus().getCode() == Code.OFFSET_NOT_FOUND, "GetOffset(" + group + ", queue " + mq.getId()
            + ") with nothing committed answered " + got.getStatus().getCode() + " (" + got.getStatus().getMessage()
            + ") offset " + got.getOffset() + ", want OFFSET_NOT_FOUND (40404)");
    }

    // ----- the scenario -----------------------------------------------------------------------

    private static Sent send(Scenario s, Producer producer, String topic, int i, boolean secondHalf)
        throws Exception {
        String tag = String.valueOf(TAGS.charAt(i % TAGS.length()));
        var receipt = (SendReceiptImpl) s.send(producer, s.message(topic, "pull-" + i + "-" + s.suffix).setTag(tag)
            .setKeys("pull-key-" + i).build());
        return new Sent(i, Scenario.id(receipt), tag, receipt.getOffset(), secondHalf);
    }

    static void run(Scenario s) throws Exception {
        String topic = s.unique("pull");
        String group = s.unique("grp-pull");
        try (RawRpc rpc = new RawRpc(s.endpoint)) {
            List<MessageQueue> routed = route(s, rpc, topic);
            Map<Integer, MessageQueue> queues = new HashMap<>();
            for (MessageQueue q : routed) {
                queues.put(q.getId(), queue(topic, q));
            }
            MessageQueue first = queues.get(routed.get(0).getId());
            MessageQueue other = routed.size() > 1 ? queues.get(routed.get(1).getId()) : null;
            // Nothing committed yet.
            expectNoOffset(rpc, group, first);

            Producer producer = s.producer(topic);
            List<Sent> sent = new ArrayList<>();
            for (int i = 0; i < N / 2; i++) {
                sent.add(send(s, producer, topic, i, false));
            }
            // The first half is stored before its sends returned; the second half is sent
            // after the clock has moved past that.
            long lastStored = System.currentTimeMillis();
            long spinUntil = System.nanoTime() + Duration.ofSeconds(1).toNanos();
            while (System.currentTimeMillis() <= lastStored && System.nanoTime() < spinUntil) {
                Thread.onSpinWait();
            }
            long middle = System.currentTimeMillis();
            for (int i = N / 2; i < N; i++) {
                sent.add(send(s, producer, topic, i, true));
            }
            s.step("sent " + N + " messages tagged " + TAGS + " in turn; the second half after " + middle + " ms");

            // Where the broker put each message: every one in exactly one queue, each queue in
            // send order, at the offset its send receipt reported.
            Map<String, Sent> byId = sent.stream().collect(Collectors.toMap(Sent::id, x -> x));
            Map<Integer, List<Sent>> byQueue = new HashMap<>();
            for (MessageQueue mq : queues.values()) {
                Pulled all = pull(rpc, group, mq, 0, 32, "*", SHORT_POLL);
                List<Sent> here = new ArrayList<>();
                for (apache.rocketmq.v2.Message m : all.messages) {
                    Sent x = byId.remove(m.getSystemProperties().getMessageId());
                    check(x != null, "queue " + mq.getId() + " holds a message not sent (or twice): " + m);
                    int previous = here.isEmpty() ? -1 : here.get(here.size() - 1).index;
                    check(previous < x.index, "queue " + mq.getId() + " holds message " + x.index
                        + " after message " + previous);
                    check(m.getSystemProperties().getQueueOffset() == x.receiptOffset, "message " + x.index
                        + " is at offset " + m.getSystemProperties().getQueueOffset() + " of queue " + mq.getId()
                        + ", but its send receipt said " + x.receiptOffset);
                    here.add(x);
                }
                byQueue.put(mq.getId(), here);
            }
            check(byId.isEmpty(), "sent messages in no queue: " + byId.keySet());
            s.step("queues of the messages, in send order: " + byQueue.entrySet().stream()
                .map(e -> e.getKey() + "=" + e.getValue().stream().map(x -> String.valueOf(x.index))
                    .collect(Collectors.joining(",", "[", "]"))).collect(Collectors.joining(" ")));

            for (Map.Entry<Integer, List<Sent>> e : byQueue.entrySet()) {
                checkQueue(s, rpc, group, queues.get(e.getKey()), e.getValue(), middle);
            }
            int busiest = byQueue.entrySet().stream().max(Comparator.comparingInt(e -> e.getValue().size()))
                .get().getKey();
            checkPulls(s, rpc, group, queues.get(busiest), byQueue.get(busiest));
            checkLongPolling(s, rpc, group, producer, topic, queues);
            checkOffsets(s, rpc, group, first, other);
        }
    }

    /** QueryOffset and a full pull of one queue against what was sent to it. */
    private static void checkQueue(Scenario s, RawRpc rpc, String group, MessageQueue mq, List<Sent> sent,
        long middle) throws Scenario.Failed {
        long min = queryOffset(rpc, mq, QueryOffsetPolicy.BEGINNING, null);
        long max = queryOffset(rpc, mq, QueryOffsetPolicy.END, null);
        check(min == 0 && max == sent.size(), "queue " + mq.getId() + " of a new topic holds " + sent.size()
            + " messages: QueryOffset BEGINNING " + min + " and END " + max + ", want 0 and " + sent.size());
        if (sent.isEmpty()) {
            return;
        }
        Pulled all = pull(rpc, group, mq, min, 32, "*", SHORT_POLL);
        check(all.status.getCode() == Code.OK, "pull of queue " + mq.getId() + " from BEGINNING: " + all.describe()
            + "; want OK");
        check(all.ids().equals(sent.stream().map(Sent::id).collect(Collectors.toList())), "pull of queue "
            + mq.getId() + " from BEGINNING returned ids " + all.ids() + ", want the sent ones in order "
            + sent.stream().map(Sent::id).collect(Collectors.toList()));
        List<Long> want = new ArrayList<>();
        for (long o = min; o < max; o++) {
            want.add(o);
        }
        for (apache.rocketmq.v2.Message m : all.messages) {
            check(m.getSystemProperties().hasQueueOffset(), "a pulled message has no queue_offset: " + m);
            check(m.getSystemProperties().hasStoreTimestamp(), "a pulled message has no store_timestamp: " + m);
            check(m.getSystemProperties().getQueueId() == mq.getId(), "a message pulled from queue " + mq.getId()
                + " says queue_id " + m.getSystemProperties().getQueueId());
        }
        check(all.offsets().equals(want), "pull of queue " + mq.getId() + ": queue offsets " + all.offsets()
            + ", want " + want);
        check(all.nextOffset != null && all.nextOffset == max, "pull of queue " + mq.getId() + " from BEGINNING: "
            + "next_offset " + all.nextOffset + ", want END " + max);

        // TIMESTAMP: the first offset stored at or after the time, END if none.
        List<Long> stored = all.messages.stream()
            .map(m -> Timestamps.toMillis(m.getSystemProperties().getStoreTimestamp())).collect(Collectors.toList());
        List<Long> probes = new ArrayList<>(List.of(0L, middle, System.currentTimeMillis() + 3_600_000));
        for (long t : stored) {
            probes.add(t);
            probes.add(t + 1);
        }
        for (long t : probes) {
            long expect = max;
            for (int i = 0; i < stored.size(); i++) {
                if (stored.get(i) >= t) {
                    expect = min + i;
                    break;
                }
            }
            long got = queryOffset(rpc, mq, QueryOffsetPolicy.TIMESTAMP, t);
            check(got == expect, "QueryOffset(queue " + mq.getId() + ", TIMESTAMP " + t + ") = " + got + ", want "
                + expect + " (store times " + stored + ")");
        }
        long firstOfSecondHalf = max;
        for (int i = 0; i < sent.size(); i++) {
            if (sent.get(i).secondHalf) {
                firstOfSecondHalf = min + i;
                break;
            }
        }
        long atMiddle = queryOffset(rpc, mq, QueryOffsetPolicy.TIMESTAMP, middle);
        check(atMiddle == firstOfSecondHalf, "QueryOffset(queue " + mq.getId() + ", TIMESTAMP " + middle + ") = "
            + atMiddle + ", want " + firstOfSecondHalf + ", the first message sent after that time");
        s.step("queue " + mq.getId() + ": BEGINNING " + min + ", END " + max + ", TIMESTAMP at " + probes.size()
            + " times, and a full pull agree with the " + sent.size() + " messages sent to it");
    }

    /** Batches, tag filters, next_offset, MESSAGE_NOT_FOUND and ILLEGAL_OFFSET on one queue. */
    private static void checkPulls(Scenario s, RawRpc rpc, String group, MessageQueue mq, List<Sent> sent)
        throws Scenario.Failed {
        long min = 0;
        long max = sent.size();
        check(max >= 3, "queue " + mq.getId() + " got only " + max + " messages; the scenario needs 3");

        Pulled two = pull(rpc, group, mq, min, 2, "*", SHORT_POLL);
        check(two.status.getCode() == Code.OK && two.offsets().equals(List.of(min, min + 1))
            && two.nextOffset != null && two.nextOffset == min + 2, "pull with batch_size 2 from " + min + ": "
            + two.describe() + "; want OK, offsets [" + min + ", " + (min + 1) + "], next_offset " + (min + 2));

        Pulled middle = pull(rpc, group, mq, min + 1, 32, "*", SHORT_POLL);
        check(middle.status.getCode() == Code.OK && !middle.offsets().isEmpty() && middle.offsets().get(0) == min + 1,
            "pull from offset " + (min + 1) + ": " + middle.describe() + "; want OK from offset " + (min + 1));

        for (String tags : List.of("A", "B||C")) {
            List<String> wantIds = new ArrayList<>();
            List<Long> wantOffsets = new ArrayList<>();
            for (int i = 0; i < sent.size(); i++) {
                if (tags.contains(sent.get(i).tag)) {
                    wantIds.add(sent.get(i).id);
                    wantOffsets.add(min + i);
                }
            }
            Pulled filtered = pull(rpc, group, mq, min, 32, tags, SHORT_POLL);
            if (wantIds.isEmpty()) {
                check(filtered.status.getCode() == Code.MESSAGE_NOT_FOUND, "pull with filter '" + tags
                    + "' matching nothing: " + filtered.describe() + "; want MESSAGE_NOT_FOUND");
                continue;
            }
            check(filtered.status.getCode() == Code.OK && filtered.ids().equals(wantIds),
                "pull with filter '" + tags + "': " + filtered.describe() + "; want OK with offsets " + wantOffsets);
            for (apache.rocketmq.v2.Message m : filtered.messages) {
                check(tags.contains(m.getSystemProperties().getTag()), "pull with filter '" + tags
                    + "' returned a message tagged " + m.getSystemProperties().getTag());
            }
            check(filtered.nextOffset != null && filtered.nextOffset == max, "pull with filter '" + tags + "': "
                + "next_offset " + filtered.nextOffset + ", want END " + max
                + " (filtered-out messages at the end are examined and skipped)");
            // One at a time: the next pull starts past the match, never past the next match.
            Pulled one = pull(rpc, group, mq, min, 1, tags, SHORT_POLL);
            long hit = wantOffsets.get(0);
            long limit = wantOffsets.size() > 1 ? wantOffsets.get(1) : max;
            check(one.status.getCode() == Code.OK && one.offsets().equals(List.of(hit)) && one.nextOffset != null
                && one.nextOffset > hit && one.nextOffset <= limit, "pull of 1 with filter '" + tags + "': "
                + one.describe() + "; want OK with offset " + hit + " and next_offset in (" + hit + ", " + limit + "]");
        }

        Pulled none = pull(rpc, group, mq, min, 32, "Z", SHORT_POLL);
        check(none.status.getCode() == Code.MESSAGE_NOT_FOUND && none.messages.isEmpty(), "pull with filter 'Z' "
            + "(no such tag): " + none.describe() + "; want MESSAGE_NOT_FOUND (40401)");
        check(none.nextOffset != null && none.nextOffset == max, "pull with filter 'Z': next_offset "
            + none.nextOffset + ", want END " + max + " (every message examined and skipped)");

        Pulled atEnd = pull(rpc, group, mq, max, 32, "*", SHORT_POLL);
        check(atEnd.status.getCode() == Code.MESSAGE_NOT_FOUND && atEnd.messages.isEmpty(), "pull at END " + max
            + ": " + atEnd.describe() + "; want MESSAGE_NOT_FOUND (40401)");
        check(atEnd.secs >= SHORT_POLL.toMillis() / 1000.0 - TOLERANCE_SECS, "pull at END answered after "
            + String.format("%.2fs", atEnd.secs) + ", before its long-polling timeout of " + SHORT_POLL.toSeconds()
            + "s");

        Pulled beyond = pull(rpc, group, mq, max + 100, 32, "*", SHORT_POLL);
        check(beyond.status.getCode() == Code.ILLEGAL_OFFSET && beyond.messages.isEmpty(), "pull at END + 100: "
            + beyond.describe() + "; want ILLEGAL_OFFSET (40019)");
        s.step("queue " + mq.getId() + ": batches, tag filters, next_offset, MESSAGE_NOT_FOUND and ILLEGAL_OFFSET "
            + "as specified");
    }

    /** A pull waiting at END returns the message produced a second later. */
    private static void checkLongPolling(Scenario s, RawRpc rpc, String group, Producer producer, String topic,
        Map<Integer, MessageQueue> queues) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(queues.size());
        try {
            Map<Integer, Long> ends = new HashMap<>();
            for (MessageQueue mq : queues.values()) {
                ends.put(mq.getId(), queryOffset(rpc, mq, QueryOffsetPolicy.END, null));
            }
            long started = System.nanoTime();
            Map<Integer, Future<Pulled>> waiting = new HashMap<>();
            for (MessageQueue mq : queues.values()) {
                waiting.put(mq.getId(), pool.submit(() -> pull(rpc, group, mq, ends.get(mq.getId()), 32, "*",
                    LONG_POLL)));
            }
            // The message must come while the pulls wait: a second into their long poll.
            Scenario.waitUntil(started + Duration.ofSeconds(1).toNanos());
            long sentAt = System.nanoTime();
            Sent late = send(s, producer, topic, N, true);
            s.step("sent " + late.id + " " + String.format("%.2fs", Scenario.secsSince(started))
                + " into pulls waiting at END of every queue with a " + LONG_POLL.toSeconds()
                + "s long-polling timeout");
            int woken = 0;
            for (Map.Entry<Integer, Future<Pulled>> e : waiting.entrySet()) {
                Pulled got;
                try {
                    got = e.getValue().get(LONG_POLL.toSeconds() + (long) CALL_SECS, TimeUnit.SECONDS);
                } catch (ExecutionException failed) {
                    if (failed.getCause() instanceof Scenario.Failed) {
                        throw (Scenario.Failed) failed.getCause();
                    }
                    throw failed;
                }
                if (got.status.getCode() == Code.OK) {
                    woken++;
                    check(got.ids().equals(List.of(late.id)), "the pull waiting on queue " + e.getKey() + ": "
                        + got.describe() + "; want OK with " + late.id);
                    double after = (System.nanoTime() - sentAt) / 1e9;
                    check(got.secs < LONG_POLL.toMillis() / 1000.0 - TOLERANCE_SECS, String.format("the waiting pull "
                        + "returned the message only %.2fs after it was sent, at its long-polling timeout", after));
                    check(got.nextOffset != null && got.nextOffset == ends.get(e.getKey()) + 1, "the waiting pull: "
                        + "next_offset " + got.nextOffset + ", want " + (ends.get(e.getKey()) + 1));
                } else {
                    check(got.status.getCode() == Code.MESSAGE_NOT_FOUND, "the pull waiting on queue " + e.getKey()
                        + ": " + got.describe() + "; want OK with " + late.id + " or MESSAGE_NOT_FOUND");
                }
            }
            check(woken == 1, woken + " of the pulls waiting at END returned the message sent meanwhile; want 1");
            s.step("the pull waiting at END returned the new message (long polling)");
        } finally {
            pool.shutdownNow();
        }
    }

    /** UpdateOffset and GetOffset; the first queue ends with COMMITTED (checked after the restart). */
    private static void checkOffsets(Scenario s, RawRpc rpc, String group, MessageQueue first, MessageQueue other)
        throws Scenario.Failed {
        for (long offset : new long[] {COMMITTED - 1, COMMITTED}) {
            Status status = updateOffset(rpc, group, first, offset);
            check(status.getCode() == Code.OK, "UpdateOffset(" + group + ", queue " + first.getId() + ", " + offset
                + ") answered " + status.getCode() + " (" + status.getMessage() + "), want OK");
            expectOffset(rpc, group, first, offset);
        }
        if (other != null) {
            expectNoOffset(rpc, group, other);
        }
        expectNoOffset(rpc, s.unique("grp-pull-never"), first);
        s.step("UpdateOffset/GetOffset: queue " + first.getId() + " committed at " + COMMITTED + "; a queue and a "
            + "group with nothing committed answer OFFSET_NOT_FOUND");
    }

    static void afterRestart(Scenario s) throws Exception {
        String topic = s.unique("pull");
        String group = s.unique("grp-pull");
        try (RawRpc rpc = new RawRpc(s.endpoint)) {
            List<MessageQueue> routed = route(s, rpc, topic);
            MessageQueue first = queue(topic, routed.get(0));
            expectOffset(rpc, group, first, COMMITTED);
            if (routed.size() > 1) {
                expectNoOffset(rpc, group, queue(topic, routed.get(1)));
            }
            s.step("after the restart, GetOffset(" + group + ", queue " + first.getId() + ") is still " + COMMITTED);
        }
    }
}
