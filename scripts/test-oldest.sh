#!/usr/bin/env bash
# Run each integration's tests against the OLDEST SDK release its `_instruments` spec allows (the table is
# scripts/oldest.txt; the pins are found by scripts/oldest_pins.py). Its own venv, because it downgrades SDKs.
#   scripts/test-oldest.sh                 # creates bench/.venv-oldest on first use
#   scripts/test-oldest.sh openai mcp      # only these integrations; --list prints the pins only
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OLDEST_VENV:-bench/.venv-oldest}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# agentvigil's own dependencies and the test tooling; no SDK: each integration installs its pin in turn.
"$VENV/bin/pip" install -q -e . "opentelemetry-instrumentation>=0.46b0" "wrapt>=1.14" packaging pytest \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
export OTEL_SDK_DISABLED=false
exec "$VENV/bin/python" scripts/oldest_pins.py "$@"
