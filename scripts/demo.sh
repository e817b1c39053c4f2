#!/usr/bin/env bash
# Set up (venv + package, on the first run only) and run the demo fleet: /metrics on 127.0.0.1:9464, sessions in
# .agentvigil/sessions. Extra arguments go to `agentvigil demo` (e.g. --duration 0 --speed 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LOG=.agentvigil/install.log
STAMP=.venv/.agentvigil-installed   # checksum of pyproject.toml at the last install (the install is editable)

want="$(cksum < pyproject.toml)"
if [ ! -x .venv/bin/agentvigil ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "installing agentvigil into .venv (first run only) ..."
  mkdir -p "$(dirname "$LOG")"
  if ! { { [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv; } &&
         .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e .; } >"$LOG" 2>&1; then
    echo "install failed; the last lines of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
fi
exec .venv/bin/agentvigil demo "$@"
