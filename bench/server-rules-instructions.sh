#!/bin/bash
# Instructions per message of the Server Rules at the end of DATA or at the enqueuer, counted by
# callgrind (the same from run to run however busy the machine): bench/server_rules_cost.py.
#   bench/server-rules-instructions.sh N receive|enqueue     (N: bench/server_rules.py's count)
# Compare N=0 and N=50, and a tree with another (PYTHONPATH=TREE after sourcing lib.sh: REPO=TREE).
set -eu
. "$(dirname "$0")/lib.sh"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
  --dump-after=functools_reduce --callgrind-out-file="$OUT/cg.out" \
  "$PY" "$HERE/server_rules_cost.py" "$1" "$2" >/dev/null 2>&1
ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
a=$(ir "$OUT/cg.out.1"); b=$(ir "$OUT/cg.out.2")
echo "$2, $1 rules: $(( (b - a) / 400 )) instructions per message"
