"""Shared plumbing of the official-client compatibility scenarios.

Every scenario script is run as ``python <script> <host:port> <suffix>`` (or with the
environment variables ``ROCKETLOG_ENDPOINT`` and ``ROCKETLOG_SUFFIX``). It exits 0 only if the
scenario held and prints ``PASS <name>`` as its last line; otherwise it prints
``FAIL <name>: <reason>`` and exits 1 (2: bad invocation, 3: the hard timeout fired).

Tuning that must match the broker under test comes from the environment:

- ``ROCKETLOG_SCENARIO_TIMEOUT``: hard limit of the whole script in seconds (default 60).
- ``ROCKETLOG_INVISIBLE_SECS``: invisible duration the scenarios ask for on receive, whole
  seconds as the Python client sends it (default 10, the Apache proxy's minimum).
- ``ROCKETLOG_AWAIT_SECS``: long-polling wait of the simple consumers (default 5).
- ``ROCKETLOG_MAX_ATTEMPTS``: the broker's max delivery attempts (default 17).

The client logs to ``~/logs/rocketmq_python/`` (fixed by the client); the scenarios also copy
its log lines to stderr so a failing run shows what the client saw. A scenario also fails when
the client logged a warning or an error it did not expect (see ``allow_client_errors``): that is
how failures of the calls the application never sees (heartbeats, settings, termination, a push
consumer's acks) show up.
"""

import faulthandler
import importlib.metadata
import logging
import os
import sys
import threading
import time
import traceback

from rocketmq import (ClientConfiguration, Credentials, FilterExpression,
                      Message, Producer, SimpleConsumer)

PYTHON_CLIENT_VERSION = "5.1.2"
# Time for the client's shutdown (NotifyClientTermination and channel close) before we stop
# waiting for it: a slow shutdown is reported, never a reason to hang.
SHUTDOWN_WAIT_SECS = 10.0


# Errors the Python client 5.1.2 logs whatever the server does.
KNOWN_CLIENT_BUGS = (
    # PushConsumer.reset_metric registers gauges on a meter provider that is None when the
    # settings reply says metric.on = false (as the Apache proxy's does): the exception ends
    # that Telemetry stream's read loop. Nothing a server can change without turning metrics on.
    "object has no attribute 'get_meter'",
)


class ScenarioFailed(Exception):
    """The broker did something the scenario does not accept."""


def env_int(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        print(f"bad {name}={raw!r}: not an integer", file=sys.stderr)
        os._exit(2)


def describe(msg):
    """One line with everything a scenario checks of a received message."""
    body = msg.body if msg.body is None or len(msg.body) <= 64 else msg.body[:64] + b"..."
    return (
        f"id={msg.message_id} topic={msg.topic} tag={msg.tag} keys={sorted(msg.keys)} "
        f"props={dict(sorted(msg.properties.items()))} group={msg.message_group} "
        f"type={msg.message_type} attempt={msg.delivery_attempt} corrupted={msg.corrupted} "
        f"body={body!r}"
    )


class _Capture(logging.Handler):
    """Keeps the client's log lines so a scenario can check what the client was told."""

    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def emit(self, record):
        try:
            self.lines.append((record.levelno, record.getMessage()))
        except Exception:  # noqa: BLE001 - a log line we cannot format is not worth failing on
            pass


class Scenario:
    """Arguments, the hard timeout, step logging, client lifecycle and checks of one run."""

    def __init__(self, name):
        self.name = name
        self.started = time.monotonic()
        args = sys.argv[1:]
        self.endpoint = args[0] if len(args) > 0 else os.environ.get("ROCKETLOG_ENDPOINT", "")
        self.suffix = args[1] if len(args) > 1 else os.environ.get("ROCKETLOG_SUFFIX", "")
        if not self.endpoint or ":" not in self.endpoint:
            print(f"usage: {sys.argv[0]} <host:port> <suffix> (or ROCKETLOG_ENDPOINT/ROCKETLOG_SUFFIX)",
                  file=sys.stderr)
            os._exit(2)
        if not self.suffix:
            self.suffix = f"{os.getpid()}-{int(time.time())}"
        self.timeout = env_int("ROCKETLOG_SCENARIO_TIMEOUT", 60)
        self.invisible = env_int("ROCKETLOG_INVISIBLE_SECS", 10)
        self.await_secs = env_int("ROCKETLOG_AWAIT_SECS", 5)
        self.max_attempts = env_int("ROCKETLOG_MAX_ATTEMPTS", 17)
        self.current_step = "start"
        self.clients = []
        self.client_log = []
        # The client logs a warning or an error when a call the application never sees fails
        # (heartbeat, settings, telemetry, termination, a push consumer's ack): each one fails
        # the scenario unless listed here or by the scenario.
        self.allowed_client_errors = list(KNOWN_CLIENT_BUGS)
        self._start_watchdog()
        self._log_client_to_stderr()
        version = importlib.metadata.version("rocketmq-python-client")
        self.step(
            f"scenario {name}: endpoint={self.endpoint} suffix={self.suffix} client={version} "
            f"invisible={self.invisible}s await={self.await_secs}s max_attempts={self.max_attempts} "
            f"timeout={self.timeout}s"
        )
        if version != PYTHON_CLIENT_VERSION:
            self.finish_fail(f"rocketmq-python-client {version} installed, the scenarios pin "
                             f"{PYTHON_CLIENT_VERSION}")

    # ----- plumbing -------------------------------------------------------------------------

    def _start_watchdog(self):
        def fire():
            print(f"FAIL {self.name}: hard timeout of {self.timeout}s passed during step "
                  f"{self.current_step!r}; thread stacks follow on stderr", flush=True)
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
            os._exit(3)

        timer = threading.Timer(self.timeout, fire)
        timer.daemon = True
        timer.start()

    def _log_client_to_stderr(self):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [client %(levelname)s] %(message)s"))
        client_logger = logging.getLogger("rocketmq-python-client")
        client_logger.addHandler(handler)
        client_logger.addHandler(_Capture(self.client_log))

    def client_log_lines(self, containing):
        """Client log lines (INFO and above) that contain ``containing``."""
        return [line for _, line in list(self.client_log) if containing in line]

    def allow_client_errors(self, *fragments):
        """Client warnings/errors containing any of ``fragments`` are expected by the scenario."""
        self.allowed_client_errors.extend(fragments)

    def unexpected_client_errors(self):
        return [line for level, line in list(self.client_log)
                if level >= logging.WARNING and not any(a in line for a in self.allowed_client_errors)]

    def elapsed(self):
        return time.monotonic() - self.started

    def step(self, text):
        """Logs progress; the hard-timeout message names the last step."""
        self.current_step = text
        print(f"[{self.elapsed():7.2f}s] {text}", flush=True)

    def unique(self, base):
        """A topic or group name unique to this run (Python accepts ``[%a-zA-Z0-9_-]+``)."""
        return f"{base}-{self.suffix}"

    def check(self, condition, reason):
        if not condition:
            raise ScenarioFailed(reason)

    # ----- clients --------------------------------------------------------------------------

    def configuration(self):
        return ClientConfiguration(self.endpoint, Credentials(), request_timeout=3)

    def producer(self, topics, checker=None):
        producer = Producer(self.configuration(), topics, checker)
        producer.startup()
        self.clients.append(producer)
        return producer

    def simple_consumer(self, group, subscription, await_secs=None):
        """A started SimpleConsumer; ``subscription`` maps topic -> tag expression."""
        subs = {topic: FilterExpression(expr) for topic, expr in subscription.items()}
        consumer = SimpleConsumer(self.configuration(), group, subs,
                                  await_duration=self.await_secs if await_secs is None else await_secs)
        consumer.startup()
        self.clients.append(consumer)
        return consumer

    def forget(self, client):
        """Shuts a client down now (bounded) instead of at the end."""
        if client in self.clients:
            self.clients.remove(client)
        self._shutdown([client])

    # ----- messages -------------------------------------------------------------------------

    @staticmethod
    def message(topic, body, tag=None, keys=(), properties=None, group=None):
        msg = Message()
        msg.topic = topic
        msg.body = body
        if tag is not None:
            msg.tag = tag
        for key in keys:
            msg.keys = key
        for k, v in (properties or {}).items():
            msg.add_property(k, v)
        if group is not None:
            msg.message_group = group
        return msg

    def send(self, producer, msg):
        """Sends and checks the receipt: the broker must echo the client's message id."""
        receipt = producer.send(msg)
        self.check(receipt.message_id, f"send of {msg} returned an empty message id")
        self.check(receipt.message_id == msg.message_id,
                   f"send receipt id {receipt.message_id} != the client-generated id {msg.message_id} "
                   "(the broker must echo the id it was given)")
        return receipt

    def receive(self, consumer, max_num=32, invisible=None):
        """One receive call (one long poll); logs what came back."""
        invisible = self.invisible if invisible is None else invisible
        t0 = time.monotonic()
        msgs = consumer.receive(max_num, invisible)
        took = time.monotonic() - t0
        self.step(f"receive(max={max_num}, invisible={invisible}s) by {consumer.consumer_group} -> "
                  f"{len(msgs)} message(s) in {took:.2f}s")
        for m in msgs:
            print(f"           {describe(m)}", flush=True)
        self.check(len(msgs) <= max_num,
                   f"receive(max_message_num={max_num}) returned {len(msgs)} messages")
        for m in msgs:
            self.check(not m.corrupted,
                       f"client flagged message {m.message_id} as corrupted (body digest mismatch)")
            self.check(m.receipt_handle, f"message {m.message_id} was delivered without a receipt handle")
        return msgs

    def expect_nothing(self, consumer, for_secs, invisible=None, why=""):
        """Receives repeatedly for at least ``for_secs``; any message is a failure."""
        until = time.monotonic() + for_secs
        while True:
            msgs = self.receive(consumer, invisible=invisible)
            self.check(not msgs, f"expected no message{(' ' + why) if why else ''}, got "
                                 + "; ".join(describe(m) for m in msgs))
            if time.monotonic() >= until:
                return

    # ----- run ------------------------------------------------------------------------------

    def _shutdown(self, clients):
        def stop_all():
            for c in clients:
                try:
                    c.shutdown()
                except Exception as e:  # noqa: BLE001 - report and go on with the others
                    print(f"shutdown of {c} raised {e!r}", file=sys.stderr, flush=True)

        t = threading.Thread(target=stop_all, daemon=True)
        t.start()
        t.join(SHUTDOWN_WAIT_SECS)
        if t.is_alive():
            print(f"client shutdown did not finish within {SHUTDOWN_WAIT_SECS}s", file=sys.stderr, flush=True)

    def finish_fail(self, reason):
        sys.stdout.flush()
        sys.stderr.flush()
        print(f"FAIL {self.name}: {reason}", flush=True)
        os._exit(1)

    def run(self, body):
        """Runs ``body(self)``; exits the process with the verdict (never returns)."""
        failure = None
        try:
            body(self)
        except ScenarioFailed as e:
            failure = str(e)
        except Exception as e:  # noqa: BLE001 - any client exception is a failed scenario
            traceback.print_exc(file=sys.stdout)
            failure = f"client raised {type(e).__name__}: {e}"
        # A push consumer's long poll cut short by shutdown is logged as an error: judge the
        # client's log up to the shutdown, and after it only the termination notices.
        unexpected = self.unexpected_client_errors()
        self.step("shutting clients down")
        self._shutdown(self.clients)
        if failure is not None:
            self.finish_fail(failure)
        unexpected += [line for line in self.unexpected_client_errors()
                       if "termination" in line and line not in unexpected]
        if unexpected:
            self.finish_fail(f"the client logged {len(unexpected)} unexpected warning(s)/error(s), "
                             f"first: {unexpected[0]}")
        print(f"PASS {self.name} in {self.elapsed():.1f}s", flush=True)
        os._exit(0)
