#!/usr/bin/env bash
# Install postfix-certwatch on a server (as root), or into a staging root (--root).
#
#   scripts/install.sh [--root DIR] [--prefix DIR] [--no-venv] [--certbot PATH]
#
#   --root DIR    install below DIR instead of / (a DESTDIR: packaging and tests);
#                 paths written into the units stay the real ones
#   --prefix DIR  the virtualenv that holds renew-daemon, renew-check and
#                 postfix-deploy-hook (default /opt/postfix-certwatch)
#   --no-venv     do not create or update that virtualenv (already installed)
#   --certbot P   certbot for the renew unit (default: the one on PATH, else /usr/bin/certbot)
#
# Puts: the deploy hook (a symlink) in /etc/letsencrypt/renewal-hooks/deploy/, the units
# in /etc/systemd/system/, a commented default config in /etc/postfix-certwatch/ (never
# overwriting yours), the Prometheus rules in /usr/local/share/postfix-certwatch/.
# Enables nothing: it prints what to enable. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="" PREFIX=/opt/postfix-certwatch VENV=1 CERTBOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2%/}; shift 2 ;;
    --prefix) PREFIX=${2%/}; shift 2 ;;
    --no-venv) VENV=0; shift ;;
    --certbot) CERTBOT=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
CERTBOT=${CERTBOT:-$(command -v certbot || echo /usr/bin/certbot)}
umask 022

if [ "$VENV" = 1 ]; then
  [ -x "$ROOT$PREFIX/bin/python" ] || python3 -m venv "$ROOT$PREFIX"
  "$ROOT$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade .
fi
for tool in renew-daemon postfix-deploy-hook renew-check; do
  [ -x "$ROOT$PREFIX/bin/$tool" ] || [ -x "$PREFIX/bin/$tool" ] || echo "install.sh: warning: $ROOT$PREFIX/bin/$tool is missing" >&2
done

hooks="$ROOT/etc/letsencrypt/renewal-hooks/deploy"
install -d -m 0755 "$hooks"
ln -sfn "$PREFIX/bin/postfix-deploy-hook" "$hooks/postfix-certwatch"
echo "install.sh: deploy hook  $hooks/postfix-certwatch -> $PREFIX/bin/postfix-deploy-hook"

units="$ROOT/etc/systemd/system"
install -d -m 0755 "$units"
for unit in systemd/*.service systemd/*.timer; do
  sed -e "s|/opt/postfix-certwatch/bin/|$PREFIX/bin/|g" -e "s|/usr/bin/certbot|$CERTBOT|g" \
      "$unit" > "$units/$(basename "$unit").new"
  chmod 0644 "$units/$(basename "$unit").new"
  mv -f "$units/$(basename "$unit").new" "$units/$(basename "$unit")"
  echo "install.sh: unit         $units/$(basename "$unit")"
done

etc="$ROOT/etc/postfix-certwatch"
install -d -m 0755 "$etc"
if [ -e "$etc/config.toml" ]; then
  install -m 0644 scripts/config.example.toml "$etc/config.toml.example"
  echo "install.sh: config       kept $etc/config.toml (defaults: config.toml.example)"
else
  install -m 0644 scripts/config.example.toml "$etc/config.toml"
  echo "install.sh: config       $etc/config.toml (all defaults, commented)"
fi

share="$ROOT/usr/local/share/postfix-certwatch/prometheus"
install -d -m 0755 "$share"
install -m 0644 daemon/prometheus/*.yml "$share/"
echo "install.sh: rules        $share/postfix-certwatch.rules.yml"

cat <<EOT

Next steps:
  1. edit /etc/postfix-certwatch/config.toml: at least [alert] mail_to
  2. once per lineage:   $PREFIX/bin/renew-check adopt /etc/letsencrypt/live/NAME
  3. systemctl daemon-reload
     systemctl enable --now postfix-certwatch.service
  4. renewals: keep certbot.timer (Debian's certbot package), or instead
     systemctl disable --now certbot.timer
     systemctl enable --now postfix-certwatch-renew.timer
     (not both: every renewal would be attempted twice)
EOT
