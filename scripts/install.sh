#!/usr/bin/env bash
# Install postfix-certwatch on a server (as root), upgrade it in place, or remove it.
#
#   scripts/install.sh [--prefix DIR] [--python PATH] [--wheelhouse DIR] [--certbot PATH]
#                      [--postfix-config DIR] [--allow ADDR]...
#   scripts/install.sh --uninstall [--purge]
#   scripts/install.sh --which-python
#   scripts/install.sh --root DIR --no-venv [...]      (packaging: a staging root)
#
#   --prefix DIR  the virtualenv that holds renew-daemon, renew-check and
#                 postfix-deploy-hook (default /opt/postfix-certwatch)
#   --python P    the Python (>= 3.11) for the virtualenv. Default: the distribution's,
#                 /usr/bin/python3 if new enough, else /usr/bin/python3.13, 3.12, 3.11 (RHEL
#                 8/9's python3 is 3.6/3.9), then the same names on PATH. Never one under
#                 /root, /home, /run/user, /tmp or /var/tmp (a pyenv, a pipx or conda one):
#                 the unit's ProtectHome=/PrivateTmp= hide them and renew-daemon would not
#                 start (exit 127)
#   --wheelhouse DIR  install from the wheels in DIR only, without a package index (a
#                 server without Internet access; build DIR elsewhere with
#                 scripts/wheelhouse.sh, see docs/install.md)
#   --certbot P   certbot for the renew unit (default: the system's certbot on PATH,
#                 never one inside --prefix)
#   --postfix-config DIR  Postfix's configuration, read for the addresses it listens
#                 on (default ROOT/etc/postfix)
#   --allow ADDR  one more address or network the daemon may talk to (repeatable): a
#                 remote Prometheus that scrapes metrics.listen, a webhook's host;
#                 "any" lifts the unit's IP address policy
#   --uninstall   remove exactly what install.sh put here (its manifest: the venv, units,
#                 drop-in, links, the hook symlink, rules, docs); keeps the configuration,
#                 the bundles and the state. With --purge, those go too.
#   --which-python  print the Python the virtualenv would be made with, and stop
#   --root DIR    install below DIR instead of / (a DESTDIR, for packaging): paths written
#                 into the units stay the real ones. Needs --no-venv (a virtualenv is not
#                 relocatable: build it at its final path) and touches no running system
#   --no-venv     do not create or update the virtualenv (already installed)
#
# Puts: the deploy hook (a symlink) in /etc/letsencrypt/renewal-hooks/deploy/, the units
# in /etc/systemd/system/ plus a drop-in postfix-certwatch.service.d/10-addresses.conf
# (IPAddressAllow= for Postfix's non-loopback listen addresses and the DNS resolvers;
# regenerated on every run), a commented default config in /etc/postfix-certwatch/
# (never overwriting yours), the Prometheus rules in /usr/local/share/postfix-certwatch/,
# the documentation in /usr/local/share/doc/postfix-certwatch/ (the units' Documentation=),
# and renew-check / postfix-deploy-hook / renew-daemon links in /usr/local/bin. A unit or
# drop-in you edited is kept: the new one is written beside it as FILE.new (like dpkg's
# conffiles). Enables nothing: it prints what to enable. Safe to run again: a second run
# upgrades in place and restarts the daemon if it is running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="" PREFIX=/opt/postfix-certwatch VENV=1 CERTBOT="" PYTHON="" PFCONF="" WHEELHOUSE=""
UNINSTALL=0 PURGE=0 WHICH=0
ALLOW=()
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "install.sh: $1 needs an argument" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) need_arg "$@"; ROOT=${2%/}; shift 2 ;;
    --prefix) need_arg "$@"; PREFIX=${2%/}; shift 2 ;;
    --no-venv) VENV=0; shift ;;
    --python) need_arg "$@"; PYTHON=$2; shift 2 ;;
    --wheelhouse) need_arg "$@"; WHEELHOUSE=$(cd "$2" && pwd) || exit 2; shift 2 ;;
    --certbot) need_arg "$@"; CERTBOT=$2; shift 2 ;;
    --postfix-config) need_arg "$@"; PFCONF=${2%/}; shift 2 ;;
    --allow) need_arg "$@"; ALLOW+=("$2"); shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --which-python) WHICH=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
PFCONF=${PFCONF:-$ROOT/etc/postfix}
umask 022
say() { echo "install.sh: $*"; }
warn() { echo "install.sh: $*" >&2; }

# What install.sh put here, one "sha256  path" line per file or link (paths without
# ROOT): --uninstall removes exactly these, and a unit whose checksum differs from the
# one recorded was edited by the admin and is not overwritten.
MANIFEST=/usr/local/share/postfix-certwatch/installed.sha256
DOCS=/usr/local/share/doc/postfix-certwatch
declare -A OLD_SUM=()
LEGACY=1  # no manifest: nothing, or an install made before install.sh kept one
if [ -f "$ROOT$MANIFEST" ]; then
  LEGACY=0
  while read -r sum path; do OLD_SUM[$path]=$sum; done < "$ROOT$MANIFEST"
fi

NEW_MANIFEST=()
record() {  # record PATH: a file (its sha256) or a symlink ("link:TARGET")
  if [ -L "$ROOT$1" ]; then NEW_MANIFEST+=("link:$(readlink -- "$ROOT$1")  $1")
  elif [ -d "$ROOT$1" ]; then NEW_MANIFEST+=("dir  $1")
  else NEW_MANIFEST+=("$(sha256sum < "$ROOT$1" | cut -d' ' -f1)  $1"); fi
  return 0
}

# ---------------------------------------------------------------------- --uninstall
if [ "$UNINSTALL" = 1 ]; then
  [ -f "$ROOT$MANIFEST" ] || { warn "no $ROOT$MANIFEST: nothing installed by install.sh here"; exit 1; }
  if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now postfix-certwatch.service postfix-certwatch-renew.timer 2>/dev/null || true
  fi
  kept=()
  while read -r sum path; do
    [ -n "$path" ] || continue
    f=$ROOT$path
    if [ "$sum" = dir ]; then  # the venv: only ever a directory that is one
      [ -f "$f/pyvenv.cfg" ] && rm -rf -- "$f" && say "removed      $f/ (the venv)"
      continue
    fi
    [ -e "$f" ] || [ -L "$f" ] || continue
    if [ "${sum%%:*}" = link ]; then  # ours only while it points where install.sh pointed it
      target=${sum#link}; target=${target#:}
      if [ -n "$target" ] && [ "$(readlink -- "$f" 2>/dev/null)" != "$target" ]; then
        kept+=("$f"); continue
      fi
    elif [ "$(sha256sum < "$f" | cut -d' ' -f1)" != "$sum" ]; then
      kept+=("$f"); continue   # edited since install.sh wrote it: the admin's now
    fi
    rm -f -- "$f"; say "removed      $f"
  done < "$ROOT$MANIFEST"
  for f in "${kept[@]}"; do say "kept         $f (edited since it was installed: yours)"; done
  rm -f "$ROOT$MANIFEST"
  rmdir "$ROOT/etc/systemd/system/postfix-certwatch.service.d" "$ROOT$DOCS" \
        "$ROOT/usr/local/share/postfix-certwatch/prometheus" \
        "$ROOT/usr/local/share/postfix-certwatch" 2>/dev/null || true
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/etc/postfix-certwatch" "$ROOT/var/lib/postfix-certwatch"
    say "purged       $ROOT/etc/postfix-certwatch (config, bundles) and $ROOT/var/lib/postfix-certwatch (state)"
    warn "if Postfix still reads bundles from /etc/postfix-certwatch/bundles, point it back" \
         "at your certificates (renew-check adopt --undo before uninstalling does that)"
  else
    say "kept         $ROOT/etc/postfix-certwatch (config, bundles) and $ROOT/var/lib/postfix-certwatch (state): --purge removes them"
  fi
  [ -z "$ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
  exit 0
fi

if [ -n "$ROOT" ] && [ "$VENV" = 1 ] && [ "$WHICH" = 0 ]; then
  warn "--root is for packaging (a staging root): a virtualenv built under $ROOT$PREFIX" \
       "would point at that path and break once moved. Build the venv at its final path" \
       "(or package it), then run install.sh --root $ROOT --no-venv"
  exit 2
fi

# ------------------------------------------------------------------------ the Python
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
new_enough() {  # Python >= 3.11 (pyproject's requires-python)
  local v; v=$(py_version "$1") || return 1
  [[ $v =~ ^3\.[0-9]+$ ]] && [ "${v#*.}" -ge 11 ]
}
# Directories the unit hides from renew-daemon: ProtectHome=yes (/root, /home,
# /run/user) and PrivateTmp=yes (/tmp, /var/tmp: an empty private one).
HIDDEN=(/root /home /run/user /tmp /var/tmp)
hidden_by() {  # hidden_by PATH: print the hidden directory PATH is under
  local h
  for h in "${HIDDEN[@]}"; do
    case "$1" in "$h"|"$h"/*) echo "$h"; return 0 ;; esac
  done
  return 1
}
# Where a Python really lives: the command, the binary it runs (a pyenv shim is a
# script in /root/.pyenv/shims that runs /root/.pyenv/versions/X/bin/python3) and its
# standard library. A venv made with it links to that binary and imports that library.
py_homes() {
  readlink -f "$1"
  "$1" -c 'import os, sys
print(os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable))
print(os.path.realpath(sys.base_prefix))' 2>/dev/null || true
}
invisible() {  # invisible PYTHON: print why the unit cannot see it, or fail
  local p h
  while read -r p; do
    [ -n "$p" ] || continue
    if h=$(hidden_by "$p"); then
      echo "$p is under $h, which postfix-certwatch.service hides from renew-daemon" \
           "($( [ "$h" = /tmp ] || [ "$h" = /var/tmp ] && echo PrivateTmp=yes || echo ProtectHome=yes ))"
      return 0
    fi
  done < <(py_homes "$1")
  return 1
}
USE_DISTRO="use the distribution's Python: Debian/Ubuntu: apt install python3 python3-venv;
  RHEL/Alma/Rocky 8 and 9: dnf install python3.11 (or python3.12); then run this again
  (or pass --python /usr/bin/python3.X)"
# The distribution's Pythons live in /usr/bin; CERTWATCH_PYTHON_DIRS replaces that list
# (tests, or another distribution's layout).
read -r -a PY_DIRS <<< "${CERTWATCH_PYTHON_DIRS:-/usr/bin}"
pick_python() {
  local p why d name seen=" " refused=()
  if [ -n "$PYTHON" ]; then
    if ! new_enough "$PYTHON"; then
      warn "--python $PYTHON is $(py_version "$PYTHON" || echo 'not a Python');" \
           "postfix-certwatch needs Python >= 3.11"
      return 1
    fi
    if why=$(invisible "$PYTHON"); then
      warn "--python $PYTHON: $why; renew-daemon would not start (status 203/EXEC; exit 127 from a shell)." \
           "$USE_DISTRO"
      return 1
    fi
    echo "$PYTHON"; return
  fi
  while read -r p; do
    case "$seen" in *" $p "*) continue ;; esac
    seen+="$p "
    new_enough "$p" || continue
    if why=$(invisible "$p"); then refused+=("$why"); continue; fi
    echo "$p"; return
  done < <(
    for name in python3 python3.13 python3.12 python3.11; do
      for d in "${PY_DIRS[@]}"; do [ -x "$d/$name" ] && echo "$d/$name"; done
    done
    for name in python3 python3.13 python3.12 python3.11; do
      command -v "$name" || true
    done)
  if [ ${#refused[@]} -gt 0 ]; then
    warn "no Python >= 3.11 that postfix-certwatch.service can see: $(printf '%s; ' "${refused[@]}")" \
         "renew-daemon would not start (status 203/EXEC; exit 127 from a shell). $USE_DISTRO"
    return 1
  fi
  warn "postfix-certwatch needs Python >= 3.11, and python3 is" \
       "$(py_version python3 || echo missing). $USE_DISTRO"
  return 1
}
# Debian and Ubuntu split the venv module off: python3 -m venv fails without the
# python3.X-venv package (ensurepip is missing).
has_venv() { "$1" -c 'import venv, ensurepip' 2>/dev/null; }

if [ "$WHICH" = 1 ]; then
  PY=$(pick_python) || exit 1
  echo "$PY ($(py_version "$PY"))"
  if ! has_venv "$PY"; then
    warn "$PY cannot make a virtualenv: its venv/ensurepip module is missing." \
         "Debian/Ubuntu: apt install python3-venv (or python$(py_version "$PY")-venv)"
    exit 1
  fi
  exit 0
fi

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
    warn "warning: cannot read $PFCONF (${ifaces:-$services}): the drop-in" \
         "allows no Postfix address; fix it and run this again"
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

# install_managed SRC DEST MODE: a file install.sh owns but the admin may edit (units,
# the drop-in). Replaced when it is what install.sh wrote last time (or identical);
# kept, with the new version beside it as DEST.new, when the admin changed it.
install_managed() {
  local src=$1 dest=$ROOT$2 mode=$3 have
  if [ -e "$dest" ] && ! cmp -s "$src" "$dest"; then
    have=$(sha256sum < "$dest" | cut -d' ' -f1)
    if [ "$LEGACY" = 1 ]; then
      # an install older than the manifest wrote it: replaced, since the new one carries
      # what this version needs (AF_NETLINK for the alert mail, say); the previous one
      # stays beside it as .old (not in the manifest: --uninstall leaves it to the admin)
      cp -p "$dest" "$dest.old"
      say "replaced     $dest (written by an install.sh older than its manifest); the" \
          "previous one is $dest.old: merge what you had changed"
    elif [ "${OLD_SUM[$2]:-}" != "$have" ]; then
      install -m "$mode" "$src" "$dest.new"
      say "kept         $dest (changed since install.sh wrote it: yours); the new one is" \
          "$dest.new: compare, merge, remove the .new"
      # --uninstall keeps the edited file (its checksum is not the recorded one) and
      # removes the .new
      NEW_MANIFEST+=("${OLD_SUM[$2]:-edited}  $2")
      record "$2.new"
      return 0
    fi
  fi
  install -m "$mode" "$src" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
  rm -f "$dest.new"
  record "$2"
  return 0
}

# ---------------------------------------------------------------------- the venv
if [ "$VENV" = 1 ]; then
  if [ -x "$PREFIX/bin/python" ]; then
    if ! new_enough "$PREFIX/bin/python"; then
      warn "$PREFIX has Python $(py_version "$PREFIX/bin/python"): remove it and run this again"
      exit 1
    fi
    if why=$(invisible "$PREFIX/bin/python"); then
      warn "$PREFIX was made with a Python the unit cannot see: $why. Remove $PREFIX and" \
           "run this again ($USE_DISTRO)"
      exit 1
    fi
  else
    PY=$(pick_python) || exit 1
    if ! has_venv "$PY"; then
      warn "$PY cannot make a virtualenv: its venv/ensurepip module is missing." \
           "Debian/Ubuntu: apt install python3-venv (or python$(py_version "$PY")-venv)," \
           "then run this again"
      exit 1
    fi
    if h=$(hidden_by "$PREFIX"); then
      warn "--prefix $PREFIX is under $h, which the unit hides from renew-daemon"
      exit 1
    fi
    "$PY" -m venv "$PREFIX"
  fi
  pip=("$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade)
  if [ -n "$WHEELHOUSE" ]; then
    # Offline: the wheels of this version and of every dependency, no index at all.
    "${pip[@]}" --no-index --find-links "$WHEELHOUSE" postfix-certwatch
  else
    # From a clean copy of the source: setuptools builds in ./build, which keeps modules a
    # newer version moved or removed and would ship them again.
    src=$(mktemp -d)
    tar -C . --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
        -cf - . | tar -C "$src" -xf -
    "${pip[@]}" "$src"
    rm -rf "$src"
  fi
  say "venv         $PREFIX (Python $(py_version "$PREFIX/bin/python"), postfix-certwatch" \
      "$("$PREFIX/bin/python" -c 'import hook; print(hook.__version__)'))"
  NEW_MANIFEST+=("dir  $PREFIX")
fi
for tool in renew-daemon postfix-deploy-hook renew-check; do
  [ -x "$ROOT$PREFIX/bin/$tool" ] || [ -x "$PREFIX/bin/$tool" ] || warn "warning: $ROOT$PREFIX/bin/$tool is missing"
done
CERTBOT=${CERTBOT:-$(system_certbot)}
[ -x "$ROOT$CERTBOT" ] || [ -x "$CERTBOT" ] || say "note: no certbot at $CERTBOT yet (install your distribution's certbot, or pass --certbot)"

bin=/usr/local/bin
install -d -m 0755 "$ROOT$bin"
for tool in renew-check postfix-deploy-hook renew-daemon; do
  if [ -e "$ROOT$bin/$tool" ] && [ ! -L "$ROOT$bin/$tool" ]; then
    say "kept         $ROOT$bin/$tool (not a symlink: yours)"
  else
    ln -sfn "$PREFIX/bin/$tool" "$ROOT$bin/$tool"
    record "$bin/$tool"
  fi
done
say "commands     $ROOT$bin/{renew-check,postfix-deploy-hook,renew-daemon} -> $PREFIX/bin/"

hooks=/etc/letsencrypt/renewal-hooks/deploy
install -d -m 0755 "$ROOT$hooks"
ln -sfn "$PREFIX/bin/postfix-deploy-hook" "$ROOT$hooks/postfix-certwatch"
record "$hooks/postfix-certwatch"
say "deploy hook  $ROOT$hooks/postfix-certwatch -> $PREFIX/bin/postfix-deploy-hook"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
units=/etc/systemd/system
install -d -m 0755 "$ROOT$units"
for unit in systemd/*.service systemd/*.timer; do
  sed -e "s|/opt/postfix-certwatch/bin/|$PREFIX/bin/|g" -e "s|/usr/bin/certbot|$CERTBOT|g" \
      "$unit" > "$tmp/$(basename "$unit")"
  install_managed "$tmp/$(basename "$unit")" "$units/$(basename "$unit")" 0644
  say "unit         $ROOT$units/$(basename "$unit")"
done

dropin="$units/postfix-certwatch.service.d"
install -d -m 0755 "$ROOT$dropin"
listen=$(postfix_addresses) dns=$(resolvers)
{
  echo "# Generated by postfix-certwatch's scripts/install.sh; regenerated when it runs again"
  echo "# (kept, with the new one as 10-addresses.conf.new, once you edit it)."
  echo "# The unit allows localhost only (IPAddressDeny=any): these are the other peers."
  echo "# Run install.sh again after changing inet_interfaces or master.cf, and use"
  echo "# --allow ADDR (or a drop-in of your own: systemctl edit postfix-certwatch) for a"
  echo "# remote Prometheus scraping metrics.listen or a webhook's host."
  echo "[Service]"
  [ -z "$listen" ] || { echo "# Postfix listens here (from $PFCONF): the daemon probes these"; printf 'IPAddressAllow=%s\n' $listen; }
  [ -z "$dns" ] || { echo "# DNS resolvers (/etc/resolv.conf)"; printf 'IPAddressAllow=%s\n' $dns; }
  [ ${#ALLOW[@]} -eq 0 ] || { echo "# --allow"; printf 'IPAddressAllow=%s\n' "${ALLOW[@]}"; }
} > "$tmp/10-addresses.conf"
install_managed "$tmp/10-addresses.conf" "$dropin/10-addresses.conf" 0644
say "drop-in      $ROOT$dropin/10-addresses.conf (IPAddressAllow=" \
    "$(echo localhost $listen $dns "${ALLOW[@]}"))"
for f in "$ROOT$dropin"/*.conf; do
  [ "$f" = "$ROOT$dropin/10-addresses.conf" ] || say "kept         $f (your drop-in)"
done

etc="$ROOT/etc/postfix-certwatch"
install -d -m 0755 "$etc"
if [ -e "$etc/config.toml" ]; then
  install -m 0644 scripts/config.example.toml "$etc/config.toml.example"
  record /etc/postfix-certwatch/config.toml.example
  say "config       kept $etc/config.toml (every key and its default: config.toml.example)"
else
  install -m 0644 scripts/config.example.toml "$etc/config.toml"
  say "config       $etc/config.toml (all defaults, commented)"
fi

share=/usr/local/share/postfix-certwatch/prometheus
install -d -m 0755 "$ROOT$share"
for f in daemon/renew_daemon/prometheus/*.yml; do
  install -m 0644 "$f" "$ROOT$share/"
  record "$share/$(basename "$f")"
done
say "rules        $ROOT$share/postfix-certwatch.rules.yml"

install -d -m 0755 "$ROOT$DOCS"
for f in README.md docs/*.md scripts/config.example.toml; do
  [ -f "$f" ] || continue
  install -m 0644 "$f" "$ROOT$DOCS/"
  record "$DOCS/$(basename "$f")"
done
say "docs         $ROOT$DOCS/ (the units' Documentation=)"

install -d -m 0755 "$(dirname "$ROOT$MANIFEST")"
printf '%s\n' "${NEW_MANIFEST[@]}" > "$ROOT$MANIFEST.tmp"
mv -f "$ROOT$MANIFEST.tmp" "$ROOT$MANIFEST"

# An upgrade of a running daemon: systemd rereads the units, the daemon restarts on the
# new code (the deploy hook needs nothing: certbot starts it anew every time).
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet postfix-certwatch.service; then
    systemctl restart postfix-certwatch.service
    say "restarted    postfix-certwatch.service (running the version just installed)"
  fi
fi

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
  Documentation: $DOCS/ (install.md: offline install, upgrades, --uninstall)
EOT
