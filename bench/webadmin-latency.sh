#!/usr/bin/env bash
# WebAdmin's Accounts page for a domain of 100,000 accounts: its latency alone and under SMTP
# load, and what the page traffic costs the SMTP throughput (issue #16: under 300 ms p99 while
# bench/smtp-vs-postfix.sh's load runs at 10 sessions, SMTP delivered rate down by at most 5%).
#
#   bench/webadmin-latency.sh     ACCOUNTS=100000 RATE=4 ALONE_REQUESTS=300 MSGS=10000 SIZE=5120
#                                 SESSIONS=10 RUNS=4 CG_WORKERS=$(nproc)
#
# MSGS is larger than smtp-vs-postfix.sh's 2000 (the same traffic, for longer): at a few
# hundred messages/s a 2000-message run lasts seconds, a dozen clicks, and a p99 needs a few
# hundred; the report warns when a case has fewer than 300. Creating 100,000 accounts takes
# minutes (one committed transaction each, as the server writes them).
#
# The server is smtp-vs-postfix.sh's (cg_smtp_server: SMTP on 127.0.0.1:2625, the same workers
# and account) plus an HTTPS listener on 127.0.0.1:$WEB_PORT (2680) and a server administrator
# webadmin@example.test. Before it starts, bench/webadmin_accounts.py creates bigdomain.test
# with ACCOUNTS accounts through the store's add_account (one argon2id hash shared by all: see
# there). bench/webadmin_clicks.py is the administrator: it logs in like a browser (CSRF token,
# session cookie, one keep-alive connection) and clicks through the domain's Accounts page at
# RATE requests/s: first page, next pages (keyset after=), a jump to the middle, searches (a
# last name and its next page, a full name, a name nobody has, a prefix), each latency kept.
#
#   (a) alone: ALONE_REQUESTS clicks with no SMTP traffic, half before the SMTP runs, half after;
#   (b) under load: the clicks run through each "cgtwist-web" SMTP run (smtp-source, SESSIONS
#       sessions, MSGS messages of SIZE bytes, delivered into the Maildir, as smtp-vs-postfix.sh).
# The SMTP runs without ("cgtwist") and with ("cgtwist-web") the page traffic alternate in ABBA
# order (RUNS pairs: without first in odd pairs), and bench/ratios.py gives the delivered rates
# and their ratio, also by which ran first. The report gives p50/p95/p99/max latency per case and
# per kind of click, the server process's CPU per page (alone: the page's own cost, steadier
# than its latency on a shared machine) and the load average before and after.
# Refuses to start above a 1-minute load of 1.0 (BENCH_MAX_LOAD; BENCH_IGNORE_LOAD=1 runs anyway).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check webadmin-latency
export MSGS=${MSGS:-10000} SIZE=${SIZE:-5120}
SESSIONS_N=${SESSIONS:-10} RUNS=${RUNS:-4} ACCOUNTS=${ACCOUNTS:-100000} RATE=${RATE:-4}
ALONE_REQUESTS=${ALONE_REQUESTS:-300} WEB_PORT=${WEB_PORT:-2680}
WEB_DOMAIN=bigdomain.test WEB_ADMIN=webadmin@example.test WEB_PASSWORD=bench-Admin-pass-1
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
STAMP=$(date +%Y%m%d-%H%M%S)
LAT="$OUTDIR/webadmin-latency-$STAMP"
CSV="$LAT/smtp.csv"
mkdir -p "$LAT"
# cgtwist-admin's notes to a file: opened as /dev/stderr (lib.sh) they would write over this
# script's output when it goes to a file (a second file description, its own offset).
export CG_ADMIN_LOG="$LAT/admin.log"
echo "accounts=$ACCOUNTS rate=${RATE}/s alone=$ALONE_REQUESTS msgs=$MSGS size=$SIZE sessions=$SESSIONS_N runs=$RUNS results=$LAT"

# Before the server starts: the administrator and the big domain (progress on stderr).
web_accounts() {
  cg_admin account add "$WEB_ADMIN" --admin --password "$WEB_PASSWORD"
  "$PY" "$HERE/webadmin_accounts.py" "$WEB_DOMAIN" "$ACCOUNTS"
}
CG_EXTRA_LISTENERS="{\"protocol\":\"http\",\"address\":\"127.0.0.1\",\"port\":$WEB_PORT,\"tls\":\"implicit\"}" \
  CG_BEFORE_START=web_accounts cg_smtp_server cgtwist-webadmin "${CG_WORKERS:-$(nproc)}"
mkdir -p "$CG_MAILDIR/new" "$CG_MAILDIR/cur"

# clicks ARGS...: the administrator, until --requests N or the --stop-file appears.
clicks() {
  "$PY" "$HERE/webadmin_clicks.py" run --port "$WEB_PORT" --user "$WEB_ADMIN" \
    --password "$WEB_PASSWORD" --domain "$WEB_DOMAIN" --rate "$RATE" \
    --middle "$(printf 'user%06d' $((ACCOUNTS / 2)))" "$@"
}
# cpu_ticks: the server process's CPU time so far (utime + stime of all its threads), in ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$CG_PID/stat"; }
# alone PART COUNT: COUNT clicks with no SMTP traffic; adds the server's CPU ticks to ALONE_TICKS.
ALONE_TICKS=0
alone() {
  local t0 t1
  t0=$(cpu_ticks)
  clicks --requests "$2" --out "$LAT/alone-$1.csv"
  t1=$(cpu_ticks)
  ALONE_TICKS=$((ALONE_TICKS + t1 - t0))
}
smtp() { SESSIONS=$SESSIONS_N RUNS=1 COUNT_DIR="$CG_MAILDIR" CLEAN=1 OUT="$CSV" bash "$SHARED/smtp-load.sh" 127.0.0.1 2625 "$1"; }
# with_web RUN: one SMTP run with the administrator clicking throughout (started and logged in
# first: the login's argon2id is no part of the load).
with_web() {
  local stop="$LAT/stop" ready="$LAT/ready" pid
  rm -f "$stop" "$ready"
  clicks --out "$LAT/under-smtp-$1.csv" --stop-file "$stop" --ready-file "$ready" &
  pid=$!
  for _ in $(seq 1200); do [ -e "$ready" ] || ! kill -0 "$pid" 2>/dev/null && break; sleep 0.1; done
  [ -e "$ready" ] || { echo "the web client did not log in" >&2; exit 1; }
  smtp cgtwist-web
  touch "$stop"
  wait "$pid"
}

echo "label,sessions,run,msgs,size,accept_s,accept_msg_s,deliver_s,deliver_msg_s,client_cpu_s,rc" > "$CSV"
alone before $((ALONE_REQUESTS / 2))
echo "order (ABBA): cgtwist (no page traffic) first in odd runs, cgtwist-web first in even ones (first: cgtwist)"
for r in $(seq "$RUNS"); do
  if [ $((r % 2)) = 1 ]; then smtp cgtwist; with_web "$r"; else with_web "$r"; smtp cgtwist; fi
done
alone after $((ALONE_REQUESTS - ALONE_REQUESTS / 2))

echo "--- SMTP delivered rate with the page traffic (cgtwist-web) against without (cgtwist)"
"$PY" "$HERE/ratios.py" "$CSV" cgtwist-web cgtwist
echo "--- Accounts page of $WEB_DOMAIN ($ACCOUNTS accounts), latency per case (target: p99 < 300 ms under SMTP load)"
cat "$LAT/alone-before.csv" <(tail -n +2 "$LAT/alone-after.csv") > "$LAT/alone.csv"
{ head -1 "$LAT/under-smtp-1.csv"; for f in "$LAT"/under-smtp-*.csv; do tail -n +2 "$f"; done; } > "$LAT/under-smtp.csv"
"$PY" "$HERE/webadmin_clicks.py" report "$LAT/alone.csv" "$LAT/under-smtp.csv"
"$PY" "$HERE/webadmin_clicks.py" verdict "$LAT/under-smtp.csv" "$CSV"
awk -v t="$ALONE_TICKS" -v n="$ALONE_REQUESTS" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "server process CPU per page (alone): %.1f ms\n", 1000 * t / hz / n }'
bench_load_after webadmin-latency
