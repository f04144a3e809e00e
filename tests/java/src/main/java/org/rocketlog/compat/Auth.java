package org.rocketlog.compat;

import static org.rocketlog.compat.Scenario.check;

import java.util.List;
import java.util.Map;

import org.apache.rocketmq.client.apis.ClientException;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.java.exception.ForbiddenException;
import org.apache.rocketmq.client.java.exception.UnauthorizedException;

/**
 * Signed requests and access rules through the Java client's {@code StaticSessionCredentialsProvider}.
 * The harness starts the broker with authentication on and the users of the Python scenario
 * {@code auth.py}: {@code app}/{@code app-secret-key} (Pub and Sub on {@code auth-ok-*}, Pub
 * denied on {@code auth-ok-readonly-*}, Sub as groups {@code auth-grp-*}) and the super user
 * {@code root}/{@code root-secret-key}.
 * <ol>
 * <li>{@code app} sends to and consumes from {@code auth-ok-<suffix>} (the control).
 * <li>A wrong secret key and an unknown access key: UnauthorizedException, code 40100, naming
 * the failed check.
 * <li>A topic no rule allows, a topic a deny rule covers, a group no rule allows:
 * ForbiddenException, code 40300, naming the resource.
 * <li>No credentials: UnauthorizedException.
 * <li>The broker still serves {@code app} and {@code root}.
 * </ol>
 */
final class Auth {
    private static final int UNAUTHORIZED = 40100;
    private static final int FORBIDDEN = 40300;

    private Auth() {
    }

    interface Call {
        void run() throws Exception;
    }

    /** {@code call} must fail with {@code type} carrying {@code code} and {@code fragment}. */
    private static void refused(Scenario s, String what, Class<? extends ClientException> type, int code,
        String fragment, Call call) throws Scenario.Failed {
        try {
            call.run();
        } catch (Exception e) {
            Throwable found = e;
            while (found != null && !type.isInstance(found)) {
                found = found.getCause();
            }
            check(found != null, what + ": failed with " + Scenario.errorText(e) + "; want " + type.getSimpleName());
            check(Scenario.responseCode(found) == code && String.valueOf(found.getMessage()).contains(fragment),
                what + ": " + Scenario.errorText(found) + "; want code " + code + " and " + fragment);
            s.step(what + ": refused: " + Scenario.errorText(found));
            return;
        }
        throw new Scenario.Failed(what + ": succeeded, should be refused with " + code);
    }

    static void run(Scenario s) throws Exception {
        // The client logs every refused route query and send.
        s.allowClientErrors(String.valueOf(UNAUTHORIZED), String.valueOf(FORBIDDEN));
        String topic = s.unique("auth-ok");
        String readonly = s.unique("auth-ok-readonly");
        String other = s.unique("auth-other");
        String group = s.unique("auth-grp");

        s.signAs("app", "app-secret-key");
        Producer app = s.producer(topic);
        s.send(app, s.message(topic, "allowed".getBytes()).setTag("A").build());
        SimpleConsumer consumer = s.simpleConsumer(group, Map.of(topic, "*"));
        List<MessageView> got = List.of();
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (got.isEmpty() && System.nanoTime() < deadline) {
            got = s.receive(consumer);
        }
        check(got.size() == 1, "app consumes what it sent, got " + got.size() + " messages");
        consumer.ack(got.get(0));
        s.step("app publishes to and consumes from its own topic");

        s.signAs("app", "not-the-secret");
        refused(s, "wrong secret key", UnauthorizedException.class, UNAUTHORIZED, "bad signature",
            () -> s.send(s.producer(topic), s.message(topic, "x".getBytes()).build()));
        s.signAs("nobody", "nobody-secret");
        refused(s, "unknown access key", UnauthorizedException.class, UNAUTHORIZED, "unknown access key",
            () -> s.send(s.producer(topic), s.message(topic, "x".getBytes()).build()));

        s.signAs("app", "app-secret-key");
        refused(s, "a topic no rule allows", ForbiddenException.class, FORBIDDEN, other,
            () -> s.send(s.producer(other), s.message(other, "x".getBytes()).build()));
        refused(s, "a topic a deny rule covers", ForbiddenException.class, FORBIDDEN, "denied by rule",
            () -> s.send(app, s.message(readonly, "x".getBytes()).build()));
        String otherGroup = s.unique("other-grp");
        refused(s, "a group no rule allows", ForbiddenException.class, FORBIDDEN, otherGroup,
            () -> s.receive(s.simpleConsumer(otherGroup, Map.of(topic, "*"))));

        s.signAs(null, null);
        refused(s, "no credentials", UnauthorizedException.class, UNAUTHORIZED, "authentication is required",
            () -> s.send(s.producer(topic), s.message(topic, "x".getBytes()).build()));

        s.send(app, s.message(topic, "after".getBytes()).build());
        s.signAs("root", "root-secret-key");
        s.send(s.producer(other), s.message(other, "root may".getBytes()).build());
        s.step("the broker still serves app and the super user");
    }
}
