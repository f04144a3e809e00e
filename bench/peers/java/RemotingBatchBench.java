// Apache RocketMQ's batch path for bench/peers/run.sh: its own remoting client
// (DefaultMQProducer, straight to the broker, not through the gRPC proxy) sending batches of
// BATCH messages from THREADS threads, one batch in flight each. Runs WARMUP seconds
// unmeasured, then SECONDS measured, and prints one line:
//
//   remoting-batch: THREADS threads x 1 in flight, batch B, N msgs in S s = R msgs/s, p50 A ms,
//   p99 B ms, errors E, with warm-up M msgs
//
// usage: RemotingBatchBench NAMESRV TOPIC THREADS BATCH SECONDS WARMUP_SECONDS BODY_BYTES

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;

public final class RemotingBatchBench {
    public static void main(String[] args) throws Exception {
        if (args.length != 7) {
            System.err.println("usage: RemotingBatchBench NAMESRV TOPIC THREADS BATCH SECONDS WARMUP_SECONDS BODY_BYTES");
            System.exit(2);
        }
        String namesrv = args[0];
        String topic = args[1];
        int threads = Integer.parseInt(args[2]);
        int batch = Integer.parseInt(args[3]);
        long seconds = Long.parseLong(args[4]);
        long warmup = Long.parseLong(args[5]);
        byte[] body = new byte[Integer.parseInt(args[6])];
        for (int i = 0; i < body.length; i++) {
            body[i] = (byte) (i * 31 % 251);
        }
        DefaultMQProducer producer = new DefaultMQProducer("PeersBatchProducer");
        producer.setNamesrvAddr(namesrv);
        producer.setSendMsgTimeout(10_000);
        producer.start();
        try {
            long warmed = warmup > 0
                ? (long) run(producer, topic, body, threads, batch, warmup).latenciesNanos.length * batch : 0;
            Result r = run(producer, topic, body, threads, batch, seconds);
            long messages = (long) r.latenciesNanos.length * batch;
            System.out.printf("remoting-batch: %d threads x 1 in flight, batch %d, %d msgs in %.2f s = %.0f msgs/s, "
                    + "p50 %.3f ms, p99 %.3f ms, errors %d, with warm-up %d msgs%n",
                threads, batch, messages, r.seconds, messages / r.seconds,
                quantile(r.latenciesNanos, 0.50) / 1e6, quantile(r.latenciesNanos, 0.99) / 1e6, r.errors,
                warmed + messages);
        } finally {
            producer.shutdown();
        }
    }

    private static final class Result {
        long[] latenciesNanos;
        double seconds;
        long errors;
    }

    private static Result run(DefaultMQProducer producer, String topic, byte[] body, int threads, int batch,
        long seconds) throws InterruptedException {
        long start = System.nanoTime();
        long deadline = start + seconds * 1_000_000_000L;
        AtomicLong errors = new AtomicLong();
        long[][] perThread = new long[threads][];
        int[] counts = new int[threads];
        Thread[] workers = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            final int index = t;
            workers[t] = new Thread(() -> {
                long[] mine = new long[1 << 12];
                int n = 0;
                while (System.nanoTime() < deadline) {
                    // Fresh messages per batch: the client stamps each with its own unique id.
                    List<Message> messages = new ArrayList<>(batch);
                    for (int i = 0; i < batch; i++) {
                        messages.add(new Message(topic, body));
                    }
                    long t0 = System.nanoTime();
                    try {
                        SendResult result = producer.send(messages);
                        if (result.getSendStatus() != SendStatus.SEND_OK) {
                            errors.incrementAndGet();
                            continue;
                        }
                    } catch (Exception e) {
                        errors.incrementAndGet();
                        continue;
                    }
                    if (n == mine.length) {
                        mine = Arrays.copyOf(mine, n * 2);
                    }
                    mine[n++] = System.nanoTime() - t0;
                }
                perThread[index] = mine;
                counts[index] = n;
            });
            workers[t].start();
        }
        for (Thread w : workers) {
            w.join();
        }
        Result r = new Result();
        r.seconds = (System.nanoTime() - start) / 1e9;
        r.errors = errors.get();
        r.latenciesNanos = new long[Arrays.stream(counts).sum()];
        int at = 0;
        for (int t = 0; t < threads; t++) {
            System.arraycopy(perThread[t], 0, r.latenciesNanos, at, counts[t]);
            at += counts[t];
        }
        Arrays.sort(r.latenciesNanos);
        return r;
    }

    private static double quantile(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        return sorted[Math.min(sorted.length - 1, (int) (q * sorted.length))];
    }
}
