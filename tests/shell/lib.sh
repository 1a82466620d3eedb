# lib.sh — helpers sourced by the shell integration tests (tests layer).
#
# Owns: skipping (exit 77) when an oracle or ../shared is missing, the
# per-test temporary directory, pass/fail bookkeeping, the seeded random
# write lists that vdio and qemu-io both replay, and the thin wrappers that
# spell vdelta's command lines in one place.
#
# Environment (set by tests/shell/meson.build, or by hand):
#   VDELTA, VDIO, SOURCE_DIR, BUILD_DIR
#   SEED        seed for the random write lists (default fixed)
#   KEEP_TMP=1  keep the temporary directory
# shellcheck shell=bash

set -u
export LC_ALL=C

: "${SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${BUILD_DIR:=$SOURCE_DIR/build}"
: "${VDELTA:=$BUILD_DIR/tools/vdelta}"
: "${VDIO:=$BUILD_DIR/tests/tools/vdio}"
: "${SEED:=20261124}"
# Debian's python3 (setup.sh installs it); a pyenv shim on PATH costs seconds
# per call.
if [ -z "${PYTHON:-}" ]; then
	PYTHON=python3
	[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
fi
SHARED_DIR=$(cd "$SOURCE_DIR/.." && pwd)/shared

t_name=$(basename "$0" .sh)
t_failures=0
t_checks=0

# ---- outcome --------------------------------------------------------------

skip()
{
	echo "SKIP: $t_name: $*"
	exit 77
}

# A failed check is reported and counted; the test goes on so one run
# shows every failure.  `finish` turns the count into the exit status.
fail()
{
	echo "FAIL: $*" >&2
	t_failures=$((t_failures + 1))
	t_checks=$((t_checks + 1))
}

pass()
{
	echo "ok: $*"
	t_checks=$((t_checks + 1))
}

die()
{
	echo "ERROR: $t_name: $*" >&2
	exit 1
}

finish()
{
	echo "$t_name: $t_checks checks, $t_failures failed"
	[ "$t_failures" -eq 0 ] || exit 1
	exit 0
}

need()
{
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || skip "$tool not installed"
	done
}

need_shared()
{
	[ -f "$SHARED_DIR/corpus/INDEX.md" ] || skip "no corpus at $SHARED_DIR"
}

# vdelta is the thing under test: absent means the build is broken.
need_vdelta()
{
	[ -x "$VDELTA" ] || die "vdelta not built at $VDELTA"
}

need_vdio()
{
	[ -x "$VDIO" ] || die "vdio not built at $VDIO"
}

# ---- temporary directory --------------------------------------------------

T=$(mktemp -d "${TMPDIR:-/tmp}/vdelta-$t_name.XXXXXX") || die "mktemp failed"
t_cleanup()
{
	netns_cleanup
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		echo "kept $T"
	else
		rm -rf "$T"
	fi
}
trap t_cleanup EXIT

# ---- a second host: network namespaces --------------------------------------
# netns_pair A B: two namespaces (named vdt-PID-A, vdt-PID-B in NETNS_A,
# NETNS_B) joined by a veth pair with the addresses NETNS_ADDR_A and
# NETNS_ADDR_B (10.231.N.1 and .2/24, N from the PID: one test's pair does
# not meet another's), lo up in both.  Everything is removed at exit, even
# on failure (t_cleanup calls netns_cleanup).  netns_need skips the test
# (exit 77) where namespaces cannot be made (not root, no CAP_SYS_ADMIN, no
# ip).  netns_run A|B CMD... runs CMD in one of them.
NETNS_MADE=()

netns_need()
{
	command -v ip >/dev/null 2>&1 || skip "ip (iproute2) not installed"
	local probe=vdt-$$-probe
	ip netns add "$probe" 2>/dev/null || skip "cannot make network namespaces here"
	ip netns del "$probe"
}

netns_pair()
{
	local n=$(($$ % 250 + 2))
	NETNS_A=vdt-$$-$1
	NETNS_B=vdt-$$-$2
	NETNS_ADDR_A=10.231.$n.1
	NETNS_ADDR_B=10.231.$n.2
	ip netns add "$NETNS_A" && NETNS_MADE+=("$NETNS_A") &&
		ip netns add "$NETNS_B" && NETNS_MADE+=("$NETNS_B") &&
		ip link add "vdt$$a" netns "$NETNS_A" type veth peer name "vdt$$b" netns "$NETNS_B" &&
		ip -n "$NETNS_A" addr add "$NETNS_ADDR_A/24" dev "vdt$$a" &&
		ip -n "$NETNS_B" addr add "$NETNS_ADDR_B/24" dev "vdt$$b" &&
		ip -n "$NETNS_A" link set lo up && ip -n "$NETNS_B" link set lo up &&
		ip -n "$NETNS_A" link set "vdt$$a" up && ip -n "$NETNS_B" link set "vdt$$b" up ||
		die "netns_pair: could not set up $NETNS_A and $NETNS_B"
}

netns_run()
{
	local ns
	case $1 in A) ns=$NETNS_A ;; B) ns=$NETNS_B ;; *) ns=$1 ;; esac
	shift
	ip netns exec "$ns" "$@"
}

# Remove every namespace this test made (their veth ends go with them).
netns_cleanup()
{
	local ns
	for ns in "${NETNS_MADE[@]}"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	NETNS_MADE=()
}

# ---- running things -------------------------------------------------------

# Run a command, logging it; its output goes to $T/last.out / last.err.
# Returns its exit status.
run()
{
	local cmd="$*"
	[ ${#cmd} -le 300 ] || cmd="${cmd:0:300}... (${#cmd} chars)"
	echo "+ $cmd" >&2
	local t0=${EPOCHREALTIME/[.,]/}
	"$@" </dev/null >"$T/last.out" 2>"$T/last.err"
	local rc=$? us=$((${EPOCHREALTIME/[.,]/} - t0))
	# slow steps show their time, to keep the suite fast
	[ $us -lt 2000000 ] || echo "  ($((us / 1000000)).$((us / 100000 % 10)) s)" >&2
	if [ $rc -ne 0 ]; then
		echo "  exit $rc" >&2
		tail -n 20 "$T/last.out" | sed 's/^/  | /' >&2
		sed 's/^/  | /' "$T/last.err" >&2
	fi
	sanitizer_clean "$1"
	return $rc
}

# Fail on any ASan/UBSan/LSan report in $T/last.err (a leak on an error
# path exits 23, which would otherwise pass for a clean refusal).
sanitizer_clean()
{
	if grep -qE '(Address|Leak|Undefined)Sanitizer|runtime error:' "$T/last.err"; then
		sed 's/^/  | /' "$T/last.err" >&2
		fail "sanitizer report from $(basename "$1")"
	fi
}

# For tests that start daemons: a detached daemon's stderr is /dev/null,
# so sanitizer reports (ASan build) go to files in $T instead, and finish
# fails on any.
sanitizer_to_files()
{
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$T/sanitizer"
	export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$T/sanitizer"
	eval "lib_finish() $(declare -f finish | tail -n +2)"
	finish()
	{
		local f
		for f in "$T"/sanitizer.*; do
			[ -e "$f" ] || continue
			sed 's/^/  | /' "$f" >&2
			fail "sanitizer report in $(basename "$f")"
		done
		lib_finish
	}
}

# pid_gone PID: exited (gone, or a zombie its reaper has not collected: a
# detached daemon's parent is init or a subreaper).
pid_gone()
{
	local st
	st=$(sed -n 's/^[0-9]* (.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
	[ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}

# wait_gone PID: wait up to 10 s for pid_gone.
wait_gone()
{
	local i
	for i in $(seq 200); do
		pid_gone "$1" && return 0
		sleep 0.05
	done
	return 1
}

# rss_kib PID: the process's resident memory, KiB.
rss_kib()
{
	sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"
}

# kill_in_flow PID WRITER-PID LOG: kill -9 the server PID in full flow of
# the crash tests' writer (after 20 more acknowledged writes in LOG, plus
# 0-0.3 s, from bash's seeded RANDOM), then reap the writer and wait until
# the server is gone.
kill_in_flow()
{
	local want=$(($(wc -l <"$3") + 20))
	for _ in $(seq 200); do
		[ "$(wc -l <"$3")" -lt $want ] || break
		sleep 0.05
	done
	sleep "0.$((RANDOM % 4))"
	kill -9 "$1"
	wait "$2"
	wait_gone "$1"
}

# checks_after_kill ROUND TOP: both checkers on the chain a killed server
# wrote (the unclean flag is a warning after a kill, exit 1; corruption is
# an error).
checks_after_kill()
{
	local rc
	run "$VDELTA" check "$2"
	grep -q ": 0 errors," "$T/last.out" || fail "round $1: vdelta check: $(tail -3 "$T/last.out")"
	run qemu-img check -q "$2"
	rc=$?
	[ $rc = 0 ] || [ $rc = 3 ] || fail "round $1: qemu-img check exit $rc"
}

# Check that a command succeeds; `what` names it in the report.
expect_ok()
{
	local what=$1
	shift
	if run "$@"; then
		pass "$what"
	else
		fail "$what: $(basename "$1") ${*:2:3}... failed"
		return 1
	fi
}

# same_content A B [--data-of-b]: the two files hold the same bytes (holes
# read as zeros).  Like cmp, but reads only the ranges that are data in
# either file (SEEK_DATA), so multi-GiB sparse disks compare in a moment.
# --data-of-b compares only B's data ranges (rounded out to 1 MiB): for an
# A without SEEK_DATA (a FUSE file) that is too slow to read whole.
same_content()
{
	"$PYTHON" - "$@" <<'PY'
import errno, os, sys

def data_ranges(fd, size):
    off, out = 0, []
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            return [(0, size)]  # no SEEK_DATA (FUSE): all of it
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        off = end
    return out

fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:3]]
sizes = [os.fstat(fd).st_size for fd in fds]
if sizes[0] != sizes[1]:
    sys.exit("%s: %d bytes, %s: %d bytes" % (sys.argv[1], sizes[0], sys.argv[2], sizes[1]))
if sys.argv[3:] == ["--data-of-b"]:
    M = 1 << 20
    ranges = [(s // M * M, min(-(-e // M) * M, sizes[1])) for s, e in data_ranges(fds[1], sizes[1])]
else:
    ranges = sorted(data_ranges(fds[0], sizes[0]) + data_ranges(fds[1], sizes[1]))
done = 0
for start, end in ranges:
    start = max(start, done)
    while start < end:
        n = min(end - start, 1 << 20)
        a, b = (os.pread(fd, n, start) for fd in fds)
        if a != b:
            i = next(i for i in range(n) if a[i:i + 1] != b[i:i + 1])
            sys.exit("%s %s differ at byte offset %d" % (*sys.argv[1:3], start + i))
        start += n
    done = max(done, end)
PY
}

# ---- vdelta's command lines (one place to change if the CLI changes) ------

# vd_create FILE SIZE SUBFORMAT [vdelta create option...]
vd_create()
{
	local file=$1 size=$2 sf=$3
	shift 3
	run "$VDELTA" create -s "$size" -t "$sf" "$@" "$file"
}

# vd_to_raw IN OUT (IN must be read as a VMDK, never guessed to be raw)
vd_to_raw()
{
	run "$VDELTA" convert -f vmdk -O raw "$1" "$2"
}

# vd_to_vmdk IN OUT SUBFORMAT
vd_to_vmdk()
{
	run "$VDELTA" convert -O vmdk -t "$3" "$1" "$2"
}

# ---- random write lists ---------------------------------------------------

# R = a 30-bit random number from bash's seeded generator (a variable, not
# $(...): a subshell would reseed RANDOM and break determinism).
rnd30()
{
	R=$(((RANDOM << 15) | RANDOM))
}

# gen_writes SIZE COUNT [BOUNDARY...] > list
# Prints qemu-io commands, one per line, covering: sub-grain writes,
# writes crossing grain boundaries, multi-grain writes, unaligned byte
# writes, zero writes (whole grains and partial), a write at the very end
# of the disk, and one across each BOUNDARY (extent boundaries, bytes).
# Deterministic for a given SEED.  Offsets and lengths are in bytes.
gen_writes()
{
	local size=$1 count=$2 i kind off len pat max R
	local grain=65536 nr_grains=$(( (size + 65535) / 65536 ))
	shift 2
	RANDOM=$SEED
	for ((i = 0; i < count; i++)); do
		kind=$((RANDOM % 8))
		printf -v pat '0x%02x' $((RANDOM % 255 + 1))
		case $kind in
		0|1) # inside one grain, sector aligned
			rnd30
			off=$(( R % nr_grains * grain + RANDOM % 120 * 512 ))
			len=$(( (RANDOM % (128 - off % grain / 512) + 1) * 512 )) ;;
		2|3) # across a grain boundary
			rnd30
			off=$(( (R % (nr_grains - 1) + 1) * grain - (RANDOM % 127 + 1) * 512 ))
			len=$(( (RANDOM % 300 + 2) * 512 )) ;;
		4) # several whole grains and a bit
			rnd30
			off=$(( R % nr_grains * grain ))
			len=$(( (RANDOM % 16 + 1) * grain + RANDOM % 2 * 4096 )) ;;
		5) # unaligned bytes
			rnd30
			off=$(( R % (size - 1) ))
			len=$(( RANDOM % 9000 + 1 )) ;;
		6) # zeros over whole grains (zeroed grains where allowed)
			rnd30
			off=$(( R % nr_grains * grain ))
			len=$(( (RANDOM % 4 + 1) * grain ))
			pat= ;;
		7) # zeros, partial grain
			rnd30
			off=$(( R % (size / 512) * 512 ))
			len=$(( (RANDOM % 200 + 1) * 512 ))
			pat= ;;
		esac
		max=$((size - off))
		[ "$len" -le "$max" ] || len=$max
		[ "$len" -gt 0 ] || continue
		if [ -n "$pat" ]; then
			echo "write -P $pat $off $len"
		else
			echo "write -z $off $len"
		fi
	done
	echo "write -P 0xee $((size - 3 * 512)) $((3 * 512))"
	for b in "$@"; do
		[ "$b" -lt "$size" ] || continue
		echo "write -P 0x5a $((b - 70000)) 140000"
		echo "write -z $((b - 65536)) 131072"
		echo "write -P 0xa5 $((b - 512)) 1024"
	done
}

# apply_writes TOOL IMAGE LIST: replay a write list with qemu-io (on a VMDK
# or, qemu-io-raw, a raw file or an NBD URI; QEMU_IO_WRAP, words put before
# qemu-io, e.g. "ip netns exec NS") or vdio,
# many commands per process (both tools take the same -c syntax).
apply_writes()
{
	local tool=$1 img=$2 list=$3 args=() line n=0
	local -a base
	case $tool in
	qemu-io) base=(qemu-io -f vmdk) ;;
	qemu-io-raw) base=(${QEMU_IO_WRAP:-} qemu-io -f raw) ;; # an nbd:// URI too
	vdio) base=("$VDIO" -w) ;;
	*) die "apply_writes: unknown tool $tool" ;;
	esac
	while IFS= read -r line; do
		args+=(-c "$line")
		n=$((n + 1))
		if [ $n -eq 200 ]; then
			run "${base[@]}" "${args[@]}" "$img" || return 1
			args=()
			n=0
		fi
	done <"$list"
	[ $n -eq 0 ] || run "${base[@]}" "${args[@]}" "$img"
}
