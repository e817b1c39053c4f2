#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine (Python 3.11), then run the whole suite:
# a venv, the package with its test and integration extras, and Debian's prometheus (promtool) and
# prometheus-alertmanager (amtool, alertmanager), redis-server (the fleet tests), tmux (the `top` view tests)
# and chromium (the HTML report rendered headless). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# redis-server: the fleet tests start their own on a free 127.0.0.1 port (tests/fleet/fleet_support.py)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian starts the packaged services on install; the tests start their own on free loopback ports.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop prometheus prometheus-alertmanager prometheus-node-exporter redis-server >/dev/null 2>&1 || true
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test,grpc,openai,anthropic,langchain,mcp,bedrock,google-genai,openai-agents,litellm]"
# Lint and types first: cheap, and a failure names the file and line.
.venv/bin/python -m ruff check src
.venv/bin/python -m mypy src/agentvigil
exec .venv/bin/python -m pytest "$@"
