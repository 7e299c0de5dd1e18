#!/usr/bin/env python3
"""Validates rendered Conclave Kubernetes manifests (the output of `kubectl kustomize`).

Usage:
    validate.py RENDERED.yaml --kubernetes-version 1.30 [--kubernetes-version 1.37]
    validate.py --self-test

Run by deploy/check-packaging.sh with the pinned kubernetes-validate, jsonschema and
PyYAML. Three layers, each printing what it checked:

1. Every document of a built-in kind is validated with kubernetes-validate against the
   Kubernetes API schema of each version given, strictly (unknown fields are errors). A
   kind it has no schema for is an error, except the custom resources listed in
   CUSTOM_RESOURCES: those are skipped there, visibly, and
2. validated with jsonschema against the schema committed in deploy/kubernetes/schemas/.
3. Consistency checks the schemas cannot express: one per-pod Service per replica,
   selectors that select, named ports that exist, a termination grace longer than the
   drain grace in the ConfigMap, env references defined before use, a pinned image, the
   restricted pod security settings.

`--self-test` checks that the committed ServiceMonitor schema accepts a valid document
and rejects broken ones (so that a vacuous schema cannot pass).

Exit status: 0 when everything passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"

# (apiVersion, kind) of custom resources -> committed JSON schema file.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}

# Secrets the manifests reference but never contain: the operator creates them.
EXTERNAL_SECRETS = {"conclave-postgres", "conclave-sfu-tls"}

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
DEFAULT_DRAIN_GRACE_SECS = 25


class Report:
    def __init__(self) -> None:
        self.errors = 0

    def ok(self, message: str) -> None:
        print(f"  ok    {message}")

    def info(self, message: str) -> None:
        print(f"  info  {message}")

    def fail(self, message: str) -> None:
        print(f"  ERROR {message}")
        self.errors += 1

    def expect(self, condition: bool, message: str) -> None:
        if condition:
            self.ok(message)
        else:
            self.fail(message)


def ident(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def load_schema(name: str) -> dict:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def schema_errors(schema: dict, doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


# --- 1 and 2: schemas ---------------------------------------------------------------


def validate_schemas(docs: list[dict], versions: list[str], report: Report) -> None:
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CUSTOM_RESOURCES:
            schema_file = CUSTOM_RESOURCES[key]
            report.info(
                f"{ident(doc)}: custom resource {key[0]}, not in kubernetes-validate: "
                f"SKIPPED there, validated against schemas/{schema_file} instead"
            )
            errors = schema_errors(load_schema(schema_file), doc)
            for error in errors:
                report.fail(f"{ident(doc)} (schemas/{schema_file}): {error}")
            if not errors:
                report.ok(f"{ident(doc)} valid against schemas/{schema_file}")
            continue
        for version in versions:
            try:
                used = kubernetes_validate.validate(doc, version, strict=True)
                report.ok(f"{ident(doc)} valid against Kubernetes {used} (strict)")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "<root>"
                report.fail(f"{ident(doc)} invalid for Kubernetes {e.version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                report.fail(f"{ident(doc)}: {e.message} (add a schema to CUSTOM_RESOURCES?)")
            except kubernetes_validate.VersionNotSupportedError:
                report.fail(f"kubernetes-validate does not support Kubernetes {version}")


# --- 3: consistency -----------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def env_value(container: dict, name: str) -> dict | None:
    for env in container.get("env", []):
        if env["name"] == name:
            return env
    return None


def check_statefulset(sts: dict, docs: list[dict], report: Report) -> None:
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    replicas = spec.get("replicas", 1)
    template = spec["template"]
    pod_labels = template["metadata"].get("labels", {})
    pod = template["spec"]
    report.expect(
        selects(spec["selector"].get("matchLabels", {}), pod_labels),
        f"StatefulSet/{name}: selector matches its pod template labels",
    )
    services = [d for d in docs if d["kind"] == "Service"]
    by_name = {s["metadata"]["name"]: s for s in services}

    # Governing headless Service.
    headless = by_name.get(spec.get("serviceName", ""))
    report.expect(
        headless is not None
        and headless["spec"].get("clusterIP") == "None"
        and headless["spec"].get("publishNotReadyAddresses") is True,
        f"StatefulSet/{name}: serviceName {spec.get('serviceName')} is a headless Service "
        "with publishNotReadyAddresses",
    )

    # One per-pod Service per replica, and none for pods that do not exist.
    per_pod = {}
    for svc in services:
        selector = svc["spec"].get("selector", {})
        if POD_NAME_LABEL in selector:
            per_pod.setdefault(selector[POD_NAME_LABEL], []).append(svc["metadata"]["name"])
    expected = {f"{name}-{i}" for i in range(replicas)}
    missing = sorted(expected - per_pod.keys())
    extra = sorted(per_pod.keys() - expected)
    duplicated = sorted(p for p, names in per_pod.items() if len(names) > 1)
    report.expect(
        not missing and not extra and not duplicated,
        f"StatefulSet/{name}: {replicas} replicas, one per-pod Service each "
        f"(missing: {missing or 'none'}, for absent pods: {extra or 'none'}, "
        f"duplicated: {duplicated or 'none'})",
    )
    for pod_name, names in per_pod.items():
        for svc_name in names:
            svc = by_name[svc_name]
            report.expect(
                svc["spec"].get("publishNotReadyAddresses") is True,
                f"Service/{svc_name}: publishes not-ready addresses (a draining pod keeps "
                "its clients' packets)",
            )

    # Every Service selecting these pods: selector and named target ports.
    container_ports = {
        (p.get("name"), p.get("protocol", "TCP")): p["containerPort"]
        for c in pod["containers"]
        for p in c.get("ports", [])
    }
    port_names = {n for n, _ in container_ports}
    for svc in services:
        selector = dict(svc["spec"].get("selector", {}))
        pod_name = selector.pop(POD_NAME_LABEL, None)
        if not selector or not selects(selector, pod_labels):
            continue
        if pod_name is not None and not pod_name.startswith(f"{name}-"):
            report.fail(f"Service/{svc['metadata']['name']}: selects pod {pod_name} not of {name}")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            proto = port.get("protocol", "TCP")
            found = (
                (target, proto) in container_ports
                if isinstance(target, str)
                else target in {v for (n, pr), v in container_ports.items() if pr == proto}
            )
            report.expect(
                found,
                f"Service/{svc['metadata']['name']}: port {port.get('name')} -> container "
                f"port {target}/{proto} exists",
            )
        if svc["spec"].get("type") in ("LoadBalancer", "NodePort") and not pod_name:
            report.expect(
                svc["spec"].get("publishNotReadyAddresses") is not True,
                f"Service/{svc['metadata']['name']}: bootstrap Service sends new clients to "
                "ready pods only",
            )

    # PodDisruptionBudget.
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        if not selects(pdb["spec"]["selector"].get("matchLabels", {}), pod_labels):
            continue
        min_available = pdb["spec"].get("minAvailable")
        max_unavailable = pdb["spec"].get("maxUnavailable")
        if isinstance(min_available, int):
            allowed = replicas - min_available
        elif isinstance(max_unavailable, int):
            allowed = max_unavailable
        else:
            allowed = None
        report.expect(
            allowed is None or allowed >= 1,
            f"PodDisruptionBudget/{pdb['metadata']['name']}: lets node drains evict a pod "
            f"({replicas} replicas, minAvailable {min_available}, maxUnavailable {max_unavailable})",
        )

    # Pod-level settings.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    drain = drain_grace_secs(pod, docs, report)
    report.expect(
        grace >= drain + 10,
        f"StatefulSet/{name}: terminationGracePeriodSeconds {grace} >= drain grace {drain} s + 10 s",
    )
    report.expect(
        pod.get("enableServiceLinks") is False,
        f"StatefulSet/{name}: enableServiceLinks false (no Service env vars in CONCLAVE_*)",
    )
    report.expect(not pod.get("hostNetwork", False), f"StatefulSet/{name}: no hostNetwork")
    pod_sc = pod.get("securityContext", {})
    report.expect(
        pod_sc.get("runAsNonRoot") is True
        and pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"StatefulSet/{name}: pod runs as non-root with the RuntimeDefault seccomp profile",
    )

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for volume in volumes.values():
        if "configMap" in volume:
            report.expect(
                volume["configMap"]["name"] in config_maps,
                f"StatefulSet/{name}: volume {volume['name']} -> ConfigMap "
                f"{volume['configMap']['name']} is in the render",
            )
        if "secret" in volume:
            secret = volume["secret"]["secretName"]
            report.expect(
                secret in EXTERNAL_SECRETS,
                f"StatefulSet/{name}: volume {volume['name']} -> Secret {secret} "
                "(created by the operator)",
            )

    for container in pod["containers"]:
        check_container(name, container, volumes, port_names, report)


def drain_grace_secs(pod: dict, docs: list[dict], report: Report) -> int:
    """The drain grace: CONCLAVE_TIMING__DRAIN_GRACE_SECS, else the mounted config."""
    for container in pod["containers"]:
        env = env_value(container, "CONCLAVE_TIMING__DRAIN_GRACE_SECS")
        if env is not None and "value" in env:
            return int(env["value"])
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for volume in pod.get("volumes", []):
        cm = config_maps.get(volume.get("configMap", {}).get("name"))
        for key, text in (cm or {}).get("data", {}).items():
            if key.endswith(".toml"):
                try:
                    config = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    report.fail(f"ConfigMap/{cm['metadata']['name']}: {key} is not TOML: {e}")
                    continue
                report.ok(f"ConfigMap/{cm['metadata']['name']}: {key} parses as TOML")
                return int(config.get("timing", {}).get("drain_grace_secs", DEFAULT_DRAIN_GRACE_SECS))
    return DEFAULT_DRAIN_GRACE_SECS


def check_container(sts: str, c: dict, volumes: dict, port_names: set, report: Report) -> None:
    where = f"StatefulSet/{sts} container {c['name']}"
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
    report.expect(
        bool(tag) and tag != "latest", f"{where}: image {image} has a pinned tag or digest"
    )

    # Env: $(VAR) references must name variables defined earlier in the list.
    defined: set[str] = set()
    for env in c.get("env", []):
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", env.get("value", "")):
            report.expect(ref in defined, f"{where}: env {env['name']} uses $({ref}) defined before it")
        defined.add(env["name"])
    node_id = env_value(c, "CONCLAVE_CLUSTER__NODE_ID")
    report.expect(
        node_id is not None
        and node_id.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
        f"{where}: CONCLAVE_CLUSTER__NODE_ID is the pod name",
    )
    for required in ("CONCLAVE_CLUSTER__ADVERTISE", "CONCLAVE_STORE", "CONCLAVE_CERT", "CONCLAVE_KEY"):
        report.expect(env_value(c, required) is not None, f"{where}: sets {required}")

    # Probes on named ports that exist.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = c.get(probe, {}).get("httpGet")
        report.expect(
            http is not None and (http["port"] in port_names or isinstance(http["port"], int)),
            f"{where}: {probe} {http and http.get('path')} on port {http and http.get('port')}",
        )
    paths = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
    report.expect(
        paths == {"livenessProbe": "/livez", "readinessProbe": "/readyz"},
        f"{where}: liveness on /livez, readiness on /readyz",
    )

    for mount in c.get("volumeMounts", []):
        report.expect(mount["name"] in volumes, f"{where}: mount {mount['mountPath']} has its volume")

    sc = c.get("securityContext", {})
    report.expect(
        sc.get("allowPrivilegeEscalation") is False
        and sc.get("readOnlyRootFilesystem") is True
        and "ALL" in sc.get("capabilities", {}).get("drop", [])
        and not sc.get("capabilities", {}).get("add"),
        f"{where}: no privilege escalation, read-only root, all capabilities dropped",
    )
    resources = c.get("resources", {})
    report.expect(
        {"cpu", "memory"} <= resources.get("requests", {}).keys()
        and "memory" in resources.get("limits", {}),
        f"{where}: cpu and memory requests, memory limit",
    )


def check_service_monitors(docs: list[dict], report: Report) -> None:
    services = [d for d in docs if d["kind"] == "Service"]
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selector = sm["spec"]["selector"].get("matchLabels", {})
        chosen = [s for s in services if selects(selector, s["metadata"].get("labels", {}))]
        report.expect(
            len(chosen) == 1,
            f"{ident(sm)}: selects exactly one Service ({[s['metadata']['name'] for s in chosen]})",
        )
        for endpoint in sm["spec"]["endpoints"]:
            port = endpoint.get("port")
            for svc in chosen:
                names = {p.get("name") for p in svc["spec"].get("ports", [])}
                report.expect(
                    port in names,
                    f"{ident(sm)}: endpoint port {port} is a port of Service/{svc['metadata']['name']}",
                )


def check_namespaces(docs: list[dict], report: Report) -> None:
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in ("Namespace",)}
    report.expect(
        len(namespaces) == 1 and None not in namespaces,
        f"every namespaced resource is in one namespace ({sorted(map(str, namespaces))})",
    )


def validate_file(path: str, versions: list[str]) -> int:
    report = Report()
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    print(f"{path}: {len(docs)} documents")
    validate_schemas(docs, versions, report)
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        check_statefulset(sts, docs, report)
    check_service_monitors(docs, report)
    check_namespaces(docs, report)
    print(f"{path}: {'FAILED, ' + str(report.errors) + ' error(s)' if report.errors else 'all checks passed'}")
    return 1 if report.errors else 0


# --- self-test of the committed schema ------------------------------------------------


def self_test() -> int:
    report = Report()
    schema = load_schema(CUSTOM_RESOURCES[("monitoring.coreos.com/v1", "ServiceMonitor")])
    good = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "ns", "labels": {"app.kubernetes.io/name": "x"}},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "endpoints": [{"port": "metrics", "interval": "15s", "scrapeTimeout": "10s"}],
        },
    }
    report.expect(not schema_errors(schema, good), "ServiceMonitor schema accepts a valid document")

    def broken(description: str, mutate) -> None:
        doc = copy.deepcopy(good)
        mutate(doc)
        report.expect(bool(schema_errors(schema, doc)), f"ServiceMonitor schema rejects {description}")

    broken("a missing selector", lambda d: d["spec"].pop("selector"))
    broken("no endpoints", lambda d: d["spec"].update(endpoints=[]))
    broken("an interval that is not a duration", lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"))
    broken("an unknown endpoint field", lambda d: d["spec"]["endpoints"][0].update(prot="metrics"))
    broken("an endpoint without port or targetPort", lambda d: d["spec"]["endpoints"][0].pop("port"))
    broken("a bad scheme", lambda d: d["spec"]["endpoints"][0].update(scheme="ftp"))
    broken("a wrong apiVersion", lambda d: d.update(apiVersion="monitoring.coreos.com/v1beta1"))
    broken("a bad label selector operator", lambda d: d["spec"]["selector"].update(
        matchExpressions=[{"key": "a", "operator": "Is"}]))
    broken("an invalid name", lambda d: d["metadata"].update(name="Not_A_Name"))
    print(f"self-test: {'FAILED' if report.errors else 'all checks passed'}")
    return 1 if report.errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rendered", nargs="*", help="YAML files rendered by kubectl kustomize")
    parser.add_argument("--kubernetes-version", action="append", dest="versions", default=[])
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.rendered or not args.versions:
        parser.error("give rendered files and at least one --kubernetes-version")
    status = 0
    for path in args.rendered:
        status |= validate_file(path, args.versions)
    return status


if __name__ == "__main__":
    sys.exit(main())
