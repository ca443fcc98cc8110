#!/usr/bin/env bash
# Set up everything the sandbox and the test suite need, on Debian 12, as root.
# Idempotent: installs only missing Debian packages, rebuilds the venv only when
# pyproject.toml changed. Never starts the system Postfix (no main.cf is created).
#
#   VENV=/path/to/venv  (default: .venv in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$PWD/.venv}
APT_PKGS=(postfix pebble swaks libnet-ssleay-perl openssl ca-certificates
          python3 python3-venv p11-kit p11-kit-modules bsdutils
          knot knot-dnssecutils unbound prometheus systemd strace
          systemd-container mmdebstrap)

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (apt, and Postfix's master need it)" >&2; exit 1; }

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}" >&2
  # "No configuration": Debian creates no /etc/postfix/main.cf, so the system
  # instance never starts; we only run private instances (postfix -c DIR).
  printf '%s\n' "postfix postfix/main_mailer_type select No configuration" \
                "postfix postfix/mailname string mail.example.test" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  # knot and unbound are only run privately by the tests (tests/harness/dns.py): a
  # policy-rc.d that answers 101 keeps their packages from starting the system
  # services (port 53). Only one we created ourselves is removed again.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
fi

stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.certwatch-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: venv $VENV (pip install -e .[test])" >&2
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
  echo "$stamp" > "$VENV/.certwatch-stamp"
fi
echo "setup: ok ($("$VENV/bin/certbot" --version 2>&1), postfix $(postconf -d -h mail_version))" >&2
