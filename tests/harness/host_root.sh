#!/usr/bin/env bash
# Build the Debian 12 root of the real-host test bed (tests/harness/host.py boots it with
# systemd-nspawn). Everything the root holds is in this file: tests/harness/host.py keys
# its cache by a hash of this file and the apt sources, so any change here rebuilds it.
#
#   host_root.sh OUT "deb URI SUITE COMPONENTS"...
#
# What is inside, all Debian 12 packages from the mirror the machine's apt uses:
#   * systemd as PID 1, dbus, iproute2, procps (/bin/kill for ExecReload=)
#   * postfix as the system service (postfix.service -> postfix@-.service) with a real
#     /etc/postfix/main.cf for mail.example.test: port 25 on 127.0.0.1 and on 192.0.2.25
#     (a second, non-loopback address on a veth pair inside the container),
#     submission (587, STARTTLS required) and submissions (465, implicit TLS)
#   * certbot 2.1 (Debian's, with certbot.timer / certbot.service)
#   * pebble as the ACME CA (pebble.service, on 127.0.0.1:14000; 90-day certificates like
#     Let's Encrypt's, not pebble's default 5 years); its HTTPS CA is in the
#     system trust store, and pebble-root.service puts the root it issues under (a new
#     one on every start) there too, as Let's Encrypt's root is on a real server
#   * python3 + python3-venv (install.sh's prerequisites), and nothing from PyPI: the
#     project is installed from a wheelhouse built outside
set -euo pipefail
OUT=$1; shift
[ $# -gt 0 ] || { echo "host_root.sh: no apt source lines given" >&2; exit 2; }
PACKAGES=systemd,systemd-sysv,dbus,iproute2,procps,python3,python3-venv,postfix,certbot,pebble,ca-certificates,openssl

# customize: runs on the machine with "$1" = the new root (files) or via chroot (commands)
read -r -d '' CUSTOMIZE <<'HOOK' || true
set -eu
R=$1
in_root() { chroot "$R" "$@"; }
echo mail > "$R/etc/hostname"
echo mail.example.test > "$R/etc/mailname"
cat > "$R/etc/hosts" <<HOSTS
127.0.0.1	localhost
192.0.2.25	mail.example.test mail
HOSTS

# -- the second address: no "dummy" kernel module on every machine, a veth pair is
# everywhere; both ends stay in the container (traffic never leaves it).
cat > "$R/etc/systemd/system/certwatch-testnet.service" <<UNIT
[Unit]
Description=test bed: 192.0.2.25 on a veth pair inside the container
DefaultDependencies=no
Before=network-pre.target postfix@-.service
Wants=network-pre.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link add cw0 type veth peer name cw1
ExecStart=/sbin/ip addr add 192.0.2.25/24 dev cw0
ExecStart=/sbin/ip link set cw1 up
ExecStart=/sbin/ip link set cw0 up
[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable certwatch-testnet.service

# -- pebble: its own HTTPS certificate from a small CA the system store trusts
install -d -m 0755 "$R/etc/pebble" "$R/usr/local/share/ca-certificates"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=test bed pebble HTTPS CA" -keyout "$R/etc/pebble/https-ca.key" \
  -out "$R/usr/local/share/ca-certificates/certwatch-pebble-https-ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$R/etc/pebble/https.key" -out "$R/etc/pebble/https.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$R/etc/pebble/https.ext"
openssl x509 -req -in "$R/etc/pebble/https.csr" -days 3650 -extfile "$R/etc/pebble/https.ext" \
  -CA "$R/usr/local/share/ca-certificates/certwatch-pebble-https-ca.crt" \
  -CAkey "$R/etc/pebble/https-ca.key" -CAcreateserial -out "$R/etc/pebble/https.pem" 2>/dev/null
rm -f "$R/etc/pebble/https-ca.key" "$R/etc/pebble/https.csr"
cat > "$R/etc/pebble/certwatch.json" <<JSON
{ "pebble": { "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "/etc/pebble/https.pem", "privateKey": "/etc/pebble/https.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "certificateValidityPeriod": 7776000 } }
JSON
cat > "$R/etc/systemd/system/pebble.service" <<UNIT
[Unit]
Description=test bed: pebble, the ACME test CA (127.0.0.1:14000)
[Service]
Environment=PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=100
ExecStart=/usr/bin/pebble -config /etc/pebble/certwatch.json
[Install]
WantedBy=multi-user.target
UNIT
cat > "$R/usr/local/sbin/pebble-trust-root" <<'PY'
#!/usr/bin/python3
"""Put the root pebble issues under (new on every start) into the system trust store."""
import pathlib, ssl, subprocess, time, urllib.request
ctx = ssl.create_default_context()
for _ in range(200):
    try:
        pem = urllib.request.urlopen("https://127.0.0.1:15000/roots/0", context=ctx, timeout=2).read()
        break
    except OSError:
        time.sleep(0.05)
else:
    raise SystemExit("pebble's management API did not answer")
pathlib.Path("/usr/local/share/ca-certificates/certwatch-pebble-root.crt").write_bytes(pem)
subprocess.run(["update-ca-certificates", "--fresh"], check=True, stdout=subprocess.DEVNULL)
PY
chmod 0755 "$R/usr/local/sbin/pebble-trust-root"
cat > "$R/etc/systemd/system/pebble-root.service" <<UNIT
[Unit]
Description=test bed: trust the root pebble issues under (system store)
Requires=pebble.service
After=pebble.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pebble-trust-root
[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable pebble.service pebble-root.service
in_root update-ca-certificates >/dev/null

# -- postfix: a real main.cf (Debian's defaults + mail.example.test), three TLS services
cat > "$R/etc/postfix/main.cf" <<CF
# Debian 12 defaults, as the package writes them for "Internet Site", plus the test name
smtpd_banner = \$myhostname ESMTP \$mail_name (Debian/GNU)
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level = may
smtp_tls_CApath = /etc/ssl/certs
smtp_tls_security_level = may
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = mail.example.test
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
myorigin = /etc/mailname
mydestination = \$myhostname, mail, localhost.localdomain, localhost
relayhost =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = ipv4
# the test bed has no DNS: never look names up (mail only goes to local mailboxes)
smtp_host_lookup = native
disable_dns_lookups = yes
smtpd_peername_lookup = no
default_transport = error:5.7.1 test bed never relays
CF
in_root postconf -M# smtp/inet
in_root postconf -Me "127.0.0.1:smtp/inet=127.0.0.1:smtp inet n - y - - smtpd" \
  "192.0.2.25:smtp/inet=192.0.2.25:smtp inet n - y - - smtpd" \
  "submission/inet=submission inet n - y - - smtpd" \
  "submissions/inet=submissions inet n - y - - smtpd"
in_root postconf -P "submission/inet/syslog_name=postfix/submission" \
  "submission/inet/smtpd_tls_security_level=encrypt" \
  "submissions/inet/syslog_name=postfix/submissions" \
  "submissions/inet/smtpd_tls_wrappermode=yes"
in_root newaliases
touch -d '-1 minute' "$R/etc/postfix/main.cf" "$R/etc/postfix/master.cf"
in_root systemctl enable postfix.service
# journald: keep the journal in memory (the root is booted with --volatile=overlay anyway)
install -d -m 0755 "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$R/etc/systemd/journald.conf.d/certwatch.conf"
# nothing from the outside world: apt has no network in the container
rm -f "$R/etc/resolv.conf"; : > "$R/etc/resolv.conf"
HOOK

tmp="$OUT.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --variant=minbase --include="$PACKAGES" \
  --essential-hook='echo "postfix postfix/main_mailer_type select No configuration" | chroot "$1" debconf-set-selections' \
  --essential-hook='echo "postfix postfix/mailname string mail.example.test" | chroot "$1" debconf-set-selections' \
  --customize-hook="$CUSTOMIZE" \
  bookworm "$tmp" "$@"
mv "$tmp" "$OUT"
trap - EXIT
