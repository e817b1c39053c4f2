#!/usr/bin/env bash
# Run the CrewAI integration tests (marker `crewai`) in their own venv: CrewAI pulls ~150 packages
# (chromadb, lancedb, onnxruntime, ...) that the main test job does not need.
#   scripts/test-crewai.sh            # creates bench/.venv-crewai on first use
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CREWAI_VENV:-bench/.venv-crewai}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q "crewai>=0.80"
fi
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" install -q prometheus-client opentelemetry-sdk opentelemetry-exporter-otlp \
  opentelemetry-instrumentation wrapt pytest
export CREWAI_DISABLE_TELEMETRY=true CREWAI_TRACING_ENABLED=false OTEL_SDK_DISABLED=false
exec "$VENV/bin/python" -m pytest tests/integrations/test_crewai.py tests/conformance/test_crewai.py -m crewai -q -p no:cacheprovider "$@"
