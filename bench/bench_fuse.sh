#!/usr/bin/env bash
# bench_fuse.sh — FUSE serving of VMDK chains side by side, with fio (bench
# layer: uses the vdelta binary, bench_fuse_min, qemu-img, fio).
#
# For each depth (default 1 8 32) of one synthetic chain that `vdelta bench
# --synthetic` builds (4 GiB virtual, ~3% of the grains rewritten per
# delta), serves the same content at once by:
#   vdelta-mount   vdelta mount --ro of the chain (default --cache=none)
#   qemu-fuse      qemu-storage-daemon's FUSE export of the chain
#   vmdkmount      vmdkmount of the chain (libvmdk)
#   vdelta-flat    vdelta mount --ro of a monolithicFlat copy (our ceiling)
#   min            bench_fuse_min serving a raw copy (pread + fuse_reply_buf)
#   min-splice     bench_fuse_min --splice on the same raw copy
# and runs every fio job on every server in turn (alternating, page cache
# warm): sequential 1 MiB reads, random 4 KiB reads with 1 and 2 jobs,
# direct and buffered.  Then writable servers for random 4 KiB writes with
# fsync: vdelta mount --nonpersistent, qemu's export of a throw-away delta,
# vdelta mount of the flat copy, and the minimal server on the raw copy.
# Each cell: IOPS (MiB/s for sequential) and the server's read syscalls per
# request (/proc/PID/io syscr, its /dev/fuse reads included).
#
# Usage: bench/bench_fuse.sh [VDELTA [BENCH_FUSE_MIN]]
# Environment: BENCH_DIR (default /tmp/vdelta-bench-fuse; ~14 GB free),
# DEPTHS (default "1 8 32"), SIZE (default 4G), CHURN (default 3),
# RUNTIME (fio seconds per job, default 5).
set -euo pipefail
export LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdelta=$(realpath "${1:-$src/build/tools/vdelta}")
fmin=$(realpath "${2:-$src/build/bench/bench_fuse_min}")
dir=${BENCH_DIR:-/tmp/vdelta-bench-fuse}
depths=${DEPTHS:-1 8 32}
size=${SIZE:-4G}
churn=${CHURN:-3}
runtime=${RUNTIME:-5}

for t in fio qemu-img qemu-storage-daemon vmdkmount fusermount3; do
	command -v $t >/dev/null || { echo "bench: $t not installed" >&2; exit 1; }
done
mkdir -p "$dir"
dir=$(realpath "$dir")

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

# serve NAME FILE-TO-WAIT-FOR CMD...: start a server in the background.
declare -A pid_of file_of
serve()
{
	local name=$1 file=$2 i
	shift 2
	"$@" >"$dir/$name.log" 2>&1 &
	pids+=($!)
	pid_of[$name]=$!
	file_of[$name]=$file
	for ((i = 0; i < 500; i++)); do
		[ -e "$file" ] && grep -q " $(dirname "$file") fuse\| $file fuse" /proc/mounts && return 0
		sleep 0.02
	done
	echo "bench: $name did not come up (see $dir/$name.log)" >&2
	exit 1
}

# newmnt NAME: a fresh mountpoint $dir/NAME in $m, remembered for cleanup.
newmnt()
{
	m=$dir/$1
	rmdir "$m" 2>/dev/null || true
	mkdir -p "$m"
	mnts+=("$m")
}

syscr()
{
	awk '/^syscr/ { print $2 }' "/proc/$1/io"
}

# cell NAME JOB ARGS...: "RATE READS/OP" for one fio job on one server.
cell()
{
	local name=$1 job=$2 out c0 c1
	shift 2
	c0=$(syscr "${pid_of[$name]}")
	out=$(fio --name="$job" --filename="${file_of[$name]}" --ioengine=psync \
		--runtime="$runtime" --time_based --output-format=json "$@")
	c1=$(syscr "${pid_of[$name]}")
	python3 -c '
import json, sys
j = json.loads(sys.argv[1])["jobs"][0]
rw = j["write"] if j["write"]["io_bytes"] else j["read"]
ios = rw["total_ios"] or 1
seq = sys.argv[3] == "seq"
rate = rw["bw_bytes"] / 1048576 if seq else rw["iops"]
print(f"{rate:.0f} {(int(sys.argv[2])) / ios:.1f}")' "$out" "$((c1 - c0))" "$job"
}

jobs_read=(
	"seq|--rw=read --bs=1M --direct=1"
	"rand1d|--rw=randread --bs=4k --direct=1"
	"rand2d|--rw=randread --bs=4k --direct=1 --numjobs=2 --group_reporting"
	"rand1b|--rw=randread --bs=4k --direct=0"
	"rand2b|--rw=randread --bs=4k --direct=0 --numjobs=2 --group_reporting"
)
job_write="write|--rw=randwrite --bs=4k --direct=1 --fsync=1"

declare -A res
run_jobs()
{
	local spec name job args
	shift 0
	for spec in "$@"; do
		job=${spec%%|*}
		args=${spec#*|}
		for name in "${servers[@]}"; do
			# shellcheck disable=SC2086 # args is a word list
			res[$depth,$name,$job]=$(cell "$name" "${job%%[0-9]*}" $args)
		done
	done
}

# ---- chains and copies ---------------------------------------------------------
depth_list=$(echo "$depths" | tr ' ' ',')
echo "building/reusing the chain: vdelta bench --synthetic --depths $depth_list --size $size --churn $churn --dir $dir/chain" >&2
"$vdelta" bench -q --synthetic --depths "$depth_list" --size "$size" --churn "$churn" \
	--dir "$dir/chain" --ops 1 --seq-bytes 1M --threads 1 --csv >/dev/null

all_servers=(vdelta-mount qemu-fuse vmdkmount vdelta-flat min min-splice)
for depth in $depths; do
	top=$dir/chain/synth-$(printf %02u $((depth - 1))).vmdk
	rm -f "$dir"/flat*.vmdk "$dir/raw.img" "$dir/qsd.img" "$dir"/scratch*.vmdk
	echo "depth $depth: raw and flat copies of $top" >&2
	qemu-img convert -U -O raw "$top" "$dir/raw.img"
	"$vdelta" convert -O vmdk -t monolithicFlat "$top" "$dir/flat.vmdk" >/dev/null
	cat "$dir"/chain/*.vmdk "$dir/raw.img" "$dir"/flat*.vmdk >/dev/null

	# read-only: every server up at once, jobs alternate between them
	servers=("${all_servers[@]}")
	newmnt m-vd; serve vdelta-mount "$m/disk" "$vdelta" mount -f --ro "$top=disk" "$m"
	: >"$dir/qsd.img"; mnts+=("$dir/qsd.img")
	serve qemu-fuse "$dir/qsd.img" qemu-storage-daemon \
		--blockdev "driver=file,node-name=f,filename=$top,read-only=on" \
		--blockdev driver=vmdk,node-name=n,file=f,read-only=on \
		--export "type=fuse,id=e,node-name=n,mountpoint=$dir/qsd.img,writable=off"
	newmnt m-vmdk; serve vmdkmount "$m/vmdk$depth" vmdkmount -v "$top" "$m"
	newmnt m-flat; serve vdelta-flat "$m/disk" "$vdelta" mount -f --ro "$dir/flat.vmdk=disk" "$m"
	newmnt m-min; serve min "$m/disk" "$fmin" "$dir/raw.img" "$m"
	newmnt m-mins; serve min-splice "$m/disk" "$fmin" --splice "$dir/raw.img" "$m"
	run_jobs "${jobs_read[@]}"
	cleanup

	# writes: a throw-away delta (vdelta, qemu) or the copies (flat, raw)
	servers=(vdelta-mount qemu-fuse vdelta-flat min)
	qemu-img create -q -f vmdk -b "$top" -F vmdk "$dir/scratch.vmdk"
	newmnt m-vd; serve vdelta-mount "$m/disk" "$vdelta" mount -f --nonpersistent "$top=disk" "$m"
	: >"$dir/qsd.img"; mnts+=("$dir/qsd.img")
	serve qemu-fuse "$dir/qsd.img" qemu-storage-daemon \
		--blockdev "driver=file,node-name=f,filename=$dir/scratch.vmdk" \
		--blockdev driver=vmdk,node-name=n,file=f \
		--export "type=fuse,id=e,node-name=n,mountpoint=$dir/qsd.img,writable=on"
	newmnt m-flat; serve vdelta-flat "$m/disk" "$vdelta" mount -f "$dir/flat.vmdk=disk" "$m"
	newmnt m-min; serve min "$m/disk" "$fmin" "$dir/raw.img" "$m"
	run_jobs "$job_write"
	cleanup
done
rm -f "$dir"/flat*.vmdk "$dir/raw.img" "$dir/qsd.img" "$dir"/scratch*.vmdk

# ---- table ---------------------------------------------------------------------
echo
echo "vdelta: $("$vdelta" --version); $(qemu-storage-daemon --version | head -n 1); fio $(fio --version)"
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); ${runtime} s per job"
echo
echo "| depth | server | seq 1M MiB/s | rand 4K 1 job direct | rand 4K 2 jobs direct | rand 4K 1 job buffered | rand 4K 2 jobs buffered | rand 4K write+fsync |"
echo "|---|---|---|---|---|---|---|---|"
for depth in $depths; do
	for name in "${all_servers[@]}"; do
		row="| $depth | $name"
		for job in seq rand1d rand2d rand1b rand2b write; do
			v=${res[$depth,$name,$job]:-}
			if [ -n "$v" ]; then
				row+=" | ${v% *} (${v#* } r/op)"
			else
				row+=" | —"
			fi
		done
		echo "$row |"
	done
done
