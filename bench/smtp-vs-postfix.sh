#!/usr/bin/env bash
# SMTP acceptance and delivery into Maildir: cgtwist and Postfix in the same run, with
# Postfix's smtp-source (../shared/bench/smtp-load.sh), reported as cgtwist/Postfix ratios.
#
#   bench/smtp-vs-postfix.sh            MSGS=2000 SIZE=5120 SESSIONS="1 10 50" RUNS=3 CG_WORKERS=$(nproc)
#
# Postfix listens on 127.0.0.1:2525 (../shared/bench/setup-peers.sh), cgtwist on 127.0.0.1:2625,
# both delivering to smtpbench@example.test's Maildir. Sessions alternate between the two
# servers for each session count so that both see the same machine load.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO"
export PYTHONPATH="$REPO"
SHARED="${SHARED:-$(cd "$REPO/../shared/bench" && pwd)}"
PY="${PY:-$REPO/.venv/bin/python}"
export MSGS=${MSGS:-2000} SIZE=${SIZE:-5120} RUNS=${RUNS:-3}
SESSIONS_LIST=${SESSIONS:-"1 10 50"}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
mkdir -p "$OUTDIR"
CSV="$OUTDIR/smtp-vs-postfix-$(date +%Y%m%d-%H%M%S).csv"

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null

BASE="$(mktemp -d /tmp/cgtwist-bench-XXXX)"
# A loopback DNS server: the benchmark never asks a real resolver.
"$PY" -m tests.dnsserver --json <(echo '{"example.test": ["A 127.0.0.1"], "loadgen.example.test": ["A 127.0.0.1"]}') > "$BASE/dns.addr" &
DNSPID=$!
for i in $(seq 100); do [ -s "$BASE/dns.addr" ] && break; sleep 0.1; done
DNS="$(head -1 "$BASE/dns.addr")"
cat > "$BASE/cgtwist.conf" <<CONF
[server]
base_dir = "$BASE/base"
main_domain = "example.test"
hostname = "bench.example.test"
unprivileged_ports = true
[log]
level = "info"
[dns]
nameservers = ["$DNS"]
CONF
export CGTWIST_CONFIG="$BASE/cgtwist.conf"
"$PY" -m cgtwist.cli settings set listeners '[{"protocol":"smtp","address":"127.0.0.1","port":2625,"tls":"starttls"}]' >/dev/null
"$PY" -m cgtwist.cli settings set smtp.max_connections_per_ip 200 >/dev/null
# Like Postfix's mynetworks for the load generator on 127.0.0.1 (Postfix does no DNS checks
# for it either).
"$PY" -m cgtwist.cli settings set clients.ips '"127.0.0.1"' >/dev/null
# Receiving in worker processes, one per core (Postfix's smtpd processes likewise run beside
# its qmgr and local): CG_WORKERS=0 measures the single-process server.
"$PY" -m cgtwist.cli settings set smtp.workers "${CG_WORKERS:-$(nproc)}" >/dev/null
"$PY" -m cgtwist.cli account add smtpbench@example.test --password benchpass >/dev/null
"$(dirname "$PY")/twistd" -n --pidfile "$BASE/twistd.pid" --logfile "$BASE/cgtwist.log" cgtwist &
PID=$!
trap 'kill $PID $DNSPID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$BASE"' EXIT
for i in $(seq 600); do grep -q "cgtwist ready" "$BASE/cgtwist.log" 2>/dev/null && break; sleep 0.1; done
CG_MAILDIR="$BASE/base/Domains/example.test/smtpbench/Maildir"
mkdir -p "$CG_MAILDIR/new" "$CG_MAILDIR/cur"

echo "label,sessions,run,msgs,size,accept_s,accept_msg_s,deliver_s,deliver_msg_s,client_cpu_s,rc" > "$CSV"
for s in $SESSIONS_LIST; do
  SESSIONS=$s COUNT_DIR=/home/smtpbench/Maildir CLEAN=1 OUT="$CSV" bash "$SHARED/smtp-load.sh" 127.0.0.1 2525 postfix
  SESSIONS=$s COUNT_DIR="$CG_MAILDIR" CLEAN=1 OUT="$CSV" bash "$SHARED/smtp-load.sh" 127.0.0.1 2625 cgtwist
done
"$PY" "$HERE/ratios.py" "$CSV" cgtwist postfix
