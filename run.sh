#!/usr/bin/env bash
# Set up (first run only) and start the server with the embedded offline stack.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
exec .venv/bin/python server.py
