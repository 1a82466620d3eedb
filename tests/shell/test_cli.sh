#!/bin/bash
# test_cli.sh — the vdelta command line: help and exit codes, create of every
# subformat, info --json, convert round trips, refusal to overwrite, check.
# Oracles: qemu-img (info, compare, check, convert), python3 -m json.tool,
# cmp; the shared corpus when present.  Usage: test_cli.sh [PATH-TO-vdelta]
# (or VDELTA=..., SOURCE_DIR=... as tests/shell/meson.build sets); 77 skips.
set -eu

VDELTA=${1:-${VDELTA:-}}
if [ -z "$VDELTA" ] || [ ! -x "$VDELTA" ]; then
	echo "SKIP: no vdelta binary (pass its path or set VDELTA)"
	exit 77
fi
# the system python starts in 0.1 s; a pyenv shim can take 2 s
PY=$(command -v /usr/bin/python3 || command -v python3 || true)
[ -n "$PY" ] || { echo "SKIP: python3 missing"; exit 77; }
for tool in qemu-img cmp; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
SOURCE_DIR=${SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CORPUS=$SOURCE_DIR/../shared/corpus

T=$(mktemp -d /tmp/vdelta-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
SUBFORMATS="monolithicSparse twoGbMaxExtentSparse monolithicFlat twoGbMaxExtentFlat streamOptimized"
failures=0

fail() {
	echo "FAIL: $*" >&2
	failures=$((failures + 1))
}

# run WANT_RC CMD...: run with stdout/stderr in $T/out, $T/err; check rc
run() {
	local want=$1 rc=0
	shift
	"$@" >"$T/out" 2>"$T/err" || rc=$?
	if [ "$rc" != "$want" ]; then
		fail "'$*' exited $rc, expected $want"
		sed 's/^/    stderr: /' "$T/err" >&2
		return 1
	fi
}

# json_get FILE EXPR: evaluate a python expression over the parsed JSON j
json_get() {
	"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

qemu_json() {
	qemu-img info --output=json "$1" | json_get /dev/stdin "$2"
}

# ---- help, version, exit codes -------------------------------------------------

# Built from a git tree, --version names HEAD's commit, "-dirty" when
# tracked files differ (git's own answers are the oracle); test_package.sh
# checks the build without git.
test_version_commit() {
	local head want
	[ "$(git -C "$SOURCE_DIR" rev-parse --show-toplevel 2>/dev/null)" -ef "$SOURCE_DIR" ] ||
		return 0
	head=$(git -C "$SOURCE_DIR" rev-parse HEAD)
	want="vdelta .* (commit ${head:0:12}"
	[ -z "$(git -C "$SOURCE_DIR" status --porcelain --untracked-files=no)" ] ||
		want="$want-dirty"
	grep -qx "$want)" "$T/out" || fail "--version: $(cat "$T/out"), HEAD is $head"
}
test_help() {
	run 0 "$VDELTA" help && grep -q '^  convert ' "$T/out" || fail "help lists convert"
	run 0 "$VDELTA" --help && grep -q '^  create ' "$T/out" || fail "--help"
	run 0 "$VDELTA" help info && grep -q 'Usage: vdelta info' "$T/out" || fail "help info"
	for c in create info convert check; do
		run 0 "$VDELTA" $c --help && grep -q "Usage: vdelta $c" "$T/out" ||
			fail "$c --help"
	done
	run 0 "$VDELTA" --version && grep -Eq '^vdelta [0-9]+\.[0-9]+' "$T/out" ||
		fail "--version"
	test_version_commit
	run 2 "$VDELTA" || true
	run 2 "$VDELTA" no-such-command || true
	run 2 "$VDELTA" help no-such-command || true
	run 2 "$VDELTA" create --no-such-option -s 1M "$T/x.vmdk" || true
	run 2 "$VDELTA" create -s || true                       # missing argument
	run 2 "$VDELTA" create "$T/x.vmdk" || true              # missing -s
	run 2 "$VDELTA" create -s 1M || true                     # missing FILE
	run 2 "$VDELTA" create -s 1X "$T/x.vmdk" || true        # bad size
	run 2 "$VDELTA" create -s 1M -t noSuchFormat "$T/x.vmdk" || true
	run 2 "$VDELTA" convert "$T/only-one" || true
	run 2 "$VDELTA" convert -O qcow2 "$T/a" "$T/b" || true
	run 2 "$VDELTA" info || true
	run 2 "$VDELTA" check --bogus "$T/x" || true
	[ ! -e "$T/x.vmdk" ] || fail "a usage error created a file"
	run 1 "$VDELTA" info "$T/missing.vmdk" &&
		grep -q "missing.vmdk" "$T/err" || fail "info error names the file"
	run 1 "$VDELTA" check "$T/missing.vmdk" || true
	run 1 "$VDELTA" convert "$T/missing.raw" "$T/out.vmdk" || true
	[ ! -e "$T/out.vmdk" ] || fail "failed convert left its output"
}

# ---- create + info --json ---------------------------------------------------------
test_create_info() {
	local sf f size=$((100 * 1024 * 1024))
	for sf in $SUBFORMATS; do
		f="$T/c-$sf.vmdk"
		run 0 "$VDELTA" create -s 100M -t $sf "$f" || continue
		[ "$(qemu_json "$f" "j['virtual-size']")" = $size ] ||
			fail "$sf: qemu-img disagrees on the virtual size"
		[ "$(qemu_json "$f" "j['format']")" = vmdk ] || fail "$sf: qemu-img format"
		run 0 "$VDELTA" info --json "$f" || continue
		"$PY" -m json.tool "$T/out" >/dev/null || fail "$sf: info --json does not parse"
		[ "$(json_get "$T/out" "j['virtual-size']")" = $size ] || fail "$sf: virtual-size"
		[ "$(json_get "$T/out" "j['create-type']")" = $sf ] || fail "$sf: create-type"
		case $sf in
		*Sparse | stream*) [ "$(json_get "$T/out" "j['allocated']")" = 0 ] ||
			fail "$sf: empty disk has allocated grains" ;;
		esac
		[ "$(json_get "$T/out" "sum(e['size'] for e in j['extents'])")" = $size ] ||
			fail "$sf: extents do not cover the capacity"
		run 0 "$VDELTA" info "$f" || fail "$sf: text info"
		run 0 "$VDELTA" check "$f" || fail "$sf: check of a new disk"
		case $sf in
		*Sparse) qemu-img check "$f" >/dev/null || fail "$sf: qemu-img check" ;;
		esac
	done
	run 0 "$VDELTA" create -s 1G --adapter lsilogic --hwversion 7 --zeroed-grain "$T/opt.vmdk" &&
		run 0 "$VDELTA" info --json "$T/opt.vmdk" &&
		[ "$(json_get "$T/out" "j['descriptor']['ddb.adapterType']")" = lsilogic ] ||
		fail "create --adapter"
	# a file name that needs escaping in JSON (a descriptor cannot hold '"')
	f="$T/we\\ird	ta\bb é.vmdk"
	run 0 "$VDELTA" create -s 1M "$f" && run 0 "$VDELTA" info --json "$f" &&
		[ "$(json_get "$T/out" "j['filename']")" = "$f" ] || fail "JSON escaping"
}

# ---- overwrite refusal ---------------------------------------------------------------
test_no_overwrite() {
	echo "precious" >"$T/keep.vmdk"
	run 1 "$VDELTA" create -s 1M "$T/keep.vmdk" || true
	run 1 "$VDELTA" convert "$T/c-monolithicSparse.vmdk" "$T/keep.vmdk" || true
	run 1 "$VDELTA" convert -O raw "$T/c-monolithicSparse.vmdk" "$T/keep.vmdk" || true
	[ "$(cat "$T/keep.vmdk")" = precious ] || fail "an existing file was overwritten"
}

# ---- convert round trips ----------------------------------------------------------------
# 64 MiB + 1 sector: random runs, a run of written zeros, holes, an odd tail.
make_raw() {
	truncate -s $((64 * 1024 * 1024 + 512)) "$1"
	head -c $((3 * 1024 * 1024)) /dev/urandom | dd of="$1" bs=1M seek=1 conv=notrunc status=none
	head -c 4096 /dev/urandom | dd of="$1" bs=4096 seek=3000 conv=notrunc status=none
	head -c 100000 /dev/urandom |
		dd of="$1" bs=100000 seek=$((40 * 1024 * 1024 + 7)) oflag=seek_bytes conv=notrunc status=none
	dd if=/dev/zero of="$1" bs=1M seek=20 count=4 conv=notrunc status=none
	head -c 512 /dev/urandom | dd of="$1" bs=512 seek=$((128 * 1024)) conv=notrunc status=none
}

test_convert() {
	local sf v r in="$T/in.raw"
	make_raw "$in"
	for sf in $SUBFORMATS; do
		v="$T/rt-$sf.vmdk" r="$T/rt-$sf.raw"
		run 0 "$VDELTA" convert -t $sf "$in" "$v" || continue
		qemu-img compare -q -f raw -F vmdk "$in" "$v" || fail "$sf: qemu-img compare raw vs vmdk"
		case $sf in
		*Sparse | stream*) qemu-img check -q "$v" || fail "$sf: qemu-img check of convert output" ;;
		esac
		run 0 "$VDELTA" convert -O raw "$v" "$r" || continue
		cmp "$in" "$r" || fail "$sf: raw -> vmdk -> raw differs"
	done
	# raw -> raw keeps holes: no more blocks than the input
	run 0 "$VDELTA" convert -f raw -O raw "$in" "$T/copy.raw" && cmp "$in" "$T/copy.raw" ||
		fail "raw -> raw"
	[ "$(stat -c %b "$T/copy.raw")" -le "$(stat -c %b "$in")" ] || fail "raw -> raw not sparse"
	# a qemu-written VMDK reads back the same
	qemu-img convert -O vmdk "$in" "$T/q.vmdk"
	run 0 "$VDELTA" convert "$T/q.vmdk" "$T/q.raw" && cmp "$in" "$T/q.raw" ||
		fail "qemu vmdk -> raw"
	# progress: silent when stderr is not a terminal, shown with -p
	run 0 "$VDELTA" convert "$in" "$T/np.vmdk" && [ ! -s "$T/err" ] ||
		fail "convert printed on a non-terminal"
	run 0 "$VDELTA" convert -p "$in" "$T/p.vmdk" && grep -q '100.00/100%' "$T/err" ||
		fail "convert -p shows no progress"
}

# ---- corpus (skipped when absent) ---------------------------------------------------
test_corpus() {
	local f n=0
	[ -d "$CORPUS" ] || { echo "note: corpus not found, skipped"; return 0; }
	for f in vmdk-rs/monolithicSparse.vmdk vmdk-rs/twoGbMaxExtentFlat.vmdk \
		vmdk-rs/streamOptimized.vmdk dfvfs/ext2.vmdk plaso/image.vmdk; do
		[ -f "$CORPUS/$f" ] || continue
		n=$((n + 1))
		qemu-img convert -O raw "$CORPUS/$f" "$T/corpus-ref-$n.raw"
		run 0 "$VDELTA" convert "$CORPUS/$f" "$T/corpus-$n.raw" || continue
		cmp "$T/corpus-ref-$n.raw" "$T/corpus-$n.raw" || fail "corpus $f content"
		run 0 "$VDELTA" info --json "$CORPUS/$f" &&
			"$PY" -m json.tool "$T/out" >/dev/null || fail "corpus $f info --json"
		run 0 "$VDELTA" check "$CORPUS/$f" || fail "corpus $f check"
	done
	[ $n -gt 0 ] || fail "corpus present but none of its files found"
	for f in qemu-iotests-sample_images/afl9.vmdk go-vmdk-parser/vmdk-invalid.img; do
		[ -f "$CORPUS/$f" ] || continue
		run 1 "$VDELTA" info "$CORPUS/$f" || fail "negative corpus $f: info"
		[ -s "$T/err" ] || fail "negative corpus $f: no message"
		run 1 "$VDELTA" convert -f vmdk "$CORPUS/$f" "$T/neg.raw" || true
		[ ! -e "$T/neg.raw" ] || fail "negative corpus $f: output left behind"
	done
}

# ---- check ----------------------------------------------------------------------------
test_check() {
	local v="$T/rt-monolithicSparse.vmdk"
	[ -f "$v" ] || { fail "check: no converted disk to check"; return; }
	run 0 "$VDELTA" check "$v" && grep -q "0 errors, 0 warnings" "$T/out" ||
		fail "check of a clean file"
	run 0 "$VDELTA" check --json "$v" && "$PY" -m json.tool "$T/out" >/dev/null &&
		[ "$(json_get "$T/out" "j['errors']")" = 0 ] || fail "check --json"
	# allocated = the 64 KiB grains qemu-img map reports as data
	[ "$(json_get "$T/out" "j['allocated']")" = "$(qemu-img map --output=json "$v" |
		json_get /dev/stdin "len({g for e in j if e['data'] for g in
			range(e['start'] >> 16, (e['start'] + e['length'] + 65535) >> 16)}) << 16")" ] ||
		fail "check allocated differs from qemu-img map"
	# point the first used grain table entry past the end of the file
	# (gdOffset at header byte 56): both vdelta and qemu-img must object
	cp "$v" "$T/bad.vmdk"
	"$PY" - "$T/bad.vmdk" <<'EOF'
import struct, sys
f = open(sys.argv[1], 'r+b')
gd = struct.unpack_from('<Q', f.read(512), 56)[0]
f.seek(gd * 512)
gt = struct.unpack('<I', f.read(4))[0]
f.seek(gt * 512)
i = next(k for k, v in enumerate(struct.unpack('<512I', f.read(2048))) if v)
f.seek(gt * 512 + 4 * i)
f.write(struct.pack('<I', 0x7fffff00))
EOF
	! qemu-img check -q "$T/bad.vmdk" 2>/dev/null || fail "oracle: qemu-img accepts bad.vmdk"
	run 1 "$VDELTA" check "$T/bad.vmdk" && grep -q "^$T/bad.vmdk: " "$T/out" ||
		fail "check does not report a grain past end of file"
	run 1 "$VDELTA" check --json "$T/bad.vmdk" &&
		[ "$(json_get "$T/out" "j['errors'] > 0 and len(j['problems']) > 0")" = True ] ||
		fail "check --json of a corrupt file"
}

test_help
test_create_info
test_no_overwrite
test_convert
test_corpus
test_check

if [ $failures -ne 0 ]; then
	echo "test_cli: $failures failure(s)"
	exit 1
fi
echo "test_cli: ok"
