#!/bin/bash
# Server CPU per message (user/sys) on the SMTP -> spool -> Maildir path, with smtp-source, in
# total and by role (bench/cpu_split.py: server reactor, server threads, workers' reactors and threads).
#   STRACE=1: strace -c -f summary to /tmp/cgd/strace.txt; KEEPLOG=1: keep the log in /tmp/cgd/last.log
#   S=10 M=1500 bench/smtp-cpu-profile.sh    (PROFILE=1: py-spy record to /tmp/cgtwist-prof.txt)
#   RULES=FILE: with those Server Rules installed (bench/server_rules.py 50 > FILE)
set -u
. "$(dirname "$0")/lib.sh"
# CPU per message grows when other work thrashes the caches: not above a 1-minute load of 1.0
# (BENCH_MAX_LOAD; BENCH_IGNORE_LOAD=1 runs anyway).
bench_load_check smtp-cpu-profile
# SETTINGS="key value;key value": more settings to try (e.g. "queue.destination_concurrency 10")
CG_BENCH_DIR=${TMPBASE:-${CG_BENCH_DIR:-}} CG_SETTINGS="${SETTINGS:-}" cg_smtp_server cgcpu "${WORKERS:-}"
# RULES=FILE: these Server Rules installed (bench/server_rules.py N > FILE), the rules' CPU
if [ -n "${RULES:-}" ]; then cg_admin rules set --server "$RULES"; sleep 2; fi
PID=$CG_PID
# The base directory persists (cg_mkbase): empty the Maildir first, as smtp-load.sh's CLEAN does.
MD=$CG_MAILDIR/new
mkdir -p $MD; find $MD -maxdepth 1 -type f -delete
[ -n "${PROFILE:-}" ] && { "$(dirname "$PY")/py-spy" record -o /tmp/cgtwist-prof.txt -f raw -r 200 -p $PID -d 10 --threads ${PYSPY_ARGS:-} >/dev/null 2>&1 & }
mkdir -p /tmp/cgd; [ -n "${STRACE:-}" ] && { strace ${STRACE_ARGS:--c} -f -p $PID -o /tmp/cgd/strace.txt & SPID=$!; sleep 1; }
# Every thread of the server and its SMTP worker processes (smtp.workers: WORKERS=N):
# "pid tid utime stime", for cpu_split.py, which prints the CPU per message by role and in all.
threads() { for p in $PID $(pgrep -P $PID); do for t in /proc/$p/task/*; do echo "$p ${t##*/} $(awk '{print $14, $15}' $t/stat)"; done; done; }
SNAP=$(mktemp -d); threads > $SNAP/before
r0=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat); vc0=$(grep -h voluntary_ctxt /proc/$PID/task/*/status | awk '{s+=$2} END {print s}')
t0=$(date +%s.%N)
/usr/sbin/smtp-source -s ${S:-10} -m ${M:-1000} -l 5120 -f loadgen@example.test -t smtpbench@example.test -M loadgen.example.test 127.0.0.1:2625
ta=$(date +%s.%N)
backlog=$(( ${M:-1000} - $(ls $MD | wc -l) ))
for i in $(seq 6000); do [ "$(ls $MD | wc -l)" -ge ${M:-1000} ] && break; sleep 0.05; done
t1=$(date +%s.%N)
# The messages still undelivered when the client finished, and how fast they then went: the
# delivery side's own rate, with the receiving side idle.
python3 -c "print('accept msg/s', round(${M:-1000}/($ta-$t0),1), 'backlog at end of acceptance', $backlog, 'drained at', round($backlog/max($t1-$ta,1e-3),1), 'msg/s')"
r1=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat); vc1=$(grep -h voluntary_ctxt /proc/$PID/task/*/status | awk '{s+=$2} END {print s}')
python3 -c "print('reactor thread busy', round(($r1-$r0)/100/($t1-$t0)*100), '% of wall; context switches/msg', round(($vc1-$vc0)/${M:-1000}))"
threads > $SNAP/after; "$PY" "$HERE/cpu_split.py" $SNAP/before $SNAP/after $PID ${M:-1000}; rm -rf $SNAP
python3 -c "print('msg/s', round(${M:-1000}/($t1-$t0),1))"
grep -c "" $BASE/cgtwist.log*
[ -n "${STRACE:-}" ] && { kill -INT $SPID; sleep 1; }
[ -n "${KEEPLOG:-}" ] && cp $BASE/cgtwist.log /tmp/cgd/last.log
bench_load_after smtp-cpu-profile
exit 0  # the EXIT trap (cg_begin) stops the servers
