#!/usr/bin/env bash
# Runs the nemesis soak on both topologies at once (standalone primary +
# replica, and a 3+3 cluster; they share no ports) for $1 seconds, reports
# under $2/<topology>/; fails when either run found an anomaly.
set -u
secs=${1:?seconds}
out=${2:?output directory}
mkdir -p "$out/standalone" "$out/cluster"
pids=()
for t in standalone cluster; do
	target/release/lake-soak --topology "$t" --secs "$secs" --out "$out/$t" \
		>"$out/$t/run.log" 2>&1 &
	pids+=($!)
done
status=0
for i in 0 1; do
	wait "${pids[$i]}" || status=1
done
for t in standalone cluster; do
	echo "=== lake-soak --topology $t ==="
	# The report, or the whole log when the run stopped before writing one.
	if [ -f "$out/$t/report.txt" ] && [ "$status" -eq 0 ]; then
		cat "$out/$t/report.txt"
	else
		cat "$out/$t/run.log"
	fi
done
exit $status
