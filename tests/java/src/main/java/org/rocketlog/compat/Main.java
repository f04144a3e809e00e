package org.rocketlog.compat;

import java.util.Map;
import java.util.TreeMap;

/**
 * Entry point: {@code java -cp ... org.rocketlog.compat.Main <scenario> <host:port> <suffix>}.
 * Each scenario is one class with a static {@code run(Scenario)}; see its Javadoc for what it
 * checks. Exit status: 0 pass, 1 fail, 2 bad invocation, 3 hard timeout.
 */
public final class Main {
    private Main() {
    }

    private static Map<String, Scenario.Body> scenarios() {
        Map<String, Scenario.Body> all = new TreeMap<>();
        all.put("normal_and_tags", NormalAndTags::run);
        all.put("redelivery", Redelivery::run);
        all.put("fifo", Fifo::run);
        all.put("fifo_push", FifoPush::run);
        all.put("delay", Delay::run);
        all.put("transaction", Transaction::run);
        all.put("dlq", Dlq::run);
        all.put("async_batch", AsyncBatch::run);
        all.put("bad_input", BadInput::run);
        all.put("push_bulk", PushBulk::run);
        all.put("pull_rpc", PullRpc::run);
        all.put("auth", Auth::run);
        all.put("pull_rpc_after_restart", PullRpc::afterRestart);
        return all;
    }

    public static void main(String[] args) {
        // First, before any client class logs: the client's log goes under this run's HOME.
        ClientLog log = ClientLog.install(System.getenv("HOME"));
        Map<String, Scenario.Body> all = scenarios();
        String name = args.length > 0 ? args[0] : "";
        String endpoint = args.length > 1 ? args[1] : envOr("ROCKETLOG_ENDPOINT", "");
        String suffix = args.length > 2 ? args[2] : envOr("ROCKETLOG_SUFFIX", "");
        if (!all.containsKey(name) || !endpoint.contains(":")) {
            System.err.println("usage: Main <scenario> <host:port> <suffix> (or ROCKETLOG_ENDPOINT/ROCKETLOG_SUFFIX); "
                + "scenarios: " + String.join(", ", all.keySet()));
            System.err.flush();
            Runtime.getRuntime().halt(2);
        }
        if (suffix.isEmpty()) {
            suffix = ProcessHandle.current().pid() + "-" + System.currentTimeMillis() / 1000;
        }
        new Scenario(name, endpoint, suffix, log).run(all.get(name));
    }

    private static String envOr(String name, String fallback) {
        String v = System.getenv(name);
        return v == null ? fallback : v;
    }
}
