#!/usr/bin/env bash
# bench_fuse.sh — FUSE serving of VMDK chains side by side, with fio (bench
# layer: uses the vdelta binary, bench_fuse_min, qemu-img, fio, strace).
#
# For each depth (default 1 8 32) of one synthetic chain that `vdelta bench
# --synthetic` builds (4 GiB virtual, ~3% of the grains rewritten per
# delta), serves the same content at once by:
#   vdelta-mount   vdelta mount --ro of the chain (default --cache=none)
#   qemu-fuse      qemu-storage-daemon's FUSE export of the chain
#   vmdkmount      vmdkmount of the chain (libvmdk)
#   vdelta-flat    vdelta mount --ro of a monolithicFlat disk whose extent
#                  is the raw copy the minimal server serves (one file, one
#                  page cache: our ceiling)
#   min            bench_fuse_min serving the raw copy (pread + fuse_reply_buf)
#   min-splice     bench_fuse_min --splice --max-read 524288 on the same raw
#                  copy (fd-backed replies, requests small enough to splice
#                  through a pipe of 1 MiB: the fastest server we know)
# and runs every fio job on every server in turn (page cache warm):
# sequential 1 MiB reads, random 4 KiB reads with 1 and 2 jobs, direct and
# buffered.  Then writable servers for random 4 KiB writes with an fsync
# after each: vdelta mount --nonpersistent of the chain (a throw-away
# delta), qemu's export of a throw-away delta, vdelta mount of the flat
# disk, and the minimal server, the last two writing the same raw file.
# Write jobs: "write", random 4 KiB writes into the first WSIZE bytes,
# which a sequential 1 MiB pass wrote first (into the deltas: grains the
# top already holds); "first", 4 KiB at the start of each 64 KiB past
# them (into the deltas: every write copies a grain up and sets its table
# entry).  For each write job the server's syncs (fsync + fdatasync) per
# acknowledged write are counted with strace over 1024 more writes.
# Every job runs PASSES times, the servers in turn, in reverse order on
# every other pass (what ran before a server, e.g. a writer that filled
# the journal, does not always weigh on the same one); a cell is the mean.
# Each read cell: IOPS (MiB/s for sequential) and the server's read
# syscalls per request (/proc/PID/io syscr, its /dev/fuse reads included).
#
# Usage: bench/bench_fuse.sh [VDELTA [BENCH_FUSE_MIN]]
# Environment: BENCH_DIR (default /tmp/vdelta-bench-fuse; ~14 GB free),
# DEPTHS (default "1 8 32"), SIZE (default 4G), CHURN (default 3),
# RUNTIME (fio seconds per job, default 5), PASSES (default 2),
# WSIZE (default 256M).
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
passes=${PASSES:-2}
wsize=${WSIZE:-256M}

for t in fio qemu-img qemu-storage-daemon vmdkmount fusermount3 strace python3; do
	command -v $t >/dev/null || { echo "bench: $t not installed" >&2; exit 1; }
done
mkdir -p "$dir"
dir=$(realpath "$dir")

. "$(dirname "${BASH_SOURCE[0]}")/bench_servers.sh" # pids, mnts, cleanup

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

# fio_rate JSON KIND: IOPS, or MiB/s for KIND seq; then the I/Os done.
fio_rate()
{
	python3 -c '
import json, sys
j = json.loads(sys.argv[1])["jobs"][0]
rw = j["write"] if j["write"]["io_bytes"] else j["read"]
rate = rw["bw_bytes"] / 1048576 if sys.argv[2] == "seq" else rw["iops"]
print("%.0f %d" % (rate, rw["total_ios"] or 1))' "$1" "$2"
}

# cell NAME JOB ARGS...: "RATE READS/OP" for one fio job on one server.
cell()
{
	local name=$1 job=$2 out c0 c1 r
	shift 2
	c0=$(syscr "${pid_of[$name]}")
	out=$(fio --name="$job" --filename="${file_of[$name]}" --ioengine=psync \
		--runtime="$runtime" --time_based --output-format=json "$@")
	c1=$(syscr "${pid_of[$name]}")
	r=$(fio_rate "$out" "$job")
	echo "${r% *} $(awk -v c=$((c1 - c0)) -v n="${r#* }" 'BEGIN { printf "%.1f", c / n }')"
}

# syncs NAME ARGS...: fsync + fdatasync calls of the server per write, over
# a fio job of 1024 4 KiB writes (ARGS place them), under strace.
syncs()
{
	local name=$1 st=$dir/strace.out sp n
	shift
	strace -f -c -e trace=fsync,fdatasync -o "$st" -p "${pid_of[$name]}" 2>/dev/null &
	sp=$!
	sleep 0.5
	fio --name=s --filename="${file_of[$name]}" --ioengine=psync --bs=4k --direct=1 \
		--fsync=1 --io_size=4M "$@" --output-format=json >/dev/null
	kill -INT $sp
	wait $sp 2>/dev/null || true
	n=$(awk '$NF == "fsync" || $NF == "fdatasync" { s += $(NF - 1) } END { print s + 0 }' "$st")
	awk -v n="$n" 'BEGIN { printf "%.2f", n / 1024 }'
}

# mean "R1 X1" "R2 X2"...: mean rate and the last pass's second field
mean()
{
	printf '%s\n' "$@" | awk '{ s += $1; x = $2 } END { printf "%.0f %s\n", s / NR, x }'
}

jobs_read=(
	"seq|--rw=read --bs=1M --direct=1"
	"rand1d|--rw=randread --bs=4k --direct=1"
	"rand2d|--rw=randread --bs=4k --direct=1 --numjobs=2 --group_reporting"
	"rand1b|--rw=randread --bs=4k --direct=0"
	"rand2b|--rw=randread --bs=4k --direct=0 --numjobs=2 --group_reporting"
)

declare -A res passes_of
# run_jobs SPEC...: each job PASSES times over every server, the order
# reversed on every other pass.
run_jobs()
{
	local spec name job args p order i
	for spec in "$@"; do
		job=${spec%%|*}
		args=${spec#*|}
		for ((p = 1; p <= passes; p++)); do
			order=("${servers[@]}")
			if ((p % 2 == 0)); then
				order=()
				for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
			fi
			for name in "${order[@]}"; do
				sync
				# shellcheck disable=SC2086 # args is a word list
				passes_of[$depth,$name,$job]+="$(cell "$name" "${job%%[0-9]*}" $args)|"
			done
		done
		for name in "${servers[@]}"; do
			local v=${passes_of[$depth,$name,$job]%|}
			IFS='|' read -r -a pv <<<"$v"
			res[$depth,$name,$job]=$(mean "${pv[@]}")
		done
	done
}

# ---- chains and copies ---------------------------------------------------------
depth_list=$(echo "$depths" | tr ' ' ',')
echo "building/reusing the chain: vdelta bench --synthetic --depths $depth_list --size $size --churn $churn --dir $dir/chain" >&2
"$vdelta" bench -q --synthetic --depths "$depth_list" --size "$size" --churn "$churn" \
	--dir "$dir/chain" --ops 1 --seq-bytes 1M --threads 1 --csv >/dev/null

all_servers=(vdelta-mount qemu-fuse vmdkmount vdelta-flat min min-splice)
size_b=$(python3 -c 'import sys; s = sys.argv[1]; m = {"K": 10, "M": 20, "G": 30, "T": 40}
print(int(s[:-1]) << m[s[-1].upper()] if s[-1].upper() in m else int(s))' "$size")
wsize_b=$(python3 -c 'import sys; s = sys.argv[1]; m = {"K": 10, "M": 20, "G": 30}
print(int(s[:-1]) << m[s[-1].upper()] if s[-1].upper() in m else int(s))' "$wsize")
# first writes: from WSIZE to 64 MiB before the end; the 1024 counted by
# strace in the last 64 MiB, where the timed job does not reach
first_len=$((size_b - wsize_b - (64 << 20)))
jobs_write=(
	"write|--rw=randwrite --bs=4k --direct=1 --fsync=1 --size=$wsize_b"
	"first|--rw=write:60k --bs=4k --direct=1 --fsync=1 --offset=$wsize_b --size=$first_len"
)
declare -A syncs_of
for depth in $depths; do
	top=$dir/chain/synth-$(printf %02u $((depth - 1))).vmdk
	rm -f "$dir"/flat*.vmdk "$dir/raw.img" "$dir/qsd.img" "$dir"/scratch*.vmdk
	echo "depth $depth: a raw copy of $top and a flat disk over it" >&2
	qemu-img convert -U -O raw "$top" "$dir/raw.img"
	# monolithicFlat descriptor whose one extent is raw.img
	"$vdelta" create -s "$size" -t monolithicFlat "$dir/flat.vmdk" >/dev/null
	sed -i 's/"flat-flat.vmdk"/"raw.img"/' "$dir/flat.vmdk"
	rm -f "$dir/flat-flat.vmdk"
	cat "$dir"/chain/*.vmdk "$dir/raw.img" >/dev/null

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
	newmnt m-mins; serve min-splice "$m/disk" "$fmin" --splice --max-read 524288 "$dir/raw.img" "$m"
	run_jobs "${jobs_read[@]}"
	cleanup

	# writes: a throw-away delta (vdelta, qemu) or the raw file (flat, min)
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
	for name in "${servers[@]}"; do # the write job's grains: held by each top
		fio --name=fill --filename="${file_of[$name]}" --ioengine=psync --rw=write \
			--bs=1M --direct=1 --size="$wsize_b" --end_fsync=1 --output-format=json >/dev/null
	done
	run_jobs "${jobs_write[@]}"
	for name in "${servers[@]}"; do
		syncs_of[$depth,$name,write]=$(syncs "$name" --rw=randwrite --size="$wsize_b")
		syncs_of[$depth,$name,first]=$(syncs "$name" --rw=write:60k \
			--offset=$((size_b - (64 << 20))))
	done
	cleanup
done
rm -f "$dir"/flat*.vmdk "$dir/raw.img" "$dir/qsd.img" "$dir"/scratch*.vmdk

# ---- table ---------------------------------------------------------------------
echo
echo "vdelta: $("$vdelta" --version); $(qemu-storage-daemon --version | head -n 1); fio $(fio --version)"
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); ${runtime} s per job, mean of $passes passes"
echo
echo "| depth | server | seq 1M MiB/s | rand 4K 1 job direct | rand 4K 2 jobs direct | rand 4K 1 job buffered | rand 4K 2 jobs buffered | write+fsync, held grains | syncs/write | first write+fsync | syncs/write |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for depth in $depths; do
	for name in "${all_servers[@]}"; do
		row="| $depth | $name"
		for job in seq rand1d rand2d rand1b rand2b; do
			v=${res[$depth,$name,$job]:-}
			[ -n "$v" ] && row+=" | ${v% *} (${v#* } r/op)" || row+=" | —"
		done
		for job in write first; do
			v=${res[$depth,$name,$job]:-}
			[ -n "$v" ] && row+=" | ${v% *} | ${syncs_of[$depth,$name,$job]}" || row+=" | — | —"
		done
		echo "$row |"
	done
done
echo
echo "each pass, in run order reversed every other pass (rate r/op):"
for k in "${!passes_of[@]}"; do echo "  $k: ${passes_of[$k]%|}"; done | sort
