#!/usr/bin/env bash
# The README's test command: set up (idempotent), then ruff, mypy --strict, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k renewal -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-$PWD/.venv}
start=$(date +%s)
"$VENV/bin/ruff" check hook daemon tests bench
"$VENV/bin/mypy"
rc=0
"$VENV/bin/python" -m pytest "$@" || rc=$?
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests: that is a failure" >&2; exit 1; fi
echo "test.sh: suite took $(( $(date +%s) - start )) s (rc=$rc)" >&2
exit $rc
