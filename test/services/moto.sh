#!/usr/bin/env bash
# A local S3-compatible server (moto's, in memory) for the tests that need an object store:
#   test/services/moto.sh start [DIR]   start it on a free loopback port, wait until it answers,
#                                       write its URL (http://127.0.0.1:PORT) to DIR/url
#   test/services/moto.sh stop [DIR]    stop it (what it held is gone)
# DIR defaults to $TUNEGRAPH_MOTO_DIR, else /tmp/tunegraph-moto. Starting an already running server
# prints its URL and does nothing else. Clients take the URL as their endpoint, path-style
# addressing, any region (us-east-1) and any credentials (moto checks none).
set -euo pipefail
cmd=${1:-}
dir=${2:-${TUNEGRAPH_MOTO_DIR:-/tmp/tunegraph-moto}}
python=${TUNEGRAPH_PYTHON:-python3}

# The root of the server is S3's ListBuckets.
answers() { curl -fsS -m 2 "$1/" >/dev/null 2>&1; }

case "$cmd" in
  start)
    if ! "$python" -c 'import moto.server' >/dev/null 2>&1; then
      echo "$python cannot import moto.server: pip install -r test/services/requirements.txt" >&2
      exit 1
    fi
    mkdir -p "$dir"
    # One server for concurrent callers (test files start it in parallel).
    exec 9>"$dir/lock"
    flock 9
    if [[ -f "$dir/url" && -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && answers "$(cat "$dir/url")"; then
      cat "$dir/url"
      exit 0
    fi
    rm -f "$dir/url"
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # setsid: the server and any children form one process group, stopped together.
    setsid "$python" -m moto.server -H 127.0.0.1 -p "$port" \
      >"$dir/server.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/pid"
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 120); do
      if answers "$url"; then
        echo "$url" >"$dir/url"
        echo "$url"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "moto server exited; its log ($dir/server.log):" >&2
        tail -n 30 "$dir/server.log" >&2
        exit 1
      fi
      sleep 0.5
    done
    echo "moto server did not answer on $url within 60 s; its log ($dir/server.log):" >&2
    tail -n 30 "$dir/server.log" >&2
    exit 1
    ;;
  stop)
    mkdir -p "$dir"
    exec 9>"$dir/lock"
    flock 9
    if [[ -f "$dir/pid" ]]; then
      pid=$(cat "$dir/pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      rm -f "$dir/pid" "$dir/url"
    fi
    ;;
  *)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
