#!/usr/bin/env bash
# IMAP and POP3 access: cgtwist and Dovecot in the same run, with the shared imap-bench.py and
# pop-bench.py's session (bench/pop_multi.py), reported as per-phase ratios (bench/access_ratios.py).
#
#   bench/access-vs-dovecot.sh    MESSAGES=10000 POP_MESSAGES=1000 CONCURRENCY=1,4 POP_CONCURRENCY=1,4
#                                 MIN_SESSIONS=10 RUNS=2
#   MESSAGES=2000 POP_MESSAGES=200 BENCH_IGNORE_LOAD=1 bench/access-vs-dovecot.sh    a quick trial
#   CG_IMAP_WORKERS=2 bench/access-vs-dovecot.sh    cgtwist's IMAP/POP3 sessions in 2 worker
#                                 processes (imap.workers; default 0: in the server process)
#
# Fairness (issue 17):
# - ABBA: for each protocol and concurrency the servers run Dovecot, cgtwist, cgtwist, Dovecot
#   (ABBA_FIRST=cgtwist for the other way round), each half doing half the runs, and a median is
#   over both halves' runs (access_ratios.py merges them), so a drift in machine load or page
#   cache during the run is charged to both alike.
# - At least MIN_SESSIONS (10) sessions per median: with c clients a run has c sessions, so each
#   server does max(RUNS, ceil(MIN_SESSIONS / c)) runs, rounded up to even for the two halves.
# - Both indexes warm before anything is timed: every mailbox is populated (the same
#   deterministic messages written into Maildir/new) and read by an untimed session on both
#   servers first (Dovecot builds its dovecot.index*, cgtwist its folder cache; both read the
#   files into the page cache), and each timed half starts with one more untimed session.
# - POP3 with 1 and 4 clients, on 1 and 4 maildrops: cgtwist locks a maildrop for one POP3
#   session (RFC 1939 §8, as CommuniGate Pro does; issue 3) where Dovecot by default does not
#   (pop3_lock_session = no), so 4 clients on one maildrop would get -ERR [IN-USE] from cgtwist
#   and the servers would do different work. Here client n logs in as popbench<n> with its own
#   maildrop of POP_MESSAGES messages, on both servers alike (bench/pop_multi.py). Dovecot's
#   accounts are added to its passwd-file with the peer users' argon2id hash (lib.sh
#   dovecot_users), so a login costs both servers the same.
# - The run refuses to start when the 1-minute load is above 1.0 (BENCH_MAX_LOAD;
#   BENCH_IGNORE_LOAD=1 runs anyway, marked noisy) and prints the load average before and after.
#
# - The same mailboxes: Dovecot's accounts here (imapbench1, popbench1..4, homes under
#   ~imapbench/accounts and ~popbench/accounts) are emptied at the start, as cgtwist's are new,
#   and populated alike; access_ratios.py flags a size mismatch. (The shared imapbench and
#   popbench mailboxes keep whatever earlier runs left in them: 5,000 messages against
#   cgtwist's 1,000 in one trial.)
#
# Dovecot listens on 127.0.0.1:1143 (IMAP) and :1110 (POP3) (../shared/bench/setup-peers.sh),
# password benchpass. cgtwist gets the same accounts in its main domain (bare login names) on
# loopback ports chosen by the kernel, with plaintext login allowed on those listeners as
# Dovecot's bench config does (disable_plaintext_auth = no).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check access-vs-dovecot
MESSAGES=${MESSAGES:-10000}
POP_MESSAGES=${POP_MESSAGES:-1000}
CONCURRENCY=${CONCURRENCY:-1,4}
POP_CONCURRENCY=${POP_CONCURRENCY:-1,4}
MIN_SESSIONS=${MIN_SESSIONS:-10}
RUNS=${RUNS:-2}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}/access-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUTDIR"
POP_MAX=0; for c in ${POP_CONCURRENCY//,/ }; do [ "$c" -gt "$POP_MAX" ] && POP_MAX=$c; done

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null
DV_IMAP_HOMES=$(dovecot_users imapbench 1 imapbench fresh)
DV_POP_HOMES=$(dovecot_users popbench "$POP_MAX" popbench fresh)

cg_begin cgtwist-bench '{"example.test": ["A 127.0.0.1"]}'
cg_conf "$BASE" example.test warn
CG_ADMIN_LOG="$OUTDIR/admin.log"
cg_admin settings set listeners '[{"protocol":"imap","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true},
                               {"protocol":"pop3","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true}]'
cg_admin settings set access.max_connections_per_ip 200
# The load generator on 127.0.0.1 is a trusted client: no AUTH concurrency cap or delays
# (Dovecot's bench config has none either).
cg_admin settings set clients.ips '"127.0.0.1"'
cg_admin account add imapbench1@example.test --password benchpass
for n in $(seq "$POP_MAX"); do cg_admin account add "popbench$n@example.test" --password benchpass; done
CG_IMAP_WORKERS=${CG_IMAP_WORKERS:-0}
cg_admin settings set imap.workers "$CG_IMAP_WORKERS"
cg_start "$BASE"
if [ "$CG_IMAP_WORKERS" -gt 0 ]; then
  # Every worker started (each opens the store before it accepts; the untimed warm-up
  # sessions below come after its first greeting).
  for _ in $(seq 600); do
    [ "$(pgrep -P "$CG_PID" -cf 'cgtwist.imapworker.child' || true)" -ge "$CG_IMAP_WORKERS" ] && break
    sleep 0.2
  done
  echo "cgtwist: imap.workers $CG_IMAP_WORKERS ($(pgrep -P "$CG_PID" -cf 'cgtwist.imapworker.child' || true) running)"
fi
# Ready when the IMAP listener greets (log level warn hides the "cgtwist ready" line).
read -r CG_IMAP CG_POP < <(cg_imap_ports "$BASE/base/cgtwist.ports" imap pop3)
CG_MD="$BASE/base/Domains/example.test"
mkdir -p "$CG_MD/imapbench1/Maildir"
for n in $(seq "$POP_MAX"); do mkdir -p "$CG_MD/popbench$n/Maildir"; done
echo "cgtwist: IMAP 127.0.0.1:$CG_IMAP POP3 127.0.0.1:$CG_POP; Dovecot: IMAP :1143 POP3 :1110; results in $OUTDIR"

port() { case "$1-$2" in imap-dovecot) echo 1143;; imap-cgtwist) echo "$CG_IMAP";;
                         pop-dovecot) echo 1110;; pop-cgtwist) echo "$CG_POP";; esac; }
imap_maildir() { if [ "$1" = dovecot ]; then echo "$DV_IMAP_HOMES/imapbench1/Maildir"; else echo "$CG_MD/imapbench1/Maildir"; fi; }
pop_maildir() { if [ "$1" = dovecot ]; then echo "$DV_POP_HOMES/popbench{n}/Maildir"; else echo "$CG_MD/popbench{n}/Maildir"; fi; }
runs_for() {  # C: runs per half
  local r=$(( (MIN_SESSIONS + $1 - 1) / $1 )); [ "$r" -ge "$RUNS" ] || r=$RUNS
  echo $(( (r + 1) / 2 ))
}
# Before each Dovecot half: anyone's setup-peers.sh install rewrites the passwd-file without
# the accounts added here (dovecot_users without "fresh" keeps the mail).
dv_users() { [ "$1" != dovecot ] || { dovecot_users imapbench 1 imapbench; dovecot_users popbench "$POP_MAX" popbench; } >/dev/null; }
imap() {  # server concurrency half runs
  dv_users "$1"
  "$PY" "$SHARED/imap-bench.py" --host 127.0.0.1 --port "$(port imap "$1")" --user imapbench1 --password benchpass \
    --messages "$MESSAGES" --populate maildir --maildir "$(imap_maildir "$1")" --concurrency "$2" --runs "$4" \
    --json "$OUTDIR/imap-$1-c$2-h$3.json" > "$OUTDIR/imap-$1-c$2-h$3.txt"
}
pop() {  # server concurrency half runs
  dv_users "$1"
  "$PY" "$HERE/pop_multi.py" --shared "$SHARED" --host 127.0.0.1 --port "$(port pop "$1")" --user popbench \
    --password benchpass --messages "$POP_MESSAGES" --maildir "$(pop_maildir "$1")" --concurrency "$2" \
    --runs "$4" --json "$OUTDIR/pop-$1-c$2-h$3.json" > "$OUTDIR/pop-$1-c$2-h$3.txt"
}

ORDER=$(bench_abba dovecot cgtwist)
echo "order (ABBA) for every protocol and concurrency: $ORDER   (first: ${ORDER%% *})"
# Warm-up, untimed: populate every mailbox and read it once on both servers.
for who in dovecot cgtwist; do
  dv_users "$who"
  "$PY" "$SHARED/imap-bench.py" --host 127.0.0.1 --port "$(port imap "$who")" --user imapbench1 \
    --password benchpass --messages "$MESSAGES" --populate maildir --maildir "$(imap_maildir "$who")" \
    --concurrency 1 --runs 1 --warmup 1 > "$OUTDIR/warm-imap-$who.txt"
  "$PY" "$HERE/pop_multi.py" --shared "$SHARED" --port "$(port pop "$who")" --user popbench --password benchpass \
    --messages "$POP_MESSAGES" --maildir "$(pop_maildir "$who")" --concurrency "$POP_MAX" --runs 1 \
    > "$OUTDIR/warm-pop-$who.txt"
done
echo "warm: both servers' mailboxes populated and read once"
for c in ${CONCURRENCY//,/ }; do
  declare -A half=([dovecot]=0 [cgtwist]=0)
  for who in $ORDER; do half[$who]=$((half[$who] + 1)); imap "$who" "$c" "${half[$who]}" "$(runs_for "$c")"; done
done
for c in ${POP_CONCURRENCY//,/ }; do
  declare -A half=([dovecot]=0 [cgtwist]=0)
  for who in $ORDER; do half[$who]=$((half[$who] + 1)); pop "$who" "$c" "${half[$who]}" "$(runs_for "$c")"; done
done
{ echo "order (ABBA): $ORDER   (first: ${ORDER%% *})"
  echo "POP3: client n on its own maildrop popbench<n> ($POP_MESSAGES messages each), both servers"
  "$PY" "$HERE/access_ratios.py" "$OUTDIR"
  bench_load_after access-vs-dovecot; } | tee "$OUTDIR/ratios.txt"
