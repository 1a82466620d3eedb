#!/usr/bin/env bash
# bench_convert.sh — vdelta convert vs qemu-img convert on the same files
# (bench layer: uses only the vdelta binary and qemu-img).
#
# Builds a 4 GiB raw disk holding 2 GiB of seeded random data in 1 MiB
# chunks at random MiB-aligned offsets (the rest is a hole), makes a
# monolithicSparse VMDK of it with qemu-img, then times, 3 times each
# (medians reported, warm page cache, wall time includes a `sync` so both
# tools pay for getting their output to disk):
#   raw  -> vmdk (monolithicSparse)   raw -> vmdk (streamOptimized)
#   vmdk -> raw
# and prints a table with wall and CPU times and qemu-img / vdelta ratios.
#
# Usage: bench/bench_convert.sh [VDELTA]   (default build/tools/vdelta)
# Environment: BENCH_DIR (default /tmp/vdelta-bench; needs ~8 GB free),
# RUNS (default 3), SEED (default 1), DATA_MIB (default 2048),
# SIZE_MIB (default 4096).
set -euo pipefail
export LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdelta=${1:-${VDELTA:-$src/build/tools/vdelta}}
dir=${BENCH_DIR:-/tmp/vdelta-bench}
runs=${RUNS:-3}
seed=${SEED:-1}
data_mib=${DATA_MIB:-2048}
size_mib=${SIZE_MIB:-4096}

[ -x "$vdelta" ] || { echo "bench: no vdelta at $vdelta (build first)" >&2; exit 1; }
vdelta=$(realpath "$vdelta")
command -v qemu-img >/dev/null || { echo "bench: qemu-img not installed" >&2; exit 1; }
mkdir -p "$dir"
need_kb=$(( (size_mib + 3 * data_mib) * 1024 ))
avail_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
[ "$avail_kb" -ge "$need_kb" ] ||
	{ echo "bench: $dir has $((avail_kb / 1024)) MiB free, need $((need_kb / 1024))" >&2; exit 1; }
cd "$dir"

# ---- input ------------------------------------------------------------------

if [ ! -f "in-$seed-$data_mib-$size_mib.raw" ]; then
	echo "building a ${size_mib} MiB raw disk with ${data_mib} MiB of random data (seed $seed)"
	python3 - "in-$seed-$data_mib-$size_mib.raw" "$seed" "$data_mib" "$size_mib" <<'PY'
import random, sys
path, seed, data_mib, size_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
slots = sorted(rng.sample(range(size_mib), data_mib))
with open(path + ".tmp", "wb") as f:
    f.truncate(size_mib << 20)
    for s in slots:
        f.seek(s << 20)
        f.write(rng.randbytes(1 << 20))
import os
os.rename(path + ".tmp", path)
PY
fi
in_raw=in-$seed-$data_mib-$size_mib.raw
if [ ! -f "$in_raw.vmdk" ]; then
	qemu-img convert -f raw -O vmdk "$in_raw" "$in_raw.vmdk.tmp"
	mv "$in_raw.vmdk.tmp" "$in_raw.vmdk"
fi
in_vmdk=$in_raw.vmdk

# ---- timing -----------------------------------------------------------------

# "WALL CPU" seconds for one run of "$@": wall time including a sync (both
# tools then pay for getting their output to disk), CPU = user + system of
# the tool (steadier on a loaded machine).  Output files are removed before
# and after.
time_one()
{
	local out=$1 t0 t1 cpu
	shift
	rm -f "$out" "${out%.*}"-*.vmdk
	sync
	t0=$(date +%s.%N)
	cpu=$( { TIMEFORMAT='%U %S'; time "$@" >/dev/null 2>"$dir/tool.err" || echo FAILED; } 2>&1 )
	sync
	t1=$(date +%s.%N)
	if [[ $cpu == *FAILED* ]]; then
		echo "bench: failed: $*" >&2
		cat "$dir/tool.err" >&2
		exit 1
	fi
	rm -f "$out" "${out%.*}"-*.vmdk
	echo "$t0 $t1 $cpu" | awk '{ printf "%.2f %.2f\n", $2 - $1, $3 + $4 }'
}

# "WALL CPU": the medians of `runs` timings.
time_median()
{
	local out=$1 i all
	shift
	all=$(for ((i = 0; i < runs; i++)); do time_one "$out" "$@"; done)
	echo "$(median 1 <<<"$all") $(median 2 <<<"$all")"
}

# Median of column N of stdin.
median()
{
	awk -v n="$1" '{ print $n }' | sort -n |
		awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

cat "$in_raw" "$in_vmdk" >/dev/null # warm the page cache

row()
{
	local name=$1 in=$2 out=$3 vd_args=$4 q_args=$5 vw vc qw qc
	# shellcheck disable=SC2086 # the args strings are word lists
	read -r vw vc < <(time_median "$out" "$vdelta" convert $vd_args "$in" "$out")
	# shellcheck disable=SC2086
	read -r qw qc < <(time_median "$out" qemu-img convert $q_args "$in" "$out")
	[[ "$vw $vc $qw $qc" =~ ^[0-9.]+\ [0-9.]+\ [0-9.]+\ [0-9.]+$ ]] ||
		{ echo "bench: $name: a conversion failed" >&2; exit 1; }
	printf '| %-31s | %6s | %6s | %5s | %6s | %6s | %5s |\n' "$name" \
		"$vw" "$qw" "$(awk -v a="$qw" -v b="$vw" 'BEGIN { printf "%.2f", a / b }')" \
		"$vc" "$qc" "$(awk -v a="$qc" -v b="$vc" 'BEGIN { printf "%.2f", a / b }')"
}

echo
echo "input: $size_mib MiB virtual, $data_mib MiB data in 1 MiB chunks (seed $seed); median of $runs runs"
echo "vdelta: $("$vdelta" --version)   qemu-img: $(qemu-img --version | head -n 1)"
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $dir on $(df -P "$dir" | awk 'NR == 2 { print $1 }')"
echo "wall = until the output is synced; cpu = user + system of the tool; x = qemu-img / vdelta"
echo
printf '| %-31s | %6s | %6s | %5s | %6s | %6s | %5s |\n' "conversion" \
	"vdelta" "qemu" "x" "vdelta" "qemu" "x"
printf '| %-31s | %6s | %6s | %5s | %6s | %6s | %5s |\n' "" \
	"wall s" "wall s" "" "cpu s" "cpu s" ""
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "---------------------------------" "--------" "--------" "-------" "--------" "--------" "-------"
row "raw -> vmdk (monolithicSparse)" "$in_raw" out.vmdk \
	"-O vmdk -t monolithicSparse" "-f raw -O vmdk -o subformat=monolithicSparse"
row "raw -> vmdk (streamOptimized)" "$in_raw" out.vmdk \
	"-O vmdk -t streamOptimized" "-f raw -O vmdk -o subformat=streamOptimized"
row "vmdk (monolithicSparse) -> raw" "$in_vmdk" out.raw \
	"-f vmdk -O raw" "-f vmdk -O raw"
