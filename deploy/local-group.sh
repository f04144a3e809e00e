#!/usr/bin/env bash
# Starts a replicated broker group on this machine for trying replication out: a nameserver,
# a master (broker id 0) and N slaves (ids 1..N) of broker group "broker-a", each with its own
# data folder under DIR, sync replication by default. With --controller: three nameservers
# that run the controller and N+1 replicas (ids 1..N+1) whose master it elects. Ctrl-C stops
# them all (cleanly).
#
#   deploy/local-group.sh [--slaves N] [--mode sync|async] [--controller] [--dir DIR] [--bin PATH]
#
# Ports: nameserver 9876 (controller: 9876-9878), broker i client 8081+i, replication 10912+i.
set -euo pipefail

slaves=1
mode=sync
controller=false
dir=./rocketlog-group
bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --slaves) slaves="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --controller) controller=true; shift ;;
    --dir) dir="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$mode" in sync|async) ;; *) echo "--mode is sync or async, not $mode" >&2; exit 2 ;; esac
case "$slaves" in ''|*[!0-9]*) echo "--slaves takes a number, not $slaves" >&2; exit 2 ;; esac
if [ -z "$bin" ]; then
  cargo build --release -p rocketlog >&2
  bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/rocketlog"
fi
mkdir -p "$dir"

pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

broker_config() { # id master_address
  local id=$1 master=$2 data="$dir/broker-a-$1"
  mkdir -p "$data"
  {
    echo "listen = \"127.0.0.1:$((8081 + id))\""
    echo "[broker]"
    echo "broker_name = \"broker-a\""
    echo "broker_id = $id"
    echo "data_dir = \"$data\""
    if [ "$controller" = true ]; then
      echo "nameserver_addresses = [\"127.0.0.1:9876\", \"127.0.0.1:9877\", \"127.0.0.1:9878\"]"
    else
      echo "nameserver_addresses = [\"127.0.0.1:9876\"]"
    fi
    # Slaves get a replication port too: they serve it once promoted.
    echo "replication_listen = \"127.0.0.1:$((10912 + id))\""
    echo "[broker.replication]"
    echo "mode = \"$mode\""
    echo "min_in_sync_replicas = $((slaves > 0 ? 2 : 1))"
    if [ "$controller" = true ]; then
      echo "controller = true"
    elif [ "$id" != 0 ]; then
      echo "master_address = \"$master\""
    fi
  } > "$data.toml"
  echo "$data.toml"
}

if [ "$controller" = true ]; then
  peers='"1=127.0.0.1:9876", "2=127.0.0.1:9877", "3=127.0.0.1:9878"'
  for n in 1 2 3; do
    mkdir -p "$dir/controller-$n"
    printf '[nameserver.controller]\nenabled = true\nnode_id = %s\npeers = [%s]\ndata_dir = "%s"\n' \
      "$n" "$peers" "$dir/controller-$n" > "$dir/nameserver-$n.toml"
    "$bin" --config "$dir/nameserver-$n.toml" nameserver --listen "127.0.0.1:$((9875 + n))" & pids+=($!)
  done
  for i in $(seq 1 "$((slaves + 1))"); do
    "$bin" --config "$(broker_config "$i" "")" broker & pids+=($!)
  done
  echo "broker group broker-a: $((slaves + 1)) replicas on 8082.., $mode replication, master elected by the controller; Ctrl-C stops" >&2
  echo "status: $bin admin --controller 127.0.0.1:9876,127.0.0.1:9877,127.0.0.1:9878 controller status" >&2
  wait
  exit 0
fi
"$bin" nameserver --listen 127.0.0.1:9876 & pids+=($!)
"$bin" --config "$(broker_config 0 "")" broker & pids+=($!)
for i in $(seq 1 "$slaves"); do
  "$bin" --config "$(broker_config "$i" 127.0.0.1:10912)" broker & pids+=($!)
done
echo "broker group broker-a: master 127.0.0.1:8081, $slaves slave(s) on 8082.., $mode replication; Ctrl-C stops" >&2
echo "switch-over: stop the master, then: $bin admin --broker 127.0.0.1:8082 promote" >&2
wait
