#!/bin/bash
# imaptest's compliance groups and its stress run (state tracking, 0 "Error:" lines to pass)
# against a cgtwist from this checkout, with CG_IMAP_WORKERS worker processes (imap.workers,
# default 0).  bench/imaptest-compliance.sh [CLIENTS [SECS [GROUP...]]] (groups named: no stress run)
# Needs imaptest built by ../shared/tools/imaptest/build.sh (IMAPTEST, default /tmp/imaptest-x).
set -u
cd "$(dirname "$0")/.."
COMPLIANCE=${COMPLIANCE:-../shared/tools/imaptest/compliance.sh}
[ -f "$COMPLIANCE" ] || COMPLIANCE=/work/shared/tools/imaptest/compliance.sh
BASE=$(mktemp -d /tmp/cg-imaptest.XXXXXX)
OUT=$BASE.out
.venv/bin/python "${SERVE:-bench/imaptest_serve.py}" "$BASE/base" "${CG_IMAP_WORKERS:-0}" > "$OUT" 2>&1 & SP=$!
for _ in $(seq 240); do grep -q IMAPS "$OUT" && break; kill -0 $SP 2>/dev/null || break; sleep 1; done
PORT=$(awk '/IMAPS/{print $2}' "$OUT")
[ -n "$PORT" ] || { echo "server did not start:"; cat "$OUT"; exit 2; }
echo "port $PORT, imap.workers ${CG_IMAP_WORKERS:-0}, load $(cut -d' ' -f1-3 /proc/loadavg)"
HOST=127.0.0.1 PORT=$PORT SSL=1 IMAP_USER=bob@example.test IMAP_PASS=secret \
  IMAPTEST=${IMAPTEST:-/tmp/imaptest-x} CLIENTS=${1:-20} SECS=${2:-60} \
  bash "$COMPLIANCE" "${@:3}"
rc=$?
echo "compliance exit $rc, load $(cut -d' ' -f1-3 /proc/loadavg)"
kill $SP; wait $SP
if [ "$rc" = 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$BASE" "$OUT"
else echo "server log kept: $BASE/base/cgtwist.log"; fi
exit $rc
