#!/bin/bash
# Instructions per log line of an SMTP worker's "accepted" line: in the worker (format, JSON
# for standard error) and in the server (relay_log: parse, re-emit, format, write), counted
# by valgrind's callgrind at two sizes (bench/smtp_log_relay_cost.py --callgrind), so start-up
# and imports cancel out and the machine's load does not move the figure.
#   bench/smtp-log-relay-instructions.sh [LINES]        (TREE=<checkout> measures another tree)
set -eu
. "$(dirname "$0")/lib.sh"
N=${1:-2000}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
for side in worker server; do
  for n in $((N / 5)) $N; do
    PYTHONPATH=${TREE:-$HERE/..} PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no \
      --toggle-collect=functools_reduce --callgrind-out-file="$OUT/$side.$n" \
      "$PY" "$HERE/smtp_log_relay_cost.py" $n --side $side --callgrind >/dev/null 2>&1
  done
  a=$(ir "$OUT/$side.$((N / 5))"); b=$(ir "$OUT/$side.$N")
  echo "$side: instructions per line $(( (b - a) / (N - N / 5) ))"
done
