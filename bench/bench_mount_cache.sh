#!/usr/bin/env bash
# bench_mount_cache.sh — the page-cache policy of `vdelta mount`
# (--cache=none vs --cache=kernel), for 1 disk and for N linked clones of
# one base in one daemon (bench layer: the vdelta binary, qemu-img, fio,
# fincore).
#
# Base: SIZE_MIB with DATA_MIB of data; clones are empty deltas over it.
# For each policy: fio random 4 KiB reads (psync, 4 jobs, RUNTIME s) on
# disk 1 -> IOPS; sequential 1 MiB reads of the data of every disk ->
# MiB/s; then the page cache held by the served files and by the base file
# (fincore), and the daemon's RSS.  Caches are dropped between policies
# (echo 1 > drop_caches when root).
#
# Usage: bench/bench_mount_cache.sh [VDELTA]
# Environment: BENCH_DIR (default /tmp/vdelta-bench-mount), N (32),
# SIZE_MIB (1024), DATA_MIB (256), RUNTIME (5).
set -euo pipefail
export LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdelta=$(realpath "${1:-${VDELTA:-$src/build/tools/vdelta}}")
dir=${BENCH_DIR:-/tmp/vdelta-bench-mount}
n=${N:-32}
size_mib=${SIZE_MIB:-1024}
data_mib=${DATA_MIB:-256}
runtime=${RUNTIME:-5}
for t in qemu-img qemu-io fio fincore; do
	command -v $t >/dev/null || { echo "bench: $t missing" >&2; exit 1; }
done

rm -rf "$dir"
mkdir -p "$dir/d" "$dir/m"
trap 'fusermount3 -u "$dir/m" 2>/dev/null; rm -rf "$dir"' EXIT
qemu-img create -q -f vmdk "$dir/d/base.vmdk" ${size_mib}M
qemu-io -f vmdk -c "write -P 0x5b 0 ${data_mib}M" "$dir/d/base.vmdk" >/dev/null
"$vdelta" snapshot "$dir/d/base.vmdk" >/dev/null
rm -f "$dir/d/base-000001.vmdk"
disks=()
for i in $(seq "$n"); do
	"$vdelta" clone --linked "$dir/d/base.vmdk" "$dir/d/c$i.vmdk"
	disks+=("$dir/d/c$i.vmdk")
done

cached_kib() # files...: page cache they hold, KiB
{
	fincore -b -n -o RES "$@" 2>/dev/null | awk '{s += $1} END {print int(s / 1024)}'
}

drop()
{
	sync
	[ -w /proc/sys/vm/drop_caches ] && echo 1 >/proc/sys/vm/drop_caches || true
}

printf '%-7s %5s %12s %12s %14s %14s %10s\n' cache disks "4k IOPS" "seq MiB/s" \
	"files cache" "base cache" "RSS"
for cache in none kernel; do
	for nd in 1 "$n"; do
		drop
		"$vdelta" mount --cache=$cache "${disks[@]:0:$nd}" "$dir/m"
		pid=$(sed -n 's/^mount\t.*pid=\([0-9]*\).*/\1/p' "$dir/m/.vdelta-status")
		iops=$(fio --name=r --filename="$dir/m/c1" --rw=randread --bs=4k --size=${data_mib}M \
			--numjobs=4 --time_based --runtime="$runtime" --ioengine=psync \
			--group_reporting --output-format=terse | awk -F';' '{print $8}')
		t0=$(date +%s.%N)
		for i in $(seq "$nd"); do
			dd if="$dir/m/c$i" of=/dev/null bs=1M count="$data_mib" status=none
		done
		t1=$(date +%s.%N)
		mibs=$(awk -v n="$nd" -v m="$data_mib" -v a="$t0" -v b="$t1" 'BEGIN {print n * m / (b - a)}')
		files=$(cached_kib "$dir"/m/c*)
		base=$(cached_kib "$dir/d/base.vmdk")
		rss=$(sed -n 's/^VmRSS:[[:space:]]*//p' "/proc/$pid/status")
		printf '%-7s %5s %12s %12.0f %11s KiB %10s KiB %10s\n' $cache "$nd" "$iops" \
			"$mibs" "$files" "$base" "$rss"
		"$vdelta" umount "$dir/m"
	done
done
