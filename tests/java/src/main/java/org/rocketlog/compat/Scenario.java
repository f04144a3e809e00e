package org.rocketlog.compat;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientConfigurationBuilder;
import org.apache.rocketmq.client.apis.SessionCredentialsProvider;
import org.apache.rocketmq.client.apis.StaticSessionCredentialsProvider;
import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.FilterExpressionType;
import org.apache.rocketmq.client.apis.consumer.MessageListener;
import org.apache.rocketmq.client.apis.consumer.PushConsumer;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageBuilder;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.ProducerBuilder;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.TransactionChecker;
import org.apache.rocketmq.client.java.message.MessageViewImpl;

/**
 * Arguments, hard timeout, step log, client lifecycle and checks of one scenario run: the Java
 * counterpart of {@code tests/python/scenario.py}, with the same conventions (steps on stdout,
 * a last line {@code PASS <name>} or {@code FAIL <name>: <reason>}, exit 0 only on a pass, 3 when
 * the hard timeout fired) and the same tuning from the environment.
 */
final class Scenario {
    /** The client version the scenarios pin (tests/java/pom.xml). */
    static final String CLIENT_VERSION = "5.2.0";
    /** Time given to the clients' shutdown before the run stops waiting for it. */
    private static final Duration SHUTDOWN_WAIT = Duration.ofSeconds(10);
    /** Client log lines shown with a failure (the most recent ones). */
    private static final int LOG_LINES_ON_FAILURE = 400;
    private static final Pattern RESPONSE_CODE = Pattern.compile("response-code=(\\d+)");

    /** A message id as the Java client generates it: version 01, 16 more bytes, upper-case hex. */
    static final Pattern JAVA_MESSAGE_ID = Pattern.compile("^01[0-9A-F]{32}$");

    final String name;
    final String endpoint;
    final String suffix;
    final int timeoutSecs;
    final int invisibleSecs;
    final int awaitSecs;
    final int maxAttempts;
    final int maxBodyBytes;
    final ClientServiceProvider provider;

    private final long startedNanos = System.nanoTime();
    private volatile String currentStep = "start";
    private final List<AutoCloseable> clients = new CopyOnWriteArrayList<>();
    private final ClientLog clientLog;
    /** A client warning is expected when it contains every fragment of one entry. */
    private final List<List<String>> allowedClientErrors = new ArrayList<>();

    /** The broker did something the scenario does not accept. */
    static final class Failed extends Exception {
        private static final long serialVersionUID = 1L;

        Failed(String reason) {
            super(reason);
        }
    }

    /** The body of a scenario. */
    interface Body {
        void run(Scenario s) throws Exception;
    }

    Scenario(String name, String endpoint, String suffix, ClientLog clientLog) {
        this.name = name;
        this.endpoint = endpoint;
        this.suffix = suffix;
        this.clientLog = clientLog;
        this.timeoutSecs = envInt("ROCKETLOG_SCENARIO_TIMEOUT", 60);
        this.invisibleSecs = envInt("ROCKETLOG_INVISIBLE_SECS", 10);
        this.awaitSecs = envInt("ROCKETLOG_AWAIT_SECS", 5);
        this.maxAttempts = envInt("ROCKETLOG_MAX_ATTEMPTS", 17);
        this.maxBodyBytes = envInt("ROCKETLOG_MAX_BODY_BYTES", 4 * 1024 * 1024);
        this.provider = ClientServiceProvider.loadService();
        startWatchdog();
        step(String.format("scenario %s: endpoint=%s suffix=%s client=rocketmq-client-java %s invisible=%ds "
                + "await=%ds max_attempts=%d max_body=%d timeout=%ds", name, endpoint, suffix, clientVersion(),
            invisibleSecs, awaitSecs, maxAttempts, maxBodyBytes, timeoutSecs));
    }

    static int envInt(String name, int fallback) {
        String raw = System.getenv(name);
        if (raw == null || raw.isEmpty()) {
            return fallback;
        }
        try {
            return Integer.parseInt(raw.trim());
        } catch (NumberFormatException e) {
            System.err.println("bad " + name + "=" + raw + ": not an integer");
            System.err.flush();
            Runtime.getRuntime().halt(2);
            return fallback;
        }
    }

    /** The client jar's own version record. */
    private static String clientVersion() {
        try (var in = Scenario.class.getClassLoader().getResourceAsStream("rocketmq.metadata.properties")) {
            if (in == null) {
                return "unknown";
            }
            var props = new java.util.Properties();
            props.load(in);
            return props.getProperty("rocketmq.version", "unknown");
        } catch (IOException e) {
            return "unknown (" + e + ")";
        }
    }

    // ----- plumbing ---------------------------------------------------------------------------

    private void startWatchdog() {
        Thread watchdog = new Thread(() -> {
            long deadline = startedNanos + Duration.ofSeconds(timeoutSecs).toNanos();
            try {
                // A timer, not synchronization: the scenario's hard limit.
                for (long left = deadline - System.nanoTime(); left > 0; left = deadline - System.nanoTime()) {
                    Thread.sleep(Math.max(1, left / 1_000_000));
                }
            } catch (InterruptedException e) {
                return;
            }
            System.out.println("FAIL " + name + ": hard timeout of " + timeoutSecs + "s passed during step '"
                + currentStep + "'; thread stacks follow on stderr");
            System.out.flush();
            dumpThreads(System.err);
            dumpClientLog();
            System.err.flush();
            Runtime.getRuntime().halt(3);
        }, "scenario-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
    }

    private static void dumpThreads(PrintStream out) {
        for (Map.Entry<Thread, StackTraceElement[]> e : Thread.getAllStackTraces().entrySet()) {
            out.println("thread " + e.getKey().getName() + " (" + e.getKey().getState() + ")");
            for (StackTraceElement frame : e.getValue()) {
                out.println("    at " + frame);
            }
        }
    }

    private void dumpClientLog() {
        List<String> lines = clientLog.lines();
        int from = Math.max(0, lines.size() - LOG_LINES_ON_FAILURE);
        System.err.println("----- Java client log (" + (lines.size() - from) + " of " + lines.size()
            + " lines; the full log is " + ClientLog.file() + ") -----");
        for (String line : lines.subList(from, lines.size())) {
            System.err.println(line);
        }
        System.err.flush();
    }

    double elapsed() {
        return (System.nanoTime() - startedNanos) / 1e9;
    }

    /** Logs progress; the hard-timeout message names the last step. */
    void step(String text) {
        currentStep = text;
        System.out.printf("[%7.2fs] %s%n", elapsed(), text);
        System.out.flush();
    }

    /** A detail line under the current step. */
    static void detail(String text) {
        System.out.println("           " + text);
        System.out.flush();
    }

    /** A topic or group name unique to this run. */
    String unique(String base) {
        return base + "-" + suffix;
    }

    static void check(boolean condition, String reason) throws Failed {
        if (!condition) {
            throw new Failed(reason);
        }
    }

    /** Client warnings/errors containing any of {@code fragments} are expected by the scenario. */
    void allowClientErrors(String... fragments) {
        for (String f : fragments) {
            allowedClientErrors.add(List.of(f));
        }
    }

    /** Client warnings/errors containing all of {@code fragments} are expected by the scenario. */
    void allowClientErrorWithAll(String... fragments) {
        allowedClientErrors.add(Arrays.asList(fragments));
    }

    /** Seconds left before the hard timeout fires. */
    double secondsLeft() {
        return timeoutSecs - elapsed();
    }

    /** Client log lines (INFO and above) containing {@code fragment}. */
    List<String> clientLogLines(String fragment) {
        return clientLog.lines().stream().filter(l -> l.contains(fragment)).collect(Collectors.toList());
    }

    private List<String> unexpectedClientErrors() {
        return clientLog.warnings().stream()
            .filter(l -> allowedClientErrors.stream().noneMatch(all -> all.stream().allMatch(l::contains)))
            .collect(Collectors.toList());
    }

    /** Seconds since an instant of {@link System#nanoTime()}. */
    static double secsSince(long nanos) {
        return (System.nanoTime() - nanos) / 1e9;
    }

    /**
     * Waits until {@code deadlineNanos} ({@link System#nanoTime()}): for scenario timings that
     * are the point of the test (a message sent a while after a long poll began), never to wait
     * for the broker to be done with something.
     */
    static void waitUntil(long deadlineNanos) throws InterruptedException {
        for (long left = deadlineNanos - System.nanoTime(); left > 0; left = deadlineNanos - System.nanoTime()) {
            Thread.sleep(Math.max(1, left / 1_000_000));
        }
    }

    /** The status code in a client exception ({@code response-code=N} in its message), or -1. */
    static int responseCode(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            Matcher m = RESPONSE_CODE.matcher(String.valueOf(t.getMessage()));
            if (m.find()) {
                return Integer.parseInt(m.group(1));
            }
        }
        return -1;
    }

    /** The exception and its causes in one line. */
    static String errorText(Throwable e) {
        StringBuilder text = new StringBuilder();
        int depth = 0;
        for (Throwable t = e; t != null && depth < 5; t = t.getCause(), depth++) {
            if (depth > 0) {
                text.append(" <- ");
            }
            text.append(t.getClass().getName()).append(": ").append(t.getMessage());
        }
        return text.toString();
    }

    // ----- clients ----------------------------------------------------------------------------

    /** Credentials the clients made from now on sign with; {@code null}: none. */
    private volatile SessionCredentialsProvider credentials;

    /** Clients made after this call sign their requests with the access key and secret key. */
    void signAs(String accessKey, String secretKey) {
        credentials = accessKey == null ? null : new StaticSessionCredentialsProvider(accessKey, secretKey);
    }

    /** The client's defaults (TLS on, any certificate accepted) with the Python suite's 3 s timeout. */
    ClientConfiguration configuration() {
        ClientConfigurationBuilder builder = ClientConfiguration.newBuilder().setEndpoints(endpoint)
            .setRequestTimeout(Duration.ofSeconds(3));
        if (credentials != null) {
            builder.setCredentialProvider(credentials);
        }
        return builder.build();
    }

    Producer producer(String... topics) throws ClientException {
        return producer(null, topics);
    }

    Producer producer(TransactionChecker checker, String... topics) throws ClientException {
        ProducerBuilder builder = provider.newProducerBuilder().setClientConfiguration(configuration())
            .setTopics(topics);
        if (checker != null) {
            builder.setTransactionChecker(checker);
        }
        Producer producer = builder.build();
        clients.add(producer);
        return producer;
    }

    static Map<String, FilterExpression> subscriptions(Map<String, String> topicToTags) {
        Map<String, FilterExpression> subs = new TreeMap<>();
        topicToTags.forEach((topic, tags) -> subs.put(topic, new FilterExpression(tags, FilterExpressionType.TAG)));
        return subs;
    }

    /** A started SimpleConsumer; {@code topicToTags} maps topic to tag expression. */
    SimpleConsumer simpleConsumer(String group, Map<String, String> topicToTags) throws ClientException {
        SimpleConsumer consumer = provider.newSimpleConsumerBuilder().setClientConfiguration(configuration())
            .setConsumerGroup(group).setSubscriptionExpressions(subscriptions(topicToTags))
            .setAwaitDuration(Duration.ofSeconds(awaitSecs)).build();
        clients.add(consumer);
        return consumer;
    }

    /** A started PushConsumer with the client's default settings. */
    PushConsumer pushConsumer(String group, Map<String, String> topicToTags, MessageListener listener)
        throws ClientException {
        PushConsumer consumer = provider.newPushConsumerBuilder().setClientConfiguration(configuration())
            .setConsumerGroup(group).setSubscriptionExpressions(subscriptions(topicToTags))
            .setMessageListener(listener).build();
        clients.add(consumer);
        return consumer;
    }

    /** Shuts a client down now (bounded) instead of at the end. */
    void forget(AutoCloseable client) {
        clients.remove(client);
        shutdown(List.of(client));
    }

    // ----- messages ---------------------------------------------------------------------------

    MessageBuilder message(String topic, byte[] body) {
        return provider.newMessageBuilder().setTopic(topic).setBody(body);
    }

    MessageBuilder message(String topic, String body) {
        return message(topic, body.getBytes(StandardCharsets.UTF_8));
    }

    /** Sends and checks the receipt: a message id as the client generates it (the broker echoes it). */
    SendReceipt send(Producer producer, org.apache.rocketmq.client.apis.message.Message message)
        throws ClientException, Failed {
        SendReceipt receipt = producer.send(message);
        checkReceipt(receipt);
        return receipt;
    }

    static void checkReceipt(SendReceipt receipt) throws Failed {
        String id = receipt.getMessageId() == null ? "" : receipt.getMessageId().toString();
        check(JAVA_MESSAGE_ID.matcher(id).matches(), "send receipt id " + id + " is not the id the Java client "
            + "generated (01 + 32 upper-case hex digits): the broker must echo the id it was given");
    }

    static byte[] bytes(ByteBuffer buffer) {
        ByteBuffer copy = buffer.duplicate();
        byte[] out = new byte[copy.remaining()];
        copy.get(out);
        return out;
    }

    static String bodyText(MessageView m) {
        return new String(bytes(m.getBody()), StandardCharsets.UTF_8);
    }

    static String id(MessageView m) {
        return m.getMessageId().toString();
    }

    static String id(SendReceipt r) {
        return r.getMessageId().toString();
    }

    static String receiptHandle(MessageView m) {
        return m instanceof MessageViewImpl ? ((MessageViewImpl) m).getReceiptHandle() : null;
    }

    /** One line with everything a scenario checks of a received message. */
    static String describe(MessageView m) {
        byte[] body = bytes(m.getBody());
        String shown = body.length <= 64 ? new String(body, StandardCharsets.UTF_8)
            : new String(body, 0, 64, StandardCharsets.UTF_8) + "...";
        Collection<String> keys = new TreeSet<>(m.getKeys());
        return String.format("id=%s topic=%s tag=%s keys=%s props=%s group=%s attempt=%d delivery_ts=%s "
                + "corrupted=%s body=%s (%d bytes)", id(m), m.getTopic(), m.getTag().orElse(null), keys,
            new TreeMap<>(m.getProperties()), m.getMessageGroup().orElse(null), m.getDeliveryAttempt(),
            m.getDeliveryTimestamp().orElse(null),
            m instanceof MessageViewImpl && ((MessageViewImpl) m).isCorrupted(), shown, body.length);
    }

    static String describeAll(List<MessageView> msgs) {
        return msgs.stream().map(Scenario::describe).collect(Collectors.joining("; "));
    }

    /** One receive call (one long poll); logs and checks what came back. */
    List<MessageView> receive(SimpleConsumer consumer, int maxNum, Duration invisible)
        throws ClientException, Failed {
        long t0 = System.nanoTime();
        List<MessageView> msgs = consumer.receive(maxNum, invisible);
        step(String.format("receive(max=%d, invisible=%ss) by %s -> %d message(s) in %.2fs", maxNum,
            invisible.toMillis() / 1000.0, consumer.getConsumerGroup(), msgs.size(), secsSince(t0)));
        for (MessageView m : msgs) {
            detail(describe(m));
        }
        check(msgs.size() <= maxNum, "receive(maxMessageNum=" + maxNum + ") returned " + msgs.size() + " messages");
        for (MessageView m : msgs) {
            check(!(m instanceof MessageViewImpl && ((MessageViewImpl) m).isCorrupted()),
                "the client flagged message " + id(m) + " as corrupted (body digest mismatch)");
            String handle = receiptHandle(m);
            check(handle != null && !handle.isEmpty(), "message " + id(m) + " was delivered without a receipt handle");
        }
        return msgs;
    }

    List<MessageView> receive(SimpleConsumer consumer) throws ClientException, Failed {
        return receive(consumer, 32, Duration.ofSeconds(invisibleSecs));
    }

    /** Receives repeatedly for at least {@code forSecs}; any message is a failure. */
    void expectNothing(SimpleConsumer consumer, double forSecs, String why) throws ClientException, Failed {
        long until = System.nanoTime() + (long) (forSecs * 1e9);
        while (true) {
            List<MessageView> msgs = receive(consumer);
            check(msgs.isEmpty(), "expected no message " + why + ", got " + describeAll(msgs));
            if (System.nanoTime() >= until) {
                return;
            }
        }
    }

    /** Seconds left until the invisible time of something acked at {@code ackedNanos} is over, + 1 s. */
    double quietAfter(long ackedNanos) {
        return Math.max(0.0, invisibleSecs + 1 - secsSince(ackedNanos));
    }

    // ----- run --------------------------------------------------------------------------------

    private void shutdown(List<AutoCloseable> toClose) {
        Thread stopper = new Thread(() -> {
            for (AutoCloseable c : toClose) {
                try {
                    c.close();
                } catch (Exception e) {
                    System.err.println("shutdown of " + c + " raised " + errorText(e));
                }
            }
        }, "scenario-shutdown");
        stopper.setDaemon(true);
        stopper.start();
        try {
            stopper.join(SHUTDOWN_WAIT.toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (stopper.isAlive()) {
            System.err.println("client shutdown did not finish within " + SHUTDOWN_WAIT.toSeconds() + "s");
        }
    }

    private void finishFail(String reason) {
        System.out.flush();
        dumpClientLog();
        System.out.println("FAIL " + name + ": " + reason);
        System.out.flush();
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    /** Runs {@code body}; exits the process with the verdict (never returns). */
    void run(Body body) {
        String failure = null;
        try {
            body.run(this);
        } catch (Failed e) {
            failure = e.getMessage();
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            failure = "client raised " + errorText(e);
        }
        // Judge the client's log up to the shutdown; a push consumer's long poll cut short by
        // the shutdown may be logged as an error.
        List<String> unexpected = unexpectedClientErrors();
        step("shutting clients down");
        shutdown(new ArrayList<>(clients));
        clients.clear();
        if (failure != null) {
            finishFail(failure);
        }
        for (String line : unexpectedClientErrors()) {
            if (line.toLowerCase().contains("termination") && !unexpected.contains(line)) {
                unexpected.add(line);
            }
        }
        if (!unexpected.isEmpty()) {
            finishFail("the client logged " + unexpected.size() + " unexpected warning(s)/error(s), first: "
                + unexpected.get(0));
        }
        List<String> expected = clientLog.warnings();
        step("the client logged " + clientLog.lines().size() + " line(s), " + expected.size()
            + " of them expected warning(s)/error(s)");
        for (String line : expected.subList(0, Math.min(expected.size(), 10))) {
            detail(line);
        }
        System.out.printf("PASS %s in %.1fs%n", name, elapsed());
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
