#!/usr/bin/env bash
# What limits cgtwist's outbound drain: the bench's setup (loopback sink domains, STALLED of
# them tarpits, the same limits) for cgtwist alone, then ROUNDS cold drains, each measured:
# wall seconds from the first delivery, the server process's CPU seconds (all threads) over the
# drain and per message, the busy fraction (CPU s / wall s: near 1.0 = CPU-bound on the reactor
# thread), connections opened (smtp-sink counts none, so cgtwist's log: its conn_use=1 lines) and,
# when asked, a py-spy flame (PYSPY=path/to/py-spy) or a syscall count (STRACE=1) of one drain.
# Also the CPU of the server's main (reactor) thread alone and, with outbound delivery workers
# (CG_OUTBOUND_WORKERS=N sets smtp.delivery_workers), the CPU of the worker processes once
# they are ready.
#
#   MSGS=4000 BENCH_IGNORE_LOAD=1 bench/outbound-profile.sh
#   MSGS=4000 BENCH_IGNORE_LOAD=1 CG_OUTBOUND_WORKERS=2 bench/outbound-profile.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check outbound-profile
MSGS=${MSGS:-4000}; DOMAINS=${DOMAINS:-100}; STALLED=${STALLED:-5}; SIZE=${SIZE:-2048}
SESSIONS=${SESSIONS:-4}; ROUNDS=${ROUNDS:-1}; TIMEOUT=${TIMEOUT:-900}
SINK_PORT=${SINK_PORT:-25260}; CG_PORT=${CG_PORT:-2735}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
PER=$((MSGS / DOMAINS)); HEALTHY=$((DOMAINS - STALLED)); STALLED_MSGS=$((STALLED * PER))
mkdir -p "$OUTDIR"
WORK="$(mktemp -d /var/tmp/cgtwist-outprof-XXXX)"
PF_DIR="$WORK/no-postfix"
PIDS=(); CG_PID=""
trap sink_cleanup EXIT
trap 'exit 143' TERM INT
log() { echo "[$(date +%T)] $*" >&2; }

sinks_start "$HEALTHY" "$SINK_PORT"
SINK_PIDS=$(IFS=,; echo "${PIDS[*]}")
tarpit_start $((HEALTHY + 1)) "$DOMAINS" "$SINK_PORT"
TARPIT_PID=${PIDS[-1]}
sinks_dns "$DOMAINS"
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
for kv in ${CG_SETTINGS:-}; do admin settings set "${kv%%=*}" "${kv#*=}"; done

inject() {
  for i in $(seq "$DOMAINS"); do echo "$i"; done | xargs -P 4 -I{} sh -c \
    "smtp-source -s $SESSIONS -m $PER -l $SIZE -f bench@src.test -t user{}@\$(printf d%03d.bench {}) 127.0.0.1:$1 >/dev/null"
}
count_cg() { find "$WORK/base/Queue" -maxdepth 1 -name '*.msg' | wc -l; }
cpu_s() {  # PID: user+system seconds of the process (all threads)
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}
main_cpu_s() {  # PID: user+system seconds of its main thread (the reactor)
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/task/$1/stat"
}
workers_cpu_s() {  # PID: user+system seconds of the outbound workers (children running the outworker)
  local s=0 p
  for p in $(grep -l cgtwist.outworker.child /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    [ "$(awk '{ sub(/.*\) /, ""); print $2 }' "/proc/$p/stat" 2>/dev/null)" = "$1" ] || continue
    s=$(awk -v s="$s" -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print s + ($12 + $13) / hz }' "/proc/$p/stat")
  done
  echo "$s"
}
for round in $(seq "$ROUNDS"); do
  rm -f "$WORK"/base/Queue/*.msg "$WORK"/base/Queue/*.jrn "$WORK"/base/Queue/incoming/*
  for f in "$WORK"/cgtwist.log*; do : > "$f"; done
  admin settings set smtp.remote_port 9
  cg_start "$WORK"
  log "injecting $MSGS"
  inject "$CG_PORT"
  for _ in $(seq 1200); do [ "$(count_cg)" -ge "$MSGS" ] && break; sleep 0.5; done
  kill "$CG_PID"; wait "$CG_PID" 2>/dev/null || true
  for f in "$WORK"/cgtwist.log*; do : > "$f"; done
  admin settings set smtp.remote_port "$SINK_PORT"
  log "drain $round"
  PYTHONPATH="${EXTRA_PYTHONPATH:+$EXTRA_PYTHONPATH:}$REPO" cg_start "$WORK" ${CG_PROFILE:+--profile "$CG_PROFILE-$round" --profiler cprofile --savestats}
  cpu0=$(cpu_s "$CG_PID"); main0=$(main_cpu_s "$CG_PID")
  t0=$(date +%s.%N); log "drain starts at $(date +%s.%N)"
  # The workers' CPU counts from their "ready" line: before it, a worker imports its modules
  # (a fixed cost per start, not per message; the attempts wait in its pipe meanwhile).
  for _ in $(seq 300); do
    [ "$(cat "$WORK"/cgtwist.log* | grep -c "outbound worker [0-9]* ready")" -ge "${CG_OUTBOUND_WORKERS:-0}" ] && break
    sleep 0.1
  done
  work0=$(workers_cpu_s "$CG_PID")
  # Per process group and thread kind, user and system time apart (bench/outbound_cpu.py).
  export CPU_TREE="cgtwist=$WORK/twistd.pid" CPU_GROUPS="sinks (smtp-sink)=$SINK_PIDS;tarpit=$TARPIT_PID;dns server=$CG_DNS_PID"
  "$PY" "$HERE/outbound_cpu.py" snap "$WORK/cpu0.snap"
  side=""
  if [ -n "${PYSPY:-}" ]; then
    (sleep "${PYSPY_DELAY:-0}"
     "$PYSPY" record -p "$CG_PID" ${PYSPY_ARGS:-} -r 250 -f raw -o "$OUTDIR/outprof-$round.pyspy" -d "${PYSPY_S:-10}" >/dev/null 2>&1) & side=$!
  elif [ -n "${STRACE:-}" ]; then
    strace ${STRACE_ARGS:--c} -f -p "$CG_PID" -o "$OUTDIR/outprof-$round.strace" & side=$!
  fi
  until [ "$(count_cg)" -le "$STALLED_MSGS" ]; do sleep 0.05; done
  t1=$(date +%s.%N); cpu1=$(cpu_s "$CG_PID"); main1=$(main_cpu_s "$CG_PID"); work1=$(workers_cpu_s "$CG_PID")
  "$PY" "$HERE/outbound_cpu.py" snap "$WORK/cpu1.snap"
  if [ -n "$side" ]; then
    if [ -n "${STRACE:-}" ]; then kill -INT "$side" 2>/dev/null || true; fi
    wait "$side" 2>/dev/null || true
  fi
  delivered=$(cat "$WORK"/cgtwist.log* | grep -c "status=delivered" || true)
  sessions=$(cat "$WORK"/cgtwist.log* | grep -c "conn_use=1 status=delivered" || true)
  awk -v t0="$t0" -v t1="$t1" -v c0="$cpu0" -v c1="$cpu1" -v n=$((MSGS - STALLED_MSGS)) -v d="$delivered" -v s="$sessions" 'BEGIN {
    w = t1 - t0; c = c1 - c0
    printf "drain: %d msgs (%d delivered lines, over %d connections: %.1f each) in %.2f s = %.0f msg/s; CPU %.2f s = %.3f ms/msg; busy %.2f\n", n, d, s, s ? d / s : 0, w, n / w, c, 1000 * c / n, c / w }'
  awk -v m0="$main0" -v m1="$main1" -v w0="$work0" -v w1="$work1" -v n=$((MSGS - STALLED_MSGS)) -v t0="$t0" -v t1="$t1" -v k="${CG_OUTBOUND_WORKERS:-0}" 'BEGIN {
    printf "reactor thread: %.2f s = %.3f ms/msg (busy %.2f); %d outbound worker(s): %.2f s = %.3f ms/msg\n", m1 - m0, 1000 * (m1 - m0) / n, (m1 - m0) / (t1 - t0), k, w1 - w0, 1000 * (w1 - w0) / n }'
  echo "CPU per group (group, s, ms/msg, cores):"
  "$PY" "$HERE/outbound_cpu.py" report "$WORK/cpu0.snap" "$WORK/cpu1.snap" "drain-$round" \
    $((MSGS - STALLED_MSGS)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" | cut -d, -f2- | sed 's/^/  /'
  [ -n "${STRACE:-}" ] && head -25 "$OUTDIR/outprof-$round.strace"
  # A profiled server is stopped gracefully (twistd writes the statistics at exit); the
  # sessions stalled at the tarpits are aborted by the shutdown.
  if [ -n "${CG_PROFILE:-}" ]; then kill -TERM "$CG_PID"; else kill -KILL "$CG_PID"; fi; wait "$CG_PID" 2>/dev/null || true; CG_PID=""
done
bench_load_after outbound-profile
