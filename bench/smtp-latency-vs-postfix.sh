#!/usr/bin/env bash
# One SMTP session at a time against Postfix and cgtwist in the same run: the median round
# trip of each command (bench/smtp_latency.py), where smtp-vs-postfix.sh gives throughput.
# Refuses to start above a 1-minute load of 1.0 (BENCH_MAX_LOAD; BENCH_IGNORE_LOAD=1 runs anyway).
#
#   bench/smtp-latency-vs-postfix.sh        N=500 CG_WORKERS=$(nproc) ROUNDS=2
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check smtp-latency-vs-postfix
N=${N:-500}

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null

cg_smtp_server cgtwist-latency "${CG_WORKERS:-$(nproc)}"
# ABBA rounds (postfix, cgtwist, cgtwist, postfix, ...), so that both see the same machine.
pf() { "$PY" "$HERE/smtp_latency.py" 127.0.0.1 2525 "$N" postfix; }
cg() { "$PY" "$HERE/smtp_latency.py" 127.0.0.1 2625 "$N" cgtwist; }
echo "order (ABBA): postfix first in odd rounds, cgtwist first in even ones (first: postfix)"
for r in $(seq "${ROUNDS:-2}"); do
  if [ $((r % 2)) = 1 ]; then pf; cg; else cg; pf; fi
done
bench_load_after smtp-latency-vs-postfix
