# Shared by the bench scripts (sourced, not run): builds the release binary ($bin), makes a
# work directory ($work) and, on exit, kills every process whose pid is in $pids and removes
# the work directory.
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
