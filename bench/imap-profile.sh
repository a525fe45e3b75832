#!/bin/bash
# Where the Python time of one IMAP command class goes: the server of bench/imap-instructions.sh
# (the same kept Maildir and index, populated and warmed the same way) runs under cProfile
# (twistd --profile) while bench/imap_command_cost.py repeats the class, then the functions
# with the most time of their own and the most time under them are printed. cProfile's own
# cost per call inflates small functions: use it to find what to look at, and
# bench/imap-instructions.sh for what a change saves. The server runs twice, once with the
# class repeated 2 rounds and once ROUNDS rounds, and the difference is printed per command
# (start-up, the warm reading of the mailbox and the first rounds cancel out).
#   bench/imap-profile.sh CLASS [MESSAGES] [N] [ROUNDS] [TOP]
#     CLASS: noop, fetch_body, store, store_reset, fetch_all, select, search_body,
#            'search UNSEEN', ... (imap_command_cost.py's names); default 2000 messages,
#            N=20 commands a round, 20 rounds, the top 40 functions
#   REPO=<tree> bench/imap-profile.sh ...     another checkout
# The Maildir lives in ${CG_BENCH_DIR:-/var/spool}/${IMAPCOST_NAME:-imapcost}-MESSAGES, as
# imap-instructions.sh keeps it; the profiles are left in that directory (imap-2.prof and
# imap-ROUNDS.prof).
set -eu
. "$(dirname "$0")/lib.sh"
CLASS=${1:?class}
MESSAGES=${2:-2000}
N=${3:-20}
ROUNDS=${4:-20}
TOP=${5:-40}
imapcost_begin "$MESSAGES"
mkdir -p "$MD"
run() {  # rounds: one server run under cProfile, the class repeated that many rounds
  local prof="$BASE/imap-$1.prof"
  rm -f "$prof"
  cg_start "$BASE" --profile "$prof" --profiler cprofile --savestats
  read -r PORT < <(cg_imap_ports "$BASE/base/cgtwist.ports" imap)
  "$PY" "$HERE/imap_command_cost.py" --port "$PORT" --shared "$SHARED" populate \
    --messages "$MESSAGES" --maildir "$MD" > /dev/null
  "$PY" "$HERE/imap_command_cost.py" --port "$PORT" --shared "$SHARED" repeat "$CLASS" \
    --count "$N" --rounds "$1"
  cg_stop
  for _ in $(seq 100); do [ -s "$prof" ] && break; sleep 0.1; done
}
run 2
run "$ROUNDS"
"$PY" - "$BASE/imap-2.prof" "$BASE/imap-$ROUNDS.prof" "$(( (ROUNDS - 2) * N ))" "$TOP" <<'PYEOF'
import pstats, sys
base, full = (pstats.Stats(p).strip_dirs().stats for p in sys.argv[1:3])
n, top = int(sys.argv[3]), int(sys.argv[4])
rows = []
for fn, (cc, nc, tt, ct, _callers) in full.items():
    b = base.get(fn, (0, 0, 0.0, 0.0, None))
    rows.append(((nc - b[1]) / n, (tt - b[2]) * 1e6 / n, (ct - b[3]) * 1e6 / n, fn))
calls = sum(r[0] for r in rows)
own = sum(r[1] for r in rows if r[3][2] != "poll" and "poll" not in r[3][2])
print(f"per command (of {n}): {calls:.0f} function calls, {own:.0f} us of own time outside poll")
for title, key in (("own time", 1), ("time under", 2)):
    print(f"\n-- by {title} (us per command; calls per command) --")
    for r in sorted(rows, key=lambda r: -r[key])[:top]:
        fn = r[3]
        print(f"{r[1]:8.1f} {r[2]:8.1f} {r[0]:7.2f}  {fn[0]}:{fn[1]}({fn[2]})")
PYEOF
