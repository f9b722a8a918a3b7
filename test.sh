#!/usr/bin/env bash
# Set up (first run only), install the browser the page test drives, and run the tests.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# The spoken evals' user voice (evals/audio_mode.py).
if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
