#!/usr/bin/env bash
# bench_nbd.sh — NBD serving of a VMDK chain side by side, with fio's nbd
# engine over Unix sockets (bench layer: uses the vdelta binary and its
# nbdkit plugin, nbdkit, qemu-nbd, nbdfuse, fio).
#
# For each depth (default 32) of one synthetic chain that `vdelta bench
# --synthetic` builds (2 GiB virtual, ~3% of the grains rewritten per
# delta), serves the same content at once by:
#   vdelta-nbd    nbdkit with the vdelta plugin, the chain read-only
#   qemu-nbd      qemu-nbd -r -f vmdk of the chain
#   nbdkit-file   nbdkit's file plugin on a raw copy (the NBD ceiling)
# and runs every fio job on every server in turn (page cache warm): random
# 4 KiB reads at queue depth 1 and 16, sequential 1 MiB reads.  Then
# writable servers for random 4 KiB writes, each followed by a flush:
# vdelta's plugin on a throw-away delta (:nonpersistent), qemu-nbd -s (a
# throw-away overlay), nbdkit's file plugin on the raw copy.  Last, through
# FUSE: nbdfuse of the vdelta export beside `vdelta mount --ro` of the
# chain (fio psync, direct I/O).  Cells: IOPS (MiB/s for sequential), and
# each server's ratio to nbdkit-file.
#
# Usage: bench/bench_nbd.sh [VDELTA [PLUGIN]]
# Environment: BENCH_DIR (default /tmp/vdelta-bench-nbd; ~6 GB free),
# DEPTHS (default "32"), SIZE (default 2G), CHURN (default 3), RUNTIME (fio
# seconds per job, default 5).
set -euo pipefail
export LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdelta=$(realpath "${1:-$src/build/tools/vdelta}")
plugin=$(realpath "${2:-$(dirname "$vdelta")/../nbd/nbdkit-vdelta-plugin.so}")
dir=${BENCH_DIR:-/tmp/vdelta-bench-nbd}
depths=${DEPTHS:-32}
size=${SIZE:-2G}
churn=${CHURN:-3}
runtime=${RUNTIME:-5}

for t in fio nbdkit qemu-nbd qemu-img nbdfuse fusermount3; do
	command -v $t >/dev/null || { echo "bench: $t not installed" >&2; exit 1; }
done
mkdir -p "$dir"
dir=$(realpath "$dir")

. "$(dirname "${BASH_SOURCE[0]}")/bench_servers.sh" # pids, mnts, cleanup

# serve NAME CMD...: a server on the socket $dir/NAME.sock, in the background.
declare -A uri_of file_of
serve()
{
	local name=$1 sock=$dir/$1.sock i
	shift
	rm -f "$sock"
	"$@" >"$dir/$name.log" 2>&1 &
	pids+=($!)
	uri_of[$name]="nbd+unix:///?socket=$sock"
	for ((i = 0; i < 500; i++)); do
		[ -S "$sock" ] && return 0
		sleep 0.02
	done
	echo "bench: $name did not come up (see $dir/$name.log)" >&2
	exit 1
}

# fuse_serve NAME FILE CMD...: a FUSE server whose file FILE appears.
fuse_serve()
{
	local name=$1 file=$2 i
	shift 2
	mkdir -p "$(dirname "$file")"
	mnts+=("$(dirname "$file")")
	"$@" >"$dir/$name.log" 2>&1 &
	pids+=($!)
	file_of[$name]=$file
	for ((i = 0; i < 500; i++)); do
		[ -e "$file" ] && grep -q " $(dirname "$file") fuse" /proc/mounts && return 0
		sleep 0.02
	done
	echo "bench: $name did not come up (see $dir/$name.log)" >&2
	exit 1
}

# rate JSON: IOPS, or MiB/s for a job whose name starts with "seq"
rate()
{
	python3 -c '
import json, sys
s = sys.argv[1]
j = json.loads(s[s.index("{"):])["jobs"][0]  # the nbd engine prints a line first
rw = j["write"] if j["write"]["io_bytes"] else j["read"]
print("%.0f" % (rw["bw_bytes"] / 1048576 if j["jobname"].startswith("seq") else rw["iops"]))' "$1"
}

cell_nbd()
{
	local name=$1 job=$2
	shift 2
	rate "$(fio --name="$job" --ioengine=nbd --uri="${uri_of[$name]}" --runtime="$runtime" \
		--time_based --output-format=json "$@")"
}

cell_file()
{
	local name=$1 job=$2
	shift 2
	rate "$(fio --name="$job" --filename="${file_of[$name]}" --ioengine=psync --direct=1 \
		--runtime="$runtime" --time_based --output-format=json "$@")"
}

jobs_read=(
	"rand-qd1|--rw=randread --bs=4k --iodepth=1"
	"rand-qd16|--rw=randread --bs=4k --iodepth=16"
	"seq-1M|--rw=read --bs=1M --iodepth=1"
)
job_write="write-flush|--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
jobs_fuse=(
	"rand-4k|--rw=randread --bs=4k"
	"seq-1M|--rw=read --bs=1M"
)

declare -A res
# run_jobs CELL SERVERS... -- JOBSPEC...
run_jobs()
{
	local cell=$1 spec name job args servers=()
	shift
	while [ "$1" != -- ]; do servers+=("$1"); shift; done
	shift
	for spec in "$@"; do
		job=${spec%%|*}
		args=${spec#*|}
		for name in "${servers[@]}"; do
			# shellcheck disable=SC2086 # args is a word list
			res[$depth,$name,$job]=$($cell "$name" "$job" $args)
		done
	done
}

# ---- chains and copies ---------------------------------------------------------
depth_list=$(echo "$depths" | tr ' ' ',')
echo "building/reusing the chain: vdelta bench --synthetic --depths $depth_list --size $size --churn $churn --dir $dir/chain" >&2
"$vdelta" bench -q --synthetic --depths "$depth_list" --size "$size" --churn "$churn" \
	--dir "$dir/chain" --ops 1 --seq-bytes 1M --threads 1 --csv >/dev/null

for depth in $depths; do
	top=$dir/chain/synth-$(printf %02u $((depth - 1))).vmdk
	rm -f "$dir/raw.img"
	echo "depth $depth: raw copy of $top" >&2
	"$vdelta" convert -f vmdk -O raw "$top" "$dir/raw.img" >/dev/null
	sync "$dir/raw.img" # else the file plugin's first flush writes the whole copy back
	cat "$dir"/chain/*.vmdk "$dir/raw.img" >/dev/null

	serve vdelta-nbd nbdkit -f -U "$dir/vdelta-nbd.sock" "$plugin" "disk=$top:ro"
	serve qemu-nbd qemu-nbd -r -f vmdk -k "$dir/qemu-nbd.sock" -t "$top"
	serve nbdkit-file nbdkit -f -r -U "$dir/nbdkit-file.sock" file "$dir/raw.img"
	run_jobs cell_nbd vdelta-nbd qemu-nbd nbdkit-file -- "${jobs_read[@]}"
	cleanup

	serve vdelta-nbd nbdkit -f -U "$dir/vdelta-nbd.sock" "$plugin" "disk=$top:nonpersistent"
	serve qemu-nbd qemu-nbd -s -f vmdk -k "$dir/qemu-nbd.sock" -t "$top"
	serve nbdkit-file nbdkit -f -U "$dir/nbdkit-file.sock" file "$dir/raw.img"
	run_jobs cell_nbd vdelta-nbd qemu-nbd nbdkit-file -- "$job_write"
	cleanup

	serve vdelta-nbd nbdkit -f -U "$dir/vdelta-nbd.sock" "$plugin" "disk=$top:ro"
	fuse_serve nbdfuse "$dir/m-nbdfuse/nbd" nbdfuse -r "$dir/m-nbdfuse" \
		--unix "$dir/vdelta-nbd.sock"
	fuse_serve vdelta-mount "$dir/m-mount/disk" "$vdelta" mount -f --ro "$top=disk" \
		"$dir/m-mount"
	run_jobs cell_file nbdfuse vdelta-mount -- "${jobs_fuse[@]}"
	cleanup
done
rm -f "$dir/raw.img"

# ---- report ---------------------------------------------------------------------
ratio()
{
	python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%.2f" % (a / b if b else 0))' "$1" "$2"
}
echo "NBD over Unix sockets, fio nbd engine, ${runtime}s per job, $size chain (rand: IOPS, seq: MiB/s; x = / nbdkit-file)"
for depth in $depths; do
	echo
	echo "depth $depth"
	printf '%-12s %-14s %-14s %-14s\n' job vdelta-nbd qemu-nbd nbdkit-file
	for spec in "${jobs_read[@]}" "$job_write"; do
		job=${spec%%|*}
		f=${res[$depth,nbdkit-file,$job]}
		v=${res[$depth,vdelta-nbd,$job]}
		q=${res[$depth,qemu-nbd,$job]}
		printf '%-12s %-14s %-14s %-14s\n' "$job" "$v ($(ratio "$v" "$f")x)" \
			"$q ($(ratio "$q" "$f")x)" "$f"
	done
	echo "through FUSE (fio psync, direct)"
	printf '%-12s %-14s %-14s\n' job nbdfuse vdelta-mount
	for spec in "${jobs_fuse[@]}"; do
		job=${spec%%|*}
		printf '%-12s %-14s %-14s\n' "$job" "${res[$depth,nbdfuse,$job]}" \
			"${res[$depth,vdelta-mount,$job]}"
	done
done
