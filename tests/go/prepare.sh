#!/usr/bin/env bash
# Prepares the official Go client suite (tests/go) the way the test harness (tests/src/golang.rs)
# would: checks the Go toolchain, downloads the modules pinned in go.mod/go.sum through the Go
# module proxy and builds the scenario program into target/, so that the tests find the build
# up to date. CI runs this from the repository root before the tests (`bash tests/go/prepare.sh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Keep in step with tests/src/golang.rs (BINARY, GO_BUILD_ARGS, GOFLAGS).
binary=target/rocketlog-go-compat
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOTOOLCHAIN=local

if ! version=$(go version 2>&1); then
  echo "tests/go: \`go version\` failed (is the Go toolchain installed and on PATH?):" >&2
  echo "$version" >&2
  exit 1
fi
echo "$version"

# go build downloads exactly the modules the program needs (checked against go.sum); a bare
# `go mod download` would fetch the whole module graph, test-only modules included.
go build -o "$binary" .
test -x "$binary" || { echo "tests/go: the build left no $binary" >&2; exit 1; }

# The program starts: without arguments it prints its usage and exits 2.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
set +e
HOME="$home" "$binary" 2>"$home/usage"
status=$?
set -e
if [ "$status" != 2 ] || ! grep -q '^usage:' "$home/usage"; then
  echo "tests/go: the built program did not start (exit $status):" >&2
  cat "$home/usage" >&2
  exit 1
fi
echo "tests/go ready: $binary ($(go list -m -f '{{.Path}} {{.Version}}' github.com/apache/rocketmq-clients/golang/v5))"
