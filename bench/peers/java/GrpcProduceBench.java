// Second-opinion load generator for bench/peers/run.sh: the official RocketMQ 5 Java client
// (gRPC, plaintext), one Producer shared by THREADS threads, each with one blocking send in
// flight. Runs WARMUP seconds unmeasured, then SECONDS measured, and prints one line:
//
//   java-grpc: THREADS threads x 1 in flight, N msgs in S s = R msgs/s, p50 A ms, p99 B ms, errors E,
//   with warm-up M msgs
//
// usage: GrpcProduceBench ENDPOINT TOPIC THREADS SECONDS WARMUP_SECONDS BODY_BYTES

import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.producer.Producer;

public final class GrpcProduceBench {
    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: GrpcProduceBench ENDPOINT TOPIC THREADS SECONDS WARMUP_SECONDS BODY_BYTES");
            System.exit(2);
        }
        String endpoint = args[0];
        String topic = args[1];
        int threads = Integer.parseInt(args[2]);
        long seconds = Long.parseLong(args[3]);
        long warmup = Long.parseLong(args[4]);
        byte[] body = new byte[Integer.parseInt(args[5])];
        for (int i = 0; i < body.length; i++) {
            body[i] = (byte) (i * 31 % 251);
        }
        ClientServiceProvider provider = ClientServiceProvider.loadService();
        ClientConfiguration config = ClientConfiguration.newBuilder()
            .setEndpoints(endpoint)
            .enableSsl(false)
            .setRequestTimeout(Duration.ofSeconds(10))
            .build();
        try (Producer producer = provider.newProducerBuilder()
            .setClientConfiguration(config)
            .setTopics(topic)
            .build()) {
            Message message = provider.newMessageBuilder().setTopic(topic).setBody(body).build();
            long warmed = warmup > 0 ? run(producer, message, threads, warmup).latenciesNanos.length : 0;
            Result r = run(producer, message, threads, seconds);
            System.out.printf("java-grpc: %d threads x 1 in flight, %d msgs in %.2f s = %.0f msgs/s, "
                    + "p50 %.3f ms, p99 %.3f ms, errors %d, with warm-up %d msgs%n",
                threads, r.latenciesNanos.length, r.seconds, r.latenciesNanos.length / r.seconds,
                quantile(r.latenciesNanos, 0.50) / 1e6, quantile(r.latenciesNanos, 0.99) / 1e6, r.errors,
                warmed + r.latenciesNanos.length);
        }
    }

    private static final class Result {
        long[] latenciesNanos;
        double seconds;
        long errors;
    }

    private static Result run(Producer producer, Message message, int threads, long seconds)
        throws InterruptedException {
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
                    long t0 = System.nanoTime();
                    try {
                        producer.send(message);
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
        int total = Arrays.stream(counts).sum();
        r.latenciesNanos = new long[total];
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
