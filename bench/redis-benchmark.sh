#!/usr/bin/env bash
# Quick figures with redis-benchmark: PING, raw ZADD with Lake-shaped members,
# LAKE.WRITE and LAKE.READ (snapshot + 8 deltas), 1 KB values, in one run
# against a Redis + sidecar this script starts on the local:// store (BENCH_STORE=file://... for the file store).
# BENCH_CLUSTER=1 runs that Redis as a one-node cluster serving every slot
# (the cost of Lake's slot-ownership checks); BENCH_MODULE=<path> loads
# another build of liblake.so (A/B comparisons).
#
#   bench/redis-benchmark.sh [clients=50] [requests=20000]
set -euo pipefail
clients=${1:-50}
requests=${2:-20000}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d)
port=${BENCH_PORT:-16390}
cleanup() {
  kill "${redis:-}" "${sidecar:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$target/lake-sidecar" --socket "$work/lake.sock" --store "${BENCH_STORE:-local://$work/objects}" >"$work/sidecar.log" 2>&1 &
sidecar=$!
for _ in $(seq 1 200); do [ -S "$work/lake.sock" ] && break; sleep 0.05; done
cluster=()
[ "${BENCH_CLUSTER:-0}" = 1 ] && cluster=(--cluster-enabled yes)
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save "" "${cluster[@]}" \
  --loadmodule "${BENCH_MODULE:-$target/liblake.so}" socket "$work/lake.sock" >"$work/redis.log" 2>&1 &
redis=$!
for _ in $(seq 1 200); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
if [ "${BENCH_CLUSTER:-0}" = 1 ]; then
  redis-cli -p "$port" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
  for _ in $(seq 1 200); do redis-cli -p "$port" CLUSTER INFO | grep -q cluster_state:ok && break; sleep 0.05; done
fi

value="\"$(head -c 1022 /dev/zero | tr '\0' 'x')\""
uuid="0f8fad5b-d9cb-469f-a165-70867728950e"

# A catalog for reads: 64 deltas, a snapshot, then 8 more deltas.
for i in $(seq 1 64); do redis-cli -p "$port" LAKE.WRITE rd "f$i" "$value" >/dev/null; done
redis-cli -p "$port" LAKE.READ rd SNAP >/dev/null
for i in $(seq 1 8); do redis-cli -p "$port" LAKE.WRITE rd "g$i" "$value" >/dev/null; done

rps() { redis-benchmark -p "$port" -c "$clients" -n "$requests" -r 1000000 --csv "$@" | tail -1 | cut -d, -f2 | tr -d '"'; }
ping=$(rps PING)
zadd=$(rps ZADD zbench __rand_int__ "profile.name:$uuid-__rand_int__")
write=$(rps LAKE.WRITE bench "f__rand_int__" "$value")
read=$(rps LAKE.READ rd NOSNAP)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "| command ($clients clients, 1 KB values, $(nproc) cores) | requests/s | x PING | x ZADD |"
echo "|---|---:|---:|---:|"
echo "| PING | $ping | 1.00 | $(ratio "$ping" "$zadd") |"
echo "| ZADD (Lake-shaped member) | $zadd | $(ratio "$zadd" "$ping") | 1.00 |"
echo "| LAKE.WRITE | $write | $(ratio "$write" "$ping") | $(ratio "$write" "$zadd") |"
echo "| LAKE.READ (snapshot + 8 deltas) | $read | $(ratio "$read" "$ping") | $(ratio "$read" "$zadd") |"
