#!/usr/bin/env bash
# A local MLflow tracking server for the tests of test/mlflow:
#   test/services/mlflow.sh start [DIR]   start it (SQLite backend, artifact proxying) on a free
#                                         loopback port, wait until it answers, write its URL to DIR/url
#   test/services/mlflow.sh stop [DIR]    stop it
# DIR defaults to $TUNEGRAPH_MLFLOW_DIR, else /tmp/tunegraph-mlflow. Starting an already
# running server prints its URL and does nothing else.
set -euo pipefail
cmd=${1:-}
dir=${2:-${TUNEGRAPH_MLFLOW_DIR:-/tmp/tunegraph-mlflow}}
python=${TUNEGRAPH_PYTHON:-python3}

answers() { curl -fsS -m 2 "$1/health" >/dev/null 2>&1; }

case "$cmd" in
  start)
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
    # setsid: the server and its workers form one process group, stopped together.
    setsid "$python" -m mlflow server \
      --backend-store-uri "sqlite:///$dir/mlflow.db" \
      --artifacts-destination "$dir/artifacts" \
      --serve-artifacts \
      --host 127.0.0.1 --port "$port" --workers 2 \
      >"$dir/server.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/pid"
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 240); do
      if answers "$url"; then
        echo "$url" >"$dir/url"
        echo "$url"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "mlflow server exited; its log ($dir/server.log):" >&2
        tail -n 30 "$dir/server.log" >&2
        exit 1
      fi
      sleep 0.5
    done
    echo "mlflow server did not answer on $url within 120 s; its log ($dir/server.log):" >&2
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
