#!/bin/sh
# Start or stop a throw-away PostgreSQL cluster for the store tests (no TCP port: a Unix socket
# in a temporary directory), so the same store tests run on PostgreSQL too.
#
#   eval "$(sh tests/storage/pg_throwaway.sh start)"   # exports CGTWIST_TEST_PG_URL, PG_THROWAWAY
#   ... run the tests ...
#   sh tests/storage/pg_throwaway.sh stop "$PG_THROWAWAY"
#
# Needs the PostgreSQL server binaries (Debian: apt-get install postgresql) and psycopg2
# (pip install psycopg2-binary). Prints nothing and exits 0 when they are missing, so the
# PostgreSQL tests simply skip.
set -eu

find_bin() {
    command -v "$1" 2>/dev/null && return 0
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}

as_owner() {  # run a command as the cluster owner (postgres refuses to run as root)
    if [ "$(id -u)" = 0 ]; then
        su postgres -s /bin/sh -c "$*"
    else
        sh -c "$*"
    fi
}

case "${1:-}" in
start)
    INITDB=$(find_bin initdb) || exit 0
    PGCTL=$(find_bin pg_ctl) || exit 0
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        exit 0
    fi
    DIR=$(mktemp -d /tmp/cgtwist-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_owner "'$INITDB' -D '$DIR/data' -A trust -U postgres >'$DIR/initdb.log' 2>&1"
    as_owner "'$PGCTL' -D '$DIR/data' -w -l '$DIR/server.log' \
        -o \"-k $DIR -c listen_addresses='' -p 5432\" start >/dev/null"
    as_owner "psql -h '$DIR' -p 5432 -U postgres -qc 'CREATE DATABASE cgtest' >/dev/null" \
        2>/dev/null || \
        as_owner "'$(dirname "$INITDB")/createdb' -h '$DIR' -p 5432 -U postgres cgtest"
    echo "export PG_THROWAWAY='$DIR'"
    echo "export CGTWIST_TEST_PG_URL='postgresql://postgres@/cgtest?host=$DIR&port=5432'"
    ;;
stop)
    DIR=${2:?usage: pg_throwaway.sh stop DIR}
    PGCTL=$(find_bin pg_ctl) || exit 0
    as_owner "'$PGCTL' -D '$DIR/data' -m fast -w stop >/dev/null" || true
    rm -rf "$DIR"
    ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
