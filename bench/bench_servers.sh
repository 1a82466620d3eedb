#!/usr/bin/env bash
# bench_servers.sh — sourced by the bench scripts that run servers side by
# side (bench layer): the background servers ($pids) and FUSE mounts
# ($mnts) a script started, and cleanup, which stops them (on exit too).

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	echo "bench_servers.sh: sourced by the bench scripts, not run" >&2
	exit 2
fi

pids=()
mnts=()
cleanup()
{
	local m p
	for m in "${mnts[@]}"; do
		grep -q " $m fuse" /proc/mounts && fusermount3 -u -z "$m"
	done
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	mnts=()
	pids=()
}
trap cleanup EXIT
