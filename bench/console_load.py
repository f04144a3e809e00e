#!/usr/bin/env python3
"""Page-load times of the broker's web console with many topics.

Starts a standalone broker (small commit-log segments and consume-queue files, so 1,000
topics stay small on disk), creates the topics through the console API, gives a few of them
a consumer group with lag (`rocketlog bench consume`), sends a few keyed messages with the
official Python client, then loads every console page afresh N times in headless Chromium
(Debian's chromium and chromium-driver, driven by selenium) and prints, per page, the time
from the start of navigation until the page's first data is on screen (the page sets
`document.body.dataset.loaded` and `window.__renderedAt` then), median and max; also the
slowest API call of each load, how long the topics filter takes to redraw the table, and how
long a Prometheus scrape of the same broker (`GET /metrics`) takes.

Run with the test virtualenv's interpreter (it has selenium and the RocketMQ client):

    tests/.venv/bin/python bench/console_load.py [--binary target/release/rocketlog]
        [--topics 1000] [--queues 2] [--groups 5] [--loads 10]

The broker's data lives in a temporary directory removed at the end.
"""

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
READY_TIMEOUT_S = 60
LOAD_TIMEOUT_S = 60


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start_broker(binary, work):
    config = os.path.join(work, "rocketlog.toml")
    with open(config, "w") as f:
        f.write(
            "[broker]\n"
            "auto_create_topics = true\n"
            "[broker.store]\n"
            "segment_size = 16777216\n"
            # 1,000 entries of 20 bytes per consume-queue file instead of 300,000 (6 MB).
            "consume_queue_segment_entries = 1000\n"
            "[broker.console]\n"
            "lag_sample_interval_ms = 1000\n"
        )
    cmd = [
        binary, "--config", config, "standalone",
        "--data-dir", os.path.join(work, "data"),
        "--listen", "127.0.0.1:0",
        "--nameserver-listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETLOG_")}
    env["RUST_LOG"] = "warn"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "broker.log"), "w"),
        text=True, env=env,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=READY_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        raise SystemExit(f"the broker did not start; see {work}/broker.log")
    fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
    if "metrics" not in fields:
        proc.kill()
        raise SystemExit(f"the broker announced no console port: {line!r}")
    return proc, fields["client"], fields["metrics"]


def api(base, method, body):
    request = urllib.request.Request(
        f"{base}api/{method}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Rocketlog-Console": "1"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as res:
        return json.loads(res.read() or b"{}")


def prepare(args, binary, client, base, work):
    names = [f"bench-topic-{i:04d}" for i in range(args.topics)]
    started = time.monotonic()

    def create(name):
        api(base, "CreateOrUpdateTopic", {
            "topic": {"name": name, "queueNums": args.queues, "perm": "READ_WRITE", "messageTypes": ["NORMAL"]},
        })

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, names))
    log(f"created {len(names)} topics with {args.queues} queues each in {time.monotonic() - started:.1f} s")

    groups = []
    for g in range(args.groups):
        group, topic = f"bench-group-{g}", names[g]
        subprocess.run(
            [binary, "bench", "--endpoint", client, "--topic", topic, "--size", "256",
             "--duration", "30", "--quiet", "consume", "--group", group, "--kind", "simple",
             "--concurrency", "1", "--preload", "300", "--messages", "100"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        groups.append(group)
    log(f"{len(groups)} consumer groups with lag")

    # Keyed messages for the messages page, through the official Python client.
    os.environ["HOME"] = work
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    producer = Producer(ClientConfiguration(client, Credentials()), (names[0],))
    producer.startup()
    try:
        for i in range(3):
            msg = Message()
            msg.topic = names[0]
            msg.body = f"console bench message {i}".encode()
            msg.tag = "bench"
            msg.keys = "bench-key"
            msg.add_property("index", str(i))
            producer.send(msg)
    finally:
        producer.shutdown()
    return names, groups


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def load_once(driver, url):
    """Loads `url` afresh; (ms to the first data render, ms of the slowest API call)."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while True:
        state = driver.execute_script(
            "return [document.body && document.body.dataset.loaded, window.__renderedAt,"
            " Math.max(0, ...performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('/api/')).map(e => e.duration)),"
            " document.getElementById('error') && !document.getElementById('error').hidden"
            " ? document.getElementById('error').textContent : '']"
        )
        if state[0] == "1":
            return state[1], state[2]
        if state[3]:
            raise SystemExit(f"{url}: the page shows an error: {state[3]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: no data rendered within {LOAD_TIMEOUT_S} s")
        time.sleep(0.01)


def filter_ms(driver, needle):
    """Milliseconds from typing into the topics filter to the table redrawn (next frame)."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const input = document.getElementById('topic-filter');
        const t0 = performance.now();
        input.value = arguments[0];
        input.dispatchEvent(new Event('input'));
        requestAnimationFrame(() => requestAnimationFrame(() => {
          done([performance.now() - t0, document.querySelectorAll('#topics-body tr[data-topic]').length]);
        }));
        """,
        needle,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rocketlog"))
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--queues", type=int, default=2)
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    for path in (args.binary, CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing")

    work = tempfile.mkdtemp(prefix="rocketlog-console-bench-")
    proc = None
    driver = None
    try:
        proc, client, console = start_broker(args.binary, work)
        base = f"http://{console}/"
        log(f"broker {args.binary}: client {client}, console {base}")
        names, groups = prepare(args, args.binary, client, base, work)
        pages = [
            ("cluster", "#/cluster"),
            ("topics", "#/topics"),
            ("groups", "#/groups"),
            ("group detail", f"#/groups/{groups[0]}" if groups else "#/groups"),
            ("messages (3 found)", f"#/messages?topic={names[0]}&key=bench-key"),
        ]
        driver = browser()
        load_once(driver, base + "#/cluster")  # warm-up: browser start, fonts
        rows = []
        for label, route in pages:
            rendered, slowest_api = [], []
            for _ in range(args.loads):
                r, a = load_once(driver, base + route)
                rendered.append(r)
                slowest_api.append(a)
            rows.append((label, rendered, slowest_api))
        filters = []
        load_once(driver, base + "#/topics")
        for i in range(args.loads):
            ms, shown = filter_ms(driver, f"bench-topic-0{i % 10}")
            filters.append(ms)
            ms_all, shown_all = filter_ms(driver, "")
            filters.append(ms_all)
        # The Prometheus scrape of the same broker (same port), for comparison.
        scrapes = []
        for _ in range(20):
            t0 = time.monotonic()
            with urllib.request.urlopen(f"{base}metrics", timeout=30) as res:
                scraped = res.read()
            scrapes.append((time.monotonic() - t0) * 1000)
        du = subprocess.run(["du", "-sm", os.path.join(work, "data")], capture_output=True, text=True).stdout.split()[0]

        print(f"\nconsole page loads: {args.topics} topics x {args.queues} queues, {len(groups)} groups, "
              f"{args.loads} fresh loads per page, headless Chromium, broker {os.path.basename(args.binary)}"
              f" ({os.path.relpath(args.binary, ROOT)}), data dir {du} MB")
        print("time from navigation start to the first data render (ms); API = slowest console API call of the load\n")
        print(f"{'page':<20} {'median':>8} {'max':>8}   {'API median':>10} {'API max':>8}")
        for label, rendered, slowest_api in rows:
            print(f"{label:<20} {statistics.median(rendered):>8.0f} {max(rendered):>8.0f}   "
                  f"{statistics.median(slowest_api):>10.0f} {max(slowest_api):>8.0f}")
        print(f"\ntopics filter redraw (ms, typing to the next frame, 100 and {args.topics} rows): "
              f"median {statistics.median(filters):.0f}, max {max(filters):.0f}")
        print(f"GET /metrics ({len(scraped) // 1024} KiB): median {statistics.median(scrapes):.1f} ms, "
              f"max {max(scrapes):.1f} ms over {len(scrapes)} scrapes")
    finally:
        if driver is not None:
            driver.quit()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
