#!/usr/bin/env bash
# One SMTP session at a time against Postfix and cgtwist in the same run: the median round
# trip of each command (bench/smtp_latency.py), where smtp-vs-postfix.sh gives throughput.
#
#   bench/smtp-latency-vs-postfix.sh        N=500 CG_WORKERS=$(nproc) ROUNDS=2
set -euo pipefail
. "$(dirname "$0")/lib.sh"
N=${N:-500}

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null

cg_smtp_server cgtwist-latency "${CG_WORKERS:-$(nproc)}"
# Alternating rounds, so that both see the same machine.
for _ in $(seq "${ROUNDS:-2}"); do
  "$PY" "$HERE/smtp_latency.py" 127.0.0.1 2525 "$N" postfix
  "$PY" "$HERE/smtp_latency.py" 127.0.0.1 2625 "$N" cgtwist
done
