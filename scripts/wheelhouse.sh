#!/usr/bin/env bash
# Build a wheelhouse: postfix-certwatch and every dependency as wheels in one directory,
# for a server without Internet access (copy the directory over, then
# scripts/install.sh --wheelhouse DIR). Run it on a machine with the same CPU
# architecture and a Python of the same minor version as the server's (the
# cryptography and cffi wheels are binary), e.g. Debian 12's python3.11.
#
#   scripts/wheelhouse.sh DIR [--python PATH]      (default: /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
OUT=$1; shift
PY=/usr/bin/python3
[ "${1:-}" = --python ] && { PY=$2; shift 2; }
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
# --use-pep517: sdnotify is a source distribution only; without it pip tries the
# legacy "setup.py bdist_wheel", which needs the wheel package the venv does not have.
# From a clean copy of the source: setuptools builds in ./build, which keeps modules a
# newer version moved or removed and would ship them again.
mkdir "$tmp/src"
tar -C . --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' -cf - . |
  tar -C "$tmp/src" -xf -
"$tmp/venv/bin/pip" wheel -q --disable-pip-version-check --use-pep517 --wheel-dir "$OUT" "$tmp/src"
echo "wheelhouse.sh: $(ls "$OUT" | wc -l) wheels in $OUT for Python $("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'):" >&2
ls "$OUT" >&2
