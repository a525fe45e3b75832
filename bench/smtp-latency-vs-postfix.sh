#!/usr/bin/env bash
# One SMTP session at a time against Postfix and cgtwist in the same run: the median round
# trip of each command (bench/smtp_latency.py), where smtp-vs-postfix.sh gives throughput.
#
#   bench/smtp-latency-vs-postfix.sh        N=500 CG_WORKERS=$(nproc) ROUNDS=2
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO"
export PYTHONPATH="$REPO"
SHARED="${SHARED:-$(cd "$REPO/../shared/bench" && pwd)}"
PY="${PY:-$REPO/.venv/bin/python}"
N=${N:-500}

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null

. "$HERE/lib.sh"
cg_begin cgtwist-latency '{"example.test": ["A 127.0.0.1"], "loadgen.example.test": ["A 127.0.0.1"]}'
cg_conf "$BASE" example.test info
cg_admin settings set listeners '[{"protocol":"smtp","address":"127.0.0.1","port":2625,"tls":"starttls"}]'
cg_admin settings set clients.ips '"127.0.0.1"'
cg_admin settings set smtp.workers "${CG_WORKERS:-$(nproc)}"
cg_admin account add smtpbench@example.test --password benchpass
cg_start "$BASE"
for _ in $(seq 300); do
  [ "$(grep -c 'smtp worker [0-9]* ready' "$BASE/cgtwist.log")" -ge "${CG_WORKERS:-$(nproc)}" ] && break
  sleep 0.1
done
# Alternating rounds, so that both see the same machine.
for _ in $(seq "${ROUNDS:-2}"); do
  "$PY" "$HERE/smtp_latency.py" 127.0.0.1 2525 "$N" postfix
  "$PY" "$HERE/smtp_latency.py" 127.0.0.1 2625 "$N" cgtwist
done
