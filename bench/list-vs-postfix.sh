#!/usr/bin/env bash
# A mailing-list post to SUBS subscribers over DOMAINS loopback sink domains: cgtwist's LIST
# module against Postfix given the same message with every recipient in one `sendmail` (#15).
#
#   bench/list-vs-postfix.sh               SUBS=10000 DOMAINS=100 SIZE=2048
#   SUBS=2000 BENCH_IGNORE_LOAD=1 bench/list-vs-postfix.sh      a quick trial on a busy machine
#
# Domain N (d001.bench ...) is served at 127.0.0.(N+1):SINK_PORT by Postfix's smtp-sink, as in
# bench/outbound-vs-postfix.sh; nothing leaves 127.0.0.0/8. cgtwist finds them by MX through a
# loopback DNS server, Postfix (a second instance in $PF_DIR) through a transport map. Both get
# 100 deliveries at once in total and 5 per destination to start with.
#
# Timed, for each, from the post to "fully delivered": cgtwist from the SMTP post to
# list@src.test (subscribers imported as CSV) until its spool holds no message (the post and
# the one distribution message with SUBS recipients both gone); Postfix from `sendmail` with
# SUBS recipients until its queue is empty. Both servers run warm (started before), in ABBA
# order (Postfix, cgtwist, cgtwist, Postfix; ABBA_FIRST=cgtwist for the other way round).
# Reported: seconds and recipients/s per round, what each logged as sent/delivered, the CPU
# seconds each server used for the round (cgtwist: the twistd process and its children;
# Postfix: the instance's master and its children, those that exited during the round counted
# whole), and the ratio of Postfix's mean time to cgtwist's (> 1: cgtwist is faster). On a
# busy machine the times measure the load as much as the servers; the CPU seconds much less.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check list-vs-postfix
SUBS=${SUBS:-10000}; DOMAINS=${DOMAINS:-100}; SIZE=${SIZE:-2048}; TIMEOUT=${TIMEOUT:-900}
SINK_PORT=${SINK_PORT:-25251}; PF_PORT=${PF_PORT:-2527}; CG_PORT=${CG_PORT:-2726}
PF_DIR=${PF_DIR:-/var/lib/cgtwist-listbench-pf}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
[ "$DOMAINS" -le 250 ] || { echo "DOMAINS must be <= 250 (one 127.0.0.x each)" >&2; exit 2; }
[ $((SUBS % DOMAINS)) -eq 0 ] || { echo "SUBS must be a multiple of DOMAINS" >&2; exit 2; }
PER=$((SUBS / DOMAINS))
mkdir -p "$OUTDIR"
CSV="$OUTDIR/list-vs-postfix-$(date +%Y%m%d-%H%M%S).csv"
WORK="$(mktemp -d /var/tmp/cgtwist-listbench-XXXX)"
PIDS=()
CG_PID=""
trap sink_cleanup EXIT
trap 'exit 143' TERM INT
log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

# ---- sinks, DNS, the recipients --------------------------------------------------------------
sinks_start "$DOMAINS" "$SINK_PORT"
sinks_dns "$DOMAINS"
for i in $(seq "$DOMAINS"); do
  for u in $(seq "$PER"); do echo "user$u@$(sink_domain "$i")"; done
done > "$WORK/rcpts"
{ echo "address,mode"; sed 's/$/,feed/' "$WORK/rcpts"; } > "$WORK/subs.csv"
body() {  # the post: SIZE octets of text
  printf 'From: bench@src.test\r\nTo: list@src.test\r\nSubject: list bench %s\r\n\r\n' "$1"
  { head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76; echo; } | sed 's/$/\r/'
}

# ---- Postfix: a second instance ---------------------------------------------------------------
pf_instance "$PF_PORT" "$DOMAINS" "$SINK_PORT"
pf_queued() { find "$PF_DIR/spool/maildrop" "$PF_DIR/spool/incoming" "$PF_DIR/spool/active" "$PF_DIR/spool/deferred" -type f 2>/dev/null | wc -l; }

# ---- cgtwist ----------------------------------------------------------------------------------
cg_conf "$WORK" src.test info
export CGTWIST_POSTMASTER_PASSWORD=benchpass
CG_ADMIN_LOG="$WORK/admin.err"
cg_admin settings set listeners "[{\"protocol\":\"smtp\",\"address\":\"127.0.0.1\",\"port\":$CG_PORT,\"tls\":\"none\"}]"
cg_admin settings set clients.ips "127.0.0.0/8"
cg_admin settings set queue.default_concurrency 100
cg_admin settings set queue.destination_concurrency 5
cg_admin settings set smtp.remote_port "$SINK_PORT"
cg_admin list add list@src.test --policy anyone
cg_admin list import list@src.test "$WORK/subs.csv"
cg_queued() { find "$WORK/base/Queue" -maxdepth 1 -name '*.msg' | wc -l; }

wait_until() {  # FN WHAT: FN succeeds, polled every 0.05 s
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until "$1"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for $2" >&2; exit 1; }
    sleep 0.05
  done
}
pf_done() { [ "$(pf_queued)" -eq 0 ]; }
# tree_cpu PID: CPU ticks of PID (all its threads), its children that exited (cutime, cstime)
# and those still running.
tree_cpu() {
  local t c
  t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat")
  for c in $(pgrep -P "$1"); do
    t=$(( t + $(awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}
TICK=$(getconf CLK_TCK)
cpu_secs() { awk -v a="$1" -v b="$2" -v t="$TICK" 'BEGIN { printf "%.2f", (a - b) / t }'; }
pf_master() { head -1 "$PF_DIR/spool/pid/master.pid" | tr -d ' '; }
cg_log() { cat "$WORK"/cgtwist.log* 2>/dev/null; }   # it rotates at 1 MB
cg_count() { cg_log | grep -c "$1" || true; }
cg_started=0
# The spool first: reading the whole log (several MB after a round) 20 times a second cost
# the server a share of the CPU while it delivered; the queue is empty only at the end.
cg_done() {
  [ "$(cg_queued)" -eq 0 ] && [ "$(cg_count "distributed to $SUBS subscriber")" -gt "$cg_started" ]
}

round_postfix() {  # ROUND
  : > "$PF_DIR/maillog"
  local t0 t1 c0
  c0=$(tree_cpu "$(pf_master)")
  t0=$(now)
  body "postfix-$1" | sendmail -C "$PF_DIR/etc" -f bench@src.test -- $(cat "$WORK/rcpts")
  wait_until pf_done "Postfix's queue to empty"
  t1=$(now)
  echo "postfix-$1,$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }'),$(grep -c "status=sent" "$PF_DIR/maillog" || true),$(cpu_secs "$(tree_cpu "$(pf_master)")" "$c0")" | tee -a "$CSV"
}
round_cgtwist() {  # ROUND
  cg_started=$(cg_count "distributed to $SUBS subscriber")
  local t0 t1 before c0
  before=$(cg_count "relay=.*status=delivered")
  c0=$(tree_cpu "$CG_PID")
  t0=$(now)
  body "cgtwist-$1" | "$PY" -c '
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.sendmail("bench@src.test", ["list@src.test"], sys.stdin.buffer.read())' "$CG_PORT"
  wait_until cg_done "cgtwist's spool to empty"
  t1=$(now)
  echo "cgtwist-$1,$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }'),$(( $(cg_count "relay=.*status=delivered") - before )),$(cpu_secs "$(tree_cpu "$CG_PID")" "$c0")" | tee -a "$CSV"
}

postfix -c "$PF_DIR/etc" start >/dev/null 2>&1
cg_start "$WORK" ${CG_PROFILE:+--profile "$CG_PROFILE" --profiler cprofile --savestats}
echo "label,seconds,delivered,cpu" > "$CSV"
ORDER=$(bench_abba postfix cgtwist)
log "order: $ORDER ($SUBS recipients over $DOMAINS domains, ${SIZE}B)"
declare -A ROUND=([postfix]=0 [cgtwist]=0)
for who in $ORDER; do
  ROUND[$who]=$((ROUND[$who] + 1))
  "round_$who" "${ROUND[$who]}"
done

echo
echo "list post: $SUBS recipients over $DOMAINS domains, ${SIZE}B; order (ABBA): $ORDER"
"$PY" - "$CSV" "$SUBS" <<'PYEOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
subs = int(sys.argv[2])
def mean(who, column="seconds"):
    return statistics.fmean(float(r[column]) for r in rows if r["label"].startswith(who + "-"))
for r in rows:
    print(f"{r['label']}: {r['seconds']} s, {subs / float(r['seconds']):.0f} recipients/s, {r['delivered']} delivered, {r['cpu']} s CPU")
c, p = mean("cgtwist"), mean("postfix")
print(f"time to fully delivered: cgtwist {c:.2f} s   postfix {p:.2f} s   ratio (postfix/cgtwist) {p / c:.2f}x")
c, p = mean("cgtwist", "cpu"), mean("postfix", "cpu")
print(f"CPU per post: cgtwist {c:.2f} s   postfix {p:.2f} s   ratio (postfix/cgtwist) {p / max(c, 0.01):.2f}x")
PYEOF
echo "CSV: $CSV"
bench_load_after list-vs-postfix
