#!/usr/bin/env bash
# Install postfix-certwatch on a server (as root), or into a staging root (--root).
#
#   scripts/install.sh [--root DIR] [--prefix DIR] [--no-venv] [--python PATH]
#                      [--certbot PATH] [--postfix-config DIR] [--allow ADDR]...
#
#   --root DIR    install below DIR instead of / (a DESTDIR: packaging and tests);
#                 paths written into the units stay the real ones
#   --prefix DIR  the virtualenv that holds renew-daemon, renew-check and
#                 postfix-deploy-hook (default /opt/postfix-certwatch)
#   --no-venv     do not create or update that virtualenv (already installed)
#   --python P    the Python (>= 3.11) for the virtualenv (default: python3 if new
#                 enough, else python3.13, python3.12 or python3.11: RHEL 8/9's python3
#                 is 3.6/3.9)
#   --certbot P   certbot for the renew unit (default: the system's certbot on PATH,
#                 never one inside --prefix)
#   --postfix-config DIR  Postfix's configuration, read for the addresses it listens
#                 on (default ROOT/etc/postfix)
#   --allow ADDR  one more address or network the daemon may talk to (repeatable): a
#                 remote Prometheus that scrapes metrics.listen, a webhook's host;
#                 "any" lifts the unit's IP address policy
#
# Puts: the deploy hook (a symlink) in /etc/letsencrypt/renewal-hooks/deploy/, the units
# in /etc/systemd/system/ plus a drop-in postfix-certwatch.service.d/10-addresses.conf
# (IPAddressAllow= for Postfix's non-loopback listen addresses and the DNS resolvers;
# rewritten on every run), a commented default config in /etc/postfix-certwatch/
# (never overwriting yours), the Prometheus rules in /usr/local/share/postfix-certwatch/,
# and renew-check / postfix-deploy-hook / renew-daemon links in /usr/local/bin.
# Enables nothing: it prints what to enable. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="" PREFIX=/opt/postfix-certwatch VENV=1 CERTBOT="" PYTHON="" PFCONF=""
ALLOW=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2%/}; shift 2 ;;
    --prefix) PREFIX=${2%/}; shift 2 ;;
    --no-venv) VENV=0; shift ;;
    --python) PYTHON=$2; shift 2 ;;
    --certbot) CERTBOT=$2; shift 2 ;;
    --postfix-config) PFCONF=${2%/}; shift 2 ;;
    --allow) ALLOW+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
PFCONF=${PFCONF:-$ROOT/etc/postfix}
umask 022

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
new_enough() {  # Python >= 3.11 (pyproject's requires-python)
  local v; v=$(py_version "$1") || return 1
  [ "${v%%.*}" -eq 3 ] && [ "${v#*.}" -ge 11 ]
}
pick_python() {
  local p
  if [ -n "$PYTHON" ]; then
    new_enough "$PYTHON" && { echo "$PYTHON"; return; }
    echo "install.sh: --python $PYTHON is $(py_version "$PYTHON" || echo 'not a Python');" \
         "postfix-certwatch needs Python >= 3.11" >&2
    return 1
  fi
  for p in python3 python3.13 python3.12 python3.11; do
    p=$(command -v "$p") || continue
    new_enough "$p" && { echo "$p"; return; }
  done
  echo "install.sh: postfix-certwatch needs Python >= 3.11, and python3 is" \
       "$(py_version python3 || echo missing). RHEL/Alma/Rocky 8 and 9: dnf install" \
       "python3.11 (or python3.12), then run this again (or pass --python PATH)" >&2
  return 1
}

# certbot for the renew unit: the system's (package, EPEL or snap), never the copy pip
# may have put into the venv: that one would renew with another configuration and
# plugins than the admin's certbot, and miss its upgrades.
in_venv() {  # $1 is (or links to) a file inside the venv
  case "$(readlink -f "$1")" in "$PREFIX"/*|"$ROOT$PREFIX"/*) return 0 ;; esac
  case "$1" in "$PREFIX"/*|"$ROOT$PREFIX"/*) return 0 ;; esac
  return 1
}
system_certbot() {
  local d IFS=:
  for d in $PATH /usr/bin /snap/bin /usr/local/bin; do
    [ -x "$d/certbot" ] && ! in_venv "$d/certbot" && { echo "$d/certbot"; return; }
  done
  echo /usr/bin/certbot
}

# Addresses the daemon must reach besides localhost: every non-loopback address Postfix
# listens on (inet_interfaces, and host:port services in master.cf: it probes them) and
# the DNS resolvers (host name lookups, a webhook's host).
is_ip() { [[ $1 =~ ^[0-9]+(\.[0-9]+){3}(/[0-9]+)?$ || $1 == *:* ]]; }
postfix_addresses() {
  local host name type rest ifaces services hosts=()
  [ -e "$PFCONF/main.cf" ] || return 0
  if ! ifaces=$(postconf -c "$PFCONF" -h inet_interfaces 2>&1) ||
     ! services=$(postconf -c "$PFCONF" -M 2>&1); then
    echo "install.sh: warning: cannot read $PFCONF (${ifaces:-$services}): the drop-in" \
         "allows no Postfix address; fix it and run this again" >&2
    return 0
  fi
  for host in ${ifaces//,/ }; do
    case "$host" in all|loopback-only|localhost) ;; *) hosts+=("$host") ;; esac
  done
  while read -r name type rest; do
    [ "$type" = inet ] && [[ $name == *:* ]] && hosts+=("${name%:*}")
  done <<< "$services"
  for host in "${hosts[@]}"; do
    host=${host#[}; host=${host%]}
    if is_ip "$host"; then echo "$host"; else getent ahosts "$host" | awk '{print $1}'; fi
  done | grep -Ev '^(127\.|::1$|::ffff:127\.)' | sort -u || true
}
resolvers() {
  awk '$1 == "nameserver" {print $2}' "$ROOT/etc/resolv.conf" 2>/dev/null \
    | grep -Ev '^(127\.|::1$)' | sort -u || true
}

if [ "$VENV" = 1 ]; then
  PY=$(pick_python)
  if [ -x "$ROOT$PREFIX/bin/python" ] && ! new_enough "$ROOT$PREFIX/bin/python"; then
    echo "install.sh: $ROOT$PREFIX has Python $(py_version "$ROOT$PREFIX/bin/python"):" \
         "remove it and run this again" >&2
    exit 1
  fi
  [ -x "$ROOT$PREFIX/bin/python" ] || "$PY" -m venv "$ROOT$PREFIX"
  "$ROOT$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade .
  echo "install.sh: venv         $ROOT$PREFIX ($(py_version "$ROOT$PREFIX/bin/python"))"
fi
for tool in renew-daemon postfix-deploy-hook renew-check; do
  [ -x "$ROOT$PREFIX/bin/$tool" ] || [ -x "$PREFIX/bin/$tool" ] || echo "install.sh: warning: $ROOT$PREFIX/bin/$tool is missing" >&2
done
CERTBOT=${CERTBOT:-$(system_certbot)}
[ -x "$ROOT$CERTBOT" ] || [ -x "$CERTBOT" ] || echo "install.sh: note: no certbot at $CERTBOT yet (install your distribution's certbot, or pass --certbot)"

bin="$ROOT/usr/local/bin"
install -d -m 0755 "$bin"
for tool in renew-check postfix-deploy-hook renew-daemon; do
  if [ -e "$bin/$tool" ] && [ ! -L "$bin/$tool" ]; then
    echo "install.sh: kept         $bin/$tool (not a symlink: yours)"
  else
    ln -sfn "$PREFIX/bin/$tool" "$bin/$tool"
  fi
done
echo "install.sh: commands     $bin/{renew-check,postfix-deploy-hook,renew-daemon} -> $PREFIX/bin/"

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

dropin="$units/postfix-certwatch.service.d"
install -d -m 0755 "$dropin"
listen=$(postfix_addresses) dns=$(resolvers)
{
  echo "# Generated by postfix-certwatch's scripts/install.sh; rewritten when it runs again."
  echo "# The unit allows localhost only (IPAddressDeny=any): these are the other peers."
  echo "# Run install.sh again after changing inet_interfaces or master.cf, and use"
  echo "# --allow ADDR (or a drop-in of your own: systemctl edit postfix-certwatch) for a"
  echo "# remote Prometheus scraping metrics.listen or a webhook's host."
  echo "[Service]"
  [ -z "$listen" ] || { echo "# Postfix listens here (from $PFCONF): the daemon probes these"; printf 'IPAddressAllow=%s\n' $listen; }
  [ -z "$dns" ] || { echo "# DNS resolvers (/etc/resolv.conf)"; printf 'IPAddressAllow=%s\n' $dns; }
  [ ${#ALLOW[@]} -eq 0 ] || { echo "# --allow"; printf 'IPAddressAllow=%s\n' "${ALLOW[@]}"; }
} > "$dropin/10-addresses.conf.new"
chmod 0644 "$dropin/10-addresses.conf.new"
mv -f "$dropin/10-addresses.conf.new" "$dropin/10-addresses.conf"
echo "install.sh: drop-in      $dropin/10-addresses.conf (IPAddressAllow=" \
     "$(echo localhost $listen $dns "${ALLOW[@]}"))"

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
install -m 0644 daemon/renew_daemon/prometheus/*.yml "$share/"
echo "install.sh: rules        $share/postfix-certwatch.rules.yml"

# certbot's own renewal timer: Debian/Ubuntu certbot.timer, EPEL (RHEL, Alma, Rocky)
# certbot-renew.timer, the snap snap.certbot.renew.timer.
timer=""
for t in certbot.timer certbot-renew.timer snap.certbot.renew.timer; do
  for d in /etc/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
    [ -e "$ROOT$d/$t" ] && { timer=$t; break 2; }
  done
done
if [ -n "$timer" ]; then
  renew="keep $timer (certbot's own timer, found here), or instead
     systemctl disable --now $timer"
else
  renew="keep certbot's own timer: certbot.timer (Debian/Ubuntu), certbot-renew.timer
     (EPEL: RHEL/Alma/Rocky, disabled by default there: systemctl enable --now
     certbot-renew.timer) or snap.certbot.renew.timer (snap); or instead disable it,
     e.g. systemctl disable --now certbot.timer, and"
fi

cat <<EOT

Next steps:
  1. edit /etc/postfix-certwatch/config.toml: at least [alert] mail_to
  2. once per lineage:   renew-check adopt /etc/letsencrypt/live/NAME
  3. systemctl daemon-reload
     systemctl enable --now postfix-certwatch.service
  4. renewals: $renew
     systemctl enable --now postfix-certwatch-renew.timer   (runs $CERTBOT renew)
     (not both: every renewal would be attempted twice)
EOT
