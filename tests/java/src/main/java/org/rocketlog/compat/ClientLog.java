package org.rocketlog.compat;

import java.nio.file.Path;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;

import org.apache.rocketmq.shaded.ch.qos.logback.classic.Level;
import org.apache.rocketmq.shaded.ch.qos.logback.classic.Logger;
import org.apache.rocketmq.shaded.ch.qos.logback.classic.LoggerContext;
import org.apache.rocketmq.shaded.ch.qos.logback.classic.spi.ILoggingEvent;
import org.apache.rocketmq.shaded.ch.qos.logback.classic.spi.IThrowableProxy;
import org.apache.rocketmq.shaded.ch.qos.logback.core.AppenderBase;
import org.apache.rocketmq.shaded.org.slf4j.LoggerFactory;

/**
 * Keeps the Java client's log lines (INFO and above) in memory, next to the client's own log
 * file, so that a scenario can check what the client was told and show it when it fails. The
 * client logs through its shaded logback; this appender is added to that logback's root logger.
 */
final class ClientLog extends AppenderBase<ILoggingEvent> {
    /** Lines kept; older ones are dropped (a long run must not fill the heap). */
    private static final int MAX_LINES = 20_000;
    private static final DateTimeFormatter TIME =
        DateTimeFormatter.ofPattern("HH:mm:ss.SSS").withZone(ZoneId.systemDefault());

    private final Deque<String> lines = new ArrayDeque<>();
    private final List<String> warnings = new ArrayList<>();
    private int dropped;

    /**
     * Points the client's log under {@code home} ({@code ~/logs/rocketmq}) and attaches the
     * capture. Call before any client class logs: the client's logback reads these properties
     * when it configures itself.
     */
    static ClientLog install(String home) {
        if (home != null && !home.isEmpty()) {
            // JDK 17 takes user.home from the password database, not $HOME; the harness gives
            // each run its own HOME and expects the client's files there.
            System.setProperty("user.home", home);
            System.setProperty("rocketmq.log.root", Path.of(home, "logs", "rocketmq").toString());
        }
        LoggerContext context = (LoggerContext) LoggerFactory.getILoggerFactory();
        ClientLog capture = new ClientLog();
        capture.setContext(context);
        capture.setName("rocketlog-scenario-capture");
        capture.start();
        context.getLogger(Logger.ROOT_LOGGER_NAME).addAppender(capture);
        return capture;
    }

    /** Where the client writes its log file. */
    static Path file() {
        String root = System.getProperty("rocketmq.log.root");
        Path dir = root != null ? Path.of(root) : Path.of(System.getProperty("user.home"), "logs", "rocketmq");
        return dir.resolve("rocketmq-client.log");
    }

    @Override
    protected void append(ILoggingEvent event) {
        if (!event.getLevel().isGreaterOrEqual(Level.INFO)) {
            return;
        }
        StringBuilder line = new StringBuilder();
        line.append(TIME.format(Instant.ofEpochMilli(event.getTimeStamp()))).append(' ')
            .append(event.getLevel()).append(" [").append(event.getThreadName()).append("] ")
            .append(shortName(event.getLoggerName())).append(" - ").append(event.getFormattedMessage());
        int depth = 0;
        for (IThrowableProxy t = event.getThrowableProxy(); t != null && depth < 5; t = t.getCause(), depth++) {
            line.append(depth == 0 ? " | " : " <- ").append(t.getClassName()).append(": ").append(t.getMessage());
        }
        String text = line.toString();
        synchronized (this) {
            if (lines.size() >= MAX_LINES) {
                lines.removeFirst();
                dropped++;
            }
            lines.add(text);
            if (event.getLevel().isGreaterOrEqual(Level.WARN)) {
                warnings.add(text);
            }
        }
    }

    private static String shortName(String logger) {
        int dot = logger.lastIndexOf('.');
        return dot < 0 ? logger : logger.substring(dot + 1);
    }

    /** Every kept line, oldest first. */
    synchronized List<String> lines() {
        List<String> copy = new ArrayList<>(lines.size() + 1);
        if (dropped > 0) {
            copy.add("(" + dropped + " older lines dropped)");
        }
        copy.addAll(lines);
        return copy;
    }

    /** The WARN and ERROR lines, oldest first. */
    synchronized List<String> warnings() {
        return new ArrayList<>(warnings);
    }
}
