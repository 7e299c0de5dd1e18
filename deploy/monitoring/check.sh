#!/usr/bin/env bash
# Checks the monitoring files in deploy/monitoring:
#   * prometheus.yml       promtool check config (on a copy whose rule_files points at
#                          this directory's alerts.yml) and the scrape targets/labels
#   * alerts.yml           promtool check rules, the rule conventions (for, severity,
#                          summary, description) and promtool test rules alerts_test.yml
#   * grafana/...          the provisioning files and the dashboard JSON (parses, uid,
#                          variable, ids, gridPos, datasource uid, non-empty queries)
#   * metric names         every conclave_*/process_* name used is one the server
#                          exports (the list below); names not found in sfu/src
#                          (process_*: unless sfu/Cargo.toml uses metrics-process)
#                          are reported as a warning, not a failure
#
# Run from anywhere (CI runs it from the repository root):
#   bash deploy/monitoring/check.sh
# Installs promtool (Debian package `prometheus`) and PyYAML (`python3-yaml`) with
# apt-get when they are missing; needs no other network access.
# Prints "N passed, 0 failed" and exits 0 when every check passes, else exits 1.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
mon=deploy/monitoring

# ------------------------------------------------------------------ tools

apt_updated=0
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: need root (or sudo) to apt-get install $*" >&2
            exit 1
        fi
    fi
    if [ "$apt_updated" -eq 0 ]; then
        "${sudo[@]}" apt-get update -qq
        apt_updated=1
    fi
    # policy-rc.d or a missing init system may refuse to start the prometheus
    # service in containers; only promtool is needed, so that is fine.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: installing the Debian package prometheus"
    apt_install prometheus
fi
command -v promtool >/dev/null 2>&1 || { echo "error: promtool still missing" >&2; exit 1; }

python=python3
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "python3 with PyYAML not found: installing python3-yaml"
    apt_install python3 python3-yaml
    python=/usr/bin/python3
fi
"$python" -c 'import yaml' || { echo "error: PyYAML still missing" >&2; exit 1; }

echo "using $(promtool --version 2>&1 | head -n 1)"
echo "using $("$python" --version 2>&1) at $(command -v "$python")"

# ------------------------------------------------------------------ harness

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
check() {
    local name="$1"
    shift
    local out
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        printf '%s\n' "$out" | sed 's/^/     /'
    fi
}

# The Python checks, one mode per check.
cat >"$tmp/checks.py" <<'PY'
import json
import re
import sys

import yaml

MON = "deploy/monitoring"

# Metric names the server exports (sfu/src/telemetry.rs, conclave_build_info in
# sfu/src/main.rs, process_* from a process collector). `_total` = counter,
# conclave_control_request_seconds = histogram, the rest are gauges.
EXPORTED = {
    "conclave_build_info",
    "conclave_connections",
    "conclave_rooms",
    "conclave_room_members",
    "conclave_draining",
    "conclave_store_up",
    "conclave_worker_threads",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "conclave_datagrams_received_total",
    "conclave_datagrams_forwarded_total",
    "conclave_datagram_bytes_received_total",
    "conclave_datagram_bytes_forwarded_total",
    "conclave_datagrams_dropped_total",
    "conclave_room_evictions_total",
    "conclave_control_requests_total",
    "conclave_control_request_seconds",
    "conclave_connections_accepted_total",
    "conclave_connections_refused_total",
    "conclave_slow_clients_cut_total",
    "conclave_containers_stored_total",
    "conclave_containers_delivered_total",
    "conclave_containers_acked_total",
    "conclave_containers_expired_total",
    "conclave_mailbox_bytes",
    "conclave_mailbox_refused_total",
    "conclave_prekeys_served_total",
    "conclave_prekeys_exhausted_total",
    "conclave_prekeys_uploaded_total",
    "conclave_devices_registered_total",
    "conclave_registrations_rate_limited_total",
    "conclave_prekeys_rate_limited_total",
    "conclave_room_records_rate_limited_total",
    "conclave_cluster_lease_held",
    "conclave_cluster_leases_lost_total",
    "conclave_cluster_heartbeat_failures_total",
    "conclave_cluster_room_claims_total",
    "conclave_cluster_rooms_owned",
    "conclave_cluster_mailbox_signals_total",
    "conclave_push_sent_total",
    "conclave_push_failed_total",
    "conclave_push_dropped_total",
    "conclave_push_skipped_total",
    "conclave_push_folded_total",
    "conclave_push_retries_total",
    "conclave_push_subscriptions_dropped_total",
    "conclave_push_tracked_devices",
    "conclave_push_urgency_downgraded_total",
}
HISTOGRAMS = {"conclave_control_request_seconds"}
# A metric name, not part of a recording rule name (level:metric:operations).
NAME = re.compile(r"(?<![\w:])((?:conclave|process)_[a-z0-9_]+)(?![\w:])")
DS_UID = "prometheus"

errors = []


def fail(msg):
    errors.append(msg)


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_dashboard():
    with open(f"{MON}/grafana/dashboards/conclave.json", encoding="utf-8") as f:
        return json.load(f)


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def check_scrape():
    cfg = load_yaml(f"{MON}/prometheus.yml")
    if cfg.get("rule_files") != ["/etc/prometheus/alerts.yml"]:
        fail(f"rule_files is {cfg.get('rule_files')!r}, want ['/etc/prometheus/alerts.yml']")
    jobs = [j for j in cfg.get("scrape_configs", []) if j.get("job_name") == "conclave-sfu"]
    if len(jobs) != 1:
        fail("want exactly one scrape job named conclave-sfu")
        return
    job = jobs[0]
    interval = job.get("scrape_interval", cfg.get("global", {}).get("scrape_interval"))
    if interval != "5s":
        fail(f"conclave-sfu scrape interval is {interval!r}, want 5s")
    got = {}
    for sc in job.get("static_configs", []):
        for t in sc.get("targets", []):
            got[t] = sc.get("labels", {}).get("node")
    want = {f"sfu-{i}:9464": f"sfu-{i}" for i in (1, 2, 3)}
    if got != want:
        fail(f"targets and node labels are {got}, want {want}")


def check_rule_conventions():
    doc = load_yaml(f"{MON}/alerts.yml")
    groups = doc.get("groups", [])
    if [g.get("name") for g in groups] != ["conclave"]:
        fail("want one rule group named conclave")
    required = {
        "ConclaveSfuNodeDown", "ConclaveDatagramDropsHigh", "ConclavePrekeysExhausted",
        "ConclaveStoreUnreachable", "ConclaveClusterLeaseNotHeld", "ConclaveClusterLeaseLost",
        "ConclaveCpuNearSaturation", "ConclaveControlErrorsHigh", "ConclaveSlowClientsCut",
        "ConclaveNodeStuckDraining",
    }
    seen = set()
    for g in groups:
        for r in g.get("rules", []):
            if "record" in r:
                continue
            name = r.get("alert", "?")
            if name in seen:
                fail(f"{name}: duplicate alert name")
            seen.add(name)
            if "for" not in r:
                fail(f"{name}: no for:")
            sev = (r.get("labels") or {}).get("severity")
            if sev not in ("page", "warn"):
                fail(f"{name}: severity {sev!r}, want page or warn")
            ann = r.get("annotations") or {}
            for key in ("summary", "description"):
                if not str(ann.get(key, "")).strip():
                    fail(f"{name}: empty annotations.{key}")
            if 'job="conclave-sfu"' not in r.get("expr", "") and "instance:" not in r.get("expr", ""):
                fail(f"{name}: expr does not select job=\"conclave-sfu\"")
    for name in sorted(required - seen):
        fail(f"missing alert {name}")


def check_provisioning():
    ds = load_yaml(f"{MON}/grafana/provisioning/datasources/prometheus.yaml")
    sources = ds.get("datasources", [])
    if len(sources) != 1:
        fail("want exactly one datasource")
    else:
        s = sources[0]
        want = {"name": "Prometheus", "uid": DS_UID, "type": "prometheus",
                "url": "http://prometheus:9090", "isDefault": True}
        for k, v in want.items():
            if s.get(k) != v:
                fail(f"datasource {k} is {s.get(k)!r}, want {v!r}")
    prov = load_yaml(f"{MON}/grafana/provisioning/dashboards/conclave.yaml")
    providers = prov.get("providers", [])
    if len(providers) != 1:
        fail("want exactly one dashboard provider")
    else:
        p = providers[0]
        if p.get("type") != "file":
            fail(f"provider type is {p.get('type')!r}, want file")
        path = (p.get("options") or {}).get("path")
        if path != "/var/lib/grafana/dashboards":
            fail(f"provider path is {path!r}, want /var/lib/grafana/dashboards")


def ds_uid(ds):
    if ds is None:
        return None
    if isinstance(ds, dict):
        return ds.get("uid")
    return ds  # old style: a datasource name


def check_dashboard():
    d = load_dashboard()  # raises if the JSON does not parse
    if d.get("uid") != "conclave-sfu":
        fail(f"uid is {d.get('uid')!r}, want conclave-sfu")
    if d.get("title") != "Conclave SFU":
        fail(f"title is {d.get('title')!r}, want Conclave SFU")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        fail(f"schemaVersion {d.get('schemaVersion')!r} is too old")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    v = variables.get("instance")
    if v is None:
        fail("no template variable named instance")
    else:
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query != "label_values(conclave_build_info, instance)":
            fail(f"variable instance queries {query!r}")
        if not (v.get("multi") and v.get("includeAll")):
            fail("variable instance must be multi-select and include All")
        if ds_uid(v.get("datasource")) != DS_UID:
            fail("variable instance does not use datasource uid prometheus")
    ids = set()
    targets = 0
    for p in all_panels(d.get("panels", [])):
        title = p.get("title", "?")
        pid = p.get("id")
        if not isinstance(pid, int):
            fail(f"panel {title!r}: no integer id")
        elif pid in ids:
            fail(f"panel {title!r}: duplicate id {pid}")
        ids.add(pid)
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")):
            fail(f"panel {title!r}: incomplete gridPos {gp}")
        elif gp["x"] + gp["w"] > 24:
            fail(f"panel {title!r}: wider than the 24-column grid")
        if p.get("type") == "row":
            continue
        panel_uid = ds_uid(p.get("datasource"))
        if panel_uid not in (None, DS_UID):
            fail(f"panel {title!r}: datasource uid {panel_uid!r}")
        if not p.get("targets"):
            fail(f"panel {title!r}: no queries")
        for t in p.get("targets", []):
            targets += 1
            uid = ds_uid(t.get("datasource")) or panel_uid
            if uid != DS_UID:
                fail(f"panel {title!r} query {t.get('refId')}: datasource uid {uid!r} "
                     "(neither its own nor the panel's is prometheus)")
            if not str(t.get("expr", "")).strip():
                fail(f"panel {title!r} query {t.get('refId')}: empty expr")
            elif 'instance=~"$instance"' not in t["expr"]:
                fail(f"panel {title!r} query {t.get('refId')}: no instance=~\"$instance\" selector")
    if targets == 0:
        fail("the dashboard has no queries")


def used_names():
    texts = []
    for path in (f"{MON}/alerts.yml", f"{MON}/alerts_test.yml"):
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    for p in all_panels(load_dashboard().get("panels", [])):
        texts.extend(str(t.get("expr", "")) for t in p.get("targets", []))
    names = set()
    for text in texts:
        for name in NAME.findall(text):
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
                    name = name[: -len(suffix)]
            names.add(name)
    return names


def check_metric_names():
    names = used_names()
    for name in sorted(names - EXPORTED):
        fail(f"unknown metric name {name} (typo, or add it to EXPORTED in check.sh)")
    print(f"{len(names)} metric names used")


def warn_not_in_source():
    # Not a check: names the server source does not mention (yet).
    import pathlib
    if not pathlib.Path("sfu/src").is_dir():
        return
    src = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                    for p in pathlib.Path("sfu/src").rglob("*.rs"))
    cargo = pathlib.Path("sfu/Cargo.toml")
    collector = cargo.is_file() and "metrics-process" in cargo.read_text(encoding="utf-8")
    missing = sorted(n for n in used_names()
                     if f'"{n}"' not in src and not (n.startswith("process_") and collector))
    if missing:
        print("warning: not found in sfu/src (not exported yet?): " + ", ".join(missing))


def dashboard_rules():
    # The dashboard queries as recording rules, Grafana variables replaced by
    # values, for `promtool check rules` to parse them as PromQL.
    rules = []
    for p in all_panels(load_dashboard().get("panels", [])):
        for t in p.get("targets", []):
            expr = str(t.get("expr", ""))
            for var, value in (("$__rate_interval", "1m"), ("$__interval", "15s"),
                               ("$__range", "1h"), ("$instance", ".+")):
                expr = expr.replace(var, value)
            if "$" in expr:
                fail(f"panel {p.get('title')!r} query {t.get('refId')}: unknown variable in {expr!r}")
            rules.append({"record": f"dashboard:panel_{p.get('id')}:{t.get('refId')}", "expr": expr})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)


MODES = {
    "dashboard-rules": dashboard_rules,
    "scrape": check_scrape,
    "rule-conventions": check_rule_conventions,
    "provisioning": check_provisioning,
    "dashboard": check_dashboard,
    "metric-names": check_metric_names,
    "warn-source": warn_not_in_source,
}

MODES[sys.argv[1]]()
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY

py() { "$python" "$tmp/checks.py" "$@"; }

# promtool check config follows rule_files by absolute path: check a copy that
# points at this directory's alerts.yml instead of /etc/prometheus/alerts.yml.
check_config_copy() {
    cp "$mon/alerts.yml" "$tmp/alerts.yml" || return 1
    sed "s|/etc/prometheus/alerts.yml|$tmp/alerts.yml|" "$mon/prometheus.yml" >"$tmp/prometheus.yml" ||
        return 1
    grep -q "$tmp/alerts.yml" "$tmp/prometheus.yml" || {
        echo "rule_files does not name /etc/prometheus/alerts.yml"
        return 1
    }
    promtool check config "$tmp/prometheus.yml"
}

# ------------------------------------------------------------------ checks

check "promtool check config prometheus.yml (with alerts.yml)" check_config_copy
check "prometheus.yml scrapes sfu-1..3:9464 every 5s with node labels" py scrape
check "promtool check rules alerts.yml" promtool check rules "$mon/alerts.yml"
check "alerts.yml conventions (group, for, severity, summary, description)" py rule-conventions
check "promtool test rules alerts_test.yml" promtool test rules "$mon/alerts_test.yml"
check "python3 -m json.tool conclave.json" "$python" -m json.tool "$mon/grafana/dashboards/conclave.json" /dev/null
check "dashboard structure, datasource uid and queries" py dashboard
check_dashboard_promql() {
    py dashboard-rules "$tmp/dashboard_rules.yml" || return 1
    promtool check rules "$tmp/dashboard_rules.yml"
}

check "dashboard queries parse as PromQL (promtool)" check_dashboard_promql
check "grafana provisioning (datasource, dashboard provider)" py provisioning
check "metric names are exported ones" py metric-names
py warn-source || true

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
