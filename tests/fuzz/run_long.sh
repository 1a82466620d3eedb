#!/usr/bin/env bash
# run_long.sh — long libFuzzer runs of every fuzz target (test layer).
#
# Builds each target in tests/fuzz/ with clang -fsanitize=fuzzer,address,
# undefined, seeds it with tests/fuzz/seeds, the shared corpus (when
# ../shared exists) and the target's generated seeds, and runs it for
# SECONDS of wall time with JOBS workers.  Memory per input is capped
# (-rss_limit_mb / -malloc_limit_mb) so an input that makes the library
# allocate what a header claims is a finding, like a crash or a hang
# (-timeout, 60 s of wall time for one input: generous, because a loaded
# machine starves a niced fuzzer and a unit of 0.2 s CPU can take 20 s).  Prints one summary line per target: CPU seconds used, runs,
# findings; exits 1 when any target found something (the inputs are left in
# the target's artifact folder under OUT).
#
# usage: tests/fuzz/run_long.sh [-s SECONDS] [-j JOBS] [-o OUT] [TARGET...]
#   defaults: 600 s, 1 job, OUT=/tmp/vdelta-fuzz-long, every target
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
secs=600 jobs=1 out=/tmp/vdelta-fuzz-long
while getopts "s:j:o:" opt; do
	case $opt in
	s) secs=$OPTARG ;;
	j) jobs=$OPTARG ;;
	o) out=$OPTARG ;;
	*) echo "usage: $0 [-s SECONDS] [-j JOBS] [-o OUT] [TARGET...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in "$src"/tests/fuzz/fuzz_*.c; do
		t=$(basename "$f" .c)
		[ "$t" = fuzz_main ] || targets+=("$t")
	done
fi
command -v clang >/dev/null || { echo "run_long: clang is needed (apt-get install clang)" >&2; exit 2; }

lib_src=()
for f in "$src"/common/common*.c "$src"/vmdk/vmdk_*.c "$src"/chain/chain_*.c \
	"$src"/group/group*.c; do
	lib_src+=("$f")
done
cflags=(-g -O1 -std=gnu11 -D_FILE_OFFSET_BITS=64
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	-I"$src/common" -I"$src/vmdk" -I"$src/chain" -I"$src/group" -I"$src/tests/fuzz")
mkdir -p "$out"
status=0
for t in "${targets[@]}"; do
	dir=$out/$t
	mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/gen"
	clang "${cflags[@]}" "$src/tests/fuzz/$t.c" "${lib_src[@]}" \
		-lz -lzstd -lxxhash -lpthread -o "$dir/$t"
	# the generated seeds come from the regression driver's -g
	clang -g -O1 -std=gnu11 -D_FILE_OFFSET_BITS=64 \
		-I"$src/common" -I"$src/vmdk" -I"$src/chain" -I"$src/group" -I"$src/tests/fuzz" \
		"$src/tests/fuzz/$t.c" "$src/tests/fuzz/fuzz_main.c" "${lib_src[@]}" \
		-lz -lzstd -lxxhash -lpthread -o "$dir/$t-seeds"
	"$dir/$t-seeds" -g "$dir/gen"
	seeds=("$src/tests/fuzz/seeds" "$dir/gen")
	[ -d "$src/../shared/corpus" ] && seeds+=("$src/../shared/corpus")
	t0=$SECONDS
	rc=0
	# ASan's allocator limit turns "allocates what the header says" into a
	# finding instead of an OOM of the machine.  CPU is user+system of the
	# fuzzer and its workers (bash's `time` waits for them all).
	TIMEFORMAT='%U %S'
	# libFuzzer writes its worker logs (fuzz-N.log) into the current folder
	{ time (cd "$dir" && ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
		"$dir/$t" "$dir/corpus" "${seeds[@]}" \
		-max_len=1048576 -rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=60 \
		-max_total_time="$secs" -jobs="$jobs" -workers="$jobs" \
		-artifact_prefix="$dir/artifacts/" -print_final_stats=1 \
		>"$dir/log" 2>&1) || rc=$?; } 2>"$dir/cpu"
	cpu=$(awk '{printf "%.0f", $1 + $2}' "$dir/cpu")
	# with -jobs the worker logs (fuzz-N.log) hold the statistics, and the
	# main log repeats them: count the workers' when there are any
	logs=("$dir"/fuzz-*.log)
	[ -e "${logs[0]}" ] || logs=("$dir/log")
	runs=$(cat "${logs[@]}" | awk '/stat::number_of_executed_units/ {n += $2} END {print n + 0}')
	# slow-unit-* files are libFuzzer's notes of slow inputs, not findings
	found=$(find "$dir/artifacts" -type f ! -name 'slow-unit-*' | wc -l)
	echo "$t: $((SECONDS - t0)) s wall, $cpu s CPU, $runs runs, $found findings," \
	     "exit $rc, corpus $(find "$dir/corpus" -type f | wc -l) inputs"
	[ "$found" -eq 0 ] && [ "$rc" -eq 0 ] || status=1
done
exit $status
