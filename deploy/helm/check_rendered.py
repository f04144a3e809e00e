#!/usr/bin/env python3
"""Cross-checks rendered rocketlog manifests where a schema cannot see.

The Kubernetes schemas check each object alone; this checks that the objects fit together and
that the configuration files the pods read are valid:

- every Service, PodDisruptionBudget and ServiceMonitor selects pods (or Services) that exist,
  and every named targetPort / ServiceMonitor port exists on what it selects;
- every ConfigMap and Secret a pod mounts or reads exists (Secrets may come from the user:
  pass their names with --external-secret);
- every `--config` file a container names is a key of a mounted ConfigMap, parses as TOML, and
  sets only settings documented in docs/configuration.md.

    python3 deploy/helm/check_rendered.py [--external-secret NAME] FILE.yaml...
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented_keys():
    keys = set()
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\|\s*`([a-z_][a-z0-9_.]*)`\s*\|", line)
        if m:
            keys.add(m.group(1))
    return keys


def flatten(table, prefix=""):
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, f"{name}.")
        else:
            yield name


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_specs(objects):
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Deployment", "DaemonSet"):
            tmpl = obj["spec"]["template"]
            yield obj, tmpl["metadata"].get("labels", {}), tmpl["spec"]


def check(objects, external_secrets):
    problems = []
    docs = documented_keys()
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    configmaps = by_kind.get("ConfigMap", {})
    secrets = set(by_kind.get("Secret", {})) | set(external_secrets)
    pods = list(pod_specs(objects))

    def container_ports(spec):
        return {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}

    for name, svc in by_kind.get("Service", {}).items():
        selected = [spec for _, labels, spec in pods if matches(svc["spec"].get("selector"), labels)]
        if not selected:
            problems.append(f"Service {name} selects no pod template")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and any(target not in container_ports(s) for s in selected):
                problems.append(f"Service {name}: targetPort {target!r} is not a port of every pod it selects")
        for owner, _, _ in pods:
            if owner["spec"].get("serviceName") == name and svc["spec"].get("clusterIP") != "None":
                problems.append(f"Service {name} governs {owner['metadata']['name']} but is not headless")
    for owner, _, _ in pods:
        governing = owner["spec"].get("serviceName")
        if governing and governing not in by_kind.get("Service", {}):
            problems.append(f"{owner['kind']} {owner['metadata']['name']}: serviceName {governing} does not exist")

    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(matches(selector, labels) for _, labels, _ in pods):
            problems.append(f"PodDisruptionBudget {name} selects no pod template")

    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        selector = sm["spec"]["selector"].get("matchLabels", {})
        services = [s for s in by_kind.get("Service", {}).values() if matches(selector, s["metadata"].get("labels", {}))]
        if not services:
            problems.append(f"ServiceMonitor {name} selects no Service")
        for endpoint in sm["spec"].get("endpoints", []):
            for s in services:
                if endpoint.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    problems.append(f"ServiceMonitor {name}: Service {s['metadata']['name']} has no port {endpoint.get('port')!r}")

    for owner, _, spec in pods:
        where = f"{owner['kind']} {owner['metadata']['name']}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in owner["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problems.append(f"{where}: ConfigMap {v['configMap']['name']} does not exist")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                problems.append(f"{where}: Secret {v['secret']['secretName']} does not exist")
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    problems.append(f"{where}: volume {m['name']} is mounted but not defined")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    problems.append(f"{where}: env {env['name']} reads Secret {ref['name']}, which does not exist")
            args = c.get("args", [])
            if "--config" not in args and not any(a.startswith("--config=") for a in args):
                continue
            if "--config" in args:
                path = args[args.index("--config") + 1]
            else:
                path = next(a for a in args if a.startswith("--config=")).split("=", 1)[1]
            directory, _, key = path.rpartition("/")
            volume = volumes.get(mounts.get(directory, ""), {})
            cm = configmaps.get(volume.get("configMap", {}).get("name"), {})
            # `$(POD_NAME)` in an argument is expanded by Kubernetes: one file per pod.
            first = owner["spec"].get("ordinals", {}).get("start", 0)
            pods_names = [f"{owner['metadata']['name']}-{i}" for i in range(first, first + owner["spec"].get("replicas", 1))]
            keys = [key.replace("$(POD_NAME)", n) for n in pods_names] if "$(POD_NAME)" in key else [key]
            for k in keys:
                if k not in cm.get("data", {}):
                    problems.append(f"{where}: --config {directory}/{k} is not a key of a ConfigMap mounted at {directory}")
                    continue
                try:
                    settings = tomllib.loads(cm["data"][k])
                except tomllib.TOMLDecodeError as e:
                    problems.append(f"{where}: {directory}/{k} is not valid TOML: {e}")
                    continue
                for setting in flatten(settings):
                    if setting not in docs:
                        problems.append(f"{where}: {directory}/{k} sets {setting}, which docs/configuration.md does not list")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--external-secret", action="append", default=[])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    failed = False
    for file in args.files:
        objects = [o for o in yaml.safe_load_all(Path(file).read_text()) if o]
        problems = check(objects, args.external_secret)
        for p in problems:
            print(f"{file}: {p}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            kinds = sorted({o["kind"] for o in objects})
            print(f"{file}: {len(objects)} objects fit together ({', '.join(kinds)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
