# Shared by the bench scripts (sourced, not run): builds the release binary ($bin), makes a
# work directory ($work) and, on exit, kills every process whose pid is in $pids and removes
# the work directory. `launch NAME ARGS...` runs rocketlog with ARGS, waits for its readiness
# line and sets $ready_line and $pid; `field NAME` reads `NAME=` from that line.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release/rocketlog"
cargo build --release -p rocketlog --manifest-path "$root/Cargo.toml" >&2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

launch() {
  local name=$1; shift
  "$bin" "$@" > "$work/$name.out" 2> "$work/$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do
    if grep -q "^rocketlog ready" "$work/$name.out" 2>/dev/null; then
      ready_line=$(grep "^rocketlog ready" "$work/$name.out")
      return
    fi
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$work/$name.err" >&2; exit 1
}
field() { tr ' ' '\n' <<<"$ready_line" | sed -n "s/^$1=//p"; }
