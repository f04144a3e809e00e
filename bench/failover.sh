#!/usr/bin/env bash
# What the controller costs a sync-replicated group, with the release binary: produce
# throughput of a group whose roles are configured (a master and slaves, no controller) against
# the same group under a controller (three nameservers electing the master, every replica
# heartbeating twice a second, the master renewing its lease), measured A B B A:
#
#   1. two replicas (the sync rules coincide: the one slave must hold each send): the cost of
#      the heartbeats and leases alone;
#   2. three replicas: configured groups wait for any one slave (min_in_sync_replicas = 2),
#      controller groups for every member of the sync-state set.
#
# 64 producers, one send in flight each, 1 KiB bodies, DURATION seconds per run.
#
#   bench/failover.sh [DURATION]        (default 8 s)
set -euo pipefail

duration=${1:-8}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

broker_config() { # data id extra-replication-lines nameservers
  cat <<CFG
[broker]
broker_name = "bench"
broker_id = $2
data_dir = "$1"
flush_mode = "sync"
replication_listen = "127.0.0.1:0"
nameserver_addresses = [$4]
[broker.store]
segment_size = 268435456
[broker.replication]
mode = "sync"
min_in_sync_replicas = 2
$3
CFG
}

# run SHAPE REPLICAS: a fresh group, one produce run; prints "SHAPE msgs/s".
run() {
  local shape=$1 replicas=$2 n=$RANDOM client=""
  if [ "$shape" = controller ]; then
    local ports=() peers="" list=""
    for i in 1 2 3; do ports+=("$(free_port)"); done
    for i in 1 2 3; do
      peers+="\"$i=127.0.0.1:${ports[$((i - 1))]}\", "
      list+="\"127.0.0.1:${ports[$((i - 1))]}\", "
    done
    for i in 1 2 3; do
      printf '[nameserver.controller]\nenabled = true\nnode_id = %s\npeers = [%s]\ndata_dir = "%s"\n' \
        "$i" "${peers%, }" "$work/c$n-$i" > "$work/ns$n-$i.toml"
      launch "ns$n-$i" --config "$work/ns$n-$i.toml" nameserver --listen "127.0.0.1:${ports[$((i - 1))]}"
    done
    for id in $(seq 1 "$replicas"); do
      broker_config "$work/b$n-$id" "$id" "controller = true" "${list%, }" > "$work/b$n-$id.toml"
      "$bin" --config "$work/b$n-$id.toml" broker --listen 127.0.0.1:0 \
        > "$work/b$n-$id.out" 2> "$work/b$n-$id.err" &
      pids+=($!)
    done
    # Until the group is whole: every replica in the sync-state set.
    local want; want=$(seq -s ', ' 1 "$replicas")
    until "$bin" admin --controller "${list//\"/}" controller status 2>/dev/null \
      | grep -q "sync-state \[$want\]"; do sleep 0.1; done
    # The master's own client port (a slave would pass every call on to it).
    client=$("$bin" admin --controller "${list//\"/}" controller status | awk '
      /^group bench:/ {m=$4} $1==m && $2 ~ /:/ {print $2; exit}')
  else
    local ns; ns=$(free_port)
    launch "ns$n" nameserver --listen "127.0.0.1:$ns"
    broker_config "$work/b$n-0" 0 "" "\"127.0.0.1:$ns\"" > "$work/b$n-0.toml"
    launch "b$n-0" --config "$work/b$n-0.toml" broker --listen 127.0.0.1:0
    client=$(field client); local repl; repl=$(field replication)
    for id in $(seq 1 $((replicas - 1))); do
      broker_config "$work/b$n-$id" "$id" "master_address = \"$repl\"" "\"127.0.0.1:$ns\"" > "$work/b$n-$id.toml"
      launch "b$n-$id" --config "$work/b$n-$id.toml" broker --listen 127.0.0.1:0
    done
    until [ "$("$bin" admin --broker "$client" stats | grep -c "^slave ")" -ge $((replicas - 1)) ]; do sleep 0.05; done
  fi
  local out
  out=$("$bin" bench produce --quiet --endpoint "$client" --producers 64 --concurrency 1 \
    --size 1024 --duration "$duration" --topic FailoverBench 2>/dev/null)
  out=$(grep -m1 "msgs/s" <<<"$out")
  echo "$shape$replicas $(sed -n 's/.* = \([0-9]*\) msgs\/s.*/\1/p' <<<"$out") msgs/s ($out)"
  stop_all
  rm -rf "$work"/b"$n"-* "$work"/c"$n"-*
}

for replicas in 2 3; do
  echo "== $replicas replicas, sync, 64 producers x 1 in flight, 1 KiB, ${duration}s each (A B B A)"
  for shape in configured controller controller configured; do run "$shape" "$replicas"; done | tee "$work/runs$replicas"
  awk '{t[$1]+=$2; n[$1]++} END {for (s in t) printf "%-12s mean %.0f msgs/s\n", s, t[s]/n[s]}' "$work/runs$replicas" | sort | tee "$work/means$replicas"
  awk 'NR==1 {c=$3} NR==2 {b=$3} END {printf "controller: %.0f%% of the configured group\n", 100*b/c}' <(grep "^configured" "$work/means$replicas"; grep "^controller" "$work/means$replicas")
done
