#!/usr/bin/env bash
# The system calls one message costs, in the server and in the SMTP workers: deterministic
# evidence beside the timed benchmarks (a busy machine changes the time, not the calls).
#
#   bench/smtp-syscalls.sh        MSGS=200 SIZE=5120 SESSIONS=1 CG_WORKERS=2
#
# Starts the smtp-vs-postfix server (bench/lib.sh), attaches `strace -f -c` to the server and
# to each worker once they are ready, sends MSGS messages with smtp-source, waits until all are
# in the Maildir and for the spool to go quiet, and prints per process kind the calls per
# message of TRACE (default: the durable operations and the file calls around them).
#
# PERF=1 counts with perf's syscall tracepoints instead (perf stat -e syscalls:sys_enter_X):
# no ptrace stop per call, so the processes run at their own speed and the counts that depend
# on timing (futex: thread hand-offs and the GIL passing between threads) are not inflated
# (strace: 73 futex per message in the server at 1 session; perf: 12 to 18). 40 messages go
# first as a warm-up, outside the count. Needs root (tracefs).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MSGS=${MSGS:-200} SIZE=${SIZE:-5120} SESSIONS=${SESSIONS:-1}
if [ -n "${PERF:-}" ]; then
  TRACE=${TRACE:-fsync,fdatasync,rename,link,unlink,openat,ftruncate,write,writev,read,futex,epoll_ctl,epoll_wait,sendto,recvfrom}
else
  TRACE=${TRACE:-fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat,openat,mkdir,write,writev,pwrite64,fstat,newfstatat,statx,getdents64,ftruncate}
fi
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
mkdir -p "$OUTDIR"
cg_smtp_server cgtwist-syscalls "${CG_WORKERS:-2}"
mkdir -p "$CG_MAILDIR/new" "$CG_MAILDIR/cur"
find "$CG_MAILDIR/new" "$CG_MAILDIR/cur" -maxdepth 1 -type f -delete
workers=$(pgrep -P "$CG_PID" -f "cgtwist\.(smtp)?worker" | tr '\n' ' ' || true)
stamp=$(date +%Y%m%d-%H%M%S)
source_msgs() {  # source_msgs N: N messages of SIZE in SESSIONS sessions
  /usr/sbin/smtp-source -s "$SESSIONS" -m "$1" -l "$SIZE" -f loadgen@example.test \
    -t smtpbench@example.test -M loadgen.example.test 127.0.0.1:2625 >/dev/null
}
WARM=0
if [ -n "${PERF:-}" ]; then  # warm-up outside the count (the first lookups, the spool's pool)
  WARM=40
  source_msgs $WARM
  sleep 2
fi
trace() {  # trace NAME PID...: strace -c (or perf stat) of those processes until SIGINT
  local name=$1 args=() p ev=""; shift
  if [ -n "${PERF:-}" ]; then
    for p in ${TRACE//,/ }; do ev+="syscalls:sys_enter_$p,"; done
    perf stat -e "${ev%,}" -p "$(echo "$@" | tr ' ' ',')" -o "$OUTDIR/syscalls-$stamp-$name.txt" &
    return
  fi
  for p in "$@"; do args+=(-p "$p"); done
  strace -f -c -S calls -e trace="$TRACE" -o "$OUTDIR/syscalls-$stamp-$name.txt" "${args[@]}" &
}
trace server "$CG_PID"; S1=$!
W1=""
# shellcheck disable=SC2086
[ -n "$workers" ] && { trace workers $workers; W1=$!; }
sleep 1  # strace attaches asynchronously: let it reach every thread before the load starts
source_msgs "$MSGS"
for _ in $(seq 600); do
  [ "$(find "$CG_MAILDIR/new" "$CG_MAILDIR/cur" -maxdepth 1 -type f | wc -l)" -ge "$((MSGS + WARM))" ] && break
  sleep 0.1
done
for _ in $(seq 100); do  # the spool's removals linger up to 10 ms; let them land
  ls "$BASE/base/Queue/"*.msg >/dev/null 2>&1 || break
  sleep 0.1
done
# perf: the finished messages' batch into the pool (spool.RECYCLE_AFTER) lands in the count
if [ -n "${PERF:-}" ]; then sleep 2; else sleep 0.5; fi
kill -INT $S1 ${W1:+$W1}; wait $S1 ${W1:+$W1} 2>/dev/null || true
for f in server workers; do
  [ -f "$OUTDIR/syscalls-$stamp-$f.txt" ] || continue
  echo "== $f: calls per message ($MSGS messages, $SESSIONS session(s), CG_WORKERS=${CG_WORKERS:-2}${PERF:+, perf})"
  if [ -n "${PERF:-}" ]; then
    awk -v n="$MSGS" '/syscalls:sys_enter_/ { gsub(",", "", $1); sub("syscalls:sys_enter_", "", $2)
        printf "  %-12s %8.2f\n", $2, $1/n }' "$OUTDIR/syscalls-$stamp-$f.txt"
    continue
  fi
  awk -v n="$MSGS" '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
      printf "  %-12s %8.2f\n", $NF, $4/n }' \
    "$OUTDIR/syscalls-$stamp-$f.txt"
done
