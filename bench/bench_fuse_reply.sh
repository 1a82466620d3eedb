#!/usr/bin/env bash
# bench_fuse_reply.sh — what a read reply costs the FUSE server, by request
# size: the evidence behind the reply path of `vdelta mount`
# (fuse/fuse_front.c; docs/benchmarks.md, "Reply path") (bench layer: the
# vdelta binary, bench_fuse_min, qemu-img, fio, perf).
#
# Serves one content at once by bench_fuse_min (pread + fuse_reply_buf,
# 1 MiB requests), bench_fuse_min --splice (an fd-backed reply, spliced
# where it fits libfuse's pipe, read into a buffer libfuse allocates where
# not), bench_fuse_min --splice --max-read 524288 (requests small enough to
# splice through a pipe of 1 MiB) and vdelta mount --ro of a chain
# (VDELTA2, when given, a second vdelta binary on the same chain:
# before/after), then reads SIZE_READ bytes sequentially (fio psync
# direct=1) with each block size in BSS on each server in turn, PASSES
# times, and prints per cell the throughput and the server's CPU time per
# GiB served (perf stat task-clock of the server process: its threads and
# the kernel work done on their behalf, which load does not inflate the way
# it does throughput).  With PROFILE=BS, also `perf record` of each server
# during one more read pass at that block size, and its top symbols.
#
# Usage: bench/bench_fuse_reply.sh TOP.vmdk [VDELTA [BENCH_FUSE_MIN [VDELTA2]]]
# Environment: BENCH_DIR (default /tmp/vdelta-bench-reply), BSS (default
# "4k 64k 256k 512k 1M"), SIZE_READ (default 2G), PASSES (default 2),
# PROFILE (a block size, default none).
set -euo pipefail
export LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
top=$(realpath "${1:?usage: bench_fuse_reply.sh TOP.vmdk [VDELTA [BENCH_FUSE_MIN [VDELTA2]]]}")
vdelta=$(realpath "${2:-$src/build/tools/vdelta}")
fmin=$(realpath "${3:-$src/build/bench/bench_fuse_min}")
vdelta2=${4:+$(realpath "$4")}
dir=${BENCH_DIR:-/tmp/vdelta-bench-reply}
bss=${BSS:-4k 64k 256k 512k 1M}
size_read=${SIZE_READ:-2G}
passes=${PASSES:-2}
profile=${PROFILE:-}
for t in fio qemu-img perf fusermount3 python3; do
	command -v $t >/dev/null || { echo "bench: $t not installed" >&2; exit 1; }
done

mkdir -p "$dir"
dir=$(realpath "$dir")
declare -A pid_of
names=()
cleanup()
{
	local n
	for n in "${names[@]}"; do
		grep -q " $dir/$n fuse" /proc/mounts && fusermount3 -u -z "$dir/$n"
		kill "${pid_of[$n]}" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -f "$dir/raw.img"
}
trap cleanup EXIT

# serve NAME CMD...: in the foreground of a background job, at $dir/NAME
serve()
{
	local n=$1 i
	shift
	mkdir -p "$dir/$n"
	"$@" >"$dir/$n.log" 2>&1 &
	pid_of[$n]=$!
	names+=("$n")
	for ((i = 0; i < 500; i++)); do
		grep -q " $dir/$n fuse" /proc/mounts && [ -e "$dir/$n/disk" ] && return 0
		sleep 0.02
	done
	echo "bench: $n did not come up (see $dir/$n.log)" >&2
	exit 1
}

qemu-img convert -U -O raw "$top" "$dir/raw.img"
cat "$dir/raw.img" "$(dirname "$top")"/*.vmdk >/dev/null
serve min "$fmin" "$dir/raw.img" "$dir/min"
serve min-splice "$fmin" --splice "$dir/raw.img" "$dir/min-splice"
serve min-splice-512k "$fmin" --splice --max-read 524288 "$dir/raw.img" "$dir/min-splice-512k"
serve vdelta "$vdelta" mount -f --ro "$top=disk" "$dir/vdelta"
[ -n "$vdelta2" ] && serve vdelta2 "$vdelta2" mount -f --ro "$top=disk" "$dir/vdelta2"

# cell NAME BS: "MiB/s ms-per-GiB"
cell()
{
	local n=$1 bs=$2 st=$dir/stat.out ps out ms
	perf stat -x, -e task-clock -p "${pid_of[$n]}" -o "$st" &
	ps=$!
	sleep 0.2
	out=$(fio --name=r --filename="$dir/$n/disk" --rw=read --bs="$bs" --direct=1 \
		--ioengine=psync --size="$size_read" --output-format=json)
	kill -INT $ps
	wait $ps 2>/dev/null || true
	ms=$(awk -F, '/task-clock/ { print $1 }' "$st")
	python3 -c '
import json, sys
r = json.loads(sys.argv[1])["jobs"][0]["read"]
print("%.0f %.0f" % (r["bw_bytes"] / 2**20, float(sys.argv[2]) / (r["io_bytes"] / 2**30)))' "$out" "$ms"
}

echo "| block | server | MiB/s (each pass) | server CPU ms per GiB (each pass) |"
echo "|---|---|---|---|"
declare -A rate cpu
for bs in $bss; do
	for ((p = 1; p <= passes; p++)); do
		order=("${names[@]}")
		((p % 2 == 0)) && order=($(printf '%s\n' "${names[@]}" | tac))
		for n in "${order[@]}"; do
			read -r r c <<<"$(cell "$n" "$bs")"
			rate[$bs,$n]+="${rate[$bs,$n]:+ / }$r"
			cpu[$bs,$n]+="${cpu[$bs,$n]:+ / }$c"
		done
	done
	for n in "${names[@]}"; do
		echo "| $bs | $n | ${rate[$bs,$n]} | ${cpu[$bs,$n]} |"
	done
done

if [ -n "$profile" ]; then
	for n in "${names[@]}"; do
		perf record -q -e cpu-clock -g -p "${pid_of[$n]}" -o "$dir/$n.perf" 2>/dev/null &
		ps=$!
		sleep 0.3
		fio --name=r --filename="$dir/$n/disk" --rw=read --bs="$profile" --direct=1 \
			--ioengine=psync --size="$size_read" --output-format=terse >/dev/null
		kill -INT $ps
		wait $ps 2>/dev/null || true
		echo
		echo "$n, $profile reads: top symbols (perf report --no-children)"
		perf report -i "$dir/$n.perf" --stdio --no-children --sort symbol 2>/dev/null |
			awk '/^ +[0-9]/ && n++ < 12'
	done
fi
echo
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pipe-max-size $(cat /proc/sys/fs/pipe-max-size); top $top"
