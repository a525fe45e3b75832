#!/usr/bin/env bash
# Outbound SMTP delivery: cgtwist vs Postfix in the same run, to loopback sink domains of which
# a few are stalled (they accept TCP and never greet). Issue 5 part 8; made fair in issue 17.
#
#   bench/outbound-vs-postfix.sh        MSGS=20000 DOMAINS=100 STALLED=5 SIZE=2048
#   MSGS=2000 BENCH_IGNORE_LOAD=1 bench/outbound-vs-postfix.sh     a quick trial on a busy machine
#   CG_OUTBOUND_WORKERS=2 bench/outbound-vs-postfix.sh             cgtwist's SMTP sessions in 2
#                                                                   worker processes (smtp.delivery_workers)
#
# Domain N (d001.bench ... ) is served at 127.0.0.(N+1):SINK_PORT: healthy ones by Postfix's
# smtp-sink, the last STALLED ones by bench/outbound_tarpit.py. Nothing ever leaves 127.0.0.0/8.
# cgtwist finds them by MX through a loopback DNS server (tests/dnsserver.py); Postfix, a second
# instance in $PF_DIR (the shared one on 2525 is untouched), through a transport map of
# [127.0.0.x]:port (no DNS). Both get the same limits: 100 concurrent deliveries in total
# (Postfix's default_process_limit; cgtwist queue.default_concurrency), 5 per destination to
# start with (initial_destination_concurrency; cgtwist queue.destination_concurrency).
#
# Method, the same for both: inject MSGS messages over SMTP (smtp-source) while delivery is off
# (Postfix defer_transports=smtp; cgtwist smtp.remote_port = a closed port), stop the server,
# turn delivery on, start it cold and time until only the stalled domains' messages remain in
# its queue (queue files counted every 0.1 s, INTERVAL). The servers drain in ABBA order
# (Postfix, cgtwist, cgtwist, Postfix; ABBA_FIRST=cgtwist for the other way round), each drain
# from a freshly filled queue (the previous round's stalled mail deleted), so a drift in load or
# file-system state during the run is charged to both alike; the ratios are of the two drains'
# means. Start-up is treated the same way for both: the clock starts before the start command
# (`postfix start`, twistd), so "whole drain" includes either's start-up, and "from first
# delivery" excludes it for both by the same criterion (the last 0.1 s sample before a message
# was gone). Reported: healthy msgs/s over the whole drain, from the first delivery and between
# 10 % and 90 % (steady rate), what is still queued (= the stalled domains' mail, none of which
# could be delivered), and the cgtwist/Postfix ratios.
#
# Also printed: messages per connection (Postfix's conn_use=, cgtwist's conn_use=1 lines), and
# where the cores went in the steady phase: CPU ms per message per process group (each server's
# processes by program, cgtwist's reactor and file threads; the sinks, tarpit, DNS server, the
# watcher, the whole machine), snapshotted by the watcher at 10 % and 90 % (outbound_cpu.py),
# and from it the rate the cores allow and what 1.5x Postfix leaves cgtwist per message
# (outbound_cpu_summary.py; the CSV beside the others).
#
# The run refuses to start when the 1-minute load is above 1.0 (BENCH_MAX_LOAD; BENCH_IGNORE_LOAD=1
# runs anyway, marked noisy) and prints the load average before and after.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check outbound-vs-postfix
MSGS=${MSGS:-20000}; DOMAINS=${DOMAINS:-100}; STALLED=${STALLED:-5}; SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-4}; TIMEOUT=${TIMEOUT:-900}
SINK_PORT=${SINK_PORT:-25250}; PF_PORT=${PF_PORT:-2526}; CG_PORT=${CG_PORT:-2725}
PF_DIR=${PF_DIR:-/var/lib/cgtwist-outbench-pf}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
[ "$DOMAINS" -le 250 ] || { echo "DOMAINS must be <= 250 (one 127.0.0.x each)" >&2; exit 2; }
[ $((MSGS % DOMAINS)) -eq 0 ] || { echo "MSGS must be a multiple of DOMAINS" >&2; exit 2; }
PER=$((MSGS / DOMAINS)); HEALTHY=$((DOMAINS - STALLED)); STALLED_MSGS=$((STALLED * PER))
mkdir -p "$OUTDIR"
STAMP=$(date +%Y%m%d-%H%M%S)
CSV="$OUTDIR/outbound-vs-postfix-$STAMP.csv"; export SERIES_OUT="$OUTDIR/outbound-vs-postfix-$STAMP-series.csv"
WORK="$(mktemp -d /var/tmp/cgtwist-outbench-XXXX)"
PIDS=()
CG_PID=""
trap sink_cleanup EXIT
trap 'exit 143' TERM INT
log() { echo "[$(date +%T)] $*" >&2; }

# ---- sinks ----------------------------------------------------------------------------------
sinks_start "$HEALTHY" "$SINK_PORT"
SINK_PIDS=$(IFS=,; echo "${PIDS[*]}")
tarpit_start $((HEALTHY + 1)) "$DOMAINS" "$SINK_PORT"
TARPIT_PID=${PIDS[-1]}

# ---- DNS for cgtwist (loopback only), transport map for Postfix -----------------------------
sinks_dns "$DOMAINS"
# Where the cores go in the steady phase (bench/outbound_cpu.py): these groups, and the
# server's process tree (CPU_TREE, set per drain), snapshotted by the watcher at 10 % and 90 %.
export CPU_GROUPS="sinks (smtp-sink)=$SINK_PIDS;tarpit=$TARPIT_PID;dns server=$CG_DNS_PID"
export CPU_OUT="$OUTDIR/outbound-vs-postfix-$STAMP-cpu.csv"
echo "label,group,cpu_s,ms_per_msg,cores" > "$CPU_OUT"

# ---- Postfix: a second instance ---------------------------------------------------------------
pf_instance "$PF_PORT" "$DOMAINS" "$SINK_PORT" \
  "smtpd_recipient_restrictions = permit_mynetworks, reject" \
  "smtpd_peername_lookup = no" \
  "defer_transports = smtp"

# ---- cgtwist ----------------------------------------------------------------------------------
cg_conf "$WORK" src.test info
export CGTWIST_POSTMASTER_PASSWORD=benchpass
CG_ADMIN_LOG="$WORK/admin.err"
admin() { cg_admin "$@"; }
admin settings set listeners "[{\"protocol\":\"smtp\",\"address\":\"127.0.0.1\",\"port\":$CG_PORT,\"tls\":\"none\"}]"
admin settings set clients.ips "127.0.0.0/8"
admin settings set smtp.max_connections_per_ip 200
admin settings set queue.default_concurrency 100
admin settings set queue.destination_concurrency 5
admin settings set smtp.delivery_workers "${CG_OUTBOUND_WORKERS:-0}"
start_cgtwist() {
  cg_start "$WORK" ${CG_PROFILE:+--profile "$CG_PROFILE" --profiler cprofile --savestats}
}
stop_cgtwist() { kill ${1:-} "$CG_PID"; wait "$CG_PID" 2>/dev/null || true; CG_PID=""; }

# ---- filling a queue with delivery off, draining it with delivery on ---------------------------
inject() {  # PORT
  for i in $(seq "$DOMAINS"); do echo "$i"; done | xargs -P 4 -I{} sh -c \
    "smtp-source -s $SESSIONS -m $PER -l $SIZE -f bench@src.test -t user{}@\$(printf d%03d.bench {}) 127.0.0.1:$1 >/dev/null"
}
count_pf_deferred() { find "$PF_DIR/spool/deferred" -type f | wc -l; }
count_cg() { find "$WORK/base/Queue" -maxdepth 1 -name '*.msg' | wc -l; }
wait_count() {  # FN EXPECTED WHAT
  for _ in $(seq 1200); do [ "$($1)" -ge "$2" ] && return 0; sleep 0.5; done
  echo "timed out waiting for $3 ($($1) of $2)" >&2; exit 1
}
fill_postfix() {
  postconf -c "$PF_DIR/etc" -e "defer_transports = smtp"
  postsuper -c "$PF_DIR/etc" -d ALL >/dev/null 2>&1 || true   # the last round's stalled mail
  : > "$PF_DIR/maillog"
  postfix -c "$PF_DIR/etc" start >/dev/null 2>&1
  log "Postfix: injecting $MSGS messages ($PER to each of $DOMAINS domains, $STALLED stalled)"
  inject "$PF_PORT"; wait_count count_pf_deferred "$MSGS" "Postfix's deferred queue"
  postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1
  postconf -c "$PF_DIR/etc" -e "defer_transports ="
}
fill_cgtwist() {
  rm -f "$WORK"/base/Queue/*.msg "$WORK"/base/Queue/*.jrn "$WORK"/base/Queue/incoming/*
  for f in "$WORK"/cgtwist.log*; do : > "$f"; done
  admin settings set smtp.remote_port 9   # nothing listens there: delivery off while injecting
  start_cgtwist
  log "cgtwist: injecting the same"
  inject "$CG_PORT"; wait_count count_cg "$MSGS" "cgtwist's spool"
  stop_cgtwist
  admin settings set smtp.remote_port "$SINK_PORT"
}
drain_postfix() {  # ROUND
  log "Postfix: cold start and flush (round $1)"
  local t0 ready watcher
  t0=$(date +%s.%N)
  # The sampler runs before the start command: a server may deliver before it says it is ready.
  CPU_TREE="postfix=$PF_DIR/spool/pid/master.pid" \
    "$PY" "$HERE/outbound_watch.py" "postfix-$1" "$t0" "$MSGS" "$STALLED_MSGS" "$TIMEOUT" postfix "$PF_DIR/spool" > "$WORK/watch.out" &
  watcher=$!
  postfix -c "$PF_DIR/etc" start >/dev/null 2>&1
  until postqueue -c "$PF_DIR/etc" -f 2>/dev/null; do sleep 0.1; done
  ready=$(date +%s.%N)
  wait "$watcher"
  sed "s/\$/,$(awk -v a="$ready" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')/" "$WORK/watch.out" | tee -a "$CSV"
  PF_SENT=$(grep -c "status=sent" "$PF_DIR/maillog" || true)
  PF_STALLED_SENT=$(grep "status=sent" "$PF_DIR/maillog" | grep -cE "127\.0\.0\.($(IFS='|'; echo "${STALLED_IPS[*]##*.}"))\]" || true)
  # Connection reuse: Postfix logs conn_use=N on the 2nd and later message of a connection.
  PF_CONNS=$(grep "status=sent" "$PF_DIR/maillog" | grep -vc "conn_use=" || true)
  echo "postfix-$1: sent $PF_SENT (to stalled domains: $PF_STALLED_SENT) over $PF_CONNS connections" \
    "($(awk -v m="$PF_SENT" -v c="$PF_CONNS" 'BEGIN { printf "%.1f", c ? m / c : 0 }') msgs each)" >> "$NOTES"
  postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1
}
drain_cgtwist() {  # ROUND
  log "cgtwist: cold start (round $1)"
  local t0 ready watcher
  t0=$(date +%s.%N)
  # The sampler runs before the start command: a server may deliver before it says it is ready.
  CPU_TREE="cgtwist=$WORK/twistd.pid" \
    "$PY" "$HERE/outbound_watch.py" "cgtwist-$1" "$t0" "$MSGS" "$STALLED_MSGS" "$TIMEOUT" cgtwist "$WORK/base/Queue" > "$WORK/watch.out" &
  watcher=$!
  start_cgtwist
  ready=$(date +%s.%N)
  wait "$watcher"
  sed "s/\$/,$(awk -v a="$ready" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')/" "$WORK/watch.out" | tee -a "$CSV"
  # Connection reuse: cgtwist logs conn_use=N (the Nth transaction on that connection).
  local sent conns
  sent=$(cat "$WORK"/cgtwist.log* | grep -c "status=delivered" || true)
  conns=$(cat "$WORK"/cgtwist.log* | grep -c "conn_use=1 status=delivered" || true)
  echo "cgtwist-$1: delivered $sent over $conns connections" \
    "($(awk -v m="$sent" -v c="$conns" 'BEGIN { printf "%.1f", c ? m / c : 0 }') msgs each)" >> "$NOTES"
  # SIGKILL: a graceful stop would wait for the stalled sessions' greeting timeout (300 s).
  stop_cgtwist -KILL
}

NOTES="$WORK/notes"; : > "$NOTES"
echo "label,healthy_msgs,delivered,seconds,msgs_per_s,first_s,from_first_msgs_per_s,steady_msgs_per_s,still_queued,result,start_s" > "$CSV"
ORDER=$(bench_abba postfix cgtwist)
log "order: $ORDER"
declare -A ROUND=([postfix]=0 [cgtwist]=0)
for who in $ORDER; do
  ROUND[$who]=$((ROUND[$who] + 1))
  "fill_$who"
  "drain_$who" "${ROUND[$who]}"
done

echo
echo "outbound delivery, $MSGS msgs x ${SIZE}B to $DOMAINS domains ($STALLED stalled: $STALLED_MSGS msgs that cannot go)"
echo "order (ABBA): $ORDER   (first: ${ORDER%% *}); cgtwist smtp.delivery_workers = ${CG_OUTBOUND_WORKERS:-0}"
cat "$NOTES"
"$PY" - "$CSV" <<'PYEOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def mean(who, key):
    return statistics.fmean(float(r[key]) for r in rows if r["label"].startswith(who + "-"))
print("start-up, s (start command to ready; in 'whole drain', not in the others): "
      f"cgtwist {mean('cgtwist', 'start_s'):.2f}   postfix {mean('postfix', 'start_s'):.2f}")
print("first delivery seen, s after the start command: "
      f"cgtwist {mean('cgtwist', 'first_s'):.2f}   postfix {mean('postfix', 'first_s'):.2f}")
for key, name in (("msgs_per_s", "whole drain"), ("from_first_msgs_per_s", "from 1st delivery"),
                  ("steady_msgs_per_s", "steady (10-90 %)")):
    a, b = mean("cgtwist", key), mean("postfix", key)
    each = "  ".join(f"{r['label']} {float(r[key]):.1f}" for r in rows)
    print(f"{name:18} cgtwist {a:8.1f} msg/s   postfix {b:8.1f} msg/s   ratio {a / b:5.2f}x   ({each})")
for r in rows:
    print(f"{r['label']}: {r['delivered']} of {r['healthy_msgs']} healthy delivered in {r['seconds']} s, "
          f"{r['still_queued']} still queued for the stalled domains ({r['result']})")
PYEOF
"$PY" "$HERE/outbound_cpu_summary.py" "$CPU_OUT" "$CSV" "$(nproc)"
echo "CSV: $CSV   time series: $SERIES_OUT   CPU per group: $CPU_OUT"
bench_load_after outbound-vs-postfix
