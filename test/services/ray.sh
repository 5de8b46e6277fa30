#!/usr/bin/env bash
# A local Ray cluster for the tests of test/ray: a head node (1 CPU, no GPU, the dashboard and its
# Jobs API) and a second node that declares one GPU (1 CPU), so that GPU routing is tested on a
# machine without one:
#   test/services/ray.sh start [DIR]         start both (or what is missing), wait until the head's
#                                            Jobs API answers and both nodes are alive; write the
#                                            dashboard URL to DIR/url and the GPU node's raylet port
#                                            to DIR/gpu-node-port
#   test/services/ray.sh start-gpu-node [DIR] start the GPU node again (after a test killed it)
#   test/services/ray.sh stop [DIR]          stop the cluster
# DIR defaults to $TUNEGRAPH_RAY_DIR, else /tmp/tunegraph-ray. Starting a running cluster prints its
# URL and does nothing else.
set -euo pipefail
cmd=${1:-}
dir=${2:-${TUNEGRAPH_RAY_DIR:-/tmp/tunegraph-ray}}
python=${TUNEGRAPH_PYTHON:-python3}
export RAY_USAGE_STATS_ENABLED=0

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
answers() { curl -fsS -m 2 "$1/api/version" >/dev/null 2>&1; }
alive_nodes() { curl -fsS -m 5 "$1/nodes?view=summary" 2>/dev/null | "$python" -c 'import json, sys; print(len([n for n in json.load(sys.stdin)["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]))' 2>/dev/null || echo 0; }
ray_() { "$python" -m ray.scripts.scripts "$@"; }

start_gpu_node() {
  local gcs port agent
  gcs=$(cat "$dir/gcs")
  port=$(free_port)
  agent=$(free_port)
  echo "$port" >"$dir/gpu-node-port"
  ray_ start --address "$gcs" --node-ip-address 127.0.0.1 --num-cpus 1 --num-gpus 1 \
    --node-manager-port "$port" --dashboard-agent-listen-port "$agent" --disable-usage-stats \
    >>"$dir/start.log" 2>&1
}

wait_for() {
  local url=$1 want=$2
  for _ in $(seq 1 240); do
    if answers "$url" && [[ $(alive_nodes "$url") -ge $want ]]; then return 0; fi
    sleep 0.5
  done
  echo "the Ray cluster at $url did not come up with $want nodes within 120 s; its log ($dir/start.log):" >&2
  tail -n 30 "$dir/start.log" >&2
  return 1
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    exec 9>"$dir/lock"
    flock 9
    if [[ -f "$dir/url" ]] && answers "$(cat "$dir/url")"; then
      url=$(cat "$dir/url")
      [[ $(alive_nodes "$url") -ge 2 ]] || { start_gpu_node && wait_for "$url" 2; }
      echo "$url"
      exit 0
    fi
    "$python" -c 'import ray' 2>/dev/null || {
      echo "$python cannot import ray: pip install -r test/services/requirements.txt" >&2
      exit 1
    }
    ray_ stop --force >/dev/null 2>&1 || true
    rm -f "$dir/url"
    gcs_port=$(free_port)
    dash=$(free_port)
    agent=$(free_port)
    echo "127.0.0.1:$gcs_port" >"$dir/gcs"
    ray_ start --head --node-ip-address 127.0.0.1 --port "$gcs_port" --dashboard-host 127.0.0.1 \
      --dashboard-port "$dash" --dashboard-agent-listen-port "$agent" --num-cpus 1 --num-gpus 0 \
      --disable-usage-stats >"$dir/start.log" 2>&1 || {
      echo "ray start --head failed; its log ($dir/start.log):" >&2
      tail -n 30 "$dir/start.log" >&2
      exit 1
    }
    url="http://127.0.0.1:$dash"
    start_gpu_node
    wait_for "$url" 2
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
  start-gpu-node)
    exec 9>"$dir/lock"
    flock 9
    start_gpu_node
    wait_for "$(cat "$dir/url")" 2
    ;;
  stop)
    mkdir -p "$dir"
    exec 9>"$dir/lock"
    flock 9
    ray_ stop --force >/dev/null 2>&1 || true
    rm -f "$dir/url"
    ;;
  *)
    echo "usage: $0 start|start-gpu-node|stop [DIR]" >&2
    exit 2
    ;;
esac
