#!/usr/bin/env bash
# SMTP acceptance and delivery into Maildir: cgtwist and Postfix in the same run, with
# Postfix's smtp-source (../shared/bench/smtp-load.sh), reported as cgtwist/Postfix ratios.
#
#   bench/smtp-vs-postfix.sh            MSGS=2000 SIZE=5120 SESSIONS="1 10 50" RUNS=3 CG_WORKERS=$(nproc)
#   CG_RUNTIME=plain bench/smtp-vs-postfix.sh   the same on stock Twisted ([server] runtime = plain)
#   CG_SERVER_RULES=50 bench/smtp-vs-postfix.sh  also cgtwist with 50 Server Rules (bench/server_rules.py)
#
# With CG_SERVER_RULES=N each run measures cgtwist twice, without rules ("cgtwist") and with N
# realistic Server Rules ("cgtwist-rulesN"), the two in ABBA order too, and the report gives
# both delivered ratios against Postfix and rules/no-rules (issue #14: at most 5% cost).
#
# After the ratios it prints where the two cores went in each server's runs: CPU ms per message
# per process group (bench/smtp_cpu_summary.py; the rows per run in *-cpu.csv beside the CSV).
#
# Postfix listens on 127.0.0.1:2525 (../shared/bench/setup-peers.sh), cgtwist on 127.0.0.1:2625,
# both delivering to smtpbench@example.test's Maildir. The two servers take turns run by run
# (ABBA, see below) so that both see the same machine load and the same file-system state.
# Refuses to start above a 1-minute load of 1.0 (BENCH_MAX_LOAD; BENCH_IGNORE_LOAD=1 runs anyway).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check smtp-vs-postfix
export MSGS=${MSGS:-2000} SIZE=${SIZE:-5120} RUNS=${RUNS:-3}
SESSIONS_LIST=${SESSIONS:-"1 10 50"}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
mkdir -p "$OUTDIR"
CSV="$OUTDIR/smtp-vs-postfix-$(date +%Y%m%d-%H%M%S).csv"

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null

# Receiving in worker processes, one per core (Postfix's smtpd processes likewise run beside
# its qmgr and local): CG_WORKERS=0 measures the single-process server.
cg_smtp_server cgtwist-bench "${CG_WORKERS:-$(nproc)}"
mkdir -p "$CG_MAILDIR/new" "$CG_MAILDIR/cur"

echo "label,sessions,run,msgs,size,accept_s,accept_msg_s,deliver_s,deliver_msg_s,client_cpu_s,rc" > "$CSV"
# Where the cores go in each run (bench/outbound_cpu.py, summarised by smtp_cpu_summary.py):
# the measured server's process tree (cgtwist: its reactor, its file threads, its SMTP
# workers; Postfix: master, smtpd, cleanup, qmgr, local, ...), the loopback DNS server and the
# machine, from just before the client starts until the last message is in the Maildir.
CPU_CSV="${CSV%.csv}-cpu.csv"
echo "label,group,cpu_s,ms_per_msg,cores" > "$CPU_CSV"
PF_PIDFILE=${PF_PIDFILE:-/var/spool/postfix/pid/master.pid}
# cpu_split LABEL TREE_PIDFILE CMD...: CMD between two snapshots, rows labelled LABEL.
cpu_split() {
  local label=$1 pidfile=$2 snap t0 t1; shift 2
  snap=$(mktemp -d)
  CPU_TREE="${label%%-s[0-9]*}=$pidfile" CPU_GROUPS="dns server=$CG_DNS_PID" \
    "$PY" "$HERE/outbound_cpu.py" snap "$snap/before"
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  CPU_TREE="${label%%-s[0-9]*}=$pidfile" CPU_GROUPS="dns server=$CG_DNS_PID" \
    "$PY" "$HERE/outbound_cpu.py" snap "$snap/after"
  CPU_GROUPS="dns server=$CG_DNS_PID" "$PY" "$HERE/outbound_cpu.py" report "$snap/before" \
    "$snap/after" "$label" "$MSGS" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" >> "$CPU_CSV"
  rm -rf "$snap"
}
pf() {
  cpu_split "postfix-s$1-r$2" "$PF_PIDFILE" env SESSIONS="$1" RUNS=1 \
    COUNT_DIR=/home/smtpbench/Maildir CLEAN=1 OUT="$CSV" bash "$SHARED/smtp-load.sh" 127.0.0.1 2525 postfix
}
cg_plain() {
  cpu_split "${3:-cgtwist}-s$1-r$2" "$BASE/twistd.pid" env SESSIONS="$1" RUNS=1 \
    COUNT_DIR="$CG_MAILDIR" CLEAN=1 OUT="$CSV" bash "$SHARED/smtp-load.sh" 127.0.0.1 2625 "${3:-cgtwist}"
}
NRULES=${CG_SERVER_RULES:-0}
RULES_FILE="$OUTDIR/server-rules-$NRULES.txt"
if [ "$NRULES" -gt 0 ]; then
  PYTHONPATH="$HERE/.." "$PY" "$HERE/server_rules.py" "$NRULES" > "$RULES_FILE"
  cg_admin rules test --server "$RULES_FILE"  # valid as Server Rules, or the bench stops
  echo "$NRULES Server Rules: $RULES_FILE"
fi
# set_rules on|off: install or remove the Server Rules; the running server and its workers
# reload at once (cgtwist-admin tells them), the pause lets every worker's reload land.
set_rules() {
  if [ "$1" = on ]; then cg_admin rules set --server "$RULES_FILE" >/dev/null
  else "$PY" -m cgtwist.cli rules delete --server >/dev/null 2>&1 || true; fi  # none set: fine
  sleep 2
}
# cg: cgtwist alone, or without and with the Server Rules in ABBA order (run $2 odd: without first).
cg() {
  if [ "$NRULES" -le 0 ]; then cg_plain "$1" "$2"; return; fi
  if [ $(( $2 % 2 )) = 1 ]; then
    set_rules off; cg_plain "$1" "$2"; set_rules on; cg_plain "$1" "$2" "cgtwist-rules$NRULES"
  else
    set_rules on; cg_plain "$1" "$2" "cgtwist-rules$NRULES"; set_rules off; cg_plain "$1" "$2"
  fi
}
# One run of each server at a time, in ABBA order (postfix first in odd runs, cgtwist first in
# even ones): a run leaves the file system in a state that costs the next run. Postfix creates
# and deletes a queue file per message, and both servers' directories share one ext4 flex
# group here, so the run after a Postfix run walks past thousands of inodes freed seconds ago
# (`recently_deleted`) for each file it creates; cgtwist recycles its spool files and leaves
# no such trail. A fixed order would charge that to whichever server always came second.
echo "order (ABBA): postfix first in odd runs, cgtwist first in even ones (first: postfix)"
for s in $SESSIONS_LIST; do
  for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then pf "$s" "$r"; cg "$s" "$r"; else cg "$s" "$r"; pf "$s" "$r"; fi
  done
done
"$PY" "$HERE/ratios.py" "$CSV" cgtwist postfix
if [ "$NRULES" -gt 0 ]; then
  echo "--- with $NRULES Server Rules against Postfix"
  "$PY" "$HERE/ratios.py" "$CSV" "cgtwist-rules$NRULES" postfix
  echo "--- with $NRULES Server Rules against none (the rules' cost)"
  "$PY" "$HERE/ratios.py" "$CSV" "cgtwist-rules$NRULES" cgtwist
fi
"$PY" "$HERE/smtp_cpu_summary.py" "$CPU_CSV"
echo "CPU split per run: $CPU_CSV"
bench_load_after smtp-vs-postfix
