// rocketlog web console: a single-page app over the broker's console API
// (`POST api/<Method>`, the admin API's messages in the proto3 JSON mapping).
//
// Hash routes: #/cluster, #/topics, #/groups, #/groups/<group>, #/messages (optionally
// ?id=<message id> or ?topic=<topic>&key=<key>). The current page polls its data every
// 5 seconds. When the first data of a page is on screen, `document.body.dataset.loaded` is
// "1" and `window.__renderedAt` holds performance.now() of that moment; every render also
// increments `document.body.dataset.renders`.
//
// Mapping facts the code relies on: fields with default values are omitted (0, "", false,
// empty lists), 64-bit integers are strings, enums are their names, bytes are base64.
"use strict";

(() => {
  const POLL_MS = 5000;
  const CREDENTIALS_KEY = "rocketlog-console.credentials";
  /** Series drawn in the lag chart are reduced to at most this many points each. */
  const CHART_MAX_POINTS = 720;

  // ---------------------------------------------------------------- helpers

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);

  /** A JSON number or 64-bit string as a Number (0 when absent). */
  const num = (v) => {
    if (v === undefined || v === null || v === "") return 0;
    const n = Number(v);
    return Number.isFinite(n) ? n : 0;
  };

  /** The exact decimal digits of an integer field (0 when absent). */
  const digits = (v) => {
    if (v === undefined || v === null || v === "") return "0";
    return String(v);
  };

  /** An integer with thousands separators; exact for 64-bit strings. */
  const fmtInt = (v) => {
    const s = digits(v);
    if (!/^-?\d+$/.test(s)) return esc(s);
    return s.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  };

  const fmtBytes = (v) => {
    let n = num(v);
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let u = 0;
    while (n >= 1024 && u < units.length - 1) {
      n /= 1024;
      u += 1;
    }
    return u === 0 ? `${n} B` : `${n.toFixed(n >= 100 ? 0 : 1)} ${units[u]}`;
  };

  const fmtDuration = (ms) => {
    let s = Math.floor(num(ms) / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    if (d > 0) return `${d}d ${h}h ${m}m`;
    if (h > 0) return `${h}h ${m}m ${s}s`;
    if (m > 0) return `${m}m ${s}s`;
    return `${s}s`;
  };

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  /** Local date and time with milliseconds, or "—" for 0. */
  const fmtTime = (ms) => {
    const t = num(ms);
    if (!t) return "—";
    const d = new Date(t);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
    );
  };

  const fmtClock = (ms, withSeconds) => {
    const d = new Date(ms);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return withSeconds ? `${hm}:${pad(d.getSeconds())}` : hm;
  };

  const fmtAgo = (ms) => {
    const t = num(ms);
    if (!t) return "—";
    const ago = Date.now() - t;
    return ago < 0 ? "just now" : `${fmtDuration(ago)} ago`;
  };

  /** A value for `<input type="datetime-local" step="1">` in local time. */
  const localInputValue = (ms) => {
    const d = new Date(ms);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
      `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  };

  const enumLabel = (v) => String(v || "").toLowerCase().replace(/_/g, "-");

  const PERMISSIONS = ["READ_WRITE", "READ", "WRITE", "NONE"];
  const MESSAGE_TYPES = ["NORMAL", "FIFO", "DELAY", "TRANSACTION"];

  /** A table cell holding an integer: formatted text, exact digits in data-value. */
  const intCell = (col, v, extra = "") =>
    `<td class="num${extra}" data-col="${col}" data-value="${esc(digits(v))}">${fmtInt(v)}</td>`;

  const textCell = (col, text, value = text) =>
    `<td data-col="${col}" data-value="${esc(value)}">${esc(text)}</td>`;

  /** A definition-list entry. */
  const kv = (label, testid, html, value) =>
    `<div class="kv"><dt>${esc(label)}</dt><dd data-testid="${testid}" data-value="${esc(value)}">${html}</dd></div>`;

  const badge = (text, kind = "") => `<span class="badge ${kind}">${esc(text)}</span>`;

  const yesNo = (b, whenYes = "warn", whenNo = "") => (b ? badge("yes", whenYes) : badge("no", whenNo));

  const base64Utf8 = (s) => {
    const bytes = new TextEncoder().encode(s);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  };

  const base64Bytes = (s) => {
    if (!s) return new Uint8Array(0);
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
    return out;
  };

  const hexDump = (bytes) => {
    const lines = [];
    for (let off = 0; off < bytes.length; off += 16) {
      const row = bytes.subarray(off, off + 16);
      const hex = Array.from(row, (b) => pad(b.toString(16))).join(" ");
      const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
      lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47, " ")}  |${ascii}|`);
    }
    return lines.join("\n");
  };

  const collator = new Intl.Collator("en");
  /** Text order (one shared collator: much cheaper than localeCompare per comparison). */
  const cmp = (a, b) => collator.compare(String(a ?? ""), String(b ?? ""));

  /** Sorts rows by `key` (numbers numerically, the rest as text), then by name. */
  const sortRows = (rows, key, dir, nameKey) => {
    const sign = dir === "desc" ? -1 : 1;
    return rows.slice().sort((a, b) => {
      const x = a[key];
      const y = b[key];
      let c;
      if (typeof x === "number" && typeof y === "number") c = x - y;
      else c = cmp(x, y);
      if (c === 0 && nameKey) c = cmp(a[nameKey], b[nameKey]);
      return c * sign;
    });
  };

  /** Marks the header of the sorted column of `table`. */
  const markSorted = (table, key, dir) => {
    for (const th of $$("th[data-sort]", table)) {
      th.classList.toggle("sorted", th.dataset.sort === key);
      th.dataset.dir = th.dataset.sort === key ? dir : "";
      th.setAttribute("aria-sort", th.dataset.sort === key ? (dir === "desc" ? "descending" : "ascending") : "none");
    }
  };

  /** Header click: sort by that column, again: reverse. */
  const onSortClick = (table, sort, rerender) => {
    table.addEventListener("click", (e) => {
      const th = e.target.closest("th[data-sort]");
      if (!th) return;
      const key = th.dataset.sort;
      if (sort.key === key) sort.dir = sort.dir === "asc" ? "desc" : "asc";
      else {
        sort.key = key;
        sort.dir = th.dataset.numeric ? "desc" : "asc";
      }
      rerender();
    });
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const credentials = {
    get() {
      try {
        const c = JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY) || "null");
        return c && c.accessKey ? c : null;
      } catch {
        return null;
      }
    },
    set(c) {
      if (c) sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify(c));
      else sessionStorage.removeItem(CREDENTIALS_KEY);
      updateSession();
    },
  };

  async function api(method, body = {}) {
    const headers = { "Content-Type": "application/json", "X-Rocketlog-Console": "1" };
    const c = credentials.get();
    if (c) headers.Authorization = `Basic ${base64Utf8(`${c.accessKey}:${c.secretKey}`)}`;
    let res;
    try {
      res = await fetch(`api/${method}`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "UNAVAILABLE", `the broker did not answer ${method} (${e.message})`);
    }
    const text = await res.text();
    let data = {};
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        if (res.ok) throw new ApiError(res.status, "INTERNAL", `${method} answered something that is not JSON`);
        data = { message: text.trim() };
      }
    }
    if (!res.ok) {
      const message = (data && data.message) || res.statusText || `HTTP ${res.status}`;
      throw new ApiError(res.status, (data && data.code) || `HTTP ${res.status}`, message);
    }
    return data || {};
  }

  // ---------------------------------------------------------------- banners, session

  function showError(err) {
    const el = $("#error");
    const code = err && err.code ? `${err.code}: ` : "";
    el.textContent = `${code}${err && err.message ? err.message : String(err)}`;
    el.dataset.code = (err && err.code) || "";
    el.hidden = false;
  }

  function hideError() {
    const el = $("#error");
    el.hidden = true;
    el.textContent = "";
  }

  let noticeTimer = 0;
  function showNotice(text) {
    const el = $("#notice");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      el.hidden = true;
    }, 8000);
  }

  function hideNotice() {
    clearTimeout(noticeTimer);
    $("#notice").hidden = true;
  }

  function updateSession() {
    const c = credentials.get();
    $("#signout").hidden = !c;
    const who = $("#signed-in");
    who.hidden = !c;
    who.textContent = c ? `signed in as ${c.accessKey}` : "";
  }

  // ---------------------------------------------------------------- router and polling

  const app = { page: null, route: null, seq: 0, timer: 0, loaded: false, renders: 0, signingIn: false };

  function parseRoute() {
    const hash = location.hash.replace(/^#\/?/, "");
    const q = hash.indexOf("?");
    const path = q >= 0 ? hash.slice(0, q) : hash;
    const params = new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
    const parts = path.split("/").filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
    const page = parts[0] || "cluster";
    if (page === "groups" && parts.length > 1) return { page: "group", group: parts.slice(1).join("/"), params };
    return { page, params };
  }

  function navigate() {
    clearTimeout(app.timer);
    app.seq += 1;
    const route = parseRoute();
    const page = PAGES[route.page] || NOT_FOUND;
    app.page = page;
    app.route = route;
    app.loaded = false;
    delete document.body.dataset.loaded;
    document.body.dataset.page = route.page;
    window.__routeStartedAt = performance.now();
    for (const a of $$("#nav a")) {
      const active = a.dataset.nav === route.page || (route.page === "group" && a.dataset.nav === "groups");
      a.classList.toggle("active", active);
      if (active) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    hideError();
    hideNotice();
    if (app.signingIn) return;
    const view = $("#view");
    view.hidden = false;
    view.innerHTML = "";
    page.mount(view, route);
    document.title = `${page.title(route)} · rocketlog console`;
    refresh();
  }

  function markRendered() {
    app.renders += 1;
    document.body.dataset.renders = String(app.renders);
    if (!app.loaded) {
      app.loaded = true;
      window.__renderedAt = performance.now();
      document.body.dataset.loaded = "1";
    }
    $("#refreshed").textContent = `updated ${fmtClock(Date.now(), true)}`;
  }

  /** Fetches and renders the current page now, then every POLL_MS. */
  async function refresh() {
    clearTimeout(app.timer);
    if (app.signingIn) return;
    const seq = ++app.seq;
    const current = () => seq === app.seq;
    const { page, route } = app;
    if (document.hidden && app.loaded) {
      schedule();
      return;
    }
    try {
      const data = await page.fetch(route);
      if (!current()) return;
      page.render(data, route);
      hideError();
      markRendered();
    } catch (err) {
      if (!current()) return;
      if (err instanceof ApiError && err.status === 401) {
        showSignin(err);
        return;
      }
      showError(err);
      document.body.dataset.failed = String(Date.now());
    }
    if (current()) schedule();
  }

  function schedule() {
    clearTimeout(app.timer);
    app.timer = setTimeout(refresh, POLL_MS);
  }

  /** Runs an action (a form's API call); its error goes to the banner, polling goes on. */
  async function act(button, work) {
    if (button) button.disabled = true;
    try {
      await work();
      hideError();
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) showSignin(err);
      else showError(err);
      return false;
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- sign-in

  function showSignin(err) {
    clearTimeout(app.timer);
    app.seq += 1;
    app.signingIn = true;
    const failed = credentials.get();
    $("#view").hidden = true;
    $("#signin").hidden = false;
    const msg = $("#signin-error");
    if (failed) {
      // These credentials were refused: forget them, keep the access key in the form.
      credentials.set(null);
      $("#signin-access-key").value = failed.accessKey;
      $("#signin-secret-key").value = "";
      msg.textContent = err.message || "Sign-in failed.";
      msg.hidden = false;
      showError(err);
      $("#signin-secret-key").focus();
    } else {
      msg.hidden = true;
      msg.textContent = "";
      $("#signin-access-key").focus();
    }
    document.body.dataset.signin = "1";
  }

  function setupSignin() {
    $("#signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const accessKey = $("#signin-access-key").value.trim();
      const secretKey = $("#signin-secret-key").value;
      if (!accessKey) return;
      credentials.set({ accessKey, secretKey });
      $("#signin").hidden = true;
      $("#signin-error").hidden = true;
      $("#signin-secret-key").value = "";
      delete document.body.dataset.signin;
      app.signingIn = false;
      navigate();
    });
    $("#signout").addEventListener("click", (e) => {
      e.preventDefault();
      credentials.set(null);
      app.signingIn = false;
      navigate();
      showNotice("Signed out.");
    });
  }

  // ---------------------------------------------------------------- cluster page

  const clusterPage = {
    title: () => "Cluster",
    mount(view) {
      view.innerHTML = `
        <div class="page-head"><h1>Cluster</h1></div>
        <div class="cards" id="cluster-broker"></div>
        <section class="card"><h2>Replication</h2><div id="cluster-replication"></div></section>
        <section class="card"><h2>Nameservers</h2><div id="cluster-nameservers"></div></section>
        <section class="card"><h2>Brokers in the cluster</h2><div id="cluster-brokers"></div></section>`;
    },
    fetch: () => api("ClusterOverview", {}),
    render(data) {
      const b = data.broker || {};
      const role = b.role || "";
      const total = num(b.diskTotalBytes);
      const free = num(b.diskFreeBytes);
      const usedPct = total > 0 ? ((total - free) / total) * 100 : 0;
      const disk =
        total > 0
          ? `<span class="meter"><span style="width:${usedPct.toFixed(1)}%" class="${usedPct > 90 ? "bad" : usedPct > 75 ? "warn" : ""}"></span></span> ${usedPct.toFixed(1)} % <span class="muted">(${fmtBytes(total - free)} of ${fmtBytes(total)})</span>`
          : "—";
      const unflushed = Math.max(0, num(b.maxLogOffset) - num(b.flushedOffset));
      $("#cluster-broker").innerHTML = `
        <section class="card"><h2>This broker</h2><dl class="kvs">
          ${kv("Cluster", "cluster-name", esc(b.clusterName || "—"), b.clusterName || "")}
          ${kv("Broker name", "broker-name", esc(b.brokerName || "—"), b.brokerName || "")}
          ${kv("Broker id", "broker-id", fmtInt(b.brokerId), digits(b.brokerId))}
          ${kv("Role", "role", role ? badge(role, role === "master" ? "ok" : "info") : "—", role)}
          ${kv("Epoch", "epoch", fmtInt(b.epoch), digits(b.epoch))}
          ${kv("Version", "version", esc(b.version || "—"), b.version || "")}
          ${kv("Uptime", "uptime", esc(fmtDuration(b.uptimeMs)), digits(b.uptimeMs))}
          ${kv("Draining", "draining", yesNo(!!b.draining), b.draining ? "true" : "false")}
        </dl></section>
        <section class="card"><h2>Storage</h2><dl class="kvs">
          ${kv("Flush mode", "flush-mode", esc(b.flushMode || "—"), b.flushMode || "")}
          ${kv("Replication mode", "replication-mode", esc(b.replicationMode || "—"), b.replicationMode || "")}
          ${kv("Commit log min offset", "min-offset", fmtInt(b.minLogOffset), digits(b.minLogOffset))}
          ${kv("Commit log max offset", "max-offset", fmtInt(b.maxLogOffset), digits(b.maxLogOffset))}
          ${kv("Flushed offset", "flushed-offset", `${fmtInt(b.flushedOffset)}${unflushed ? ` <span class="muted">(${fmtBytes(unflushed)} not flushed)</span>` : ""}`, digits(b.flushedOffset))}
          ${kv("Disk used", "disk-used", disk, usedPct.toFixed(1))}
          ${kv("Store size", "store-size", `${fmtBytes(b.storeSizeBytes)} <span class="muted">(${fmtInt(b.storeSizeBytes)} B)</span>`, digits(b.storeSizeBytes))}
          ${kv("Topics / queues", "topic-count", `${fmtInt(b.topicCount)} / ${fmtInt(b.queueCount)}`, digits(b.topicCount))}
        </dl></section>`;

      $("#cluster-replication").innerHTML = role === "slave" ? followingHtml(b.following || {}) : slavesHtml(b.slaves || []);

      const ns = data.nameservers || [];
      $("#cluster-nameservers").innerHTML = ns.length
        ? `<table class="data" id="nameservers-table"><thead><tr><th>Address</th><th>Status</th></tr></thead><tbody>${ns
            .map(
              (n) => `<tr data-address="${esc(n.address)}">${textCell("address", n.address || "")}
                <td data-col="status" data-value="${n.reachable ? "reachable" : "unreachable"}">${
                  n.reachable ? badge("reachable", "ok") : `${badge("unreachable", "bad")} <span class="muted">${esc(n.error || "")}</span>`
                }</td></tr>`,
            )
            .join("")}</tbody></table>`
        : `<p class="muted" id="nameservers-none">This broker is configured with no nameserver.</p>`;

      const brokers = (data.brokers || []).slice().sort((x, y) => {
        const c = cmp(x.brokerName, y.brokerName);
        return c || num(x.brokerId) - num(y.brokerId);
      });
      $("#cluster-brokers").innerHTML = brokers.length
        ? `<table class="data" id="brokers-table"><thead><tr><th>Cluster</th><th>Broker name</th><th class="num">Id</th><th>Role</th><th>Client address</th><th>Replication address</th><th>Last heartbeat</th><th class="num">Topics</th></tr></thead><tbody>${brokers
            .map(
              (x) => `<tr data-broker="${esc(x.brokerName)}" data-broker-id="${esc(digits(x.brokerId))}"${x.thisBroker ? ' class="this" data-this="1"' : ""}>
                ${textCell("cluster", x.clusterName || "")}
                <td data-col="name" data-value="${esc(x.brokerName)}">${esc(x.brokerName)}${x.thisBroker ? ` ${badge("this broker", "info")}` : ""}</td>
                ${intCell("id", x.brokerId)}
                ${textCell("role", num(x.brokerId) === 0 ? "master" : "slave")}
                <td class="mono" data-col="client-address" data-value="${esc(x.clientAddress || "")}">${esc(x.clientAddress || "—")}</td>
                <td class="mono" data-col="replication-address" data-value="${esc(x.replicationAddress || "")}">${esc(x.replicationAddress || "—")}</td>
                <td data-col="heartbeat" data-value="${esc(digits(x.lastHeartbeatMs))}" title="${esc(fmtTime(x.lastHeartbeatMs))}">${esc(fmtAgo(x.lastHeartbeatMs))}</td>
                ${intCell("topics", x.topicCount)}</tr>`,
            )
            .join("")}</tbody></table>`
        : `<p class="muted" id="brokers-none">No nameserver answered with the cluster's brokers.</p>`;
    },
  };

  function slavesHtml(slaves) {
    if (!slaves.length) return `<p class="muted" id="slaves-none">A master with no slave connected.</p>`;
    return `<table class="data" id="slaves-table"><thead><tr><th class="num">Slave id</th><th>Peer</th><th class="num">Log end offset</th><th class="num">Durable offset</th><th class="num">Lag (bytes)</th><th class="num">Last ack</th></tr></thead><tbody>${slaves
      .map(
        (s) => `<tr data-slave-id="${esc(digits(s.brokerId))}">${intCell("id", s.brokerId)}
          <td class="mono" data-col="peer" data-value="${esc(s.peer || "")}">${esc(s.peer || "—")}</td>
          ${intCell("log-end", s.logEndOffset)}${intCell("durable", s.durableOffset)}
          ${intCell("lag-bytes", s.lagBytes, num(s.lagBytes) > 0 ? " warn-text" : "")}
          <td class="num" data-col="last-ack" data-value="${esc(digits(s.lastAckMsAgo))}">${esc(fmtDuration(s.lastAckMsAgo))} ago</td></tr>`,
      )
      .join("")}</tbody></table>`;
  }

  function followingHtml(f) {
    const behind = Math.max(0, num(f.masterEndOffset) - num(f.logEndOffset));
    return `<dl class="kvs" id="following">
      ${kv("Connected to the master", "following-connected", f.connected ? badge("yes", "ok") : badge("no", "bad"), f.connected ? "true" : "false")}
      ${kv("Master", "following-master", `<span class="mono">${esc(f.masterAddress || "—")}</span>`, f.masterAddress || "")}
      ${kv("Master log end", "following-master-end", fmtInt(f.masterEndOffset), digits(f.masterEndOffset))}
      ${kv("Local log end", "following-log-end", fmtInt(f.logEndOffset), digits(f.logEndOffset))}
      ${kv("Behind (bytes)", "following-behind", fmtInt(behind), String(behind))}
      ${kv("Acknowledged offset", "following-acknowledged", fmtInt(f.acknowledgedOffset), digits(f.acknowledgedOffset))}
      ${kv("State copied at", "following-state-offset", fmtInt(f.stateLogOffset), digits(f.stateLogOffset))}
      ${kv("Last error", "following-error", f.lastError ? `<span class="bad-text">${esc(f.lastError)}</span>` : "—", f.lastError || "")}
    </dl>`;
  }

  // ---------------------------------------------------------------- topics page

  const topicsState = {
    rows: [],
    version: 0, // bumped by every data render
    sorted: [],
    sortedFor: "",
    prev: null, // { at, counters: Map name -> { in, acked } }
    rates: new Map(), // name -> { in, out }
    filter: "",
    sort: { key: "name", dir: "asc" },
    pendingDelete: null,
  };

  const topicsPage = {
    title: () => "Topics",
    mount(view) {
      topicsState.pendingDelete = null;
      view.innerHTML = `
        <div class="page-head"><h1>Topics</h1><span id="topic-count" class="muted" data-value="0"></span></div>
        <section class="card">
          <h2>Create or update a topic</h2>
          <form id="topic-form" class="inline-form">
            <label>Name <input id="tf-name" name="name" required autocomplete="off" spellcheck="false"></label>
            <label>Queues <input id="tf-queues" name="queues" type="number" min="1" max="1024" value="8" required></label>
            <label>Permission <select id="tf-perm" name="perm">${PERMISSIONS.map((p) => `<option value="${p}">${enumLabel(p)}</option>`).join("")}</select></label>
            <fieldset class="types"><legend>Message types</legend>${MESSAGE_TYPES.map(
              (t) => `<label class="check"><input type="checkbox" id="tf-type-${t.toLowerCase()}" value="${t}"${t === "NORMAL" ? " checked" : ""}> ${enumLabel(t)}</label>`,
            ).join("")}</fieldset>
            <button id="tf-submit" type="submit" class="primary">Save topic</button>
          </form>
        </section>
        <div class="toolbar"><input id="topic-filter" type="search" placeholder="Filter topics by name" aria-label="Filter topics by name" autocomplete="off" value="${esc(topicsState.filter)}"></div>
        <table class="data grid-table" id="topics-table">
          <thead><tr>
            <th data-sort="name">Topic</th><th data-sort="queues" data-numeric="1" class="num">Queues</th>
            <th data-sort="perm">Permission</th><th data-sort="types">Message types</th>
            <th data-sort="messagesIn" data-numeric="1" class="num">Messages in</th>
            <th data-sort="stored" data-numeric="1" class="num">Stored</th>
            <th data-sort="inRate" data-numeric="1" class="num" title="Messages written per second between the last two refreshes">In msgs/s</th>
            <th data-sort="outRate" data-numeric="1" class="num" title="Messages acknowledged per second (all groups) between the last two refreshes">Out msgs/s</th>
            <th data-sort="groups" data-numeric="1" class="num">Groups</th><th class="actions"></th>
          </tr></thead>
          <tbody id="topics-body"></tbody>
        </table>`;
      const filter = $("#topic-filter");
      let pending = 0;
      filter.addEventListener("input", () => {
        topicsState.filter = filter.value;
        cancelAnimationFrame(pending);
        pending = requestAnimationFrame(renderTopicsTable);
      });
      onSortClick($("#topics-table"), topicsState.sort, renderTopicsTable);
      $("#topics-body").addEventListener("click", onTopicsClick);
      $("#topic-form").addEventListener("submit", onTopicSubmit);
    },
    fetch: () => api("ListTopics", { withStats: true }),
    render(data) {
      const topics = data.topics || [];
      const stats = new Map((data.stats || []).map((s) => [s.name, s]));
      const now = performance.now();
      const prev = topicsState.prev;
      const dt = prev ? (now - prev.at) / 1000 : 0;
      const fresh = dt >= 1;
      const counters = new Map();
      topicsState.rows = topics.map((t) => {
        const s = stats.get(t.name) || {};
        const row = {
          name: t.name || "",
          queues: num(t.queueNums),
          perm: t.perm || "PERMISSION_UNSPECIFIED",
          types: (t.messageTypes || []).join(","),
          messagesIn: num(s.messagesIn),
          messagesInRaw: digits(s.messagesIn),
          stored: num(s.messagesStored),
          storedRaw: digits(s.messagesStored),
          acked: num(s.messagesAcked),
          groups: num(s.consumerGroups),
        };
        counters.set(row.name, { in: row.messagesIn, acked: row.acked });
        if (fresh) {
          const before = prev.counters.get(row.name);
          if (before) {
            topicsState.rates.set(row.name, {
              in: Math.max(0, row.messagesIn - before.in) / dt,
              out: Math.max(0, row.acked - before.acked) / dt,
            });
          }
        }
        const r = topicsState.rates.get(row.name);
        row.inRate = r ? r.in : -1;
        row.outRate = r ? r.out : -1;
        return row;
      });
      if (!prev || fresh) topicsState.prev = { at: now, counters };
      topicsState.version += 1;
      renderTopicsTable();
    },
  };

  const rateCell = (col, v) =>
    v < 0
      ? `<td class="num muted" data-col="${col}" data-value="" title="Known after the next refresh">—</td>`
      : `<td class="num" data-col="${col}" data-value="${v.toFixed(2)}">${v.toFixed(v >= 100 ? 0 : 1)}</td>`;

  function topicRowHtml(r, confirming) {
    const types = r.types ? r.types.split(",").map((t) => badge(enumLabel(t), `type-${t.toLowerCase()}`)).join(" ") : "—";
    return `<tr data-topic="${esc(r.name)}">
      <td data-col="name" data-value="${esc(r.name)}" class="name">${esc(r.name)}</td>
      <td class="num" data-col="queues" data-value="${r.queues}">${r.queues}</td>
      <td data-col="perm" data-value="${esc(r.perm)}">${esc(enumLabel(r.perm))}</td>
      <td data-col="types" data-value="${esc(r.types)}">${types}</td>
      <td class="num" data-col="in" data-value="${esc(r.messagesInRaw)}">${fmtInt(r.messagesInRaw)}</td>
      <td class="num" data-col="stored" data-value="${esc(r.storedRaw)}">${fmtInt(r.storedRaw)}</td>
      ${rateCell("in-rate", r.inRate)}${rateCell("out-rate", r.outRate)}
      <td class="num" data-col="groups" data-value="${r.groups}">${r.groups}</td>
      <td class="actions"><button type="button" class="small" data-action="edit">Edit</button> <button type="button" class="small danger-outline" data-action="delete"${confirming ? " disabled" : ""}>Delete</button></td></tr>${
        confirming
          ? `<tr class="confirm-row" data-confirm-topic="${esc(r.name)}"><td colspan="10"><span class="confirm">Delete topic <b>${esc(r.name)}</b> and its messages?</span> <button type="button" class="danger small" data-action="confirm-delete">Delete topic</button> <button type="button" class="small" data-action="cancel-delete">Cancel</button></td></tr>`
          : ""
      }`;
  }

  /**
   * Draws the topics table: one innerHTML of every row, sorted, when the data, the order or
   * the row awaiting a delete confirmation changed; a filter change only hides rows.
   */
  function renderTopicsTable() {
    const body = $("#topics-body");
    if (!body) return;
    const st = topicsState;
    const needle = st.filter.trim().toLowerCase();
    const matches = (name) => !needle || name.toLowerCase().includes(needle);
    const drawnFor = `${st.version}|${st.sort.key}|${st.sort.dir}|${st.pendingDelete}`;
    let shown = 0;
    if (body.dataset.drawnFor !== drawnFor) {
      const sortedFor = `${st.version}|${st.sort.key}|${st.sort.dir}`;
      if (st.sortedFor !== sortedFor) {
        st.sorted = sortRows(st.rows, st.sort.key, st.sort.dir, "name");
        st.sortedFor = sortedFor;
      }
      const parts = new Array(st.sorted.length);
      for (let i = 0; i < st.sorted.length; i += 1) {
        const r = st.sorted[i];
        let html;
        if (st.pendingDelete === r.name) html = topicRowHtml(r, true);
        else {
          if (!r.html) r.html = topicRowHtml(r, false);
          html = r.html;
        }
        if (matches(r.name)) shown += 1;
        else html = html.replace(/<tr /g, "<tr hidden ");
        parts[i] = html;
      }
      parts.push(`<tr class="empty" data-empty="1"><td colspan="10" class="muted"></td></tr>`);
      body.innerHTML = parts.join("");
      body.dataset.drawnFor = drawnFor;
      markSorted($("#topics-table"), st.sort.key, st.sort.dir);
    } else {
      for (const tr of body.rows) {
        const name = tr.dataset.topic ?? tr.dataset.confirmTopic;
        if (name === undefined) continue;
        const show = matches(name);
        if (tr.hidden === show) tr.hidden = !show;
        if (show && tr.dataset.topic !== undefined) shown += 1;
      }
    }
    const empty = body.querySelector("tr[data-empty]");
    empty.hidden = shown > 0;
    empty.firstElementChild.textContent = st.rows.length ? "No topic matches the filter." : "No topics.";
    const count = $("#topic-count");
    count.dataset.value = String(st.rows.length);
    count.dataset.shown = String(shown);
    count.textContent =
      shown === st.rows.length
        ? `${fmtInt(st.rows.length)} topic${st.rows.length === 1 ? "" : "s"}`
        : `${fmtInt(shown)} of ${fmtInt(st.rows.length)} topics`;
  }

  function onTopicsClick(e) {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const tr = button.closest("tr");
    const name = tr.dataset.topic ?? tr.dataset.confirmTopic;
    const action = button.dataset.action;
    if (action === "delete") {
      topicsState.pendingDelete = name;
      renderTopicsTable();
    } else if (action === "cancel-delete") {
      topicsState.pendingDelete = null;
      renderTopicsTable();
    } else if (action === "confirm-delete") {
      act(button, async () => {
        await api("DeleteTopic", { name });
        topicsState.pendingDelete = null;
        showNotice(`Topic ${name} deleted.`);
        refresh();
      });
    } else if (action === "edit") {
      const row = topicsState.rows.find((r) => r.name === name);
      if (!row) return;
      $("#tf-name").value = row.name;
      $("#tf-queues").value = String(row.queues || 1);
      if (PERMISSIONS.includes(row.perm)) $("#tf-perm").value = row.perm;
      const types = row.types.split(",");
      for (const t of MESSAGE_TYPES) $(`#tf-type-${t.toLowerCase()}`).checked = types.includes(t);
      $("#topic-form").scrollIntoView({ block: "nearest" });
      $("#tf-queues").focus();
    }
  }

  function onTopicSubmit(e) {
    e.preventDefault();
    const name = $("#tf-name").value.trim();
    const topic = {
      name,
      queueNums: Number($("#tf-queues").value),
      perm: $("#tf-perm").value,
      messageTypes: MESSAGE_TYPES.filter((t) => $(`#tf-type-${t.toLowerCase()}`).checked),
    };
    act($("#tf-submit"), async () => {
      const res = await api("CreateOrUpdateTopic", { topic });
      showNotice(`Topic ${name} ${res.created ? "created" : "updated"}.`);
      $("#tf-name").value = "";
      refresh();
    });
  }

  // ---------------------------------------------------------------- groups page

  const groupsState = { rows: [], filter: "", sort: { key: "group", dir: "asc" } };

  const groupsPage = {
    title: () => "Consumer groups",
    mount(view) {
      view.innerHTML = `
        <div class="page-head"><h1>Consumer groups</h1><span id="group-count" class="muted" data-value="0"></span></div>
        <div class="toolbar"><input id="group-filter" type="search" placeholder="Filter groups by name" aria-label="Filter groups by name" autocomplete="off" value="${esc(groupsState.filter)}"></div>
        <table class="data grid-table" id="groups-table">
          <thead><tr><th data-sort="group">Group</th><th data-sort="topics">Topics</th>
            <th data-sort="lag" data-numeric="1" class="num">Lag</th><th data-sort="inflight" data-numeric="1" class="num">In flight</th>
            <th data-sort="dlq" data-numeric="1" class="num">DLQ messages</th></tr></thead>
          <tbody id="groups-body"></tbody>
        </table>`;
      const filter = $("#group-filter");
      filter.addEventListener("input", () => {
        groupsState.filter = filter.value;
        renderGroupsTable();
      });
      onSortClick($("#groups-table"), groupsState.sort, renderGroupsTable);
    },
    fetch: () => api("ListConsumerGroups", {}),
    render(data) {
      groupsState.rows = (data.groups || []).map((g) => ({
        group: g.group || "",
        topics: (g.topics || []).slice().sort().join(", "),
        lag: num(g.totalLag),
        lagRaw: digits(g.totalLag),
        inflight: num(g.totalInflight),
        inflightRaw: digits(g.totalInflight),
        dlq: num(g.dlqMessages),
        dlqRaw: digits(g.dlqMessages),
      }));
      renderGroupsTable();
    },
  };

  function renderGroupsTable() {
    const body = $("#groups-body");
    if (!body) return;
    const st = groupsState;
    const needle = st.filter.trim().toLowerCase();
    const shown = needle ? st.rows.filter((r) => r.group.toLowerCase().includes(needle)) : st.rows;
    const rows = sortRows(shown, st.sort.key, st.sort.dir, "group");
    let html = "";
    for (const r of rows) {
      html += `<tr data-group="${esc(r.group)}">
        <td data-col="group" data-value="${esc(r.group)}"><a href="#/groups/${encodeURIComponent(r.group)}">${esc(r.group)}</a></td>
        <td data-col="topics" data-value="${esc(r.topics)}">${esc(r.topics || "—")}</td>
        ${intCell("lag", r.lagRaw, r.lag > 0 ? " strong" : "")}${intCell("inflight", r.inflightRaw)}
        ${intCell("dlq", r.dlqRaw, r.dlq > 0 ? " bad-text" : "")}</tr>`;
    }
    if (!rows.length) {
      html = `<tr class="empty"><td colspan="5" class="muted">${st.rows.length ? "No group matches the filter." : "No consumer group has state on this broker."}</td></tr>`;
    }
    body.innerHTML = html;
    markSorted($("#groups-table"), st.sort.key, st.sort.dir);
    const count = $("#group-count");
    count.dataset.value = String(st.rows.length);
    count.textContent = `${fmtInt(st.rows.length)} group${st.rows.length === 1 ? "" : "s"}`;
  }

  // ---------------------------------------------------------------- group detail page

  const groupState = { pending: null, chart: null, history: null };

  const groupPage = {
    title: (route) => `Group ${route.group}`,
    mount(view, route) {
      groupState.pending = null;
      groupState.chart = null;
      groupState.history = null;
      view.innerHTML = `
        <p class="crumbs"><a href="#/groups">Consumer groups</a> /</p>
        <div class="page-head"><h1 id="group-name" data-value="${esc(route.group)}">${esc(route.group)}</h1></div>
        <div class="stats">
          <div class="stat"><span class="label">Total lag</span><span class="value" id="g-total-lag" data-value="">…</span></div>
          <div class="stat"><span class="label">In flight</span><span class="value" id="g-total-inflight" data-value="">…</span></div>
          <div class="stat"><span class="label">DLQ messages</span><span class="value" id="g-dlq" data-value="">…</span></div>
          <div class="stat"><span class="label">Queues</span><span class="value" id="g-queues" data-value="">…</span></div>
        </div>
        <section class="card"><h2>Lag over the last hour</h2>
          <div class="chart-wrap"><div id="lag-chart" class="chart"></div><div id="lag-tooltip" class="tooltip" hidden></div></div>
          <ul id="lag-legend" class="legend"></ul>
        </section>
        <section class="card"><h2>Queues</h2>
          <table class="data" id="queues-table">
            <thead><tr><th>Topic</th><th class="num">Queue</th><th class="num">Broker offset</th><th class="num">Consumer offset</th><th class="num">Lag</th><th class="num">In flight</th></tr></thead>
            <tbody id="queues-body"></tbody><tfoot id="queues-foot"></tfoot>
          </table>
        </section>
        <section class="card"><h2>Reset offset to a time</h2>
          <p class="muted">The group resumes on the topic at the first message stored at or after the time.</p>
          <form id="reset-form" class="inline-form">
            <label>Topic <select id="reset-topic" required></select></label>
            <label>Time <input id="reset-time" type="datetime-local" step="1" required></label>
            <button id="reset-submit" type="submit">Reset to this time</button>
            <button id="reset-earliest" type="button">Earliest</button>
            <button id="reset-now" type="button">Now</button>
          </form>
          <div id="reset-confirm" class="confirm-box" hidden>
            <span id="reset-confirm-text"></span>
            <button id="reset-confirm-yes" type="button" class="danger">Reset offsets</button>
            <button id="reset-cancel" type="button">Cancel</button>
          </div>
          <div id="reset-result"></div>
        </section>`;
      $("#reset-time").value = localInputValue(Date.now());
      const ask = (timestampMs, label) => {
        const topic = $("#reset-topic").value;
        if (!topic) {
          showError(new ApiError(0, "", "The group has no topic to reset."));
          return;
        }
        groupState.pending = { topic, timestampMs, label };
        $("#reset-confirm-text").textContent = `Reset group ${route.group} on topic ${topic} to ${label}?`;
        $("#reset-confirm").hidden = false;
        $("#reset-confirm-yes").focus();
      };
      $("#reset-form").addEventListener("submit", (e) => {
        e.preventDefault();
        const t = new Date($("#reset-time").value).getTime();
        if (!Number.isFinite(t)) {
          showError(new ApiError(0, "", "Pick a date and time."));
          return;
        }
        ask(t, fmtTime(t));
      });
      $("#reset-earliest").addEventListener("click", () => ask(0, "the earliest stored message"));
      $("#reset-now").addEventListener("click", () => ask(Date.now(), `now (${fmtTime(Date.now())})`));
      $("#reset-cancel").addEventListener("click", () => {
        groupState.pending = null;
        $("#reset-confirm").hidden = true;
      });
      $("#reset-confirm-yes").addEventListener("click", (e) => {
        const p = groupState.pending;
        if (!p) return;
        act(e.currentTarget, async () => {
          const res = await api("ResetConsumerOffset", { group: route.group, topic: p.topic, timestampMs: String(p.timestampMs) });
          groupState.pending = null;
          $("#reset-confirm").hidden = true;
          const offsets = (res.offsets || []).slice().sort((a, b) => num(a.queueId) - num(b.queueId));
          $("#reset-result").innerHTML = `<h3>New offsets of ${esc(p.topic)} (${esc(p.label)})</h3>
            <table class="data narrow" id="reset-offsets" data-topic="${esc(p.topic)}"><thead><tr><th class="num">Queue</th><th class="num">Offset</th></tr></thead><tbody>${
              offsets.map((o) => `<tr data-queue="${num(o.queueId)}">${intCell("queue", o.queueId)}${intCell("offset", o.offset)}</tr>`).join("") ||
              `<tr class="empty"><td colspan="2" class="muted">No queue was reset.</td></tr>`
            }</tbody></table>`;
          showNotice(`Offsets of ${route.group} on ${p.topic} reset to ${p.label}.`);
          refresh();
        });
      });
      const chart = $("#lag-chart");
      chart.addEventListener("mousemove", onChartHover);
      chart.addEventListener("mouseleave", () => {
        $("#lag-tooltip").hidden = true;
        const cursor = $("#lag-cursor");
        if (cursor) cursor.setAttribute("visibility", "hidden");
      });
    },
    async fetch(route) {
      const [describe, history] = await Promise.allSettled([
        api("DescribeConsumerGroup", { group: route.group }),
        api("ConsumerLagHistory", { group: route.group }),
      ]);
      if (describe.status === "rejected") throw describe.reason;
      if (history.status === "rejected" && history.reason instanceof ApiError && history.reason.status === 401) throw history.reason;
      return { describe: describe.value, history: history.status === "fulfilled" ? history.value : null, historyError: history.reason };
    },
    render(data) {
      const d = data.describe || {};
      const queues = (d.queues || []).slice().sort((a, b) => cmp(a.topic, b.topic) || num(a.queueId) - num(b.queueId));
      const setStat = (id, v) => {
        const el = $(id);
        el.dataset.value = digits(v);
        el.textContent = fmtInt(v);
      };
      setStat("#g-total-lag", d.totalLag);
      setStat("#g-total-inflight", d.totalInflight);
      setStat("#g-dlq", d.dlqMessages);
      setStat("#g-queues", queues.length);
      $("#g-dlq").classList.toggle("bad-text", num(d.dlqMessages) > 0);

      const maxLag = queues.reduce((m, q) => Math.max(m, num(q.lag)), 0);
      let sumBroker = 0;
      let sumConsumer = 0;
      $("#queues-body").innerHTML =
        queues
          .map((q) => {
            sumBroker += num(q.brokerOffset);
            sumConsumer += num(q.consumerOffset);
            const share = maxLag > 0 ? (num(q.lag) / maxLag) * 100 : 0;
            return `<tr data-topic="${esc(q.topic)}" data-queue="${num(q.queueId)}">
              ${textCell("topic", q.topic || "")}${intCell("queue", q.queueId)}
              ${intCell("broker-offset", q.brokerOffset)}${intCell("consumer-offset", q.consumerOffset)}
              <td class="num lag" data-col="lag" data-value="${esc(digits(q.lag))}"><span class="lagbar" style="width:${share.toFixed(1)}%"></span><span class="v">${fmtInt(q.lag)}</span></td>
              ${intCell("inflight", q.inflight)}</tr>`;
          })
          .join("") || `<tr class="empty"><td colspan="6" class="muted">The group has no state on any queue.</td></tr>`;
      $("#queues-foot").innerHTML = `<tr class="total"><td>Total</td><td></td>
        <td class="num" data-col="broker-offset" data-value="${sumBroker}">${fmtInt(sumBroker)}</td>
        <td class="num" data-col="consumer-offset" data-value="${sumConsumer}">${fmtInt(sumConsumer)}</td>
        <td class="num" data-col="lag" data-testid="queues-total-lag" data-value="${esc(digits(d.totalLag))}">${fmtInt(d.totalLag)}</td>
        <td class="num" data-col="inflight" data-testid="queues-total-inflight" data-value="${esc(digits(d.totalInflight))}">${fmtInt(d.totalInflight)}</td></tr>`;

      const select = $("#reset-topic");
      const topics = Array.from(new Set(queues.map((q) => q.topic || ""))).filter(Boolean).sort();
      const current = Array.from(select.options, (o) => o.value);
      if (current.join("\n") !== topics.join("\n")) {
        const keep = select.value;
        select.innerHTML = topics.map((t) => `<option value="${esc(t)}">${esc(t)}</option>`).join("");
        if (topics.includes(keep)) select.value = keep;
      }

      if (data.history) renderLagChart(data.history);
      else {
        const why = data.historyError && data.historyError.message ? data.historyError.message : "unavailable";
        $("#lag-chart").innerHTML = `<p class="muted" id="lag-chart-empty">Lag history: ${esc(why)}</p>`;
        $("#lag-legend").innerHTML = "";
      }
    },
  };

  const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#4f46e5"];
  const seriesColor = (i) => (i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360} 65% 45%)`);

  /** At most `max` points: the largest lag of each time bucket (lag peaks stay visible). */
  function reducePoints(pts, t0, t1, max) {
    if (pts.length <= max) return pts;
    const out = [];
    const span = Math.max(1, t1 - t0);
    let bucket = -1;
    let best = null;
    for (const p of pts) {
      const b = Math.min(max - 1, Math.floor(((p[0] - t0) / span) * max));
      if (b !== bucket) {
        if (best) out.push(best);
        bucket = b;
        best = p;
      } else if (p[1] >= best[1]) best = [p[0], p[1]];
    }
    if (best) out.push(best);
    return out;
  }

  /** 1, 2 or 5 times a power of ten, at least v/ticks per tick. */
  function niceStep(v, ticks) {
    const raw = Math.max(1, v / ticks);
    const pow = 10 ** Math.floor(Math.log10(raw));
    const m = raw / pow;
    const step = (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * pow;
    return Math.max(1, Math.round(step));
  }

  function renderLagChart(history) {
    groupState.history = history;
    const el = $("#lag-chart");
    const legend = $("#lag-legend");
    const series = (history.series || [])
      .map((s) => ({
        label: `${s.topic || ""} / ${num(s.queueId)}`,
        topic: s.topic || "",
        queue: num(s.queueId),
        pts: (s.points || []).map((p) => [num(p.timeMs), num(p.lag)]).filter((p) => p[0] > 0),
      }))
      .filter((s) => s.pts.length)
      .sort((a, b) => cmp(a.topic, b.topic) || a.queue - b.queue);
    if (!series.length) {
      groupState.chart = null;
      el.innerHTML = `<p class="muted" id="lag-chart-empty">No lag samples yet: the broker samples every ${esc(fmtDuration(history.intervalMs || 0))}.</p>`;
      legend.innerHTML = "";
      return;
    }
    series.forEach((s, i) => {
      s.color = seriesColor(i);
      s.pts.sort((a, b) => a[0] - b[0]);
    });
    // The total: the sum over queues at every sampling instant.
    const totals = new Map();
    for (const s of series) for (const [t, v] of s.pts) totals.set(t, (totals.get(t) || 0) + v);
    const total = series.length > 1 ? { label: "total", color: "currentColor", pts: Array.from(totals.entries()).sort((a, b) => a[0] - b[0]), total: true } : null;

    let t0 = Infinity;
    let t1 = -Infinity;
    let vmax = 0;
    for (const s of total ? [...series, total] : series) {
      t0 = Math.min(t0, s.pts[0][0]);
      t1 = Math.max(t1, s.pts[s.pts.length - 1][0]);
      for (const p of s.pts) vmax = Math.max(vmax, p[1]);
    }
    if (t1 - t0 < 1000) t0 = t1 - 60000;
    // Drawn at the container's own width so text is never stretched.
    const W = Math.max(360, Math.round(el.clientWidth || 900));
    const H = 260;
    const M = { l: 60, r: 14, t: 10, b: 26 };
    const pw = W - M.l - M.r;
    const ph = H - M.t - M.b;
    const step = niceStep(vmax || 1, 4);
    const ymax = Math.max(step, Math.ceil((vmax || 1) / step) * step);
    const x = (t) => M.l + ((t - t0) / (t1 - t0)) * pw;
    const y = (v) => M.t + ph - (v / ymax) * ph;

    let svg = `<svg id="lag-svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="Lag per queue over time">`;
    for (let v = 0; v <= ymax; v += step) {
      svg += `<line class="grid" x1="${M.l}" x2="${W - M.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`;
      svg += `<text class="axis" x="${M.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${esc(fmtInt(v))}</text>`;
    }
    const span = t1 - t0;
    const withSeconds = span < 10 * 60 * 1000;
    const xticks = 6;
    for (let i = 0; i <= xticks; i += 1) {
      const t = t0 + (span * i) / xticks;
      const anchor = i === 0 ? "start" : i === xticks ? "end" : "middle";
      svg += `<line class="tick" x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="${M.t + ph}" y2="${M.t + ph + 4}"/>`;
      svg += `<text class="axis" x="${x(t).toFixed(1)}" y="${H - 6}" text-anchor="${anchor}">${fmtClock(t, withSeconds)}</text>`;
    }
    svg += `<line class="axis-line" x1="${M.l}" x2="${W - M.r}" y1="${M.t + ph}" y2="${M.t + ph}"/>`;
    const line = (s, cls) => {
      const pts = reducePoints(s.pts, t0, t1, CHART_MAX_POINTS);
      const attr = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      let out = `<polyline class="${cls}" data-series="${esc(s.label)}" data-points="${pts.length}" points="${attr}" stroke="${s.color}" vector-effect="non-scaling-stroke"><title>${esc(s.label)}</title></polyline>`;
      if (pts.length === 1) out += `<circle class="dot" cx="${x(pts[0][0]).toFixed(1)}" cy="${y(pts[0][1]).toFixed(1)}" r="3" fill="${s.color}"/>`;
      return out;
    };
    for (const s of series) svg += line(s, "series");
    if (total) svg += line(total, "series total");
    svg += `<line id="lag-cursor" class="cursor" x1="0" x2="0" y1="${M.t}" y2="${M.t + ph}" visibility="hidden"/>`;
    svg += `</svg>`;
    el.innerHTML = svg;
    groupState.chart = { series, total, t0, t1, W, M, pw };

    const lastOf = (s) => s.pts[s.pts.length - 1][1];
    legend.innerHTML =
      series
        .map(
          (s) =>
            `<li data-series="${esc(s.label)}"><span class="swatch" style="background:${s.color}"></span>${esc(s.label)} <span class="muted">${fmtInt(lastOf(s))}</span></li>`,
        )
        .join("") +
      (total ? `<li data-series="total"><span class="swatch total"></span>total <span class="muted">${fmtInt(lastOf(total))}</span></li>` : "");
  }

  /** The point of sorted `pts` closest in time to `t`. */
  function nearest(pts, t) {
    let lo = 0;
    let hi = pts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pts[mid][0] < t) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && Math.abs(pts[lo - 1][0] - t) < Math.abs(pts[lo][0] - t)) lo -= 1;
    return pts[lo];
  }

  function onChartHover(e) {
    const c = groupState.chart;
    const svg = $("#lag-svg");
    if (!c || !svg) return;
    const box = svg.getBoundingClientRect();
    const vx = ((e.clientX - box.left) / box.width) * c.W;
    if (vx < c.M.l || vx > c.M.l + c.pw) return;
    const t = c.t0 + ((vx - c.M.l) / c.pw) * (c.t1 - c.t0);
    const ref = nearest((c.total || c.series[0]).pts, t);
    const cursor = $("#lag-cursor");
    const cx = c.M.l + ((ref[0] - c.t0) / (c.t1 - c.t0)) * c.pw;
    cursor.setAttribute("x1", cx.toFixed(1));
    cursor.setAttribute("x2", cx.toFixed(1));
    cursor.setAttribute("visibility", "visible");
    const rows = c.series
      .map((s) => ({ s, p: nearest(s.pts, ref[0]) }))
      .sort((a, b) => b.p[1] - a.p[1])
      .slice(0, 10)
      .map(({ s, p }) => `<div><span class="swatch" style="background:${s.color}"></span>${esc(s.label)}: <b>${fmtInt(p[1])}</b></div>`)
      .join("");
    const tip = $("#lag-tooltip");
    tip.innerHTML = `<div class="muted">${esc(fmtTime(ref[0]))}</div>${c.total ? `<div>total: <b>${fmtInt(ref[1])}</b></div>` : ""}${rows}`;
    tip.hidden = false;
    const wrap = tip.parentElement.getBoundingClientRect();
    const left = e.clientX - wrap.left + 14;
    tip.style.left = `${Math.min(left, wrap.width - tip.offsetWidth - 4)}px`;
    tip.style.top = `${Math.max(0, e.clientY - wrap.top - tip.offsetHeight - 8)}px`;
  }

  // ---------------------------------------------------------------- messages page

  const messagesState = { views: new Map(), lastJson: "", topicsLoaded: false };

  const messagesPage = {
    title: () => "Messages",
    mount(view, route) {
      messagesState.lastJson = "";
      const p = route.params;
      const byKey = !p.get("id") && (p.get("topic") || p.get("key"));
      view.innerHTML = `
        <div class="page-head"><h1>Messages</h1></div>
        <section class="card">
          <form id="lookup-form" class="inline-form">
            <fieldset class="by"><legend>Look up</legend>
              <label class="check"><input type="radio" name="by" value="id" id="lookup-by-id"${byKey ? "" : " checked"}> by message id</label>
              <label class="check"><input type="radio" name="by" value="key" id="lookup-by-key"${byKey ? " checked" : ""}> by topic and key</label>
            </fieldset>
            <label data-by="id">Message id <input id="lookup-id" class="mono wide" autocomplete="off" spellcheck="false" value="${esc(p.get("id") || "")}"></label>
            <label data-by="key">Topic <input id="lookup-topic" list="topic-names" autocomplete="off" spellcheck="false" value="${esc(p.get("topic") || "")}"></label>
            <label data-by="key">Key <input id="lookup-key" autocomplete="off" spellcheck="false" value="${esc(p.get("key") || "")}"></label>
            <button id="lookup-submit" type="submit" class="primary">Look up</button>
          </form>
          <datalist id="topic-names"></datalist>
        </section>
        <div id="messages-result"></div>`;
      const showBy = () => {
        const by = $("#lookup-by-key").checked ? "key" : "id";
        for (const el of $$("[data-by]", view)) el.hidden = el.dataset.by !== by;
      };
      for (const r of $$('input[name="by"]', view)) r.addEventListener("change", showBy);
      showBy();
      $("#lookup-form").addEventListener("submit", (e) => {
        e.preventDefault();
        const q = new URLSearchParams();
        if ($("#lookup-by-key").checked) {
          q.set("topic", $("#lookup-topic").value.trim());
          q.set("key", $("#lookup-key").value.trim());
        } else {
          q.set("id", $("#lookup-id").value.trim());
        }
        const hash = `#/messages?${q.toString()}`;
        if (location.hash === hash) refresh();
        else location.hash = hash;
      });
      $("#messages-result").addEventListener("click", (e) => {
        const b = e.target.closest("button[data-view]");
        if (!b) return;
        const card = b.closest("[data-message-key]");
        messagesState.views.set(card.dataset.messageKey, b.dataset.view);
        renderBody(card);
      });
      // Topic names for the topic field's suggestions; the page works without them.
      api("ListTopics", {})
        .then((res) => {
          const list = $("#topic-names");
          if (list) list.innerHTML = (res.topics || []).map((t) => `<option value="${esc(t.name)}"></option>`).join("");
        })
        .catch(() => {});
    },
    fetch(route) {
      const p = route.params;
      const id = (p.get("id") || "").trim();
      const topic = (p.get("topic") || "").trim();
      const key = (p.get("key") || "").trim();
      if (id) return api("LookupMessage", { messageId: id, withBody: true }).then((r) => ({ query: `message id ${id}`, result: r }));
      if (topic || key) return api("LookupMessage", { key: { topic, key }, withBody: true }).then((r) => ({ query: `key ${key} in topic ${topic}`, result: r }));
      return Promise.resolve(null);
    },
    render(data) {
      const out = $("#messages-result");
      if (!data) {
        out.innerHTML = `<p class="muted" id="messages-hint">Look a message up by its id, or by its topic and one of its keys.</p>`;
        return;
      }
      const json = JSON.stringify(data);
      if (json === messagesState.lastJson) return;
      messagesState.lastJson = json;
      const messages = data.result.messages || [];
      out.innerHTML =
        `<p id="messages-count" data-value="${messages.length}">${messages.length ? `${messages.length} message${messages.length === 1 ? "" : "s"} for ${esc(data.query)}` : `No message found for ${esc(data.query)}.`}</p>` +
        messages.map(messageHtml).join("");
      for (const card of $$("[data-message-key]", out)) renderBody(card);
    },
  };

  const messageKey = (m) => `${m.messageId || ""}@${digits(m.physicalOffset)}`;

  const DELIVERY_KINDS = { acked: "ok", in_flight: "info", held: "warn", pending: "" };

  function messageHtml(m, i) {
    const props = Object.entries(m.properties || {}).sort((a, b) => cmp(a[0], b[0]));
    const keys = m.keys || [];
    const deliveries = (m.deliveries || []).slice().sort((a, b) => cmp(a.group, b.group));
    const field = (label, name, html, value) =>
      `<div class="kv"><dt>${esc(label)}</dt><dd data-field="${name}" data-value="${esc(value)}">${html}</dd></div>`;
    const attempts = num(m.reconsumeTimes) + 1;
    const delay = m.delayState || "";
    const tx = m.transactionState || "";
    const bodySize = num(m.bodySize);
    return `<article class="card message" data-message-id="${esc(m.messageId || "")}" data-topic="${esc(m.topic || "")}" data-message-key="${esc(messageKey(m))}" data-index="${i}" data-body="${esc(m.body || "")}" data-body-size="${bodySize}">
      <h2><span class="mono">${esc(m.messageId || "—")}</span> ${badge(m.topic || "", "info")}</h2>
      <dl class="kvs grid">
        ${field("Topic", "topic", esc(m.topic || ""), m.topic || "")}
        ${field("Queue", "queueId", fmtInt(m.queueId), digits(m.queueId))}
        ${field("Queue offset", "queueOffset", fmtInt(m.queueOffset), digits(m.queueOffset))}
        ${field("Physical offset", "physicalOffset", fmtInt(m.physicalOffset), digits(m.physicalOffset))}
        ${field("Message id", "messageId", `<span class="mono">${esc(m.messageId || "")}</span>`, m.messageId || "")}
        ${field("Keys", "keys", keys.length ? keys.map((k) => `<span class="chip">${esc(k)}</span>`).join(" ") : "—", keys.join(","))}
        ${field("Tag", "tag", m.tag ? `<span class="chip">${esc(m.tag)}</span>` : "—", m.tag || "")}
        ${field("Born", "bornTimestampMs", esc(fmtTime(m.bornTimestampMs)), digits(m.bornTimestampMs))}
        ${field("Stored", "storeTimestampMs", esc(fmtTime(m.storeTimestampMs)), digits(m.storeTimestampMs))}
        ${field("Body size", "bodySize", `${fmtInt(bodySize)} B`, String(bodySize))}
        ${field("Reconsume times", "reconsumeTimes", fmtInt(m.reconsumeTimes), digits(m.reconsumeTimes))}
        ${field("Delivery attempts", "deliveryAttempts", fmtInt(attempts), String(attempts))}
        ${field("Delay", "delayState", delay ? badge(delay, delay === "scheduled" ? "warn" : "ok") : "not delayed", delay)}
        ${field("Deliver at", "deliverAtMs", esc(fmtTime(m.deliverAtMs)), digits(m.deliverAtMs))}
        ${field("Transaction", "transactionState", tx ? badge(tx.replace(/_/g, " "), tx === "committed" ? "ok" : tx === "open" ? "warn" : "bad") : "not transactional", tx)}
      </dl>
      <div class="columns">
        <section><h3>Delivery per consumer group</h3>${
          deliveries.length
            ? `<table class="data deliveries"><thead><tr><th>Group</th><th>State</th></tr></thead><tbody>${deliveries
                .map(
                  (d) =>
                    `<tr data-group="${esc(d.group)}"><td data-col="group" data-value="${esc(d.group)}"><a href="#/groups/${encodeURIComponent(d.group || "")}">${esc(d.group)}</a></td><td data-col="state" data-value="${esc(d.state || "")}">${badge(String(d.state || "unknown").replace(/_/g, " "), DELIVERY_KINDS[d.state] ?? "")}</td></tr>`,
                )
                .join("")}</tbody></table>`
            : `<p class="muted deliveries-none">No consumer group has state on this queue.</p>`
        }</section>
        <section><h3>Properties</h3>${
          props.length
            ? `<table class="data props"><thead><tr><th>Name</th><th>Value</th></tr></thead><tbody>${props
                .map(([k, v]) => `<tr data-prop="${esc(k)}"><td class="mono">${esc(k)}</td><td class="mono value" data-value="${esc(v)}">${esc(v)}</td></tr>`)
                .join("")}</tbody></table>`
            : `<p class="muted">No properties.</p>`
        }</section>
      </div>
      <section class="body-box"><h3>Body <span class="views"><button type="button" class="small" data-view="text">Text</button><button type="button" class="small" data-view="hex">Hex</button></span></h3>
        <pre class="body" data-view="text"></pre><p class="muted body-note"></p></section>
    </article>`;
  }

  function renderBody(card) {
    const view = messagesState.views.get(card.dataset.messageKey) || "text";
    const bytes = base64Bytes(card.dataset.body);
    const pre = $("pre.body", card);
    pre.dataset.view = view;
    pre.textContent = view === "hex" ? hexDump(bytes) : new TextDecoder("utf-8", { fatal: false }).decode(bytes);
    for (const b of $$("button[data-view]", card)) {
      b.classList.toggle("active", b.dataset.view === view);
      b.setAttribute("aria-pressed", b.dataset.view === view ? "true" : "false");
    }
    const size = num(card.dataset.bodySize);
    const note = $(".body-note", card);
    if (!bytes.length && size > 0) note.textContent = "The body was not returned.";
    else if (bytes.length < size) note.textContent = `Showing the first ${fmtInt(bytes.length)} of ${fmtInt(size)} bytes.`;
    else note.textContent = "";
  }

  // ---------------------------------------------------------------- start

  const NOT_FOUND = {
    title: () => "Not found",
    mount(view, route) {
      view.innerHTML = `<div class="page-head"><h1>Not found</h1></div><p>There is no page ${esc(route.page)}. <a href="#/cluster">Go to the cluster overview.</a></p>`;
    },
    fetch: () => Promise.resolve(null),
    render() {},
  };

  const PAGES = { cluster: clusterPage, topics: topicsPage, groups: groupsPage, group: groupPage, messages: messagesPage };

  function start() {
    setupSignin();
    updateSession();
    window.addEventListener("hashchange", navigate);
    let resizing = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (app.route && app.route.page === "group" && groupState.history && $("#lag-chart")) renderLagChart(groupState.history);
      }, 150);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && app.loaded && !app.signingIn) refresh();
    });
    if (!location.hash) history.replaceState(null, "", "#/cluster");
    navigate();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
