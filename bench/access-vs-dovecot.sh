#!/usr/bin/env bash
# IMAP and POP3 access: cgtwist and Dovecot in the same run, with the shared imap-bench.py and
# pop-bench.py, reported as per-phase ratios (bench/access_ratios.py).
#
#   bench/access-vs-dovecot.sh        MESSAGES=10000 POP_MESSAGES=1000 CONCURRENCY=1,4 POP_CONCURRENCY=1 RUNS=3
#
# POP3 runs one client by default: pop-bench.py logs every worker into the same maildrop, and
# cgtwist locks a maildrop for one POP3 session (RFC 1939 §8; issue 3) where Dovecot by default
# does not (pop3_lock_session = no), so with more clients cgtwist answers -ERR [IN-USE] and the
# ratio would compare different work (access_ratios.py marks such runs ERR).
# Dovecot listens on 127.0.0.1:1143 (IMAP) and :1110 (POP3) (../shared/bench/setup-peers.sh),
# users imapbench/popbench, password benchpass. cgtwist gets the same accounts in its main domain
# (bare login names) on loopback ports chosen by the kernel, with plaintext login allowed on
# those listeners as Dovecot's bench config does (disable_plaintext_auth = no). Both mailboxes
# are populated the same way: the same deterministic messages written into Maildir/new.
# For each concurrency the two servers run back to back so both see the same machine load.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MESSAGES=${MESSAGES:-10000}
POP_MESSAGES=${POP_MESSAGES:-1000}
CONCURRENCY=${CONCURRENCY:-1,4}
POP_CONCURRENCY=${POP_CONCURRENCY:-1}
RUNS=${RUNS:-3}
OUTDIR="${RESULTS_DIR:-/tmp/cgtwist-bench}/access-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUTDIR"

bash "$SHARED/setup-peers.sh" >/dev/null
bash "$SHARED/setup-peers.sh" start >/dev/null

cg_begin cgtwist-bench '{"example.test": ["A 127.0.0.1"]}'
cg_conf "$BASE" example.test warn
CG_ADMIN_LOG="$OUTDIR/admin.log"
cg_admin settings set listeners '[{"protocol":"imap","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true},
                               {"protocol":"pop3","address":"127.0.0.1","port":0,"tls":"none","allow_plain_auth":true}]'
cg_admin settings set access.max_connections_per_ip 200
# The load generator on 127.0.0.1 is a trusted client: no AUTH concurrency cap or delays
# (Dovecot's bench config has none either).
cg_admin settings set clients.ips '"127.0.0.1"'
cg_admin account add imapbench@example.test --password benchpass
cg_admin account add popbench@example.test --password benchpass
cg_start "$BASE"
# Ready when the IMAP listener greets (log level warn hides the "cgtwist ready" line).
read -r CG_IMAP CG_POP < <("$PY" - "$BASE/base/cgtwist.ports" <<'PYEOF'
import json, os, socket, sys, time
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
print(ports["imap"], ports["pop3"])
PYEOF
)
CG_MD="$BASE/base/Domains/example.test"
mkdir -p "$CG_MD/imapbench/Maildir" "$CG_MD/popbench/Maildir"
echo "cgtwist: IMAP 127.0.0.1:$CG_IMAP POP3 127.0.0.1:$CG_POP; Dovecot: IMAP :1143 POP3 :1110; results in $OUTDIR"

imap() {  # label port maildir concurrency
  "$PY" "$SHARED/imap-bench.py" --host 127.0.0.1 --port "$2" --user imapbench --password benchpass \
    --messages "$MESSAGES" --populate maildir --maildir "$3" --concurrency "$4" --runs "$RUNS" \
    --json "$OUTDIR/imap-$1-c$4.json" > "$OUTDIR/imap-$1-c$4.txt"
}
pop() {  # label port maildir concurrency
  "$PY" "$SHARED/pop-bench.py" --host 127.0.0.1 --port "$2" --user popbench --password benchpass \
    --messages "$POP_MESSAGES" --populate maildir --maildir "$3" --concurrency "$4" --runs "$RUNS" \
    --json "$OUTDIR/pop-$1-c$4.json" > "$OUTDIR/pop-$1-c$4.txt"
}
for c in ${CONCURRENCY//,/ }; do
  imap dovecot 1143 /home/imapbench/Maildir "$c"
  imap cgtwist "$CG_IMAP" "$CG_MD/imapbench/Maildir" "$c"
done
for c in ${POP_CONCURRENCY//,/ }; do
  pop dovecot 1110 /home/popbench/Maildir "$c"
  pop cgtwist "$CG_POP" "$CG_MD/popbench/Maildir" "$c"
done
"$PY" "$HERE/access_ratios.py" "$OUTDIR" | tee "$OUTDIR/ratios.txt"
