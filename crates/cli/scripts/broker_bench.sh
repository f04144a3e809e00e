#!/usr/bin/env bash
# Broker benchmark as recorded in the README: a release `rocketlog standalone` on scratch ports,
# driven by `rocketlog bench` (1 KiB bodies, 10 s per load), first with Async then with Sync flush.
# Prints throughput, latency and the broker's resident memory (idle and under each load).
#
#   cargo build --release -p rocketlog && bash crates/cli/scripts/broker_bench.sh
#
# ROCKETLOG_BIN overrides the binary, BENCH_DIR the scratch data directory (removed per mode).
set -u
B=${ROCKETLOG_BIN:-target/release/rocketlog}
D=${BENCH_DIR:-${TMPDIR:-/tmp}/rocketlog-bench}
CLIENT=127.0.0.1:18081
NAMESRV=127.0.0.1:19876
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$1/status; }
anon() { awk '/RssAnon/ {printf "%.1f MiB", $2/1024}' /proc/$1/status; }
for mode in async sync; do
  rm -rf "$D-$mode"
  # 256 MiB segments keep the scratch log small on disk.
  ROCKETLOG_BROKER__STORE__SEGMENT_SIZE=268435456 "$B" standalone --data-dir "$D-$mode" \
    --listen $CLIENT --nameserver-listen $NAMESRV --flush-mode $mode >"$D-$mode.out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q ready "$D-$mode.out" 2>/dev/null && break; sleep 0.1; done
  sleep 3
  echo "=== $mode: idle RSS $(rss $pid) (anonymous $(anon $pid))"
  # Warm-up, not reported: the first seconds of load also fault in the log's first pages.
  "$B" bench --endpoint $CLIENT --topic Bench-$mode --duration 3 --quiet produce >/dev/null 2>&1
  for args in "--producers 1 --concurrency 1" "--producers 64 --concurrency 1" \
      "--producers 64 --concurrency 1 --dedicated-connections" \
      "--producers 1 --concurrency 64" "--producers 64 --concurrency 1 --batch 16" \
      "--producers 64 --concurrency 1 --batch 32"; do
    ( sleep 6; echo "    RSS under load ($args): $(rss $pid) (anonymous $(anon $pid))" ) &
    sampler=$!
    echo "--- $mode produce $args"
    # shellcheck disable=SC2086
    "$B" bench --endpoint $CLIENT --topic Bench-$mode --duration 10 --quiet produce $args 2>&1 | tail -4
    wait $sampler
  done
  if [ $mode = async ]; then
    # One Producer with 64 in flight against 64 Producers, alternating (A B B A) so that
    # drift of the machine during the run does not favour either shape.
    for args in "--producers 1 --concurrency 64" "--producers 64 --concurrency 1" \
        "--producers 64 --concurrency 1" "--producers 1 --concurrency 64"; do
      # shellcheck disable=SC2086
      echo "--- $mode alternating $args: $("$B" bench --endpoint $CLIENT --topic Bench-$mode \
        --duration 10 --quiet produce $args 2>&1 | grep -o '[0-9]* msgs/s')"
    done
    echo "--- $mode consume push (preload 200000)"
    "$B" bench --endpoint $CLIENT --topic Cons-$mode --duration 30 --quiet consume --kind push --preload 200000 2>&1 | tail -6
  fi
  kill -TERM $pid; wait $pid; echo "    broker exit status $?"
  rm -rf "$D-$mode" "$D-$mode.out"
done
