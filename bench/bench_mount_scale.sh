#!/usr/bin/env bash
# bench_mount_scale.sh — many linked clones of one base in one `vdelta
# mount` daemon (bench layer: the vdelta binary, qemu-img, qemu-io,
# python3).
#
# Base: SIZE_MIB virtual with DATA_MIB of data, frozen; MAX clones made
# with `vdelta clone --linked` (empty deltas over it; kept in BENCH_DIR and
# reused by a later run with the same parameters).  For each count N in
# COUNTS, one daemon serves clones 1..N read-write and the script records:
#   start     wall time of `vdelta mount` (it returns once every disk is
#             open and the folder is mounted), and its CPU time (user +
#             system: what load on a shared machine does not inflate)
#   RSS       the daemon's VmRSS after start, and after one process has
#             read 64 KiB and written 4 KiB + fsync in every clone (each
#             clone's merged map chunk built, a grain table allocated)
#   fds       open files of the daemon, and how many of them are the base
#             (the layer pool opens it once)
#   threads   the daemon's threads after the I/O
#   io s      wall time of that read + write + fsync pass over all N
#   umount    wall time of `vdelta umount` (every disk flushed and closed)
# The daemon runs under the soft open-file limit NOFILE (default 1024, the
# usual default) so that the mount's own raising of it is part of the run.
#
# Usage: bench/bench_mount_scale.sh [VDELTA]
# Environment: BENCH_DIR (default /tmp/vdelta-bench-scale), COUNTS
# (default "1 256 1024"), SIZE_MIB (1024), DATA_MIB (64), NOFILE (1024),
# REPEAT (runs per count, default 2; each row is one run).
set -euo pipefail
export LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdelta=$(realpath "${1:-${VDELTA:-$src/build/tools/vdelta}}")
dir=${BENCH_DIR:-/tmp/vdelta-bench-scale}
counts=${COUNTS:-1 256 1024}
size_mib=${SIZE_MIB:-1024}
data_mib=${DATA_MIB:-64}
nofile=${NOFILE:-1024}
repeat=${REPEAT:-2}
for t in qemu-img qemu-io python3 fusermount3; do
	command -v $t >/dev/null || { echo "bench: $t missing" >&2; exit 1; }
done
max=0
for n in $counts; do [ "$n" -gt $max ] && max=$n; done

mkdir -p "$dir/m"
trap 'fusermount3 -u -z "$dir/m" 2>/dev/null || true' EXIT
# reused when made with the same sizes and at least as many clones
stamp="size=$size_mib data=$data_mib clones=$max"
have=$(sed -n "s/^size=$size_mib data=$data_mib clones=\([0-9]*\)\$/\1/p" "$dir/d/stamp" 2>/dev/null || true)
if [ "${have:-0}" -lt "$max" ]; then
	echo "building the base and $max clones in $dir/d" >&2
	rm -rf "$dir/d"
	mkdir -p "$dir/d"
	qemu-img create -q -f vmdk "$dir/d/base.vmdk" "${size_mib}M"
	qemu-io -f vmdk -c "write -P 0x5b 0 ${data_mib}M" "$dir/d/base.vmdk" >/dev/null
	"$vdelta" snapshot "$dir/d/base.vmdk" >/dev/null
	rm -f "$dir/d/base-000001.vmdk"
	mkdir -p "$dir/d/pristine"
	for i in $(seq "$max"); do
		"$vdelta" clone --linked "$dir/d/base.vmdk" "$dir/d/c$i.vmdk"
		cp --sparse=always "$dir/d/c$i.vmdk" "$dir/d/pristine/"
	done
	echo "$stamp" >"$dir/d/stamp"
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
status_kib() { sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$1/status"; }

# one python process reads 64 KiB and writes 4 KiB + fsync in each clone
touch_all()
{
	python3 - "$dir/m" "$1" <<'PY'
import os, sys
m, n = sys.argv[1], int(sys.argv[2])
for i in range(1, n + 1):
    fd = os.open("%s/c%d" % (m, i), os.O_RDWR)
    off = (i * 7919 % 1024) << 20
    os.pread(fd, 65536, off % (64 << 20))
    os.pwrite(fd, bytes([i & 0xff]) * 4096, off)
    os.fsync(fd)
    os.close(fd)
PY
}

printf '| clones | start s | start CPU s | RSS after start MiB | RSS after I/O MiB | open files | base opened | threads | I/O pass s | umount s |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for n in $counts; do
	for r in $(seq "$repeat"); do
		# each run writes its clones: start from empty ones
		disks=()
		for i in $(seq "$n"); do
			cp --sparse=always "$dir/d/pristine/c$i.vmdk" "$dir/d/"
			disks+=("$dir/d/c$i.vmdk")
		done
		sync
		t0=$(now)
		# the CPU of the command (the opening is done before the daemon forks)
		cpu=$( { TIMEFORMAT='%U %S'; time (ulimit -Sn "$nofile" &&
			"$vdelta" mount "${disks[@]}" "$dir/m"); } 2>&1 >/dev/null | tail -1 |
			awk '{ printf "%.3f", $1 + $2 }')
		start=$(since "$t0")
		grep -q " $dir/m fuse" /proc/mounts || { echo "bench: mount of $n clones failed" >&2; exit 1; }
		pid=$(sed -n 's/^mount\t.*pid=\([0-9]*\).*/\1/p' "$dir/m/.vdelta-status")
		rss0=$(status_kib "$pid" VmRSS)
		t0=$(now)
		touch_all "$n"
		io=$(since "$t0")
		rss1=$(status_kib "$pid" VmRSS)
		fds=$(ls "/proc/$pid/fd" | wc -l)
		base=$(ls -l "/proc/$pid/fd" | grep -c " -> $dir/d/base.vmdk\$" || true)
		thr=$(status_kib "$pid" Threads)
		t0=$(now)
		"$vdelta" umount "$dir/m"
		um=$(since "$t0")
		awk -v n="$n" -v s="$start" -v c="$cpu" -v a="$rss0" -v b="$rss1" -v f="$fds" -v bo="$base" \
			-v t="$thr" -v io="$io" -v u="$um" 'BEGIN {
			printf "| %d | %s | %s | %.1f | %.1f | %d | %d | %d | %s | %s |\n",
				n, s, c, a / 1024, b / 1024, f, bo, t, io, u }'
	done
done
echo
echo "vdelta: $("$vdelta" --version); machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disks: ${size_mib} MiB virtual, base with ${data_mib} MiB of data, soft open-file limit $nofile"
