#!/usr/bin/env bash
# Run the CrewAI integration tests (marker `crewai`) in their own venvs: CrewAI pulls ~150 packages
# (chromadb, lancedb, onnxruntime, ...) that the main test job does not need. Two runs: the newest CrewAI, then
# the oldest release `_instruments` allows (read from src/agentvigil/instrumentation/crewai/package.py).
#   scripts/test-crewai.sh                       # creates bench/.venv-crewai and bench/.venv-crewai-oldest
#   CREWAI_SKIP_OLDEST=1 scripts/test-crewai.sh  # newest only
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CREWAI_VENV:-bench/.venv-crewai}
OLDEST_VENV=${CREWAI_OLDEST_VENV:-bench/.venv-crewai-oldest}
PY=${PYTHON:-python3}
PIN=$(sed -n 's/^_instruments = ("crewai >= \([0-9.]*\)",)$/\1/p' src/agentvigil/instrumentation/crewai/package.py)
[ -n "$PIN" ] || { echo "no 'crewai >= X' in crewai/package.py" >&2; exit 1; }
export CREWAI_DISABLE_TELEMETRY=true CREWAI_TRACING_ENABLED=false OTEL_SDK_DISABLED=false
# CrewAI keeps a SQLite file of the last kickoff under the user data dir, and its schema differs between
# releases (an older CrewAI fails with JSONDecodeError on a newer one's file): a fresh dir per run.
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT

run() {  # venv, crewai requirement, pytest args...
  local venv=$1 spec=$2
  shift 2
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q "$spec"  # a no-op when it already fits; moves the oldest venv to a new pin
  "$venv/bin/pip" install -q --no-deps -e .
  "$venv/bin/pip" install -q prometheus-client opentelemetry-sdk opentelemetry-exporter-otlp \
    opentelemetry-instrumentation wrapt pytest
  echo "== crewai $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("crewai"))')"
  rm -rf "${DATA:?}"/*
  XDG_DATA_HOME=$DATA "$venv/bin/python" -m pytest tests/integrations/test_crewai.py tests/conformance/test_crewai.py \
    -m crewai -q -p no:cacheprovider "$@"
}

run "$VENV" "crewai>=$PIN" "$@"
if [ -z "${CREWAI_SKIP_OLDEST:-}" ]; then
  run "$OLDEST_VENV" "crewai==$PIN" "$@"
fi
