#!/usr/bin/env python3
"""Checks the broker's web console in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against data the caller knows.

Usage: console_test.py '<json>'. The JSON holds `url` (the console, e.g.
http://127.0.0.1:PORT/), `mode` ("data" or "auth"), `screenshots` (a directory for one PNG
per page), `timeout` (seconds any one value may take to show), and the expected values of
the mode (see tests/tests/console.rs, which writes them).

Every wait polls the page until its deadline; nothing waits a fixed time. The first failed
check ends the run with exit status 1, a message saying what was expected and what the page
showed, a screenshot of the page and the browser's console log.
"""

import base64
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Between two looks at the page while waiting for a value.
POLL_S = 0.1


class CheckFailed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def start_browser():
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            raise CheckFailed(
                f"{path} is missing: install Debian's {package} "
                "(apt-get install -y chromium chromium-driver; .ci/run does)"
            )
    # Never let selenium-manager look for (or download) a browser or driver.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--lang=en-US",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


class Console:
    """The browser on the console, with polling reads and checks."""

    def __init__(self, driver, args):
        self.d = driver
        self.url = args["url"].rstrip("/") + "/"
        self.timeout = float(args.get("timeout", 30))
        self.shots = args["screenshots"]
        self.prefix = args.get("screenshot_prefix", "")
        self.saved = []

    # -- browser helpers

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def open(self, route):
        """Loads the page afresh at `route` (a hash route such as "#/topics")."""
        self.d.get("about:blank")
        self.d.get(self.url + route)

    def go(self, route):
        """Moves to `route` inside the running page (a hash change)."""
        self.js("location.hash = arguments[0]", route)

    def wait(self, what, probe, timeout=None):
        """Polls `probe` (returns (done, observed)) until done; fails with the last observation."""
        deadline = time.monotonic() + (timeout or self.timeout)
        observed = None
        while True:
            try:
                done, observed = probe()
            except WebDriverException as e:
                done, observed = False, f"{type(e).__name__}: {e.msg if hasattr(e, 'msg') else e}"
            if done:
                return observed
            if time.monotonic() >= deadline:
                raise CheckFailed(f"timed out waiting for {what}; the page showed: {observed!r}")
            time.sleep(POLL_S)

    def wait_value(self, what, read, expected, timeout=None):
        """Polls `read()` until it equals `expected`."""

        def probe():
            v = read()
            return v == expected, v

        return self.wait(f"{what} == {expected!r}", probe, timeout)

    def wait_loaded(self, page):
        def probe():
            state = self.js(
                "return {page: document.body.dataset.page, loaded: document.body.dataset.loaded,"
                " error: document.getElementById('error').hidden ? '' :"
                " document.getElementById('error').textContent}"
            )
            return state["page"] == page and state["loaded"] == "1", state

        return self.wait(f"page {page} to render its data", probe)

    def renders(self):
        return int(self.js("return Number(document.body.dataset.renders || 0)"))

    def wait_next_render(self, after):
        return self.wait(
            f"a refresh after render {after}",
            lambda: ((n := self.renders()) > after, n),
            timeout=self.timeout + 10,
        )

    def error_text(self):
        return self.js(
            "const e = document.getElementById('error'); return e && !e.hidden ? e.textContent : ''"
        )

    def screenshot(self, name):
        os.makedirs(self.shots, exist_ok=True)
        path = os.path.join(self.shots, f"{self.prefix}{name}.png")
        self.d.save_screenshot(path)
        self.saved.append(path)
        log(f"screenshot {path}")
        return path

    def full_screenshot(self, name):
        """A screenshot of the whole page, below the window's height too (DevTools)."""
        os.makedirs(self.shots, exist_ok=True)
        path = os.path.join(self.shots, f"{self.prefix}{name}.png")
        width, height = self.js(
            "const e = document.documentElement;"
            " return [Math.max(e.scrollWidth, window.innerWidth), Math.max(e.scrollHeight, window.innerHeight)]"
        )
        shot = self.d.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1},
            },
        )
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        self.saved.append(path)
        log(f"screenshot {path}")
        return path

    def by_id(self, element_id):
        return self.d.find_element(By.ID, element_id)

    def fill(self, element_id, text):
        el = self.by_id(element_id)
        el.clear()
        # clear() fires no input event; typing does (and a typed-then-erased space for "").
        el.send_keys(text if text else " " + Keys.BACKSPACE)

    def click(self, css):
        # Scrolled to the middle of the window first, as a person would, so the sticky
        # header never covers it.
        e = self.d.find_element(By.CSS_SELECTOR, css)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
        e.click()

    def testid(self, testid):
        """(data-value, shown text) of the element with data-testid."""
        return self.js(
            "const e = document.querySelector(`[data-testid='${arguments[0]}']`);"
            " return e ? [e.dataset.value, e.textContent.trim()] : null",
            testid,
        )

    def rows(self, row_css, key_attr):
        """{key: {col: (data-value, text)}} of the table rows matching row_css."""
        return self.js(
            """
            const out = {};
            for (const tr of document.querySelectorAll(arguments[0])) {
              const r = {};
              for (const td of tr.querySelectorAll('[data-col]')) r[td.dataset.col] = [td.dataset.value, td.textContent.trim()];
              r.__attrs = Object.assign({}, tr.dataset);
              out[tr.getAttribute(arguments[1])] = r;
            }
            return out;""",
            row_css,
            key_attr,
        )

    # -- the console API, called as the page calls it

    def api(self, method, body, auth=None, console_header=True):
        headers = {"Content-Type": "application/json"}
        if console_header:
            headers["X-Rocketlog-Console"] = "1"
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(
            self.url + "api/" + method,
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as res:
                return res.status, json.loads(res.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}


def integer_shown(cell, expected, what):
    """A table cell (data-value, text): both the value and the text show `expected`."""
    if cell is None:
        raise CheckFailed(f"{what}: no such cell")
    value, text = cell
    if value != str(expected) or text.replace(",", "") != str(expected):
        raise CheckFailed(f"{what}: want {expected}, the page shows {text!r} (value {value!r})")


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


# ---------------------------------------------------------------- data mode


def check_cluster(c, want):
    c.open("#/cluster")
    c.wait_loaded("cluster")
    for testid, key in (
        ("cluster-name", "clusterName"),
        ("broker-name", "brokerName"),
        ("broker-id", "brokerId"),
        ("role", "role"),
        ("version", "version"),
        ("flush-mode", "flushMode"),
        ("min-offset", "minLogOffset"),
    ):
        c.wait_value(f"cluster page {testid}", lambda t=testid: (c.testid(t) or [None])[0], str(want[key]))
    shown = c.testid("broker-name")[1]
    expect(shown == want["brokerName"], f"broker name shown as {shown!r}")
    expect(c.testid("role")[1] == want["role"], f"role shown as {c.testid('role')!r}")
    max_offset = int(c.testid("max-offset")[0])
    expect(
        max_offset >= int(want["maxLogOffset"]),
        f"commit-log max offset {max_offset} below {want['maxLogOffset']}",
    )
    expect(
        int(c.testid("flushed-offset")[0]) <= max_offset,
        f"flushed offset {c.testid('flushed-offset')} above the max offset {max_offset}",
    )
    disk = float(c.testid("disk-used")[0])
    expect(0 < disk <= 100, f"disk used {disk} %")
    expect(int(c.testid("store-size")[0]) > 0, f"store size {c.testid('store-size')}")
    expect(c.testid("draining")[0] == "false", f"draining {c.testid('draining')}")
    expect(int(c.testid("uptime")[0]) > 0, f"uptime {c.testid('uptime')}")
    c.wait(
        "the master's replication section (no slaves)",
        lambda: (c.js("return !!document.getElementById('slaves-none')"), c.js("return document.getElementById('cluster-replication').textContent")),
    )
    ns = want["nameserver"]
    c.wait(
        f"nameserver {ns} listed as reachable",
        lambda: (
            (r := c.rows("#nameservers-table tbody tr", "data-address")).get(ns, {}).get("status", [None])[0] == "reachable",
            r,
        ),
    )

    def this_broker():
        rows = c.js(
            "return Array.from(document.querySelectorAll('#brokers-table tbody tr'), tr => "
            "[tr.dataset.broker, tr.dataset.brokerId, tr.dataset.this || '', tr.textContent.replace(/\\s+/g, ' ').trim()])"
        )
        mine = [r for r in rows if r[0] == want["brokerName"] and r[1] == str(want["brokerId"]) and r[2] == "1"]
        return len(mine) == 1 and "this broker" in mine[0][3], rows

    c.wait("this broker marked in the cluster's broker table", this_broker)
    c.full_screenshot("cluster")
    log("cluster page: ok")


def check_topic_row(c, t):
    name = t["name"]

    def probe():
        rows = c.rows("#topics-body tr[data-topic]:not([hidden])", "data-topic")
        row = rows.get(name)
        if not row:
            return False, f"no row for {name} among {len(rows)} rows"
        got = {
            "queues": row["queues"][0],
            "perm": row["perm"][0],
            "types": row["types"][0],
            "in": row["in"][0],
            "stored": row["stored"][0],
            "groups": row["groups"][0],
        }
        want = {
            "queues": str(t["queues"]),
            "perm": t["perm"],
            "types": ",".join(t["types"]),
            "in": str(t.get("messagesIn", 0)),
            "stored": str(t.get("stored", 0)),
            "groups": str(t.get("groups", 0)),
        }
        return got == want, {"got": got, "want": want}

    c.wait(f"topic row {name}", probe)
    row = c.rows(f"#topics-body tr[data-topic='{name}']", "data-topic")[name]
    integer_shown(row["in"], t.get("messagesIn", 0), f"{name} messages in")
    integer_shown(row["queues"], t["queues"], f"{name} queues")


def check_topics(c, want):
    c.open("#/topics")
    c.wait_loaded("topics")
    for t in want["topics"]:
        check_topic_row(c, t)
    count = c.js("return document.getElementById('topic-count').dataset.value")
    api_status, listed = c.api("ListTopics", {})
    expect(api_status == 200, f"ListTopics answered {api_status}: {listed}")
    expect(
        count == str(len(listed.get("topics", []))),
        f"topic count {count}, the API lists {len(listed.get('topics', []))}",
    )

    # Rates: known from the second refresh on; nothing is sent or acked meanwhile.
    first = want["topics"][0]["name"]

    def rates():
        row = c.rows(f"#topics-body tr[data-topic='{first}']", "data-topic").get(first, {})
        shown = (row.get("in-rate", [""])[0], row.get("out-rate", [""])[0])
        return shown == ("0.00", "0.00"), shown

    c.wait(f"{first}'s in and out rates after two refreshes", rates, timeout=c.timeout + 15)

    # The name filter.
    c.fill("topic-filter", first)
    c.wait(
        f"the filter to show only {first}",
        lambda: (
            (names := list(c.rows("#topics-body tr[data-topic]:not([hidden])", "data-topic"))) == [first],
            names,
        ),
    )
    c.fill("topic-filter", "")
    c.wait(
        "the cleared filter to show every topic again",
        lambda: (
            (n := len(c.rows("#topics-body tr[data-topic]:not([hidden])", "data-topic"))) == int(count),
            n,
        ),
    )

    # An invalid name: the server's message in the error banner.
    bad = want["invalidTopicName"]
    c.fill("tf-name", bad)
    c.click("#tf-submit")
    c.wait("the error banner for an invalid topic name", lambda: ((e := c.error_text()) != "", e))
    log(f"invalid topic name: banner says {c.error_text()!r}")

    for t in (want["create"]["kept"], want["create"]["deleted"]):
        create_topic(c, t)
    c.full_screenshot("topics")

    # Delete, with its confirm step.
    gone = want["create"]["deleted"]["name"]
    c.click(f"#topics-body tr[data-topic='{gone}'] button[data-action='delete']")
    c.wait(
        "the delete confirmation",
        lambda: (
            c.js(f"return !!document.querySelector(\"#topics-body tr[data-confirm-topic='{gone}'] button[data-action='confirm-delete']\")"),
            None,
        ),
    )
    c.full_screenshot("topics-delete")
    exists = c.rows(f"#topics-body tr[data-topic='{gone}']", "data-topic")
    expect(gone in exists, "the topic disappeared before the delete was confirmed")
    c.click(f"#topics-body tr[data-confirm-topic='{gone}'] button[data-action='confirm-delete']")
    c.wait(
        f"topic {gone} to leave the table",
        lambda: (gone not in (r := c.rows("#topics-body tr[data-topic]", "data-topic")), len(r)),
    )
    status, listed = c.api("ListTopics", {})
    names = [t.get("name") for t in listed.get("topics", [])]
    expect(gone not in names, f"the API still lists the deleted topic {gone}")
    expect(want["create"]["kept"]["name"] in names, "the API does not list the created topic")
    log("topics page: ok")


def create_topic(c, t):
    c.fill("tf-name", t["name"])
    c.fill("tf-queues", str(t["queues"]))
    c.js(
        "document.getElementById('tf-perm').value = arguments[0];"
        "for (const b of document.querySelectorAll('#topic-form input[type=checkbox]')) b.checked = arguments[1].includes(b.value);",
        t["perm"],
        t["types"],
    )
    c.click("#tf-submit")
    c.wait(
        f"the notice that {t['name']} was created",
        lambda: (
            f"Topic {t['name']} created" in (n := c.js("return document.getElementById('notice').textContent")),
            [n, c.error_text()],
        ),
    )
    check_topic_row(c, {**t, "messagesIn": 0, "stored": 0, "groups": 0})
    status, listed = c.api("ListTopics", {})
    found = [x for x in listed.get("topics", []) if x.get("name") == t["name"]]
    expect(found, f"the API does not list {t['name']} after the form created it")
    expect(
        found[0].get("queueNums") == t["queues"] and found[0].get("perm") == t["perm"],
        f"the API lists {found[0]}, the form asked for {t}",
    )


def check_groups(c, want):
    c.open("#/groups")
    c.wait_loaded("groups")
    for g in want["groups"]:
        name = g["group"]

        def probe(g=g, name=name):
            row = c.rows("#groups-body tr[data-group]", "data-group").get(name)
            if not row:
                return False, "no row"
            got = {k: row[k][0] for k in ("lag", "inflight", "dlq", "topics")}
            exp = {
                "lag": str(g["lag"]),
                "inflight": str(g["inflight"]),
                "dlq": str(g["dlq"]),
                "topics": ", ".join(sorted(g["topics"])),
            }
            return got == exp, {"got": got, "want": exp}

        c.wait(f"group row {name}", probe)
        row = c.rows("#groups-body tr[data-group]", "data-group")[name]
        integer_shown(row["lag"], g["lag"], f"group {name} lag")
        integer_shown(row["inflight"], g["inflight"], f"group {name} in flight")
    c.full_screenshot("groups")
    log("groups page: ok")


def check_group_detail(c, want):
    g = want["group"]
    name = g["group"]
    # Through the groups table's link.
    c.open("#/groups")
    c.wait_loaded("groups")
    c.wait(
        f"the link to group {name}",
        lambda: (c.js("return !!document.querySelector(arguments[0])", f"#groups-body tr[data-group='{name}'] a"), None),
    )
    c.click(f"#groups-body tr[data-group='{name}'] a")
    c.wait_loaded("group")
    shown = c.js("return document.getElementById('group-name').textContent")
    expect(shown == name, f"group detail heading {shown!r}")
    check_group_numbers(c, g["queues"], g["totalLag"], g["totalInflight"], g["dlq"])

    # The lag chart: one line per queue with points (history is sampled every 200 ms).
    def chart():
        lines = c.js(
            "return Array.from(document.querySelectorAll('#lag-chart svg polyline.series'), p => "
            "[p.dataset.series, p.getAttribute('points').trim().split(/\\s+/).filter(Boolean).length])"
        )
        labels = [l for l, n in lines if n >= 2]
        wanted = [f"{q['topic']} / {q['queueId']}" for q in g["queues"]]
        return all(w in labels for w in wanted), lines

    lines = c.wait("lag chart lines with at least two points per queue", chart, timeout=c.timeout + 10)
    legend = c.js("return Array.from(document.querySelectorAll('#lag-legend li'), li => li.dataset.series)")
    for q in g["queues"]:
        label = f"{q['topic']} / {q['queueId']}"
        expect(label in legend, f"legend {legend} lacks {label}")
    log(f"lag chart lines: {lines}")
    c.full_screenshot("group")

    # Reset to the earliest message, through the confirm step.
    topic = g["resetTopic"]
    c.js("document.getElementById('reset-topic').value = arguments[0]", topic)
    selected = c.js("return document.getElementById('reset-topic').value")
    expect(selected == topic, f"the reset form offers no topic {topic} (selected {selected!r})")
    c.click("#reset-earliest")
    c.wait("the reset confirmation", lambda: (c.js("return !document.getElementById('reset-confirm').hidden"), None))
    text = c.js("return document.getElementById('reset-confirm-text').textContent")
    expect(topic in text and "earliest" in text, f"confirmation text {text!r}")
    c.click("#reset-confirm-yes")

    def offsets():
        rows = c.rows("#reset-offsets tbody tr[data-queue]", "data-queue")
        got = {k: v["offset"][0] for k, v in rows.items()}
        exp = {str(q["queueId"]): "0" for q in g["queues"] if q["topic"] == topic}
        return got == exp, {"got": got, "want": exp, "error": c.error_text()}

    c.wait("the new offsets of the reset", offsets)
    full = [
        {**q, "consumerOffset": 0, "lag": q["brokerOffset"]} if q["topic"] == topic else q
        for q in g["queues"]
    ]
    full_total = sum(q["lag"] for q in full)
    expect(full_total == g["fullLag"], f"expected data inconsistent: {full_total} != {g['fullLag']}")
    check_group_numbers(c, full, g["fullLag"], None, g["dlq"])
    status, described = c.api("DescribeConsumerGroup", {"group": name})
    expect(status == 200, f"DescribeConsumerGroup answered {status}: {described}")
    expect(
        described.get("totalLag") == str(g["fullLag"]),
        f"after the reset the API says total lag {described.get('totalLag')}, want {g['fullLag']}",
    )
    c.full_screenshot("group-reset")
    log("group detail page: ok")


def check_group_numbers(c, queues, total_lag, total_inflight, dlq):
    """The stats and the queue table of the group page (in flight unchecked when None)."""

    def probe():
        got = {}
        for tr in c.js(
            "return Array.from(document.querySelectorAll('#queues-body tr[data-queue]'), tr => "
            "[tr.dataset.topic, tr.dataset.queue, Object.fromEntries(Array.from(tr.querySelectorAll('[data-col]'), "
            "td => [td.dataset.col, td.dataset.value]))])"
        ):
            topic, queue, cols = tr
            got[f"{topic}/{queue}"] = {
                k: cols.get(k)
                for k in ("broker-offset", "consumer-offset", "lag", "inflight")
                if k != "inflight" or total_inflight is not None
            }
        exp = {}
        for q in queues:
            e = {
                "broker-offset": str(q["brokerOffset"]),
                "consumer-offset": str(q["consumerOffset"]),
                "lag": str(q["lag"]),
            }
            if total_inflight is not None:
                e["inflight"] = str(q["inflight"])
            exp[f"{q['topic']}/{q['queueId']}"] = e
        stats = {
            "lag": c.js("return document.getElementById('g-total-lag').dataset.value"),
            "dlq": c.js("return document.getElementById('g-dlq').dataset.value"),
        }
        want_stats = {"lag": str(total_lag), "dlq": str(dlq)}
        if total_inflight is not None:
            stats["inflight"] = c.js("return document.getElementById('g-total-inflight').dataset.value")
            want_stats["inflight"] = str(total_inflight)
        return got == exp and stats == want_stats, {
            "queues": got,
            "want": exp,
            "stats": stats,
            "want_stats": want_stats,
        }

    c.wait("the group's lag, offsets and in-flight counts", probe)
    shown = c.js("return document.getElementById('g-total-lag').textContent")
    expect(shown.replace(",", "") == str(total_lag), f"total lag shown as {shown!r}")
    foot = c.testid("queues-total-lag")
    integer_shown(foot, total_lag, "the queue table's total lag")


def check_messages(c, want):
    c.open("#/messages")
    c.wait_loaded("messages")
    for i, m in enumerate(want["messages"]):
        lookup = m["lookup"]
        if "id" in lookup:
            c.click("#lookup-by-id")
            c.fill("lookup-id", lookup["id"])
        else:
            c.click("#lookup-by-key")
            c.fill("lookup-topic", lookup["topic"])
            c.fill("lookup-key", lookup["key"])
        before = c.renders()
        c.click("#lookup-submit")
        c.wait_next_render(before)
        c.wait_value(
            f"the number of messages found for {lookup}",
            lambda: c.js("const e = document.getElementById('messages-count'); return e ? Number(e.dataset.value) : null"),
            m.get("count", 1),
        )
        check_message(c, m["expect"])
        if i == 0:
            c.full_screenshot("messages")
    log("messages page: ok")


def check_message(c, e):
    mid = e["messageId"]
    card = f"article.message[data-message-id='{mid}'][data-topic='{e['topic']}']"
    fields = c.js(
        "const a = document.querySelector(arguments[0]); if (!a) return null;"
        " return Object.fromEntries(Array.from(a.querySelectorAll('dd[data-field]'), d => [d.dataset.field, [d.dataset.value, d.textContent.trim()]]))",
        card,
    )
    expect(fields is not None, f"no message card for {mid}")
    for key in ("topic", "queueId", "queueOffset", "tag", "bodySize", "reconsumeTimes", "deliveryAttempts"):
        if key in e:
            got = fields.get(key, [None])[0]
            expect(got == str(e[key]), f"message {mid} {key}: want {e[key]!r}, shown {fields.get(key)!r}")
    expect(fields["messageId"][0] == mid, f"message id shown {fields['messageId']}")
    keys = fields["keys"][0].split(",") if fields["keys"][0] else []
    expect(sorted(keys) == sorted(e["keys"]), f"message {mid} keys: want {e['keys']}, shown {keys}")
    for key in ("keys", "tag"):
        for part in e[key] if key == "keys" else [e[key]]:
            expect(part in fields[key][1], f"message {mid} {key} text {fields[key][1]!r} lacks {part!r}")
    for key in ("bornTimestampMs", "storeTimestampMs", "physicalOffset"):
        expect(fields[key][0] not in ("", None), f"message {mid} has no {key}")
    expect(int(fields["storeTimestampMs"][0]) > 0, f"message {mid} store time {fields['storeTimestampMs']}")
    if "deliverAtMs" in e:
        expect(
            fields["deliverAtMs"][0] == str(e["deliverAtMs"]),
            f"message {mid} deliver-at {fields['deliverAtMs']}, want {e['deliverAtMs']}",
        )
    if "delayState" in e:
        expect(fields["delayState"][0] == e["delayState"], f"delay state {fields['delayState']}")
    if "transactionState" in e:
        expect(
            fields["transactionState"][0] == e["transactionState"],
            f"transaction state {fields['transactionState']}",
        )
    props = c.js(
        "return Object.fromEntries(Array.from(document.querySelectorAll(arguments[0] + ' table.props tr[data-prop]'),"
        " tr => [tr.dataset.prop, tr.querySelector('td.value').textContent]))",
        card,
    )
    for k, v in e["properties"].items():
        expect(props.get(k) == v, f"message {mid} property {k}: want {v!r}, shown {props.get(k)!r}")
    deliveries = c.js(
        "return Object.fromEntries(Array.from(document.querySelectorAll(arguments[0] + ' table.deliveries tr[data-group]'),"
        " tr => [tr.dataset.group, tr.querySelector('[data-col=state]').dataset.value]))",
        card,
    )
    for group, state in e["deliveries"].items():
        expect(
            deliveries.get(group) == state,
            f"message {mid} delivery to {group}: want {state!r}, shown {deliveries.get(group)!r} (all: {deliveries})",
        )
    # The body as text, then as hex, then as text again.
    body = e["bodyText"]
    text = c.js("return document.querySelector(arguments[0] + ' pre.body').textContent", card)
    expect(text == body, f"message {mid} body text {text!r}, want {body!r}")
    c.click(f"{card} button[data-view='hex']")
    hex_prefix = " ".join(f"{b:02x}" for b in body.encode()[:8])
    c.wait(
        f"message {mid} body as hex",
        lambda: (
            hex_prefix in (h := c.js("return document.querySelector(arguments[0] + ' pre.body').textContent", card)),
            h,
        ),
    )
    c.click(f"{card} button[data-view='text']")
    c.wait_value(
        f"message {mid} body back as text",
        lambda: c.js("return document.querySelector(arguments[0] + ' pre.body').textContent", card),
        body,
    )


def run_data(c, args):
    check_cluster(c, args["cluster"])
    check_topics(c, args)
    check_groups(c, args)
    check_messages(c, args)
    check_group_detail(c, args)


# ---------------------------------------------------------------- replicas mode


def run_replicas(c, args):
    """A master and its slave, each with its console: what each says about the other."""
    name, end, repl = args["brokerName"], int(args["logEnd"]), args["masterReplication"]

    c.open("#/cluster")
    c.wait_loaded("cluster")
    c.wait_value("the master's role", lambda: (c.testid("role") or [None])[0], "master")

    def slave_row():
        rows = c.rows("#slaves-table tbody tr", "data-slave-id")
        r = rows.get("1", {})
        done = (
            int(r.get("log-end", ["0"])[0] or 0) >= end
            and r.get("lag-bytes", [None])[0] == "0"
            and (r.get("peer", [""])[0] or "") != ""
        )
        return done, rows

    shown = c.wait(f"slave 1 listed by the master, at log end >= {end} with no lag", slave_row)
    log(f"master: slave row {shown['1']}")

    def both_in_cluster():
        rows = c.js(
            "return Array.from(document.querySelectorAll('#brokers-table tbody tr'), tr => "
            "[tr.dataset.broker, tr.dataset.brokerId, tr.querySelector('[data-col=role]').dataset.value,"
            " tr.querySelector('[data-col=replication-address]').dataset.value])"
        )
        mine = sorted((r[1], r[2], r[3]) for r in rows if r[0] == name)
        # Both registered with the nameserver; the master with the address its slaves dial.
        return len(mine) == 2 and mine[0] == ("0", "master", repl) and mine[1][:2] == ("1", "slave"), rows

    c.wait("both replicas of the group in the cluster table, the master with its replication address", both_in_cluster)
    c.full_screenshot("master")
    log("master's cluster page: ok")

    c.url = args["slaveUrl"].rstrip("/") + "/"
    c.open("#/cluster")
    c.wait_loaded("cluster")
    c.wait_value("the slave's role", lambda: (c.testid("role") or [None])[0], "slave")
    c.wait_value("the slave's id", lambda: (c.testid("broker-id") or [None])[0], "1")
    c.wait_value("the slave connected", lambda: (c.testid("following-connected") or [None])[0], "true")
    c.wait_value("the master it follows", lambda: (c.testid("following-master") or [None])[0], repl)
    c.wait(
        f"the slave's log end >= {end}",
        lambda: (int((c.testid("following-log-end") or ["0"])[0] or 0) >= end, c.testid("following-log-end")),
    )
    c.wait_value("the slave not behind", lambda: (c.testid("following-behind") or [None])[0], "0")
    c.wait_value("no replication error", lambda: (c.testid("following-error") or [None])[0], "")
    c.full_screenshot("slave")
    log("slave's cluster page: ok")


# ---------------------------------------------------------------- auth mode


def run_auth(c, args):
    a = args["auth"]
    status, body = c.api("BrokerStats", {})
    expect(status == 401, f"BrokerStats without credentials answered {status}: {body}")
    status, body = c.api("BrokerStats", {}, auth=(a["accessKey"], a["secretKey"]), console_header=False)
    expect(status == 403, f"BrokerStats without X-Rocketlog-Console answered {status}: {body}")
    status, body = c.api("BrokerStats", {}, auth=(a["accessKey"], a["secretKey"]))
    expect(status == 200, f"BrokerStats as {a['accessKey']} answered {status}: {body}")

    c.open("#/cluster")

    def signin_shown():
        s = c.js(
            "return {signin: !document.getElementById('signin').hidden, view: !document.getElementById('view').hidden,"
            " error: document.getElementById('signin-error').hidden ? '' : document.getElementById('signin-error').textContent}"
        )
        return s["signin"] and not s["view"], s

    c.wait("the sign-in form", signin_shown)
    c.screenshot("signin")

    # A wrong secret: the server's message, and the form again.
    c.fill("signin-access-key", a["accessKey"])
    c.fill("signin-secret-key", a["wrongSecret"])
    c.click("#signin-submit")
    c.wait(
        "the sign-in error for a wrong secret",
        lambda: ((s := signin_shown())[0] and s[1]["error"] != "", s[1]),
    )
    banner = c.error_text()
    expect(banner != "", "no error banner after a wrong secret")
    said = c.js("return document.getElementById('signin-error').textContent")
    log(f"wrong secret: the page says {said!r}")
    stored = c.js("return sessionStorage.getItem('rocketlog-console.credentials')")
    expect(stored is None, f"refused credentials stay stored: {stored!r}")
    c.screenshot("signin-error")

    # The right secret: the data.
    c.fill("signin-access-key", a["accessKey"])
    c.fill("signin-secret-key", a["secretKey"])
    c.click("#signin-submit")
    c.wait_loaded("cluster")
    c.wait_value("the broker name after signing in", lambda: (c.testid("broker-name") or [None])[0], args["cluster"]["brokerName"])
    who = c.js("return document.getElementById('signed-in').textContent")
    expect(a["accessKey"] in who, f"signed-in label {who!r}")
    expect(c.js("return !document.getElementById('signout').hidden"), "no sign-out link")
    c.full_screenshot("signed-in")

    # Still signed in on another page and after a reload (sessionStorage).
    c.go("#/topics")
    c.wait_loaded("topics")
    c.d.refresh()
    c.wait_loaded("topics")
    expect(not signin_shown()[0], "the sign-in form came back after a reload")

    if "nonSuperUser" in a:
        # A user who is not a super user: the server's refusal is shown.
        c.click("#signout")
        c.wait("the sign-in form after signing out", signin_shown)
        user = a["nonSuperUser"]
        c.fill("signin-access-key", user[0])
        c.fill("signin-secret-key", user[1])
        c.click("#signin-submit")
        c.wait(
            "the refusal of a user who is not a super user",
            lambda: (
                c.js("return document.getElementById('error').dataset.code") == "PERMISSION_DENIED"
                and c.error_text() != "",
                c.error_text(),
            ),
        )
        log(f"non-super user: the page says {c.error_text()!r}")
        c.screenshot("not-super-user")

    c.click("#signout") if c.js("return !document.getElementById('signout').hidden") else None
    c.wait("the sign-in form after signing out", signin_shown)
    log("auth: ok")


# ---------------------------------------------------------------- main


def main():
    args = json.loads(sys.argv[1])
    driver = start_browser()
    c = Console(driver, args)
    stale = os.path.join(c.shots, f"{c.prefix}failure.png")
    if os.path.exists(stale):
        os.remove(stale)
    try:
        log(f"chromium {driver.capabilities.get('browserVersion')} on {c.url} ({args['mode']})")
        {"data": run_data, "auth": run_auth, "replicas": run_replicas}[args["mode"]](c, args)
    except Exception as e:  # every failure: report, screenshot, console log
        if isinstance(e, CheckFailed):
            log(f"FAILED: {e}")
        elif isinstance(e, WebDriverException):
            log(f"FAILED: the browser: {e.msg}")
            traceback.print_tb(e.__traceback__)
        else:
            log(f"FAILED: {e!r}")
            traceback.print_exc()
        try:
            log(f"url: {driver.current_url}")
            log(f"error banner: {c.error_text()!r}")
            c.screenshot("failure")
            for entry in driver.get_log("browser"):
                log(f"browser: {entry.get('level')} {entry.get('message')}")
        except WebDriverException as more:
            log(f"(could not inspect the page: {more.msg})")
        driver.quit()
        return 1
    # A script error in the page fails the run even when every value showed.
    errors = [e for e in driver.get_log("browser") if e.get("source") == "javascript"]
    driver.quit()
    for entry in errors:
        log(f"browser script error: {entry.get('message')}")
    log(f"screenshots: {', '.join(c.saved)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
