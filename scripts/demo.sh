#!/usr/bin/env bash
# Set up (venv + package, on the first run only) and run the demo fleet: /metrics on 127.0.0.1:9464, sessions in
# .agentvigil/sessions, and — with Debian's prometheus and prometheus-alertmanager, installed here when run as
# root — a real Prometheus (127.0.0.1:9090) and Alertmanager (127.0.0.1:9093) with the demo rule profile.
# Extra arguments go to `agentvigil demo` (e.g. --duration 0 --speed 5 --prometheus-port 19090).
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

have_prometheus() {
  command -v prometheus >/dev/null 2>&1 &&
    { command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null 2>&1
}
if ! have_prometheus && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's prometheus and prometheus-alertmanager (first run only) ..."
  mkdir -p "$(dirname "$LOG")"
  if DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$LOG" 2>&1 &&
     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       prometheus prometheus-alertmanager >>"$LOG" 2>&1; then
    # Debian starts the packaged services on install; the demo runs its own on loopback.
    if command -v systemctl >/dev/null 2>&1; then
      systemctl stop prometheus prometheus-alertmanager prometheus-node-exporter >/dev/null 2>&1 || true
    fi
  else
    echo "could not install them (details in $LOG)"   # the demo then says it runs embedded
  fi
fi
# Without the binaries the demo prints one line and runs embedded (its /metrics only).
exec .venv/bin/agentvigil demo --prometheus "$@"
