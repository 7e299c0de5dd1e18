#!/usr/bin/env bash
# Tests the Python binding as a user installs it: a fresh virtualenv, `pip install` of
# ffi/python (cargo builds the library and generates the module; dev profile unless
# CONCLAVE_FFI_PROFILE says otherwise), then the pytest suite, which starts real
# conclave-sfu processes on 127.0.0.1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

python="${PYTHON:-python3}"
venv_dir="$(mktemp -d "${TMPDIR:-/tmp}/conclave-py.XXXXXX")"
trap 'rm -rf "$venv_dir"' EXIT

"$python" -m venv "$venv_dir"
CONCLAVE_FFI_PROFILE="${CONCLAVE_FFI_PROFILE:-dev}" \
    "$venv_dir/bin/pip" install --quiet --disable-pip-version-check './ffi/python[test]'
# From the repository root, so that ffi/python/conclave (the sources, without the
# library) does not shadow the installed package.
"$venv_dir/bin/pytest" -q ffi/python/tests "$@"
