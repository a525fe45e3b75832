#!/usr/bin/env bash
# SORT and THREAD (RFC 5256) on a 10,000-message folder: cgtwist and Dovecot in the same run,
# the same corpus in both, reported as per-command ratios (issue 19).
#
#   bench/sort-thread-vs-dovecot.sh        MESSAGES=10000 CONCURRENCY=1,4 MIN_SESSIONS=8 RUNS=2
#   MESSAGES=2000 BENCH_IGNORE_LOAD=1 bench/sort-thread-vs-dovecot.sh     a quick trial
#
# What is timed (bench/sort_thread_bench.py): each client logs in, SELECTs INBOX and sends
# SORT by ARRIVAL, DATE, REVERSE DATE, SUBJECT, FROM, SIZE, REVERSE ARRIVAL, (SUBJECT DATE)
# with a SINCE search, UID SORT (REVERSE SIZE), THREAD REFERENCES and THREAD ORDEREDSUBJECT,
# one at a time, each timed from its line to its tagged OK. With C clients they all start
# together (C sessions per run). The corpus (sort_thread_bench.py corpus) is threaded mail:
# replies with In-Reply-To/References, Re:/Fwd:/[list] prefixes, RFC 2047 subjects, display
# names, sizes from 300 B to 40 KB, replies arriving before their parent.
#
# Fairness, as bench/access-vs-dovecot.sh:
# - ABBA: for each concurrency Dovecot, cgtwist, cgtwist, Dovecot (ABBA_FIRST=cgtwist for the
#   other way round), each half doing half the runs; a median is over both halves' sessions.
# - Warm: the same corpus is written into both Maildirs/new, and an untimed session on each
#   server runs every command once first (Dovecot builds dovecot.index and its cache fields for
#   the sort keys, cgtwist its folder index with the cached header fields); each timed half
#   starts with one more untimed session.
# - At least MIN_SESSIONS sessions per median: max(RUNS, ceil(MIN_SESSIONS / C)) runs per
#   server, rounded up to even for the two halves.
# - The run refuses to start when the 1-minute load is above 1.0 (BENCH_MAX_LOAD;
#   BENCH_IGNORE_LOAD=1 runs anyway, marked noisy) and prints the load before and after.
# - The answers are compared by size (how many message numbers each SORT/THREAD returned):
#   "DIFFER" in the table means the servers did not do the same work.
#
# Dovecot listens on 127.0.0.1:1143 (../shared/bench/setup-peers.sh), account sortbench1 in
# its passwd-file (lib.sh dovecot_users, argon2id like cgtwist's); cgtwist on a loopback port
# the kernel chooses, plaintext login allowed there as in Dovecot's bench config.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check sort-thread-vs-dovecot
MESSAGES=${MESSAGES:-10000}
CONCURRENCY=${CONCURRENCY:-1,4}
MIN_SESSIONS=${MIN_SESSIONS:-8}
RUNS=${RUNS:-2}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}/sort-thread-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUTDIR"

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null
DV_HOMES=$(dovecot_users sortbench 1 imapbench fresh)

cg_begin cgtwist-sort '{"example.test": ["A 127.0.0.1"]}'
cg_conf "$BASE" example.test warn
CG_ADMIN_LOG="$OUTDIR/admin.log"
cg_admin settings set listeners '[{"protocol":"imap","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true}]'
cg_admin settings set access.max_connections_per_ip 200
cg_admin settings set clients.ips '"127.0.0.1"'
cg_admin account add sortbench1@example.test --password benchpass
cg_start "$BASE"
CG_IMAP=$(cg_imap_ports "$BASE/base/cgtwist.ports" imap)
CG_MD="$BASE/base/Domains/example.test/sortbench1/Maildir"
DV_MD="$DV_HOMES/sortbench1/Maildir"
mkdir -p "$CG_MD"
echo "cgtwist: IMAP 127.0.0.1:$CG_IMAP; Dovecot: IMAP :1143; $MESSAGES messages; results in $OUTDIR"

port() { if [ "$1" = dovecot ]; then echo 1143; else echo "$CG_IMAP"; fi; }
dv_users() { [ "$1" != dovecot ] || dovecot_users sortbench 1 imapbench >/dev/null; }
runs_for() {  # C: runs per half
  local r=$(( (MIN_SESSIONS + $1 - 1) / $1 )); [ "$r" -ge "$RUNS" ] || r=$RUNS
  echo $(( (r + 1) / 2 ))
}
session() {  # server concurrency half runs | server warm
  dv_users "$1"
  if [ "$2" = warm ]; then
    "$PY" "$HERE/sort_thread_bench.py" run --port "$(port "$1")" --user sortbench1 --password benchpass --warmup
  else
    "$PY" "$HERE/sort_thread_bench.py" run --port "$(port "$1")" --user sortbench1 --password benchpass \
      --concurrency "$2" --runs "$4" --json "$OUTDIR/sort-$1-c$2-h$3.json" > "$OUTDIR/sort-$1-c$2-h$3.txt"
  fi
}

"$PY" "$HERE/sort_thread_bench.py" populate "$DV_MD" --messages "$MESSAGES"
"$PY" "$HERE/sort_thread_bench.py" populate "$CG_MD" --messages "$MESSAGES"
ORDER=$(bench_abba dovecot cgtwist)
echo "order (ABBA) for every concurrency: $ORDER   (first: ${ORDER%% *})"
for who in dovecot cgtwist; do session "$who" warm > "$OUTDIR/warm-$who.txt"; cat "$OUTDIR/warm-$who.txt"; done
for c in ${CONCURRENCY//,/ }; do
  declare -A half=([dovecot]=0 [cgtwist]=0)
  for who in $ORDER; do
    half[$who]=$((half[$who] + 1))
    session "$who" warm >/dev/null
    session "$who" "$c" "${half[$who]}" "$(runs_for "$c")"
  done
done
{ echo "order (ABBA): $ORDER   (first: ${ORDER%% *}); $MESSAGES messages"
  "$PY" "$HERE/sort_thread_bench.py" ratios "$OUTDIR"
  bench_load_after sort-thread-vs-dovecot; } | tee "$OUTDIR/ratios.txt"
