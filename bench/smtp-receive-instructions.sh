#!/bin/bash
# Instructions per message of the SMTP receiving code (dialogue and policy, no spool), counted
# by valgrind's callgrind: the same from run to run however busy the machine, so a change of
# one per cent shows (bench/smtp_receive_cpu.py --callgrind; CPU time on a shared machine
# varies by more than that from one minute to the next).
#   CONFIG=<base>/cgtwist.conf bench/smtp-receive-instructions.sh [MESSAGES]
# CONFIG: a base directory that smtp-cpu-profile.sh left (its store has the bench account and
# 127.0.0.1 among the Client IPs), e.g. /var/spool/cgcpu/cgtwist.conf. Takes about a minute
# (valgrind runs Python some 50 times slower). Prints the count per message.
set -eu
. "$(dirname "$0")/lib.sh"
N=${1:-500}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
  --dump-after=functools_reduce --callgrind-out-file="$OUT/cg.out" \
  "$PY" "$HERE/smtp_receive_cpu.py" "$CONFIG" "$N" 10 --callgrind --warmup 100 >/dev/null 2>&1
# cg.out.1: the round of N/5 messages; cg.out.2: the round of N; both after the same warm-up.
ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
a=$(ir "$OUT/cg.out.1"); b=$(ir "$OUT/cg.out.2")
echo "instructions per message: $(( (b - a) / (N - N / 5) )) (rounds of $((N / 5)) and $N messages: $a, $b)"
