#!/bin/bash
# Instructions per IMAP command of each class of bench/access-vs-dovecot.sh's session (FETCH of
# bodies, STORE, the header/flag SEARCHes, SEARCH BODY, FETCH 1:*, SELECT, LOGOUT), counted by
# callgrind on the whole server process (every thread) while bench/imap_command_cost.py sends the commands:
# the same from run to run however busy the machine, where the commands per second of the bench
# move by more than a change saves.
#   bench/imap-instructions.sh [MESSAGES] [N] [ROUNDS]   (default 2000 messages, N=20, 3 rounds)
#   REPO=<tree> bench/imap-instructions.sh ...       another checkout, for a before/after
#   IMAPCOST_ONLY=noop,fetch_body,store,logout bench/imap-instructions.sh ...   some classes
# The account's Maildir (the bench's deterministic messages, benchlib.populate_maildir) and the
# folder's index are built and warmed by a run of the server outside valgrind and kept in
# ${CG_BENCH_DIR:-/var/spool}/imapcost-MESSAGES (IMAPCOST_NAME=x: x-MESSAGES, for two runs at
# once) for the next run; then the server starts again under callgrind (a minute or two), and
# each class runs once untimed, then ROUNDS times counted (callgrind's counters zeroed before
# and dumped after, through a vgdb prefix of the script's own, so no other callgrind run is
# touched). Prints per class the fewest instructions per command of a round and the median
# (and per message, for the searches over the whole mailbox).
set -eu
. "$(dirname "$0")/lib.sh"
MESSAGES=${1:-2000}
N=${2:-20}
ROUNDS=${3:-3}
imapcost_begin "$MESSAGES"

# 1. Populate and warm outside valgrind (the index is written to the Maildir and kept).
cg_start "$BASE"
read -r PORT < <(cg_imap_ports "$BASE/base/cgtwist.ports" imap)
mkdir -p "$MD"
"$PY" "$HERE/imap_command_cost.py" --port "$PORT" --shared "$SHARED" populate \
  --messages "$MESSAGES" --maildir "$MD"
cg_stop

# 2. The same server under callgrind.
OUT=$(mktemp -d)
trap 'cg_stop; rm -rf "$OUT"' EXIT
rm -f "$BASE/base/cgtwist.ctl" "$BASE/base/cgtwist.ports"
PYTHONHASHSEED=0 valgrind --tool=callgrind --vgdb-prefix="$OUT/vgdb" --callgrind-out-file="$OUT/cg.out" \
  "$(dirname "$PY")/twistd" -n --pidfile "$BASE/twistd.pid" --logfile "$BASE/cgtwist.log" cgtwist \
  2> "$OUT/valgrind.log" &
CG_PID=$!
# Python under valgrind takes a minute or two to start: wait for the ports file first.
for _ in $(seq 1200); do
  [ -s "$BASE/base/cgtwist.ports" ] && break
  kill -0 "$CG_PID" 2>/dev/null || { cat "$OUT/valgrind.log" >&2; exit 1; }
  sleep 0.5
done
PORT=""
for _ in 1 2 3 4 5 6 7 8; do  # cg_imap_ports waits two minutes; a loaded machine may need more
  read -r PORT < <(cg_imap_ports "$BASE/base/cgtwist.ports" imap 2>/dev/null) || true
  [ -n "$PORT" ] && break
done
[ -n "$PORT" ] || { echo "cgtwist did not start under valgrind (see $BASE/cgtwist.log)" >&2; exit 1; }
"$PY" "$HERE/imap_command_cost.py" --port "$PORT" --shared "$SHARED" measure \
  --pid "$CG_PID" --vgdb-prefix "$OUT/vgdb" --out "$OUT/cg.out" --count "$N" --rounds "$ROUNDS" \
  ${IMAPCOST_ONLY:+--only "$IMAPCOST_ONLY"}
