#!/usr/bin/env bash
# IMAP IDLE: cgtwist and Dovecot in the same run: memory per idling connection (RSS and PSS of
# all the server's processes, from /proc/PID/smaps_rollup) and the push delay (p50/p99) after
# one delivery per account. bench/idle_bench.py does one round against one server.
#
#   bench/idle-vs-dovecot.sh        ACCOUNTS=100 CONNS=100 DV_CONNS=CONNS (at most 900) GAP=0.05
#                                   MAX_CONNS=10000 OPEN_PARALLEL=10 TIMEOUT=600+CONNS/10 WARM=ACCOUNTS
#   CONNS=10000 INOTIFY_RAISE=1 bench/idle-vs-dovecot.sh     the goal of issue #17: cgtwist at
#                                   10,000 connections from 100 accounts, Dovecot at 900
#   SERVERS=cgtwist CONNS=10000 bench/idle-vs-dovecot.sh      cgtwist alone (two rounds)
#   CONNS=20 ACCOUNTS=10 BENCH_IGNORE_LOAD=1 bench/idle-vs-dovecot.sh     a quick trial
#
# - CONNS connections from ACCOUNTS accounts (connection i is idlebench<i mod ACCOUNTS + 1>),
#   each LOGIN, SELECT INBOX, IDLE; at most MAX_CONNS (a bound, not a target), OPEN_PARALLEL
#   logins at a time, TIMEOUT seconds per round at most, every address loopback.
# - Dovecot gets DV_CONNS connections (default CONNS, at most 900): Dovecot runs one imap
#   process per connection (its service imap process_limit is 1024 by default, and the
#   services its processes talk to, such as log and anvil, take default_client_limit = 1,000
#   clients), so 10,000 would be 10,000 processes and a reconfigured Dovecot; 900 leaves room
#   for the login and auth processes. Its per-connection PSS is flat in the count (each connection
#   is a process of the same size; measured 610 kB at 100 and 609 kB at 5,000), so its figure
#   at DV_CONNS stands for any count; the summary says at which count each server ran.
# - The load generator (this script's idle_bench.py) is its own process, not below either
#   server's process tree: its sockets and buffers are no part of any figure.
# - Memory: the sum over the server's process tree (Dovecot: the master and everything below it,
#   one imap process per connection included; cgtwist: twistd and its workers, a new process
#   for each round), after a warm-up (WARM=ACCOUNTS connections, one per account, opened and
#   closed: what a server sets up once on first use or once per account, such as the password
#   hasher's 19 MiB buffers in each thread's malloc arena, a verified-credential cache entry
#   or an open folder, is not a connection's cost; with 10 a cgtwist round's first logins of
#   the other accounts moved its RSS by 15 MB either way), before any connection, at half of them
#   and with all of them idling; per connection = the growth / CONNS, and the marginal cost =
#   the growth from half to all / the other half.
# - Push: account n gets one message at n * GAP seconds; the delay runs from that delivery to the
#   "* N EXISTS" on each of the account's connections. Dovecot's delivery is a rename into
#   Maildir/new (what an MDA does; Dovecot watches with inotify); cgtwist's is SMTP to its own
#   listener (it pushes on its LOCAL delivery), timed from the final "." of DATA, so cgtwist's
#   delay also holds its acceptance, queue and LOCAL delivery; its SMTP acceptance time is shown
#   beside it.
# - ABBA: Dovecot, cgtwist, cgtwist, Dovecot (ABBA_FIRST=cgtwist for the other way round), each
#   round opening and closing its own connections; memory is the mean of a server's two rounds,
#   push percentiles are over both rounds' connections.
# - File descriptors: the client holds CONNS sockets and cgtwist one per connection, so the
#   shell's limit (ulimit -n, inherited by both) is raised to CONNS + 256 or the run refuses;
#   Dovecot's master (started by setup-peers.sh) must have as many (one log pipe per process).
#   Dovecot's imap processes all run as imapbench, and each IDLE takes an inotify instance:
#   above fs.inotify.max_user_instances (128 by default) Dovecot falls back to looking every
#   mailbox_idle_check_interval (30 s), which a Dovecot administrator with one virtual-mail uid
#   raises; the run warns loudly when CONNS is near it (INOTIFY_RAISE=1 raises it, as root).
# - PROBE=1: cgtwist runs with bench/idle_probe on its path, which writes its live objects by
#   type (and, with PYTHONTRACEMALLOC=N, its traced bytes by source line) to OUTDIR/probe
#   before, at half and with all connections idling; bench/idle_probe/diff.py A B N gives the
#   growth per connection. For finding what a session holds: the walk disturbs the figures.
# - The run refuses to start when the 1-minute load is above 1.0 (BENCH_MAX_LOAD;
#   BENCH_IGNORE_LOAD=1 runs anyway, marked noisy) and prints the load average before and after.
#
# Dovecot: ../shared/bench/setup-peers.sh, IMAP on 127.0.0.1:1143, accounts idlebench1..N added
# to its passwd-file with imapbench's argon2id hash (lib.sh dovecot_users), emptied at the start
# and added again before each Dovecot round (setup-peers.sh install, which any other benchmark
# may run meanwhile, rewrites that file without them).
# cgtwist: the same accounts, new, in a new base directory, IMAP and SMTP on kernel-chosen ports.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_load_check idle-vs-dovecot
ACCOUNTS=${ACCOUNTS:-100}; CONNS=${CONNS:-100}; MAX_CONNS=${MAX_CONNS:-10000}
DV_CONNS=${DV_CONNS:-$((CONNS < 900 ? CONNS : 900))}; SERVERS=${SERVERS:-dovecot cgtwist}
GAP=${GAP:-0.05}; TIMEOUT=${TIMEOUT:-$((600 + CONNS / 10))}; PUSH_TIMEOUT=${PUSH_TIMEOUT:-60}
WARM=${WARM:-$ACCOUNTS}; OPEN_PARALLEL=${OPEN_PARALLEL:-10}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}/idle-$(date +%Y%m%d-%H%M%S)"
[ "$CONNS" -le "$MAX_CONNS" ] || { echo "CONNS=$CONNS is above MAX_CONNS=$MAX_CONNS" >&2; exit 2; }
[ "$CONNS" -ge "$ACCOUNTS" ] && [ "$DV_CONNS" -ge "$ACCOUNTS" ] \
  || { echo "CONNS and DV_CONNS must be >= ACCOUNTS (every account idles)" >&2; exit 2; }
case " $SERVERS " in *" dovecot "*) WITH_DV=1 ;; *) WITH_DV="" ;; esac
mkdir -p "$OUTDIR"
[ -z "${PROBE:-}" ] || mkdir -p "$OUTDIR/probe"

NEED_FD=$((CONNS + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FD" ]; then
  ulimit -n "$NEED_FD" 2>/dev/null || { echo "ulimit -n $(ulimit -n) < $NEED_FD and cannot be raised (hard: $(ulimit -Hn))" >&2; exit 2; }
fi
echo "file descriptors: client and cgtwist $(ulimit -n) (need $NEED_FD)"

DV_PID=""
if [ -n "$WITH_DV" ]; then
  bash "$SHARED/setup-peers.sh" >/dev/null
  bash "$SHARED/setup-peers.sh" start >/dev/null
  DV_PID=$(cat /run/dovecot/master.pid)
  DV_FD=$(awk '/^Max open files/ { print $4 }' "/proc/$DV_PID/limits")
  echo "file descriptors: Dovecot master $DV_FD"
  [ "$DV_FD" = unlimited ] || [ "$DV_FD" -ge $((DV_CONNS + 256)) ] || {
    echo "Dovecot's master may open $DV_FD files, fewer than $((DV_CONNS + 256)): restart it from a shell with a higher ulimit -n" >&2; exit 2; }
  INOTIFY=$(cat /proc/sys/fs/inotify/max_user_instances)
  if [ "$DV_CONNS" -gt $((INOTIFY - 8)) ]; then
    if [ -n "${INOTIFY_RAISE:-}" ] && echo $((DV_CONNS + 128)) > /proc/sys/fs/inotify/max_user_instances 2>/dev/null; then
      echo "fs.inotify.max_user_instances raised from $INOTIFY to $((DV_CONNS + 128)) (INOTIFY_RAISE)"
    else
      echo "WARNING: DV_CONNS=$DV_CONNS is near or above fs.inotify.max_user_instances=$INOTIFY: Dovecot's imap" >&2
      echo "WARNING: processes beyond it see new mail only every mailbox_idle_check_interval (30 s)." >&2
    fi
  fi
  [ "$DV_CONNS" -le 900 ] || echo "WARNING: DV_CONNS=$DV_CONNS: Dovecot's service imap allows 1024 processes, and services such as log and anvil 1,000 clients, by default" >&2
  DV_HOMES=$(dovecot_users idlebench "$ACCOUNTS" imapbench fresh)
fi

cg_begin cgtwist-idle '{"example.test": ["A 127.0.0.1"]}'
cg_conf "$BASE" example.test warn
CG_ADMIN_LOG="$OUTDIR/admin.log"
cg_admin settings set listeners '[{"protocol":"imap","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true},
                               {"protocol":"smtp","address":"127.0.0.1","port":0,"tls":"none"}]'
cg_admin settings set access.max_connections_per_ip $((CONNS + 10))
# CONNS / ACCOUNTS sessions per account from 127.0.0.1 (Dovecot's mail_max_userip_connections
# is 200 in setup-peers.sh's configuration).
cg_admin settings set auth.max_userip_connections $((CONNS / ACCOUNTS + 1))
cg_admin settings set clients.ips '"127.0.0.1"'
echo "creating $ACCOUNTS cgtwist accounts"
seq "$ACCOUNTS" | xargs -P 4 -I{} "$PY" -m cgtwist.cli account add "idlebench{}@example.test" --password benchpass \
  >/dev/null 2>>"$OUTDIR/admin.log" || { echo "cgtwist-admin account add failed (see $OUTDIR/admin.log)" >&2; exit 1; }
# cg_restart: a new cgtwist process on the same base (accounts kept), its ports in CG_IMAP and
# CG_SMTP. Each cgtwist round gets a new process: a Python process keeps the memory an earlier
# round's connections freed and reuses it, which would hide the next round's growth (Dovecot's
# imap processes come and go with their connections).
cg_restart() {
  [ -z "$CG_PID" ] || { kill "$CG_PID"; wait "$CG_PID" 2>/dev/null || true; }
  rm -f "$BASE/base/cgtwist.ports"
  PYTHONPATH="${PROBE:+$HERE/idle_probe:}$REPO" IDLE_PROBE_DIR="$OUTDIR/probe" cg_start "$BASE"
  read -r CG_IMAP CG_SMTP < <(cg_imap_ports "$BASE/base/cgtwist.ports" imap smtp)
}
cg_restart
echo "cgtwist: IMAP 127.0.0.1:$CG_IMAP SMTP :$CG_SMTP (pid $CG_PID), $CONNS connections"
[ -z "$WITH_DV" ] || echo "Dovecot: IMAP :1143 (master pid $DV_PID), $DV_CONNS connections"
echo "results in $OUTDIR"

round() {  # server round
  local port root deliver conns=$CONNS probe=()
  if [ "$1" = dovecot ]; then
    conns=$DV_CONNS
    # Again: anyone's setup-peers.sh install rewrites the passwd-file without these accounts.
    dovecot_users idlebench "$ACCOUNTS" imapbench >/dev/null
    port=1143; root=$DV_PID; deliver="maildir:$DV_HOMES/idlebench{n}/Maildir"
  else
    [ "$2" = 1 ] || cg_restart
    port=$CG_IMAP; root=$CG_PID; deliver="smtp:127.0.0.1:$CG_SMTP"
    [ -z "${PROBE:-}" ] || probe=(--probe "$OUTDIR/probe")
  fi
  "$PY" "$HERE/idle_bench.py" --label "$1-$2" --port "$port" --accounts "$ACCOUNTS" --conns "$conns" \
    --root-pid "$root" --deliver "$deliver" --gap "$GAP" --warm "$WARM" --push-timeout "$PUSH_TIMEOUT" \
    --open-parallel "$OPEN_PARALLEL" --timeout "$TIMEOUT" "${probe[@]}" --json "$OUTDIR/idle-$1-$2.json"
}
if [ -n "$WITH_DV" ]; then ORDER=$(bench_abba dovecot cgtwist); else ORDER="cgtwist cgtwist"; fi
echo "order (ABBA): $ORDER   (first: ${ORDER%% *})"
declare -A ROUND=([dovecot]=0 [cgtwist]=0)
for who in $ORDER; do ROUND[$who]=$((ROUND[$who] + 1)); round "$who" "${ROUND[$who]}"; done

{ echo "IDLE: cgtwist $CONNS connections${WITH_DV:+, Dovecot $DV_CONNS (its PSS per connection is flat in the count: one imap process each)}, from $ACCOUNTS accounts, one delivery per account every ${GAP}s"
  echo "order (ABBA): $ORDER   (first: ${ORDER%% *})"
  "$PY" - "$OUTDIR" <<'PYEOF'
import glob, json, os, statistics, sys
from collections import defaultdict
rounds = defaultdict(list)
for path in sorted(glob.glob(os.path.join(sys.argv[1], "idle-*-*.json"))):
    r = json.load(open(path))
    rounds[r["label"].rsplit("-", 1)[0]].append(r)
def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))] if s else float("nan")
out = {}
for who, rs in rounds.items():
    push = [d for r in rs for d in r["push_ms"]]
    acc = [r["smtp_accept_p50_ms"] for r in rs if r["smtp_accept_p50_ms"] is not None]
    out[who] = {"rss": statistics.fmean(r["rss_kb_per_conn"] for r in rs),
                "pss": statistics.fmean(r["pss_kb_per_conn"] for r in rs),
                "rss_m": statistics.fmean(r["rss_kb_marginal"] for r in rs),
                "pss_m": statistics.fmean(r["pss_kb_marginal"] for r in rs),
                "p50": pct(push, 50), "p99": pct(push, 99), "max": max(push, default=float("nan")),
                "missed": sum(r["missed"] for r in rs), "conns": sum(r["conns"] for r in rs),
                "procs": max(r["memory_idling"]["processes"] for r in rs),
                "pss_total": statistics.fmean(r["memory_idling"]["pss_kb"] / r["conns"] for r in rs),
                "accept": statistics.fmean(acc) if acc else None}
    o = out[who]
    print(f"{who:8} {o['conns'] // len(rs)} connections per round")
    print(f"{who:8} per connection: RSS {o['rss']:7.1f} kB  PSS {o['pss']:7.1f} kB   "
          f"marginal: RSS {o['rss_m']:7.1f} kB  PSS {o['pss_m']:7.1f} kB   ({o['procs']} processes while idling)")
    print(f"{'':8} all of the server's PSS while idling / connections: {o['pss_total']:7.1f} kB")
    print(f"{'':8} push delay: p50 {o['p50']:7.1f} ms  p99 {o['p99']:7.1f} ms  max {o['max']:7.1f} ms  "
          f"missed {o['missed']} of {o['conns']}"
          + (f"   (SMTP acceptance p50 {o['accept']:.1f} ms, inside cgtwist's delay)" if o["accept"] else ""))
    for r in rs:
        print(f"{'':8}   {r['label']}: RSS/conn {r['rss_kb_per_conn']:.1f} kB PSS/conn {r['pss_kb_per_conn']:.1f} kB "
              f"(marginal {r['rss_kb_marginal']:.1f} / {r['pss_kb_marginal']:.1f} kB) "
              f"p50 {r['push_p50_ms']:.1f} ms p99 {r['push_p99_ms']:.1f} ms, opened in {r['open_s']:.1f} s")
def ratio(d, c):
    # A growth of a few kB is below what page- and arena-sized allocation can show.
    return f"{d / c:.2f}" if c > 4 else "n/a (cgtwist's growth is within the noise)"
if {"cgtwist", "dovecot"} <= out.keys():
    c, d = out["cgtwist"], out["dovecot"]
    print(f"ratios (Dovecot / cgtwist, above 1.0 cgtwist is better): PSS per connection {ratio(d['pss'], c['pss'])}, "
          f"marginal {ratio(d['pss_m'], c['pss_m'])}; RSS per connection {ratio(d['rss'], c['rss'])}; "
          f"all PSS / connections {ratio(d['pss_total'], c['pss_total'])}; "
          f"push p50 {ratio(d['p50'], c['p50'])}, p99 {ratio(d['p99'], c['p99'])}")
PYEOF
  bench_load_after idle-vs-dovecot; } | tee "$OUTDIR/summary.txt"
