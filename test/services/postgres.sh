#!/usr/bin/env bash
# A local PostgreSQL server for the tests that need one:
#   test/services/postgres.sh start [DIR]   initialise DIR/data once (trust auth, loopback only), start
#                                           the server on a free 127.0.0.1 port, wait until it answers,
#                                           write its URL (postgres://tunegraph@127.0.0.1:PORT/tunegraph)
#                                           to DIR/url
#   test/services/postgres.sh stop [DIR]    stop it (DIR and its data stay)
# DIR defaults to $TUNEGRAPH_PG_DIR, else /tmp/tunegraph-pg. Starting an already running server
# prints its URL and does nothing else. The role tunegraph is the cluster's superuser (tests create
# other roles with it). PostgreSQL refuses to run as root: as root, the server runs as the system
# user postgres (made by Debian's package), which then owns DIR.
set -euo pipefail
cmd=${1:-}
dir=${2:-${TUNEGRAPH_PG_DIR:-/tmp/tunegraph-pg}}
python=${TUNEGRAPH_PYTHON:-python3}
role=tunegraph
db=tunegraph

# The server's binaries: Debian keeps initdb and postgres off PATH, under /usr/lib/postgresql/N/bin.
bin=${TUNEGRAPH_PG_BIN:-}
if [[ -z "$bin" ]]; then
  for b in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x "$b/initdb" ]]; then
      bin=$b
      break
    fi
  done
fi
if [[ -z "$bin" ]] && command -v initdb >/dev/null 2>&1; then
  bin=$(dirname "$(readlink -f "$(command -v initdb)")")
fi
missing() {
  echo "PostgreSQL's server binaries (initdb, postgres, pg_ctl, pg_isready, psql) are not in ${bin:-/usr/lib/postgresql/*/bin or on PATH};" \
    "install them with: apt-get install -y postgresql (or set TUNEGRAPH_PG_BIN to their folder)" >&2
  exit 1
}

# The prefix that runs a command as the user the server runs as: postgres when we are root.
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  if command -v runuser >/dev/null 2>&1; then
    as_pg=(runuser -u postgres --)
  else
    # shellcheck disable=SC2016 # expanded by su's shell, from the arguments after the user
    as_pg=(su -s /bin/sh -c 'exec "$0" "$@"' -- postgres)
  fi
fi

answers() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$1" -U "$role" -d postgres -t 2 >/dev/null 2>&1; }
psql_() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U "$role" "${@:2}"; }
fail() {
  echo "$1; its log ($2):" >&2
  tail -n 30 "$2" >&2
  exit 1
}

case "$cmd" in
  start)
    for b in initdb postgres pg_ctl pg_isready psql; do [[ -x "$bin/$b" ]] || missing; done
    mkdir -p "$dir"
    # One server for concurrent callers (test files start it in parallel).
    exec 9>"$dir/lock"
    flock 9
    if [[ -f "$dir/url" && -f "$dir/pid" && -f "$dir/port" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && answers "$(cat "$dir/port")"; then
      cat "$dir/url"
      exit 0
    fi
    rm -f "$dir/url"
    if [[ $(id -u) -eq 0 ]]; then
      if ! id postgres >/dev/null 2>&1; then
        echo "running as root, and PostgreSQL refuses to: there is no system user postgres to run it as" \
          "(apt-get install -y postgresql makes one), so run this as another user" >&2
        exit 1
      fi
      mkdir -p "$dir/data" "$dir/socket"
      chown postgres: "$dir" "$dir/data" "$dir/socket"
      if ! "${as_pg[@]}" test -w "$dir/data"; then
        echo "the user postgres cannot write to $dir/data (is a folder above $dir closed to it?): choose another DIR" >&2
        exit 1
      fi
    else
      mkdir -p "$dir/data" "$dir/socket"
    fi
    chmod 700 "$dir/data"
    # A server left running by an earlier start whose pid file is gone, or a stale one: stop it.
    if [[ -f "$dir/data/postmaster.pid" ]]; then
      (cd "$dir" && "${as_pg[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m fast -w -t 30) >/dev/null 2>&1 9>&- || true
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
      # The cluster's superuser is the role tunegraph; trust on loopback only (pg_hba.conf below).
      if ! (cd "$dir" && "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U "$role" -A trust -E UTF8 --locale=C) \
        >"$dir/initdb.log" 2>&1 </dev/null 9>&-; then
        fail "initdb failed" "$dir/initdb.log"
      fi
      printf '%s\n' \
        '# test/services/postgres.sh: trust, loopback and the socket in DIR/socket only.' \
        'local all all trust' \
        'host all all 127.0.0.1/32 trust' >"$dir/data/pg_hba.conf"
      [[ $(id -u) -ne 0 ]] || chown postgres: "$dir/data/pg_hba.conf"
    fi
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # A unix socket's path is at most 107 bytes: with a longer DIR, TCP only.
    sockets=$dir/socket
    ((${#sockets} + 20 <= 107)) || sockets=
    # setsid: the server and its workers form one process group, stopped together.
    (cd "$dir" && exec setsid "${as_pg[@]}" "$bin/postgres" -D "$dir/data" \
      -c listen_addresses=127.0.0.1 -c port="$port" -c unix_socket_directories="$sockets") \
      >"$dir/server.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/pid"
    echo "$port" >"$dir/port"
    url="postgres://$role@127.0.0.1:$port/$db"
    for _ in $(seq 1 120); do
      if answers "$port"; then
        if [[ -z $(psql_ "$port" -d postgres -tAc "select 1 from pg_database where datname = '$db'" 2>>"$dir/server.log") ]]; then
          psql_ "$port" -d postgres -c "create database $db owner $role" >>"$dir/server.log" 2>&1 ||
            fail "could not create the database $db" "$dir/server.log"
        fi
        "$bin/psql" -X -q "$url" -c 'select 1' >/dev/null 2>>"$dir/server.log" ||
          fail "$url does not answer" "$dir/server.log"
        echo "$url" >"$dir/url"
        echo "$url"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        fail "postgres exited" "$dir/server.log"
      fi
      sleep 0.5
    done
    fail "postgres did not answer on 127.0.0.1:$port within 60 s" "$dir/server.log"
    ;;
  stop)
    mkdir -p "$dir"
    exec 9>"$dir/lock"
    flock 9
    if [[ -f "$dir/data/postmaster.pid" && -x "$bin/pg_ctl" ]]; then
      (cd "$dir" && "${as_pg[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m fast -w -t 30) >/dev/null 2>&1 9>&- || true
    fi
    if [[ -f "$dir/pid" ]]; then
      pid=$(cat "$dir/pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid" "$dir/port" "$dir/url"
    ;;
  *)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
