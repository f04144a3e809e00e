#!/usr/bin/env bash
# rocketlog side by side with Apache RocketMQ 5 and Kafka 4 on this machine: throughput of the
# same load shapes, CPU per message, resident memory idle and under load, and the time from
# process start to the first acknowledged send. See bench/peers/README.md.
#
#   bench/peers/run.sh [--quick] [--no-kafka] [--no-java]
#
#   --quick     short runs (2 s per shape, 20,000 preloaded messages) to check the script
#   --no-kafka  skip Kafka
#   --no-java   skip the official Java client's second opinion and the remoting batch runs
#
# Writes results/peers-<time>.md (the report) and results/peers-<time>.tsv (every figure)
# under bench/peers, and prints the report. Fetches the peers first (fetch.sh, Maven Central)
# and builds rocketlog (release). When it can, it runs every server and client inside a network
# namespace of its own with only a loopback interface, so no traffic can leave the machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
quick=0 with_kafka=1 with_java=1
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --no-kafka) with_kafka=0 ;;
    --no-java) with_java=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

ROCKETMQ_VERSION=${ROCKETMQ_VERSION:-5.5.0}
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
CLIENT_VERSION=${CLIENT_VERSION:-5.2.0}
export ROCKETMQ_VERSION KAFKA_VERSION CLIENT_VERSION

# Outside the namespace: everything that needs the network, then re-enter isolated.
if [ -z "${PEERS_IN_NETNS:-}" ]; then
  bash "$here/fetch.sh"
  cargo build --release -p rocketlog --manifest-path "$repo/Cargo.toml" >&2
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
      && unshare --net true 2>/dev/null; then
    PEERS_IN_NETNS=1 exec unshare --net -- bash "$0" "$@"
  fi
  echo "run.sh: no network namespace (needs root, unshare and ip); running on this host's loopback" >&2
  PEERS_IN_NETNS=host
fi
if [ "$PEERS_IN_NETNS" = 1 ]; then
  ip link set lo up
  export CARGO_NET_OFFLINE=true
fi

started_at=$(date +%s)
stamp=$(date -u +%Y%m%d-%H%M%S)
results="$here/results"
mkdir -p "$results"
report="$results/peers-$stamp.md"
raw="$results/peers-$stamp.tsv"

# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
# Run a copy, so that a rebuild in this checkout during the run cannot swap the binary.
cp "$bin" "$work/rocketlog"
bin="$work/rocketlog"
# Servers run in sessions of their own: a suspended (SIGSTOP) process in this script's process
# group would get SIGHUP from the kernel if the group were orphaned (its parent shell gone).
printf '#!/bin/sh\nexec setsid "%s" "$@"\n' "$bin" > "$work/rocketlog-server"
chmod +x "$work/rocketlog-server"

cache="$here/.cache"
rmq_cp="$cache/rocketmq-$ROCKETMQ_VERSION/lib/*"
kafka_cp="$cache/kafka-$KAFKA_VERSION/lib/*"
grpc_cp="$cache/classes-grpc-$CLIENT_VERSION:$cache/java-client-$CLIENT_VERSION/lib/*"
remoting_cp="$cache/classes-remoting-$ROCKETMQ_VERSION:$rmq_cp"

# warm: length of one warm-up window; warm_windows: at most that many (see warm_up).
if [ $quick = 1 ]; then
  dur=2 warm=1 warm_windows=3 java_warm=1 preload=20000 consume_max=10 idle_wait=2 kafka_warm=20000
else
  dur=8 warm=8 warm_windows=10 java_warm=5 preload=200000 consume_max=40 idle_wait=5 kafka_warm=100000
fi
size=1024
hz=$(getconf CLK_TCK)

# Ports: scratch ones, away from the products' defaults.
RL_CLIENT=127.0.0.1:18081
RL_NAMESRV=127.0.0.1:19876
RMQ_NAMESRV_PORT=19877
RMQ_GRPC=127.0.0.1:18082
RMQ_REMOTING_PORT=18083
RMQ_BROKER_PORT=20911          # the broker also listens on 20909 (fast remoting) and 20912 (HA)
KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093

printf 'system\tmode\tmeasure\tvalue\tdetails\n' > "$raw"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$raw"; }
say() { echo "== $*" >&2; }
now_ms() { date +%s%3N; }

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

forget() { # PID...: drop from the cleanup list once stopped
  local p q keep=()
  for q in "${pids[@]}"; do
    for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
    keep+=("$q")
  done
  pids=("${keep[@]}")
}
# stop PID...: SIGTERM (resuming first, in case they are suspended), at most 40 s, then SIGKILL.
stop() {
  local p
  for p in "$@"; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 400); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  forget "$@"
}
spawn() { # NAME CMD...: CMD in the background in a session of its own, output in $work/NAME.out; sets $pid
  local name=$1; shift
  setsid "$@" > "$work/$name.out" 2>&1 &
  pid=$!
  pids+=("$pid")
}
# timed CMD...: runs CMD; its user+system CPU seconds go to $work/client.cpu when
# /usr/bin/time is there (the client's CPU per message).
timed() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%U %S' -o "$work/client.cpu" "$@"
  else
    rm -f "$work/client.cpu"; "$@"
  fi
}

# ---------------------------------------------------------------- configurations
conf="$work/conf"
mkdir -p "$conf"
rl_args() { # MODE DATA
  echo standalone --data-dir "$2" --listen "$RL_CLIENT" --nameserver-listen "$RL_NAMESRV" --flush-mode "$1"
}
rmq_broker_conf() { # MODE STORE -> prints the broker config
  local flush=ASYNC_FLUSH
  [ "$1" = sync ] && flush=SYNC_FLUSH
  cat <<CFG
brokerClusterName=DefaultCluster
brokerName=broker-a
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=$flush
brokerIP1=127.0.0.1
brokerIP2=127.0.0.1
listenPort=$RMQ_BROKER_PORT
namesrvAddr=127.0.0.1:$RMQ_NAMESRV_PORT
storePathRootDir=$2
storePathCommitLog=$2/commitlog
autoCreateTopicEnable=false
autoCreateSubscriptionGroup=true
CFG
}
cat > "$conf/rmq-proxy.json" <<CFG
{
  "rocketMQClusterName": "DefaultCluster",
  "grpcServerPort": ${RMQ_GRPC##*:},
  "remotingListenPort": $RMQ_REMOTING_PORT,
  "namesrvAddr": "127.0.0.1:$RMQ_NAMESRV_PORT",
  "grpcShutdownTimeSeconds": 1
}
CFG
printf 'listenPort=%s\n' "$RMQ_NAMESRV_PORT" > "$conf/namesrv.conf"
# The stock start scripts' G1 settings (runserver.sh / runbroker.sh), with heaps sized for a
# 24 GiB machine shared with the other systems and no -XX:+AlwaysPreTouch (which would make
# every heap page resident at start).
rmq_gc="-server -XX:+UseG1GC -XX:G1HeapRegionSize=16m -XX:G1ReservePercent=25 -XX:InitiatingHeapOccupancyPercent=30 -XX:SoftRefLRUPolicyMSPerMB=0 -XX:-OmitStackTraceInFastThrow -XX:-UseLargePages"
rmq_namesrv_jvm="-Xms512m -Xmx512m -XX:MetaspaceSize=128m -XX:MaxMetaspaceSize=320m $rmq_gc"
rmq_proxy_jvm="-Xms2g -Xmx2g -XX:MaxDirectMemorySize=2g $rmq_gc"
rmq_home="$work/rmq-home"          # logs go to $rmq_home/logs
mkdir -p "$rmq_home"
rmq_props="-Duser.home=$rmq_home -Drocketmq.home.dir=$rmq_home"

# ---------------------------------------------------------------- Apache RocketMQ
# rmq_spawn MODE STORE: starts the namesrv and the proxy with the broker inside (local mode);
# sets rmq_pids. rmq_ready: waits for the proxy's start line.
rmq_spawn() {
  local mode=$1 store=$2
  rmq_broker_conf "$mode" "$store" > "$conf/broker-$mode.conf"
  # shellcheck disable=SC2086  # JVM flags are word lists
  spawn rmq-namesrv java $rmq_namesrv_jvm $rmq_props -cp "$rmq_cp" \
    org.apache.rocketmq.namesrv.NamesrvStartup -c "$conf/namesrv.conf"
  local ns=$pid
  # shellcheck disable=SC2086
  spawn rmq-proxy java $rmq_proxy_jvm $rmq_props -cp "$rmq_cp" \
    org.apache.rocketmq.proxy.ProxyStartup -pm local -pc "$conf/rmq-proxy.json" -bc "$conf/broker-$mode.conf"
  rmq_pids=("$ns" "$pid")
}
rmq_ready() {
  for _ in $(seq 1 480); do
    grep -q "rocketmq-proxy startup successfully" "$work/rmq-proxy.out" 2>/dev/null && return
    kill -0 "${rmq_pids[1]}" 2>/dev/null || break
    sleep 0.25
  done
  echo "Apache RocketMQ proxy did not start:" >&2; tail -20 "$work/rmq-proxy.out" >&2; exit 1
}
mqadmin() {
  # shellcheck disable=SC2086
  java -Xms256m -Xmx256m $rmq_props -cp "$rmq_cp" org.apache.rocketmq.tools.command.MQAdminStartup \
    "$@" -n "127.0.0.1:$RMQ_NAMESRV_PORT" -b "127.0.0.1:$RMQ_BROKER_PORT" >> "$work/mqadmin.out" 2>&1
}
# A fresh store that already defines the topics and groups: created once with mqadmin (8 queues,
# like rocketlog's auto-created topics), then copied into every later store. gRPC clients cannot
# create topics on Apache RocketMQ.
rmq_template() {
  say "Apache RocketMQ: creating topics and groups"
  rmq_spawn async "$work/rmq-template"; rmq_ready
  local t
  for t in BenchTopic ConsTopic StartTopic; do
    mqadmin updateTopic -t "$t" -r 8 -w 8 -a +message.type=NORMAL
  done
  for t in ConsWarm Cons1 Cons2 Cons3 Cons4; do mqadmin updateSubGroup -g "$t"; done
  grep -c "success" "$work/mqadmin.out" | grep -qx 8 || { cat "$work/mqadmin.out" >&2; exit 1; }
  stop "${rmq_pids[@]}"
  mkdir -p "$work/rmq-seed"
  cp -r "$work/rmq-template/config" "$work/rmq-seed/"
  rm -rf "$work/rmq-template"
}
rmq_store() { # NAME: a fresh store seeded with the topics and groups; prints its path
  rm -rf "${work:?}/$1"; mkdir -p "$work/$1"; cp -r "$work/rmq-seed/config" "$work/$1/"; echo "$work/$1"
}

# ---------------------------------------------------------------- measurements
# first_send ENDPOINT SECONDS: Unix ms of the first acknowledged send (retried until then).
first_send() {
  "$bin" bench --endpoint "$1" --topic StartTopic --size "$size" --duration "$2" first-send \
    --attempt-timeout-ms 2000 --interval-ms 20 2>>"$work/first-send.err" | sed -n 's/.*unix_ms=//p' || true
}

# startup SYSTEM MODE N: start from scratch with flush MODE, time to the first acknowledged
# send, then the resident memory right after it and once idle for $idle_wait s.
startup() {
  local system=$1 mode=$2 n=$3 t0 t1 p
  if [ "$system" = rocketlog ]; then
    t0=$(now_ms)
    # shellcheck disable=SC2046
    spawn "rl-start-$n" "$bin" $(rl_args "$mode" "$work/rl-start-$n")
    p=("$pid")
    t1=$(first_send "$RL_CLIENT" 60)
  else
    local store; store=$(rmq_store "rmq-start-$n")
    t0=$(now_ms)
    rmq_spawn "$mode" "$store"
    p=("${rmq_pids[@]}")
    t1=$(first_send "$RMQ_GRPC" 240)
  fi
  [ -n "$t1" ] || { echo "$system: no acknowledged send after start" >&2; exit 1; }
  record "$system" - first_ack_ms $((t1 - t0)) "run $n, flush $mode"
  record "$system" "$mode" ack_rss_kb "$(status_kb VmRSS "${p[@]}")" "run $n, right after the first send"
  sleep "$idle_wait"
  record "$system" "$mode" idle_rss_kb "$(status_kb VmRSS "${p[@]}")" "run $n, ${idle_wait} s after the first send"
  record "$system" "$mode" idle_anon_kb "$(status_kb RssAnon "${p[@]}")" "run $n"
  say "$system start $n ($mode): first ack $((t1 - t0)) ms, idle RSS $(mib "$(status_kb VmRSS "${p[@]}")") MiB (anonymous $(mib "$(status_kb RssAnon "${p[@]}")") MiB)"
  stop "${p[@]}"
  rm -rf "${work:?}/rl-start-$n" "${work:?}/rmq-start-$n"
}

# Only the system being measured runs; the other one is suspended (SIGSTOP), so its background
# work does not take CPU from the run.
declare -A sys_pids sys_endpoint
only() { # SYSTEM
  local s p
  for s in "${!sys_pids[@]}"; do
    for p in ${sys_pids[$s]}; do
      if ! kill -0 "$p" 2>/dev/null; then
        echo "run.sh: a $s server process ($p) has died; its output:" >&2
        tail -5 "$work"/*.out >&2 || true
        exit 1
      fi
      if [ "$s" = "$1" ]; then kill -CONT "$p"; else kill -STOP "$p"; fi
    done
  done
  sleep 0.2
}
# sampler SYSTEM...: until $work/sampling is removed, keeps the peak VmRSS and RssAnon of each
# system in $work/peak.SYSTEM ("rss anon", KiB). Bounded: at most one hour.
sampler() {
  touch "$work/sampling"
  (
    declare -A rss anon
    for _ in $(seq 1 7200); do
      [ -f "$work/sampling" ] || break
      for s in "$@"; do
        local sp r a; read -r -a sp <<<"${sys_pids[$s]}"
        r=$(status_kb VmRSS "${sp[@]}" 2>/dev/null || echo 0)
        a=$(status_kb RssAnon "${sp[@]}" 2>/dev/null || echo 0)
        [ "$r" -gt "${rss[$s]:-0}" ] && rss[$s]=$r
        [ "$a" -gt "${anon[$s]:-0}" ] && anon[$s]=$a
        echo "${rss[$s]:-0} ${anon[$s]:-0}" > "$work/peak.$s"
      done
      sleep 0.5
    done
  ) &
  sampler_pid=$!
  pids+=("$sampler_pid")
}
sampler_stop() { rm -f "$work/sampling"; wait "$sampler_pid" 2>/dev/null || true; forget "$sampler_pid"; }

# cpu_record SYSTEM MODE MEASURE TICKS MSGS: server CPU µs per message (and the client's).
cpu_record() {
  local system=$1 mode=$2 measure=$3 dt=$4 msgs=$5
  [ "${msgs:-0}" -gt 0 ] || return 0
  record "$system" "$mode" "cpu_us:$measure" "$(awk -v t="$dt" -v hz="$hz" -v n="$msgs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')" "server processes"
  if [ -f "$work/client.cpu" ]; then
    record "$system" "$mode" "client_cpu_us:$measure" "$(awk -v n="$msgs" '{printf "%.1f", ($1 + $2) * 1e6 / n}' "$work/client.cpu")" "load generator"
  fi
}

# produce SYSTEM MODE MEASURE ARGS...: one `rocketlog bench produce` run.
produce() {
  local system=$1 mode=$2 measure=$3; shift 3
  only "$system"
  local sp c0; read -r -a sp <<<"${sys_pids[$system]}"; c0=$(ticks "${sp[@]}")
  local out
  out=$(timed "$bin" bench --quiet --endpoint "${sys_endpoint[$system]}" --topic BenchTopic --size "$size" \
    --duration "$dur" produce "$@" 2>"$work/bench.err") || true
  local c1; c1=$(ticks "${sp[@]}")
  local line lat msgs rate errors
  line=$(sed -n 's/^produce: \([0-9]*\) msgs in [0-9.]* s = \([0-9]*\) msgs\/s.*errors \([0-9]*\)$/\1 \2 \3/p' <<<"$out")
  lat=$(sed -n 's/^produce latency ms: p50 \([0-9.]*\)  p99 \([0-9.]*\).*/p50 \1 ms, p99 \2 ms/p' <<<"$out")
  read -r msgs rate errors <<<"${line:-0 0 0}"
  local why=""
  if [ "$msgs" = 0 ]; then why="; failed: $(grep -m1 -o 'send failed: .*' "$work/bench.err" || tail -1 "$work/bench.err")"; fi
  record "$system" "$mode" "$measure" "$rate" "$* -> $msgs msgs, $lat, errors $errors$why"
  cpu_record "$system" "$mode" "$measure" $((c1 - c0)) "$msgs"
  say "$system $mode $measure ($*): $rate msgs/s ${lat}${why}"
}

# java_grpc SYSTEM MODE: the official Java client, 64 threads x 1 in flight. Its server CPU
# per message counts the warm-up too (time and messages).
java_grpc() {
  local system=$1 mode=$2 out rate c0 c1
  only "$system"
  local sp; read -r -a sp <<<"${sys_pids[$system]}"; c0=$(ticks "${sp[@]}")
  out=$(java -Xms512m -Xmx512m -Duser.home="$work/java-home" -cp "$grpc_cp" GrpcProduceBench \
    "${sys_endpoint[$system]}" BenchTopic 64 "$dur" "$java_warm" "$size" 2>"$work/java.err" | tail -1) || true
  rate=$(sed -n 's/.* = \([0-9]*\) msgs\/s.*/\1/p' <<<"$out")
  c1=$(ticks "${sp[@]}")
  record "$system" "$mode" java_p64x1 "${rate:-0}" "${out:-failed: $(tail -1 "$work/java.err")}"
  rm -f "$work/client.cpu"
  cpu_record "$system" "$mode" java_p64x1 $((c1 - c0)) "$(sed -n 's/.*with warm-up \([0-9]*\) msgs.*/\1/p' <<<"$out")"
  say "$system $mode Java client 64 x 1: ${rate:-failed} msgs/s"
}

# remoting_batch MODE: Apache RocketMQ's own remoting client, 64 threads x batches of 32,
# straight to the broker (no proxy hop): a second opinion on Apache's batch figure.
remoting_batch() {
  local mode=$1 out rate c0 c1
  only apache
  local sp; read -r -a sp <<<"${sys_pids[apache]}"; c0=$(ticks "${sp[@]}")
  out=$(java -Xms512m -Xmx512m -Duser.home="$work/java-home" -cp "$remoting_cp" RemotingBatchBench \
    "127.0.0.1:$RMQ_NAMESRV_PORT" BenchTopic 64 32 "$dur" "$java_warm" "$size" 2>"$work/java.err" | tail -1) || true
  rate=$(sed -n 's/.* = \([0-9]*\) msgs\/s.*/\1/p' <<<"$out")
  c1=$(ticks "${sp[@]}")
  record apache "$mode" remoting_p64x1b32 "${rate:-0}" "remoting client: ${out:-failed: $(tail -1 "$work/java.err")}"
  rm -f "$work/client.cpu"
  cpu_record apache "$mode" remoting_p64x1b32 $((c1 - c0)) "$(sed -n 's/.*with warm-up \([0-9]*\) msgs.*/\1/p' <<<"$out")"
  say "apache $mode remoting batch 32: ${rate:-failed} msgs/s"
}

# consume SYSTEM GROUP: push-consume (with ack) the preloaded backlog of ConsTopic.
consume() {
  local system=$1 group=$2
  only "$system"
  local sp c0; read -r -a sp <<<"${sys_pids[$system]}"; c0=$(ticks "${sp[@]}")
  local out
  out=$(timed "$bin" bench --quiet --endpoint "${sys_endpoint[$system]}" --topic ConsTopic --size "$size" \
    --duration "$consume_max" consume --kind push --group "$group" --messages "$preload" 2>"$work/bench.err") || true
  local c1; c1=$(ticks "${sp[@]}")
  local line msgs secs rate
  line=$(sed -n 's/^consume (end-to-end[^:]*: \([0-9]*\) msgs in \([0-9.]*\) s = \([0-9]*\) msgs\/s.*/\1 \2 \3/p' <<<"$out")
  read -r msgs secs rate <<<"${line:-0 0 0}"
  record "$system" async consume "$rate" "group $group: $msgs of $preload msgs in $secs s (bounded at $consume_max s)"
  cpu_record "$system" async consume $((c1 - c0)) "$msgs"
  say "$system push consume ($group): $rate msgs/s ($msgs msgs in $secs s)"
}

# warm_up SYSTEM MODE: 64 x 1 in windows of $warm s, at least 4, until two windows in a row
# agree within 10 % (a JVM needs tens of seconds of load before its JIT has compiled the hot
# paths, and still gains a few per cent a window before that), at most $warm_windows windows;
# then one window of 1 x 64. Not part of the results, except the count.
warm_up() {
  local system=$1 mode=$2 prev=0 rate i
  only "$system"
  for i in $(seq 1 "$warm_windows"); do
    rate=$("$bin" bench --quiet --endpoint "${sys_endpoint[$system]}" --topic BenchTopic --size "$size" \
      --duration "$warm" produce --producers 64 --concurrency 1 2>/dev/null \
      | sed -n 's/^produce: .* = \([0-9]*\) msgs\/s.*/\1/p' || true)
    rate=${rate:-0}
    say "$system $mode: warm-up window $i: $rate msgs/s"
    if [ "$i" -ge 4 ] && awk -v a="$prev" -v b="$rate" 'BEGIN {exit !(b >= a * 0.9 && b <= a * 1.1)}'; then
      break
    fi
    prev=$rate
  done
  record "$system" "$mode" warmup_windows "$i" "64 x 1 windows of $warm s, at least 4, until two agree within 10 %, last $rate msgs/s"
  "$bin" bench --quiet --endpoint "${sys_endpoint[$system]}" --topic BenchTopic --size "$size" \
    --duration "$warm" produce --producers 1 --concurrency 64 >/dev/null 2>&1 || true
}

shapes=(
  "p1x1|--producers 1 --concurrency 1"
  "p64x1|--producers 64 --concurrency 1"
  "p1x64|--producers 1 --concurrency 64"
  "p64x1b32|--producers 64 --concurrency 1 --batch 32"
)

# flush_phase MODE: both brokers up with MODE, each shape A B B A (rocketlog, Apache, Apache,
# rocketlog), the other system suspended during each run.
flush_phase() {
  local mode=$1
  say "flush mode $mode: starting rocketlog and Apache RocketMQ"
  rm -rf "$work/rl-$mode"
  # shellcheck disable=SC2046
  bin="$work/rocketlog-server" launch "rl-$mode" $(rl_args "$mode" "$work/rl-$mode")
  sys_pids[rocketlog]=$pid
  sys_endpoint[rocketlog]=$RL_CLIENT
  rmq_spawn "$mode" "$(rmq_store "rmq-$mode")"; rmq_ready
  sys_pids[apache]="${rmq_pids[*]}"
  sys_endpoint[apache]=$RMQ_GRPC
  [ -n "$(first_send "$RMQ_GRPC" 120)" ] || { echo "Apache RocketMQ does not accept sends" >&2; exit 1; }
  sampler rocketlog apache
  local s
  for s in rocketlog apache; do warm_up "$s" "$mode"; done
  local entry name args
  for entry in "${shapes[@]}"; do
    name=${entry%%|*} args=${entry#*|}
    for s in rocketlog apache apache rocketlog; do
      # shellcheck disable=SC2086
      produce "$s" "$mode" "$name" $args
    done
  done
  # Second opinions from Java: Apache RocketMQ's own remoting client for batches of 32, and
  # the official gRPC client against both.
  if [ $with_java = 1 ]; then
    remoting_batch "$mode"
    remoting_batch "$mode"
    if [ "$mode" = async ]; then
      for s in rocketlog apache apache rocketlog; do java_grpc "$s" "$mode"; done
    fi
  fi
  if [ "$mode" = async ]; then
    for s in rocketlog apache; do
      only "$s"
      say "$s: preloading $preload messages into ConsTopic"
      "$bin" bench --quiet --endpoint "${sys_endpoint[$s]}" --topic ConsTopic --size "$size" --duration 600 \
        produce --producers 1 --concurrency 64 --messages "$preload" > "$work/preload.$s" 2>&1 || true
      record "$s" async preload "$(sed -n 's/^produce: .* = \([0-9]*\) msgs\/s.*/\1/p' "$work/preload.$s")" "1 x 64 in flight, $preload msgs"
    done
    for s in rocketlog apache; do
      only "$s"
      say "$s: consume warm-up, $((2 * warm)) s (not recorded)"
      "$bin" bench --quiet --endpoint "${sys_endpoint[$s]}" --topic ConsTopic --duration $((2 * warm)) \
        consume --kind push --group ConsWarm --messages "$preload" >/dev/null 2>&1 || true
    done
    consume rocketlog Cons1; consume apache Cons2; consume apache Cons3; consume rocketlog Cons4
  fi
  only none
  sampler_stop
  for s in rocketlog apache; do
    local peak; read -r -a peak < "$work/peak.$s"
    # shellcheck disable=SC2086
    record "$s" "$mode" peak_rss_kb "$(status_kb VmHWM ${sys_pids[$s]})" "VmHWM at the end of the phase (sampled peak VmRSS ${peak[0]} KiB)"
    record "$s" "$mode" peak_anon_kb "${peak[1]}" "sampled peak RssAnon"
  done
  # shellcheck disable=SC2086
  stop ${sys_pids[rocketlog]} ${sys_pids[apache]}
  unset 'sys_pids[rocketlog]' 'sys_pids[apache]'
  rm -rf "${work:?}/rl-$mode" "${work:?}/rmq-$mode"
}

# ---------------------------------------------------------------- Kafka
kafka_phase() {
  local kdir="$work/kafka"
  mkdir -p "$kdir"
  cat > "$conf/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$kdir/data
num.partitions=8
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
CFG
  cat > "$conf/log4j2.properties" <<CFG
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $kdir/kafka.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
CFG
  local kjava=(java "-Dlog4j2.configurationFile=$conf/log4j2.properties" -cp "$kafka_cp")
  # kafka-server-start.sh's defaults: KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS.
  kafka_jvm="-Xms1g -Xmx1g -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"
  local id; id=$("${kjava[@]}" kafka.tools.StorageTool random-uuid | tail -1)
  "${kjava[@]}" kafka.tools.StorageTool format -t "$id" -c "$conf/server.properties" > "$kdir/format.out" 2>&1
  local bootstrap="127.0.0.1:$KAFKA_PORT"
  kperf() { # TOPIC RECORDS [PROPS...]: ProducerPerformance, prints its summary line
    local topic=$1 n=$2; shift 2
    "${kjava[@]}" -Xmx512m org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$bootstrap" \
      --topic "$topic" --num-records "$n" --throughput -1 --record-size "$size" \
      --command-property acks=all "$@" 2>>"$kdir/perf.err" | grep "records sent, .* 50th" | tail -1 || true
  }
  say "Kafka: start"
  local t0 t1 k
  t0=$(now_ms)
  # shellcheck disable=SC2086
  spawn kafka java $kafka_jvm "-Dlog4j2.configurationFile=$conf/log4j2.properties" -cp "$kafka_cp" \
    kafka.Kafka "$conf/server.properties"
  k=$pid
  t1=
  for _ in $(seq 1 60); do
    if [ -n "$(kperf StartTopic 1 max.block.ms=2000 delivery.timeout.ms=3000 request.timeout.ms=1000)" ]; then
      t1=$(now_ms); break
    fi
    [ $(( $(now_ms) - t0 )) -gt 180000 ] && break
    sleep 0.1
  done
  [ -n "$t1" ] || { echo "Kafka did not acknowledge a send:" >&2; tail -20 "$kdir/kafka.log" "$work/kafka.out" >&2; exit 1; }
  local c0 c1 client_start
  c0=$(now_ms); kperf StartTopic 1 > /dev/null; client_start=$(( $(now_ms) - c0 ))
  record kafka - first_ack_ms $((t1 - t0)) "includes starting one perf-tool JVM per attempt (one attempt on the running broker: $client_start ms)"
  sleep "$idle_wait"
  record kafka async idle_rss_kb "$(status_kb VmRSS "$k")" "${idle_wait} s after the first send"
  record kafka async idle_anon_kb "$(status_kb RssAnon "$k")" ""
  local topic
  for topic in BenchTopic "BenchFsync --config flush.messages=1" ConsTopic; do
    # shellcheck disable=SC2086  # the topic name may carry its --config
    "${kjava[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic $topic \
      --partitions 8 --replication-factor 1 >> "$kdir/topics.out" 2>&1
  done
  sys_pids[kafka]=$k
  sampler kafka
  say "Kafka: warm-up (not recorded)"
  local line rate
  declare -A last_rate
  local prev=0 i
  for i in $(seq 1 "$warm_windows"); do
    line=$(kperf BenchTopic "$kafka_warm"); last_rate[async]=$(awk -F', ' '{split($2, a, " "); printf "%d", a[1]}' <<<"$line")
    say "kafka: warm-up window $i: ${last_rate[async]} records/s"
    if [ "$prev" -gt 0 ] && awk -v a="$prev" -v b="${last_rate[async]:-0}" 'BEGIN {exit !(b >= a * 0.9 && b <= a * 1.1)}'; then
      break
    fi
    prev=${last_rate[async]:-0}
  done
  record kafka async warmup_windows "$i" "ProducerPerformance runs of $kafka_warm records until two agree within 10 %"
  line=$(kperf BenchFsync $((kafka_warm / 5))); last_rate[sync]=$(awk -F', ' '{split($2, a, " "); printf "%d", a[1]}' <<<"$line")
  local mode n
  for mode in async sync sync async; do
    topic=BenchTopic; [ "$mode" = sync ] && topic=BenchFsync
    # Records for about $dur seconds at the last rate seen (ProducerPerformance has no time bound).
    n=$(( ${last_rate[$mode]:-1000} * dur )); [ "$n" -lt 2000 ] && n=2000
    c0=$(ticks "$k")
    line=$(kperf "$topic" "$n")
    c1=$(ticks "$k")
    rm -f "$work/client.cpu"
    rate=$(awk -F', ' '{split($2, a, " "); printf "%d", a[1]}' <<<"$line")
    last_rate[$mode]=$rate
    record kafka "$mode" producer_perf "${rate:-0}" "$topic: $line"
    cpu_record kafka "$mode" producer_perf $((c1 - c0)) "$n"
    say "kafka $mode ProducerPerformance: ${rate:-failed} records/s"
  done
  say "Kafka: preloading $preload records, then ConsumerPerformance twice"
  line=$(kperf ConsTopic "$preload")
  record kafka async preload "$(awk -F', ' '{split($2, a, " "); printf "%d", a[1]}' <<<"$line")" "$preload records"
  local g
  for g in kc1 kc2; do
    c0=$(ticks "$k")
    line=$("${kjava[@]}" -Xmx512m org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" \
      --topic ConsTopic --num-records "$preload" --group "$g" --timeout $((consume_max * 1000)) \
      2>>"$kdir/perf.err" | tail -1) || true
    c1=$(ticks "$k")
    rm -f "$work/client.cpu"
    # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, ...
    rate=$(awk -F', ' '{printf "%d", $6}' <<<"$line")
    record kafka async consume "${rate:-0}" "group $g: $line"
    cpu_record kafka async consume $((c1 - c0)) "$(awk -F', ' '{printf "%d", $5}' <<<"$line")"
    say "kafka ConsumerPerformance ($g): ${rate:-failed} records/s"
  done
  sampler_stop
  local peak; read -r -a peak < "$work/peak.kafka"
  record kafka async peak_rss_kb "$(status_kb VmHWM "$k")" "VmHWM at the end (sampled peak VmRSS ${peak[0]} KiB)"
  record kafka async peak_anon_kb "${peak[1]}" "sampled peak RssAnon"
  stop "$k"
  unset 'sys_pids[kafka]'
  rm -rf "$kdir/data"
}

# ---------------------------------------------------------------- the run
say "mode: $([ $quick = 1 ] && echo quick || echo full), ${dur} s per run, namespace: $PEERS_IN_NETNS"
rmq_template
say "start-up: time to the first acknowledged send, idle RSS (rocketlog, Apache, Apache, rocketlog)"
startup rocketlog async 1; startup apache async 2; startup apache sync 3; startup rocketlog sync 4
flush_phase async
flush_phase sync
[ $with_kafka = 1 ] && kafka_phase

# ---------------------------------------------------------------- the report
elapsed=$(( $(date +%s) - started_at ))
mean() { # SYSTEM MODE MEASURE
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
    ms) awk -v v="$1" 'BEGIN {printf "%.0f ms", v}' ;;
    us) awk -v v="$1" 'BEGIN {printf "%.1f µs", v}' ;;
    *) awk -v v="$1" 'BEGIN {printf "%.0f", v}' ;;
  esac
}
# ratio_row LABEL A_SYS A_MODE A_MEASURE B_SYS B_MODE B_MEASURE UNIT BETTER TARGET
ratio_row() {
  local label=$1 a b unit=$8 better=$9 target=${10}
  a=$(mean "$2" "$3" "$4"); b=$(mean "$5" "$6" "$7")
  local ratio="n/a" met=""
  if [ -n "$a" ] && [ -n "$b" ]; then
    if [ "$better" = higher ]; then
      ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f×", a / b}')
      [ -n "$target" ] && met=$(awk -v a="$a" -v b="$b" -v t="$target" 'BEGIN {print (a / b >= t) ? "yes" : "**no**"}')
    else
      ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {if (2 * a < b) printf "%.3f (1/%.0f)", a / b, b / a; else printf "%.2f×", a / b}')
      [ -n "$target" ] && met=$(awk -v a="$a" -v b="$b" -v t="$target" 'BEGIN {print (b / a >= t) ? "yes" : "**no**"}')
    fi
  fi
  local goal="—"
  if [ -n "$target" ]; then
    if [ "$better" = higher ]; then goal="≥ ${target}×"; else goal="≤ 1/$target"; fi
  fi
  echo "| $label | $(fmt "$a" "$unit") ($(runs "$2" "$3" "$4")) | $(fmt "$b" "$unit") ($(runs "$5" "$6" "$7")) | $ratio | $goal ${met:+($met)} |"
}

{
  echo "# rocketlog, Apache RocketMQ $ROCKETMQ_VERSION and Kafka $KAFKA_VERSION on one machine"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $([ $quick = 1 ] && echo '**quick mode** (short runs: for checking the script)' || echo 'full mode'), whole run ${elapsed} s."
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr), data on $(findmnt -no FSTYPE -T "$work" 2>/dev/null || echo '?'); servers and load generators share the cores."
  echo "Network: $([ "$PEERS_IN_NETNS" = 1 ] && echo 'a namespace with only loopback' || echo "this host's loopback")."
  echo "Versions: rocketlog $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') (release build);"
  echo "Apache RocketMQ $ROCKETMQ_VERSION (namesrv + proxy in local mode with the broker inside); Kafka $KAFKA_VERSION (one KRaft broker+controller);"
  echo "official Java client $CLIENT_VERSION; $(java -version 2>&1 | head -1)."
  echo
  echo "Every run: 1 KiB bodies, ${dur} s, each send awaiting its acknowledgement, \`rocketlog bench\` against both"
  echo "brokers, A B B A (rocketlog, Apache, Apache, rocketlog) with the system not measured suspended (SIGSTOP)."
  echo "Cells: mean (each run). CPU: user + system time of the server processes (Apache: namesrv + proxy) per message."
  echo
  echo "## rocketlog / Apache RocketMQ 5"
  echo
  echo "| measure | rocketlog | Apache RocketMQ | rocketlog / Apache | target |"
  echo "|---|---|---|---|---|"
  for mode in async sync; do
    ratio_row "$mode: 1 producer × 1 in flight, msgs/s" rocketlog $mode p1x1 apache $mode p1x1 n higher ""
    ratio_row "$mode: 64 producers × 1 in flight, msgs/s" rocketlog $mode p64x1 apache $mode p64x1 n higher 2
    ratio_row "$mode: 1 producer × 64 in flight, msgs/s" rocketlog $mode p1x64 apache $mode p1x64 n higher ""
    ratio_row "$mode: 64 × 1, batches of 32, msgs/s" rocketlog $mode p64x1b32 apache $mode p64x1b32 n higher 1.5
  done
  if [ $with_java = 1 ]; then
    for mode in async sync; do
      ratio_row "$mode: 64 × 1, batches of 32 (Apache: its remoting client, no proxy), msgs/s" \
        rocketlog $mode p64x1b32 apache $mode remoting_p64x1b32 n higher ""
    done
    ratio_row "async: 64 × 1, official Java client, msgs/s" rocketlog async java_p64x1 apache async java_p64x1 n higher ""
  fi
  ratio_row "async: push consume + ack of the preloaded backlog, msgs/s" rocketlog async consume apache async consume n higher ""
  for mode in async sync; do
    ratio_row "$mode: idle RSS after start (${idle_wait} s after the first send)" rocketlog $mode idle_rss_kb apache $mode idle_rss_kb kb lower 20
    ratio_row "$mode: idle anonymous RSS" rocketlog $mode idle_anon_kb apache $mode idle_anon_kb kb lower ""
    ratio_row "$mode: RSS right after the first send" rocketlog $mode ack_rss_kb apache $mode ack_rss_kb kb lower ""
  done
  ratio_row "process start → first acknowledged send" rocketlog - first_ack_ms apache - first_ack_ms ms lower 10
  for mode in async sync; do
    ratio_row "$mode: peak RSS (VmHWM)" rocketlog $mode peak_rss_kb apache $mode peak_rss_kb kb lower ""
    ratio_row "$mode: peak anonymous RSS" rocketlog $mode peak_anon_kb apache $mode peak_anon_kb kb lower ""
  done
  for mode in async sync; do
    for m in p1x1 p64x1 p1x64 p64x1b32; do
      ratio_row "$mode: server CPU per message, $m" rocketlog $mode "cpu_us:$m" apache $mode "cpu_us:$m" us lower ""
    done
  done
  ratio_row "async: server CPU per message, consume" rocketlog async cpu_us:consume apache async cpu_us:consume us lower ""
  echo
  echo "Load generator (\`rocketlog bench\`) CPU per message, rocketlog / Apache runs:"
  for mode in async sync; do
    for m in p1x1 p64x1 p1x64 p64x1b32; do
      echo "$mode $m: $(fmt "$(mean rocketlog $mode "client_cpu_us:$m")" us) / $(fmt "$(mean apache $mode "client_cpu_us:$m")" us);"
    done
  done
  if [ $with_kafka = 1 ]; then
    echo
    echo "## rocketlog / Kafka (informational: a different protocol, client and consumption model)"
    echo
    echo "Kafka is measured with its own ProducerPerformance (one producer, acks=all, default batching:"
    echo "linger.ms 5, batch.size 16 KiB) and ConsumerPerformance (offsets, no per-message ack); its"
    echo "\"sync\" topic has flush.messages=1 (an fsync per append). Records per run are sized to about ${dur} s."
    echo
    echo "| measure | rocketlog | Kafka | rocketlog / Kafka | |"
    echo "|---|---|---|---|---|"
    for mode in async sync; do
      ratio_row "$mode: rocketlog 64 × batches of 32 vs Kafka producer perf, msgs/s" rocketlog $mode p64x1b32 kafka $mode producer_perf n higher ""
      ratio_row "$mode: rocketlog 1 × 64 in flight vs Kafka producer perf, msgs/s" rocketlog $mode p1x64 kafka $mode producer_perf n higher ""
      ratio_row "$mode: server CPU per message (batch 32 vs producer perf)" rocketlog $mode cpu_us:p64x1b32 kafka $mode cpu_us:producer_perf us lower ""
    done
    ratio_row "consume, msgs/s (push + ack vs ConsumerPerformance)" rocketlog async consume kafka async consume n higher ""
    ratio_row "idle RSS after start" rocketlog async idle_rss_kb kafka async idle_rss_kb kb lower ""
    ratio_row "idle anonymous RSS" rocketlog async idle_anon_kb kafka async idle_anon_kb kb lower ""
    ratio_row "process start → first acknowledged send (Kafka: upper bound)" rocketlog - first_ack_ms kafka - first_ack_ms ms lower ""
    ratio_row "peak RSS under load (VmHWM)" rocketlog async peak_rss_kb kafka async peak_rss_kb kb lower ""
  fi
  echo
  echo "## Every figure"
  echo
  echo '```'
  column -t -s "$(printf '\t')" "$raw" 2>/dev/null || cat "$raw"
  echo '```'
  echo
  echo "## Configurations"
  echo
  echo "rocketlog: \`rocketlog $(rl_args MODE DATA)\` (defaults otherwise: 8 queues per auto-created topic, 1 GiB segments, async flush every 500 ms)."
  echo
  echo "Apache RocketMQ namesrv: \`java $rmq_namesrv_jvm org.apache.rocketmq.namesrv.NamesrvStartup -c namesrv.conf\`; proxy:"
  echo "\`java $rmq_proxy_jvm org.apache.rocketmq.proxy.ProxyStartup -pm local -pc rmq-proxy.json -bc broker-MODE.conf\`."
  echo "Topics (8 read/write queues, +message.type=NORMAL) and groups created with mqadmin."
  for f in namesrv.conf rmq-proxy.json broker-async.conf broker-sync.conf server.properties; do
    [ -f "$conf/$f" ] || continue
    echo; echo "\`$f\`:"; echo '```'; sed "s|$work|WORK|g" "$conf/$f"; echo '```'
  done
  if [ $with_kafka = 1 ]; then
    echo
    echo "Kafka: \`java $kafka_jvm kafka.Kafka server.properties\`; topics of 8 partitions; producer perf with acks=all."
  fi
} > "$report"
cat "$report"
echo "run.sh: report in $report, figures in $raw" >&2
