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
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MSGS=${MSGS:-200} SIZE=${SIZE:-5120} SESSIONS=${SESSIONS:-1}
TRACE=${TRACE:-fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat,openat,mkdir,write,writev,pwrite64,fstat,newfstatat,statx,getdents64,ftruncate}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}"
mkdir -p "$OUTDIR"
cg_smtp_server cgtwist-syscalls "${CG_WORKERS:-2}"
mkdir -p "$CG_MAILDIR/new" "$CG_MAILDIR/cur"
find "$CG_MAILDIR/new" "$CG_MAILDIR/cur" -maxdepth 1 -type f -delete
workers=$(pgrep -P "$CG_PID" -f "cgtwist\.(smtp)?worker" | tr '\n' ' ' || true)
stamp=$(date +%Y%m%d-%H%M%S)
trace() {  # trace NAME PID...: strace -c of those processes (all threads) until SIGINT
  local name=$1 args=() p; shift
  for p in "$@"; do args+=(-p "$p"); done
  strace -f -c -S calls -e trace="$TRACE" -o "$OUTDIR/syscalls-$stamp-$name.txt" "${args[@]}" &
}
trace server "$CG_PID"; S1=$!
W1=""
# shellcheck disable=SC2086
[ -n "$workers" ] && { trace workers $workers; W1=$!; }
sleep 1  # strace attaches asynchronously: let it reach every thread before the load starts
/usr/sbin/smtp-source -s "$SESSIONS" -m "$MSGS" -l "$SIZE" -f loadgen@example.test \
  -t smtpbench@example.test -M loadgen.example.test 127.0.0.1:2625 >/dev/null
for _ in $(seq 600); do
  [ "$(find "$CG_MAILDIR/new" "$CG_MAILDIR/cur" -maxdepth 1 -type f | wc -l)" -ge "$MSGS" ] && break
  sleep 0.1
done
for _ in $(seq 100); do  # the spool's removals linger up to 10 ms; let them land
  ls "$BASE/base/Queue/"*.msg >/dev/null 2>&1 || break
  sleep 0.1
done
sleep 0.5
kill -INT $S1 ${W1:+$W1}; wait $S1 ${W1:+$W1} 2>/dev/null || true
for f in server workers; do
  [ -f "$OUTDIR/syscalls-$stamp-$f.txt" ] || continue
  echo "== $f: calls per message ($MSGS messages, $SESSIONS session(s), CG_WORKERS=${CG_WORKERS:-2})"
  awk -v n="$MSGS" '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
      printf "  %-12s %8.2f\n", $NF, $4/n }' \
    "$OUTDIR/syscalls-$stamp-$f.txt"
done
