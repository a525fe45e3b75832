# Shared start-up of cgtwist for the benchmarks: source it first (. "$(dirname "$0")/lib.sh").
# It sets REPO (the checkout), HERE (bench/), PY (the venv's python unless given), SHARED
# (../shared/bench unless given) and PYTHONPATH, and works from REPO.
#
# Every benchmark server gets its own loopback DNS server (tests/dnsserver.py): a benchmark
# never asks the machine's resolver. Readiness is the control socket, not a log line (the log
# level may hide it and the log file rotates).

REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
HERE="$REPO/bench"
PY="${PY:-$REPO/.venv/bin/python}"
SHARED="${SHARED:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd || true)}"
# In a git worktree elsewhere, ../shared is beside the main checkout.
[ -n "$SHARED" ] || SHARED="$(cd "$(git -C "$REPO" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)/../../shared/bench" 2>/dev/null && pwd || true)"
export PYTHONPATH="$REPO"
cd "$REPO"

# cg_mkbase NAME [keep]: the working directory for one benchmark run, printed. It lives in
# ${CG_BENCH_DIR:-/var/spool} (where etc/cgtwist.service puts the base directory, beside
# Postfix's /var/spool/postfix), or in /tmp when that is not writable. Not /tmp by default:
# ext4 without a journal (this machine's) walks past every inode freed in the last minute(s)
# of a block group each time it allocates one there (perf: a quarter of the server process's
# CPU time, in the Maildir's open(O_CREAT)), and /tmp's group also collects the thousands of
# files every test run and earlier benchmark deleted, which Postfix's directories do not.
# "keep": the same directory ($dir/NAME) every time, kept after the run, as a real server's
# base directory and Postfix's queue and Maildir are: removing a run's base (its Maildir of
# thousands of messages) charged that walk to the cgtwist runs of the next few minutes, whose
# new base lands in the same block group (measured: 481 us per file created there against
# 218 us in Postfix's Maildir). Otherwise a new directory (mktemp).
cg_mkbase() {
  local dir=${CG_BENCH_DIR:-/var/spool}
  [ -w "$dir" ] || dir=/tmp
  if [ -n "${2:-}" ]; then
    mkdir -p "$dir/$1" && echo "$dir/$1"
  else
    mktemp -d "$dir/$1-XXXX"
  fi
}

# cg_stop: stop the server and the DNS server, and wait for the server (it writes while it stops).
cg_stop() {
  kill $CG_PID $CG_DNS_PID 2>/dev/null
  wait $CG_PID 2>/dev/null || true
}

# cg_begin NAME ZONE_JSON [persistent]: a run's base directory in BASE (cg_mkbase), an EXIT
# trap that stops the servers, and the loopback DNS server for the zone (JSON text).
# "persistent" (unless CG_FRESH_BASE=1) keeps BASE from run to run: each start gets a new
# store (no accounts or settings of an earlier run), an empty log and no queued messages; its
# Maildirs, TLS key and spool file pool stay. Otherwise BASE is new and removed at exit.
cg_begin() {
  local keep=""
  [ "${3:-}" = persistent ] && [ -z "${CG_FRESH_BASE:-}" ] && keep=1
  BASE="$(cg_mkbase "$1" "$keep")"; CG_PID=""; CG_DNS_PID=""
  if [ -n "$keep" ]; then
    trap cg_stop EXIT
    rm -f "$BASE"/base/cgtwist.db* "$BASE"/cgtwist.log.* "$BASE"/base/Queue/*.msg \
          "$BASE"/base/Queue/*.jrn "$BASE"/base/Queue/incoming/*
    : > "$BASE/cgtwist.log"
  else
    trap 'cg_stop; rm -rf "$BASE"' EXIT
  fi
  echo "$2" > "$BASE/zone.json"
  cg_dns "$BASE/zone.json" "$BASE"
}

# cg_dns ZONE_FILE DIR: serve ZONE_FILE (JSON) on loopback; sets DNS and CG_DNS_PID. The
# address file is emptied first: in a persistent base directory the last run's address would
# otherwise be read before the background job's redirection truncates it, and the run stopped
# with "did not start" (or asked a server that is gone).
cg_dns() {
  : > "$2/dns.addr"
  PYTHONPATH="$REPO" "$PY" -m tests.dnsserver --json "$1" > "$2/dns.addr" 2>/dev/null &
  CG_DNS_PID=$!
  for _ in $(seq 100); do [ -s "$2/dns.addr" ] && break; sleep 0.1; done
  DNS="$(head -1 "$2/dns.addr")"
  [ -n "$DNS" ] || { echo "the loopback DNS server did not start" >&2; exit 1; }
}

# cg_conf DIR MAIN_DOMAIN [LOG_LEVEL]: write DIR/cgtwist.conf (base directory DIR/base,
# nameserver $DNS, [server] runtime $CG_RUNTIME: tuned by default, plain for stock Twisted),
# export CGTWIST_CONFIG for cgtwist-admin and twistd, and create the store (cgtwist-admin
# init: no other command creates one).
cg_conf() {
  cat > "$1/cgtwist.conf" <<CONF
[server]
base_dir = "$1/base"
main_domain = "$2"
hostname = "bench.$2"
unprivileged_ports = true
runtime = "${CG_RUNTIME:-tuned}"
[log]
level = "${3:-info}"
[dns]
nameservers = ["$DNS"]
CONF
  export CGTWIST_CONFIG="$1/cgtwist.conf" PYTHONPATH="$REPO"
  cg_admin init
}

# cg_admin ARGS...: cgtwist-admin with $CGTWIST_CONFIG; the benchmark stops on an error.
cg_admin() {
  "$PY" -m cgtwist.cli "$@" >/dev/null 2>>"${CG_ADMIN_LOG:-/dev/stderr}" \
    || { echo "cgtwist-admin $* failed" >&2; exit 1; }
}

# The server of the IMAP cost benches (imap-instructions.sh, imap-profile.sh): account
# imapbench1@example.test (password benchpass) on a plain loopback IMAP listener, its Maildir
# (MD) and index kept between runs in ${IMAPCOST_NAME:-imapcost}-MESSAGES.
#   imapcost_begin MESSAGES
imapcost_begin() {
  cg_begin "${IMAPCOST_NAME:-imapcost}-$1" '{"example.test": ["A 127.0.0.1"]}' persistent
  cg_conf "$BASE" example.test warn
  cg_admin settings set listeners '[{"protocol":"imap","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true}]'
  cg_admin settings set clients.ips '"127.0.0.1"'
  cg_admin account add imapbench1@example.test --password benchpass
  MD="$BASE/base/Domains/example.test/imapbench1/Maildir"
}

# cg_start DIR [twistd options...]: run twistd -n in the background (CG_PID) and return once
# the server is ready.
cg_start() {
  local dir=$1; shift
  rm -f "$dir/base/cgtwist.ctl"
  "$(dirname "$PY")/twistd" -n "$@" --pidfile "$dir/twistd.pid" --logfile "$dir/cgtwist.log" cgtwist &
  CG_PID=$!
  for _ in $(seq 600); do
    [ -S "$dir/base/cgtwist.ctl" ] && return 0
    kill -0 "$CG_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "cgtwist did not start (see $dir/cgtwist.log)" >&2; exit 1
}

# cg_wait_workers N: return once N SMTP worker processes have said they are ready (their
# start-up is no part of what a benchmark measures).
# cg_imap_ports PORTSFILE PROTOCOL...: wait (up to 120 s) until cgtwist's plain IMAP listener
# greets, then print the bound port of each PROTOCOL named, on one line ("cgtwist ready" is
# not logged at level warn, so readiness is the greeting itself).
cg_imap_ports() {
  "$PY" - "$@" <<'PYEOF'
import json, socket, sys, time
deadline = time.monotonic() + 120
while True:
    try:
        ports = {p["protocol"]: p["port"] for p in json.load(open(sys.argv[1])) if p["bound"]}
        with socket.create_connection(("127.0.0.1", ports["imap"]), timeout=5) as s:
            if s.recv(100).startswith(b"* OK"):
                break
    except (OSError, ValueError, KeyError):
        pass
    if time.monotonic() > deadline:
        sys.exit("cgtwist did not start")
    time.sleep(0.1)
print(" ".join(str(ports[name]) for name in sys.argv[2:]))
PYEOF
}

cg_wait_workers() {
  for _ in $(seq 300); do
    [ "$(grep -c 'smtp worker [0-9]* ready' "$BASE/cgtwist.log")" -ge "${1:-0}" ] && return 0
    sleep 0.1
  done
  echo "the SMTP workers did not start (see $BASE/cgtwist.log)" >&2; exit 1
}

# cg_smtp_server NAME [WORKERS]: the SMTP benchmarks' server, started and ready: SMTP on
# 127.0.0.1:2625 with STARTTLS, 127.0.0.1 a Client IP (like Postfix's mynetworks for the load
# generator, which does no DNS checks for it either), 200 connections per IP, WORKERS SMTP
# worker processes (left at the default when empty) and the account smtpbench@example.test
# in BASE/base. CG_SETTINGS="key value;key value" sets more before the start,
# CG_EXTRA_LISTENERS (JSON objects, comma-separated) adds listeners beside the SMTP one, and
# CG_BEFORE_START names a command run (in this shell) just before the server starts.
cg_smtp_server() {
  cg_begin "$1" '{"example.test": ["A 127.0.0.1"], "loadgen.example.test": ["A 127.0.0.1"]}' persistent
  cg_conf "$BASE" example.test info
  cg_admin settings set listeners "[{\"protocol\":\"smtp\",\"address\":\"127.0.0.1\",\"port\":2625,\"tls\":\"starttls\"}${CG_EXTRA_LISTENERS:+,$CG_EXTRA_LISTENERS}]"
  cg_admin settings set smtp.max_connections_per_ip 200
  cg_admin settings set clients.ips '"127.0.0.1"'
  [ -n "${2:-}" ] && cg_admin settings set smtp.workers "$2"
  local kv sets
  IFS=';' read -ra sets <<< "${CG_SETTINGS:-}"
  for kv in "${sets[@]}"; do
    # shellcheck disable=SC2086  # "key value": two words on purpose
    [ -n "$kv" ] && cg_admin settings set $kv
  done
  cg_admin account add smtpbench@example.test --password benchpass
  [ -z "${CG_BEFORE_START:-}" ] || "$CG_BEFORE_START"
  cg_start "$BASE"
  cg_wait_workers "${2:-0}"
  CG_MAILDIR="$BASE/base/Domains/example.test/smtpbench/Maildir"
}

# ---- fairness: load check and the order the servers ran in ----------------------------------
# bench_load_check NAME: print the load average and refuse to run when the 1-minute load is
# above BENCH_MAX_LOAD (default 1.0): on 2 shared cores someone else's test run halves either
# server's share of the CPU for a while, and the ratio measures that, not the servers.
# BENCH_IGNORE_LOAD=1 runs anyway with a loud warning (the result says so too).
bench_load_check() {
  local load max=${BENCH_MAX_LOAD:-1.0}
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$1: load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
  if awk -v l="$load" -v m="$max" 'BEGIN { exit !(l > m) }'; then
    if [ -n "${BENCH_IGNORE_LOAD:-}" ]; then
      echo "WARNING: 1-minute load $load > $max before the start; running anyway (BENCH_IGNORE_LOAD)." >&2
      echo "WARNING: the numbers of this run are NOT comparable: other work shared the CPU." >&2
      BENCH_LOADED=1
    else
      echo "$1: refusing to run: 1-minute load $load > $max (BENCH_MAX_LOAD). Wait for a quiet" >&2
      echo "machine, or set BENCH_IGNORE_LOAD=1 for a trial run whose numbers mean little." >&2
      exit 3
    fi
  fi
}

# bench_load_after NAME: the load average after the run, and the warning again if it was loaded.
bench_load_after() {
  echo "$1: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  [ -z "${BENCH_LOADED:-}" ] || echo "$1: WARNING: started above the load limit (BENCH_IGNORE_LOAD): noisy numbers"
}

# bench_abba A B: the ABBA order of two labels ("A B B A"), so that a drift in machine load,
# page cache or file-system state during the run is charged to both servers alike. ABBA_FIRST=B
# starts with the second label instead (BAAB).
bench_abba() {
  if [ "${ABBA_FIRST:-}" = "$2" ]; then echo "$2 $1 $1 $2"; else echo "$1 $2 $2 $1"; fi
}

# dovecot_users PREFIX COUNT SYSUSER: accounts PREFIX1..PREFIX<COUNT> in the bench Dovecot's
# passwd-file (/etc/dovecot/bench-users, written by ../shared/bench/setup-peers.sh), with
# SYSUSER's password hash (argon2id unless BENCH_HASH=plain: the same cost per login as
# cgtwist's), uid and gid, each its own home ~SYSUSER/accounts/PREFIX<n> (mail in its Maildir).
# Dovecot rereads the file when it changes; setup-peers.sh install rewrites it without them.
# "fresh" as the 4th argument empties their Maildirs (mail and Dovecot's index): a benchmark
# that compares mailboxes must start both servers from the same ones, and cgtwist's are new.
# Prints the directory that holds the homes.
dovecot_users() {
  local prefix=$1 count=$2 sys=$3 fresh=${4:-} file=/etc/dovecot/bench-users line hash uid gid home n
  line=$(grep "^$sys:" "$file") || { echo "no $sys in $file (run setup-peers.sh)" >&2; exit 1; }
  hash=$(cut -d: -f2 <<< "$line"); uid=$(id -u "$sys"); gid=$(id -g "$sys")
  home=$(getent passwd "$sys" | cut -d: -f6)/accounts
  install -d -o "$sys" -g "$sys" -m 700 "$home"
  { grep -vE "^$prefix[0-9]+:" "$file" || true
    for n in $(seq "$count"); do
      [ -z "$fresh" ] || rm -rf "${home:?}/$prefix$n/Maildir"
      install -d -o "$sys" -g "$sys" -m 700 "$home/$prefix$n" "$home/$prefix$n/Maildir"
      echo "$prefix$n:$hash:$uid:$gid::$home/$prefix$n::"
    done; } > "$file.new"
  chown root:dovecot "$file.new"; chmod 640 "$file.new"; mv "$file.new" "$file"
  echo "$home"
}

# ---- loopback sink domains and a second Postfix (outbound-vs-postfix.sh, list-vs-postfix.sh) ----
# Domain N (d001.bench ...) is served at 127.0.0.(N+1):SINK_PORT; nothing leaves 127.0.0.0/8.
# The caller sets WORK (its work directory), PF_DIR (the Postfix instance's directory), PIDS=()
# and CG_PID="", then `trap sink_cleanup EXIT` and `trap 'exit 143' TERM INT`.
sink_domain() { printf "d%03d.bench" "$1"; }
sink_ip() { echo "127.0.0.$(($1 + 1))"; }

# sink_cleanup: stop cgtwist, the Postfix instance, the sinks and the DNS server, remove WORK
# (unless KEEP_WORK) and PF_DIR. Every step may fail: set -e holds in a trap too, and a `wait`
# for the killed server returns 143; stopping there left Postfix, the sinks and the DNS
# server running.
sink_cleanup() {
  if [ -n "${CG_PID:-}" ]; then kill "$CG_PID" 2>/dev/null || true; wait "$CG_PID" 2>/dev/null || true; fi
  postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1 || true
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  rm -rf "$PF_DIR"
}

# sinks_start COUNT PORT: Postfix's smtp-sink for domains 1..COUNT (PIDS), once all listen.
sinks_start() {
  local i
  for i in $(seq "$1"); do
    smtp-sink -u postfix -h "sink$i.bench" "$(sink_ip "$i"):$2" 1024 >/dev/null 2>>"$WORK/sink.err" &
    PIDS+=($!)
  done
  for _ in $(seq 100); do
    [ "$(ss -ltnH "sport = :$2" | wc -l)" -ge "$1" ] && return 0; sleep 0.1
  done
  cat "$WORK/sink.err" >&2; echo "sinks did not start" >&2; exit 1
}

# tarpit_start FIRST LAST PORT: bench/outbound_tarpit.py on domains FIRST..LAST (PIDS): they
# accept TCP and never greet (the stalled destinations), once it says it is ready. Their
# addresses are left in STALLED_IPS.
tarpit_start() {
  local i
  STALLED_IPS=()
  [ "$1" -le "$2" ] || return 0
  for i in $(seq "$1" "$2"); do STALLED_IPS+=("$(sink_ip "$i")"); done
  "$PY" "$HERE/outbound_tarpit.py" "$3" "${STALLED_IPS[@]}" > "$WORK/tarpit.out" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q ready "$WORK/tarpit.out" 2>/dev/null && break; sleep 0.1; done
}

# sinks_dns DOMAINS: the loopback DNS server (cg_dns, PIDS) with an MX for domains 1..DOMAINS
# and src.test, the sending domain, at 127.0.0.1.
sinks_dns() {
  local i d
  {
    echo "{"
    for i in $(seq "$1"); do
      d=$(sink_domain "$i"); echo "\"$d\": [\"MX 10 mx.$d\"], \"mx.$d\": [\"A $(sink_ip "$i")\"],"
    done
    echo "\"src.test\": [\"A 127.0.0.1\"]}"
  } > "$WORK/zone.json"
  cg_dns "$WORK/zone.json" "$WORK"
  PIDS+=("$CG_DNS_PID")
}

# pf_instance PF_PORT DOMAINS SINK_PORT [MAIN_CF_LINE...]: a second Postfix instance in PF_DIR
# (the shared one on 2525 is untouched), checked, not started: smtpd on 127.0.0.1:PF_PORT,
# 127.0.0.0/8 its mynetworks, each sink domain reached through a transport map of
# [127.0.0.x]:SINK_PORT (no DNS), 100 processes and 5 deliveries per destination to start
# with; the extra lines are appended to main.cf.
pf_instance() {
  local port=$1 domains=$2 sink_port=$3 i; shift 3
  rm -rf "$PF_DIR"; mkdir -p "$PF_DIR/etc" "$PF_DIR/spool" "$PF_DIR/data"
  chmod 755 "$PF_DIR" "$PF_DIR/etc" "$PF_DIR/spool"; chown postfix "$PF_DIR/data"
  grep -vE '^[^ #]+[[:space:]]+inet[[:space:]]' /etc/postfix/master.cf > "$PF_DIR/etc/master.cf"
  echo "127.0.0.1:$port inet n - n - - smtpd" >> "$PF_DIR/etc/master.cf"
  cat > "$PF_DIR/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PF_DIR/spool
data_directory = $PF_DIR/data
myhostname = postfix.src.test
mydomain = src.test
myorigin = src.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
transport_maps = hash:$PF_DIR/etc/transport
default_transport = error:not a benchmark domain
relay_transport = error:not a benchmark domain
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $PF_DIR/maillog
default_process_limit = 100
initial_destination_concurrency = 5
CONF
  [ $# -eq 0 ] || printf '%s\n' "$@" >> "$PF_DIR/etc/main.cf"
  : > "$PF_DIR/etc/transport"
  for i in $(seq "$domains"); do
    echo "$(sink_domain "$i") smtp:[$(sink_ip "$i")]:$sink_port" >> "$PF_DIR/etc/transport"
  done
  postmap "$PF_DIR/etc/transport"
  postfix -c "$PF_DIR/etc" check
}
