#!/usr/bin/env bash
# Set up (venv + package) and run the demo fleet: /metrics on 127.0.0.1:9464, sessions in .agentvigil/sessions.
# Extra arguments go to `agentvigil demo` (e.g. --duration 0 --speed 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
exec .venv/bin/agentvigil demo "$@"
