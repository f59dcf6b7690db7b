#!/usr/bin/env bash
# `make cluster`: a local Redis Cluster with Lake: 3 primaries and 3
# replicas on ports $LAKE_CLUSTER_PORT.. (default 7000-7005), one sidecar per
# Redis node, every sidecar on one shared store ($LAKE_STORE, default a
# file:// directory under $LAKE_DATA/cluster). Ctrl-C stops everything.
set -euo pipefail

base=${LAKE_CLUSTER_PORT:-7000}
data=${LAKE_DATA:-./data}/cluster
mkdir -p "$data"
data=$(cd "$data" && pwd)
store=${LAKE_STORE:-file://$data/objects}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release
if [ "$base" -gt 55530 ]; then
  echo "cluster: LAKE_CLUSTER_PORT must be at most 55530 (the cluster bus listens on port + 10000)" >&2
  exit 1
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

addrs=()
for i in 0 1 2 3 4 5; do
  port=$((base + i))
  dir="$data/$port"
  mkdir -p "$dir"
  rm -f "$dir/nodes.conf"
  "$target/lake-sidecar" --socket "$dir/lake.sock" --store "$store" >"$dir/sidecar.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do [ -S "$dir/lake.sock" ] && break; sleep 0.05; done
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --cluster-enabled yes \
    --cluster-node-timeout 5000 --appendonly yes --save "" \
    --loadmodule "$target/liblake.so" socket "$dir/lake.sock" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  addrs+=("127.0.0.1:$port")
done
for a in "${addrs[@]}"; do
  for _ in $(seq 1 200); do redis-cli -p "${a##*:}" PING >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes </dev/null >"$data/create.log"

cat <<MSG

Lake on Redis Cluster: 3 primaries and 3 replicas on ports $base-$((base + 5)),
one sidecar per node, shared store $store (logs under $data).
Connect with a cluster-aware client, e.g.:

  redis-cli -c -p $base LAKE.WRITE users profile.name '{"first":"John"}'
  redis-cli -c -p $base LAKE.READ users
  redis-cli --cluster check 127.0.0.1:$base

Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
echo "cluster: a process exited; stopping (see the logs under $data)" >&2
