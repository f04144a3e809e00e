#!/usr/bin/env python3
"""Checks the Grafana dashboard against the metrics rocketlog exports.

Every panel must query the `${datasource}` variable, and every PromQL expression (panel
targets and template-variable queries) may name only the metrics and labels listed below, so a
misspelt metric or label fails CI instead of drawing an empty graph. Keep METRICS in step with
what the broker and nameserver export.

    python3 deploy/grafana/check_dashboard.py [deploy/grafana/rocketlog.json]
"""

import json
import re
import sys
from pathlib import Path

# Metric name -> its own labels. Prometheus adds `instance` and `job` to every target.
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
METRICS = {
    "rocketmq_messages_in_total": (COUNTER, {"topic"}),
    "rocketmq_throughput_in_total": (COUNTER, {"topic"}),
    "rocketmq_messages_out_total": (COUNTER, {"topic", "consumer_group"}),
    "rocketmq_throughput_out_total": (COUNTER, {"topic", "consumer_group"}),
    "rocketmq_send_to_dlq_messages_total": (COUNTER, {"consumer_group"}),
    "process_cpu_seconds_total": (COUNTER, set()),
    "rocketmq_rpc_latency_seconds": (HISTOGRAM, {"method"}),
    "rocketlog_fsync_duration_seconds": (HISTOGRAM, set()),
    "rocketmq_consumer_lag_messages": (GAUGE, {"topic", "consumer_group", "queue_id"}),
    "rocketmq_consumer_inflight_messages": (GAUGE, {"topic", "consumer_group"}),
    "rocketlog_delayed_messages": (GAUGE, set()),
    "rocketlog_transactions_open": (GAUGE, set()),
    "rocketlog_commitlog_min_offset_bytes": (GAUGE, set()),
    "rocketlog_commitlog_max_offset_bytes": (GAUGE, set()),
    "rocketlog_commitlog_flushed_offset_bytes": (GAUGE, set()),
    "rocketlog_commitlog_dispatched_offset_bytes": (GAUGE, set()),
    "rocketmq_storage_size_bytes": (GAUGE, set()),
    "rocketmq_storage_flush_behind_bytes": (GAUGE, set()),
    "rocketlog_disk_used_ratio": (GAUGE, set()),
    "rocketlog_replication_lag_bytes": (GAUGE, {"broker_id"}),
    "rocketlog_client_connections": (GAUGE, set()),
    "process_resident_memory_bytes": (GAUGE, set()),
    "process_open_fds": (GAUGE, set()),
    "rocketlog_nameserver_brokers": (GAUGE, set()),
    "rocketlog_nameserver_topics": (GAUGE, set()),
    "rocketlog_nameserver_requests_total": (COUNTER, {"method"}),
}
TARGET_LABELS = {"instance", "job"}

# PromQL words that look like identifiers but are not metric names.
PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "atan2",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "idelta",
    "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "time", "timestamp", "vector", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time", "last_over_time",
    "present_over_time", "stddev_over_time",
    # Grafana's query functions for template variables
    "label_values", "label_names", "metrics", "query_result",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_of(name):
    """(metric, is_bucket_series) for an exported series name, or None. A histogram is
    exported as `<name>_bucket`, `<name>_sum` and `<name>_count`; its bare name is no series."""
    if name in METRICS and METRICS[name][0] != HISTOGRAM:
        return name, False
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and METRICS.get(base, ("",))[0] == HISTOGRAM:
            return base, suffix == "_bucket"
    return None


def check_expr(expr, where):
    """The problems found in one PromQL expression."""
    problems = []
    # Grafana variables ($topic, ${datasource}, $__rate_interval) are not PromQL names.
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    used = []

    # Selectors: `name{labels}` or `{labels}`.
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}", text):
        name, matchers = m.group(1), m.group(2)
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        if name is None or name in PROMQL_WORDS:
            problems.append(f"{where}: selector without a metric name: {m.group(0)!r}")
            continue
        found = metric_of(name)
        if found is None:
            continue  # reported below with the other names
        base, is_hist = found
        allowed = METRICS[base][1] | TARGET_LABELS | ({"le"} if is_hist else set())
        for label in sorted(labels - allowed):
            problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(allowed)})")
    # `by (...)` / `without (...)` / `on (...)` / `ignoring (...)` label lists.
    grouping = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
    for m in grouping.finditer(text):
        for label in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", m.group(2)):
            used.append(label)
    known_labels = set().union(*(labels for _, labels in METRICS.values())) | TARGET_LABELS | {"le"}
    for label in sorted(set(used) - known_labels):
        problems.append(f"{where}: grouping by unknown label {label!r}")
    text = grouping.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    # Whatever identifier is left is a metric name, a keyword or a function.
    names = [n for n in IDENT.findall(text) if not re.fullmatch(r"[0-9eE.]+", n)]
    names = [n for n in names if n not in PROMQL_WORDS and not n.startswith("__")]
    if not names:
        problems.append(f"{where}: no metric in {expr!r}")
    for name in names:
        if metric_of(name) is None:
            problems.append(f"{where}: unknown metric {name!r} in {expr!r}")
    return problems


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def check(dashboard):
    problems = []
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    for required in ("datasource", "topic", "consumer_group"):
        if required not in variables:
            problems.append(f"template variable ${required} is missing")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            if var.get("query") != "prometheus":
                problems.append(f"variable {var['name']}: datasource type is not prometheus")
            continue
        if var.get("type") != "query":
            continue
        where = f"variable ${var.get('name')}"
        if var.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query.strip())
        if m is None:
            problems.append(f"{where}: query {query!r} is not label_values(<expr>, <label>)")
            continue
        problems += check_expr(m.group(1), where)
        name = IDENT.match(m.group(1).strip())
        found = metric_of(name.group(0)) if name else None
        if found and m.group(2) not in METRICS[found[0]][1] | TARGET_LABELS:
            problems.append(f"{where}: {found[0]} has no label {m.group(2)!r}")

    ids = set()
    count = 0
    for panel in panels_of(dashboard):
        if panel.get("type") == "row":
            continue
        count += 1
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            problems.append(f"{where}: no gridPos")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for target in targets:
            twhere = f"{where} target {target.get('refId')}"
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{twhere}: datasource is not ${{datasource}}")
            if not target.get("expr", "").strip():
                problems.append(f"{twhere}: empty expression")
                continue
            problems += check_expr(target["expr"], twhere)
            for var in re.findall(r"\$\{?([A-Za-z][A-Za-z0-9_]*)", target["expr"]):
                if var not in variables:
                    problems.append(f"{twhere}: undefined variable ${var}")
    if count == 0:
        problems.append("the dashboard has no panels")
    return problems, count


def main(argv):
    path = Path(argv[1] if len(argv) > 1 else Path(__file__).with_name("rocketlog.json"))
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    problems, count = check(dashboard)
    for p in problems:
        print(f"{path}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: {count} panels, every query names only exported metrics and labels")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
