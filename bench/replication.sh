#!/usr/bin/env bash
# Replication figures on this machine, with the release binary:
#
#   1. produce throughput with no slave, async replication and sync replication, measured
#      A B C C B A (64 producers, one send in flight each, 1 KiB bodies, DURATION seconds each);
#   2. replication lag under the async load: the master's view of its slave (bytes the slave
#      does not hold durably yet), sampled every 50 ms, p50 / p99 / max;
#   3. a stopped slave catching up BACKLOG_MB of log: seconds from its start to no lag, and the
#      CPU seconds master and slave spent on it (per replicated GiB).
#
#   bench/replication.sh [DURATION] [BACKLOG_MB]        (defaults: 8 s, 1024 MiB)
#
# Each broker has its own data folder under a temporary directory removed at the end.
set -euo pipefail

duration=${1:-8}
backlog_mb=${2:-1024}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# start NAME CONFIG: runs a broker with CONFIG, waits for its readiness line, sets $ready_line
# and $pid.
start() {
  local name=$1 config=$2
  printf '%s\n' "$config" > "$work/$name.toml"
  launch "$name" --config "$work/$name.toml" broker --listen 127.0.0.1:0
}
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

master_config() { # data mode
  cat <<CFG
[broker]
broker_name = "bench"
data_dir = "$1"
replication_listen = "127.0.0.1:0"
[broker.store]
segment_size = 268435456
retention_hours = 72
[broker.replication]
mode = "$2"
min_in_sync_replicas = $([ "$2" = sync ] && echo 2 || echo 1)
CFG
}
slave_config() { # data master
  cat <<CFG
[broker]
broker_name = "bench"
broker_id = 1
data_dir = "$1"
[broker.store]
segment_size = 268435456
retention_hours = 72
[broker.replication]
master_address = "$2"
CFG
}

lag_bytes() { "$bin" admin --broker "$1" stats 2>/dev/null | sed -n 's/.*lag \([0-9]*\) bytes.*/\1/p' | head -1; }

# run SHAPE: one produce run against a fresh group; prints "SHAPE msgs/s".
run() {
  local shape=$1 n=$RANDOM
  start "m$n" "$(master_config "$work/m$n" "${shape/none/async}")"
  local mpid=$pid client; client=$(field client); local repl; repl=$(field replication)
  local spid=
  if [ "$shape" != none ]; then
    start "s$n" "$(slave_config "$work/s$n" "$repl")"; spid=$pid
    until "$bin" admin --broker "$client" stats | grep -q "^slave "; do sleep 0.05; done
  fi
  if [ "$shape" = async ]; then
    ( while kill -0 "$mpid" 2>/dev/null; do lag_bytes "$client"; sleep 0.05; done ) > "$work/lag.$n" &
  fi
  local out
  out=$("$bin" bench produce --quiet --endpoint "$client" --producers 64 --concurrency 1 \
    --size 1024 --duration "$duration" --topic ReplBench 2>/dev/null)
  out=$(grep -m1 "msgs/s" <<<"$out")
  echo "$shape $(sed -n 's/.* = \([0-9]*\) msgs\/s.*/\1/p' <<<"$out") msgs/s ($out)"
  [ -n "$spid" ] && stop "$spid"
  stop "$mpid"
  if [ "$shape" = async ]; then cat "$work/lag.$n" >> "$work/lag.all"; fi
  rm -rf "$work/m$n" "$work/s$n"
}

echo "== produce, 64 producers x 1 in flight, 1 KiB, ${duration}s each (A B C C B A)"
for shape in none async sync sync async none; do run "$shape"; done | tee "$work/runs"
for shape in none async sync; do
  awk -v s="$shape" '$1==s {t+=$2; n++} END {printf "%-6s mean %.0f msgs/s\n", s, t/n}' "$work/runs"
done | tee "$work/means"
none=$(awk '$1=="none" {print $3}' "$work/means")
awk -v base="$none" '{printf "%-6s %.0f%% of no-slave throughput\n", $1, 100*$3/base}' "$work/means"

echo "== replication lag under the async load (sampled every 50 ms)"
sort -n "$work/lag.all" | awk '{v[NR]=$1} END {if (NR==0) {print "no samples"; exit}
  printf "samples %d  p50 %d bytes  p99 %d bytes  max %d bytes\n", NR, v[int(NR*0.5)+1], v[int(NR*0.99)+1], v[NR]}'

echo "== a slave catching up ${backlog_mb} MiB"
start m "$(master_config "$work/m" async)"; mpid=$pid; client=$(field client); repl=$(field replication)
messages=$((backlog_mb * 64))
"$bin" bench produce --quiet --endpoint "$client" --producers 4 --concurrency 16 --size 16384 \
  --messages "$messages" --duration 600 --topic ReplBacklog > "$work/backlog.out" 2>/dev/null
grep -m1 "msgs/s" "$work/backlog.out"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
m0=$(cpu "$mpid")
t0=$(date +%s.%N)
start s "$(slave_config "$work/s" "$repl")"; spid=$pid
until [ "$(lag_bytes "$client")" = 0 ]; do sleep 0.05; done
t1=$(date +%s.%N)
m1=$(cpu "$mpid"); s1=$(cpu "$spid")
awk -v t0="$t0" -v t1="$t1" -v mb="$backlog_mb" -v mc=$((m1 - m0)) -v sc="$s1" -v hz="$hz" 'BEGIN {
  secs = t1 - t0; gib = mb / 1024
  printf "caught up %d MiB in %.2f s (%.2f s per GiB, %.0f MB/s)\n", mb, secs, secs / gib, mb * 1.048576 / secs
  printf "CPU: master %.2f s, slave %.2f s (%.2f s per replicated GiB together)\n", mc / hz, sc / hz, (mc + sc) / hz / gib }'
echo "== disk bound: dd of the same amount with fdatasync at the end"
dd if=/dev/zero of="$work/dd" bs=1M count="$backlog_mb" conv=fdatasync 2>&1 | tail -1
