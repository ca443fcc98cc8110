#!/usr/bin/env bash
# The README's sandbox command: set up (idempotent), then on loopback only: pebble
# issues a certificate, a private Postfix serves it, certbot renews with our deploy hook
# installed, and the fingerprints served before and after are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-$PWD/.venv}
exec "$VENV/bin/python" -m tests.harness.sandbox "$@"
