#!/usr/bin/env bash
# Where the CPU of one request goes, in the broker and in the SDK: runs one load shape against
# a standalone release broker under `perf record -g` (both processes), prints the CPU each
# process spent per message (from /proc, via `rocketlog bench --broker-pid`), the system calls
# per message, and a table of request stages per process (bench/profile/stages.py).
#
#   bench/profile/run.sh send    [SECONDS] [PRODUCERS] [IN_FLIGHT] [FLUSH]   (8, 1, 64, async)
#   bench/profile/run.sh receive [MESSAGES] [CONCURRENCY]                    (200000, 32)
#
# `send`: single-message sends of 1 KiB bodies, each awaiting its acknowledgement.
# `receive`: MESSAGES are sent first (not profiled), then a push consumer with CONCURRENCY
# handlers receives and acks all of them (profiled).
#
# Needs `perf` (Debian: linux-perf) and permission to profile other processes (root, or
# kernel.perf_event_paranoid <= 1). The broker's data folder is temporary.
set -euo pipefail

mode=${1:-send}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v perf > /dev/null || { echo "run.sh: perf is not installed (Debian: linux-perf)" >&2; exit 2; }
case $mode in
  send)
    seconds=${2:-8}; producers=${3:-1}; in_flight=${4:-64}; flush=${5:-async}
    ;;
  receive)
    messages=${2:-200000}; concurrency=${3:-32}; flush=async
    ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "run.sh: unknown mode $mode (send or receive; try --help)" >&2; exit 2 ;;
esac

# shellcheck source=bench/lib.sh
source "$here/../lib.sh"

launch broker standalone --data-dir "$work/data" --flush-mode "$flush" \
  --listen 127.0.0.1:0 --nameserver-listen 127.0.0.1:0
broker_pid=$pid
endpoint=$(field client)
bench=("$bin" bench --quiet --endpoint "$endpoint" --broker-pid "$broker_pid")

if [ "$mode" = receive ]; then
  echo "== sending $messages messages to consume (not profiled)" >&2
  "${bench[@]}" --duration 600 produce --producers 1 --concurrency 64 --messages "$messages" \
    | grep -E '^produce: [0-9]+ msgs' >&2
  load=("${bench[@]}" --duration 600 consume --concurrency "$concurrency" --messages "$messages")
  what="push consume + ack of $messages, $concurrency handlers"
else
  load=("${bench[@]}" --duration "$seconds" produce --producers "$producers" --concurrency "$in_flight")
  what="$producers producer(s) x $in_flight in flight, 1 KiB, flush $flush, $seconds s"
fi

echo "== profiling: $what" >&2
perf record -q -g -F 499 -p "$broker_pid" -o "$work/broker.data" 2> "$work/perf-broker.err" &
perf_broker=$!
perf stat -x, -e raw_syscalls:sys_enter -p "$broker_pid" -o "$work/broker.stat" 2> /dev/null &
stat_broker=$!
sleep 0.5 # perf attaches asynchronously; the load must not start before it samples
perf stat -x, -e raw_syscalls:sys_enter -o "$work/bench.stat" \
  perf record -q -g -F 499 -o "$work/bench.data" -- "${load[@]}" > "$work/load.out" 2> "$work/load.err" \
  || { cat "$work/load.err" >&2; exit 1; }
kill -INT "$perf_broker" "$stat_broker"
wait "$perf_broker" "$stat_broker" 2> /dev/null || true

cat "$work/load.out"
count=$(sed -nE 's/^[a-z]+[^:]*: ([0-9]+) msgs in .*/\1/p' "$work/load.out" | tail -1)
cpu_line=$(grep 'cpu per message' "$work/load.out" | tail -1)
bench_us=$(sed -nE 's/.*bench ([0-9.]+) µs.*/\1/p' <<<"$cpu_line")
broker_us=$(sed -nE 's/.*broker ([0-9.]+) µs.*/\1/p' <<<"$cpu_line")
syscalls() { awk -F, '/raw_syscalls/ {print $1}' "$1"; }
echo
echo "## $what"
echo
echo "| | broker | bench (SDK) |"
echo "|---|---|---|"
echo "| CPU per message (user + system) | $broker_us µs | $bench_us µs |"
if [ -n "$count" ] && [ "$count" -gt 0 ]; then
  printf '| system calls per message | %.2f | %.2f |\n' \
    "$(echo "$(syscalls "$work/broker.stat") / $count" | bc -l)" \
    "$(echo "$(syscalls "$work/bench.stat") / $count" | bc -l)"
fi
echo
perf script -i "$work/broker.data" -F comm,tid,ip,sym 2> /dev/null \
  | python3 "$here/stages.py" --name broker --us-per-msg "$broker_us" --top "${TOP:-0}"
echo
perf script -i "$work/bench.data" -F comm,tid,ip,sym 2> /dev/null \
  | python3 "$here/stages.py" --name "bench (SDK)" --us-per-msg "$bench_us" --top "${TOP:-0}"
