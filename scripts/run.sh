#!/usr/bin/env bash
# `make run`: starts the sidecar on the local:// store under $LAKE_DATA and
# redis-server with the module in the foreground. Ctrl-C stops both.
set -euo pipefail

port=${LAKE_PORT:-6379}
data=${LAKE_DATA:-./data}
http=${LAKE_HTTP:-127.0.0.1:9740}
mkdir -p "$data"
data=$(cd "$data" && pwd)
socket="$data/lake.sock"
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release

"$target/lake-sidecar" --socket "$socket" --store "${LAKE_STORE:-local://$data/objects}" --http "$http" ${LAKE_MODES:+--modes "$LAKE_MODES"} &
sidecar=$!
cleanup() { kill "$sidecar" 2>/dev/null || true; wait "$sidecar" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for _ in $(seq 1 200); do
  [ -S "$socket" ] && break
  kill -0 "$sidecar" 2>/dev/null || { echo "run: the sidecar exited; see above" >&2; exit 1; }
  sleep 0.05
done

cat <<MSG

Lake is starting: Redis on port $port, sidecar health on http://$http/healthz,
data under $data. In another terminal, try:

  redis-cli -p $port LAKE.WRITE users profile.name '{"first":"John"}'
  redis-cli -p $port LAKE.READ users

Ctrl-C stops both.

MSG

redis-server --port "$port" --bind 127.0.0.1 --dir "$data" --appendonly yes \
  --loadmodule "$target/liblake.so" socket "$socket" &
redis=$!
trap 'kill "$redis" 2>/dev/null || true; cleanup' EXIT INT TERM
wait "$redis"
