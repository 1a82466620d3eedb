#!/bin/bash
# bench_pack.sh — shipping clones: vdelta pack + unpack side by side with
# rsync, zstd and a streamOptimized export, in one run (bench layer; not a
# test).
#
#   bench/bench_pack.sh [VDELTA]
#     BENCH_DIR   scratch folder (default /tmp/vdelta-bench-pack; the base
#                 image made there is kept and reused by the next run)
#     BENCH_SRC   folder the base's ext4 is made of (default /usr/share)
#     BENCH_SIZE  the base's size (default 2G)
#     CLONES      clones of the group (default 16)
#
# The base: an ext4 image made with `mkfs.ext4 -d BENCH_SRC` (real,
# compressible content), converted to a monolithicSparse base and frozen.
# Each clone is a linked clone of it that writes a few percent of the disk,
# as a VM does: 16 runs of 1 MiB and 400 scattered writes of 4 KiB, all of
# real content (pieces of the files under /usr/lib), each clone its own.
#
# Moving one clone (the other side has the base):
#   vdelta   pack CLONE (its own layer) + unpack into a folder holding the base
#   zstd     zstd -T0 -3 of the clone's layer file, and zstd -d
#   rsync    rsync --sparse of the clone's layer file
#   cp       cp --sparse=always of the clone's layer file
#   stream   vdelta convert -t streamOptimized of the flattened clone
# Moving the whole group (CLONES clones, the base once):
#   vdelta   pack --full of every clone + unpack into an empty folder
#   zstd     tar -S of the base and every layer | zstd -T0 -3, and back
#   rsync    rsync --sparse of the base and every layer
#   cp       cp --sparse=always of the base and every layer
#   stream   a streamOptimized export of each flattened clone
#   ideal    a bundle of the base alone + CLONES single-clone bundles
# Every figure: bytes moved, seconds (writes fsynced: the tools that do not
# fsync get a `sync FILE` of what they wrote), page cache warm.
set -eu
VDELTA=$(realpath "${1:-build/tools/vdelta}")
B=${BENCH_DIR:-/tmp/vdelta-bench-pack}
SRC=${BENCH_SRC:-/usr/share}
SIZE=${BENCH_SIZE:-2G}
N=${CLONES:-16}
mkdir -p "$B"
cd "$B"

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
bytes() { du -cb --apparent-size "$@" | tail -1 | cut -f1; }
warm() { cat "$@" >/dev/null; }

# t VAR CMD...: seconds of CMD into VAR
t()
{
	local var=$1 t0
	shift
	t0=$(now)
	"$@" >/dev/null
	printf -v "$var" '%.2f' "$(secs "$t0" "$(now)")"
}

# ---- the group ----------------------------------------------------------------------------

make_base()
{
	[ -f base.raw ] && return
	echo "making the base: mkfs.ext4 -d $SRC, $SIZE (kept in $B for the next run)" >&2
	mkfs.ext4 -q -F -d "$SRC" base.raw.tmp "$SIZE"
	mv base.raw.tmp base.raw
}

# Real content to write: pieces of the files under /usr/lib, 64 MiB.
make_content()
{
	[ -f content.bin ] && return
	find /usr/lib -type f -size +64k 2>/dev/null | sort | head -400 | xargs cat 2>/dev/null |
		head -c $((64 << 20)) >content.bin
}

# writes I: the qemu-io commands of clone I, its pieces in w/I/
writes()
{
	python3 - "$1" "$(stat -c %s base.raw)" <<'PY'
import os, random, sys
i, size = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(1000 + i)
content = open("content.bin", "rb").read()
os.makedirs("w/%d" % i, exist_ok=True)
def piece(j, n):
    p = "w/%d/%d" % (i, j)
    at = rnd.randrange(0, len(content) - n)
    open(p, "wb").write(content[at:at + n])
    return p
for j in range(16):
    off = rnd.randrange(0, size >> 20) << 20
    print("write -s %s %d %d" % (piece(j, 1 << 20), off, 1 << 20))
for j in range(16, 416):
    off = rnd.randrange(0, size >> 12) << 12
    print("write -s %s %d 4096" % (piece(j, 4096), off))
PY
}

make_group()
{
	local i c args
	[ -f group.done ] && return
	rm -rf g && mkdir g
	"$VDELTA" convert -O vmdk -t monolithicSparse base.raw g/base.vmdk
	for ((i = 1; i <= N; i++)); do
		printf -v c 'g/c%02d.vmdk' "$i"
		"$VDELTA" create --parent g/base.vmdk "$c" # freezes the base
		args=()
		while read -r line; do args+=(-c "$line"); done < <(writes "$i")
		qemu-io -f vmdk "${args[@]}" "$c" >/dev/null
	done
	touch group.done
}

# ---- one clone --------------------------------------------------------------------------------

one()
{
	rm -rf o && mkdir -p o/dst o/dst2 o/rsync
	cp g/base.vmdk o/dst/
	cp g/base.vmdk o/dst2/
	sleep 3 # the copies older than the digest's racy window (group_digest.c D3)
	warm g/base.vmdk g/c01.vmdk
	t P "$VDELTA" pack -T 0 g/c01.vmdk -o o/c01.vdb
	# the first unpack over a base reads it for its digest and records it
	# beside it; the next one over that base takes it from there
	t U "$VDELTA" unpack o/c01.vdb o/dst
	t U2 "$VDELTA" unpack --base o/dst/base.vmdk o/c01.vdb o/dst2
	VB=$(bytes o/c01.vdb)
	HELD=$("$VDELTA" pack --list --json o/c01.vdb | python3 -c 'import json,sys; print(json.load(sys.stdin)["held_bytes"])')
	t Z bash -c 'zstd -q -T0 -3 -c g/c01.vmdk >o/c01.zst && sync o/c01.zst'
	ZB=$(bytes o/c01.zst)
	t ZD bash -c 'zstd -q -d -c o/c01.zst >o/c01.back && sync o/c01.back'
	t R bash -c 'rsync -a --sparse g/c01.vmdk o/rsync/ && sync o/rsync/c01.vmdk'
	RB=$(bytes g/c01.vmdk)
	t C bash -c 'mkdir -p o/cp && cp --sparse=always g/c01.vmdk o/cp/ && sync o/cp/c01.vmdk'
	t S "$VDELTA" convert -O vmdk -t streamOptimized g/c01.vmdk o/c01-stream.vmdk
	sync o/c01-stream.vmdk
	SB=$(bytes o/c01-stream.vmdk)
	"$VDELTA" digest g/c01.vmdk o/dst/c01.vmdk o/dst2/c01.vmdk | cut -d' ' -f1 | uniq | wc -l | grep -qx 1 ||
		{ echo "one clone: the unpacked clone does not read as the original" >&2; exit 1; }
}

# ---- the group --------------------------------------------------------------------------------

all()
{
	local files=(g/base.vmdk g/c*.vmdk) i c
	rm -rf a && mkdir -p a/dst a/rsync a/one
	warm "${files[@]}"
	t AP "$VDELTA" pack -T 0 --full g/c*.vmdk -o a/all.vdb
	t AU "$VDELTA" unpack a/all.vdb a/dst
	AVB=$(bytes a/all.vdb)
	AHELD=$("$VDELTA" pack --list --json a/all.vdb | python3 -c 'import json,sys; print(json.load(sys.stdin)["held_bytes"])')
	t AZ bash -c "tar -cSf - ${files[*]} | zstd -q -T0 -3 -c >a/all.tar.zst && sync a/all.tar.zst"
	AZB=$(bytes a/all.tar.zst)
	t AR bash -c "rsync -a --sparse ${files[*]} a/rsync/ && sync a/rsync/*"
	ARB=$(bytes "${files[@]}")
	t AC bash -c "mkdir -p a/cp && cp --sparse=always ${files[*]} a/cp/ && sync a/cp/*"
	t AS bash -c 'for c in g/c*.vmdk; do "$0" convert -O vmdk -t streamOptimized "$c" "a/$(basename "$c" .vmdk)-stream.vmdk"; done; sync a/*-stream.vmdk' "$VDELTA"
	ASB=$(bytes a/*-stream.vmdk)
	"$VDELTA" pack --full g/base.vmdk -o a/one/base.vdb >/dev/null
	ideal=$(bytes a/one/base.vdb)
	for c in g/c*.vmdk; do
		"$VDELTA" pack "$c" -o "a/one/$(basename "$c" .vmdk).vdb" >/dev/null
		ideal=$((ideal + $(bytes "a/one/$(basename "$c" .vmdk).vdb")))
	done
	for ((i = 1; i <= N; i++)); do
		printf -v c 'c%02d.vmdk' "$i"
		[ "$("$VDELTA" digest "g/$c" "a/dst/$c" | cut -d' ' -f1 | uniq | wc -l)" = 1 ] ||
			{ echo "group: a/dst/$c does not read as g/$c" >&2; exit 1; }
	done
}

mib() { echo "scale=1; $1 / 1048576" | bc; }
ratio() { [ "$(echo "$2 > 0" | bc)" = 1 ] && printf '%.2f\n' "$(echo "scale=4; $1 / $2" | bc)" || echo "-"; }
# rate BYTES SECONDS SCALE: BYTES/SECONDS/SCALE (1e6: MB/s, 1e9: GB/s); "-" for no time
rate() { [ "$(echo "$2 > 0" | bc)" = 1 ] && printf '%.2f\n' "$(echo "scale=4; $1 / $2 / $3" | bc)" || echo "-"; }
aim() { [ "$(echo "$1" | bc)" = 1 ] && echo "met" || echo "MISSED"; }

report()
{
	cat <<EOF
# bench_pack: $(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)
# base: mkfs.ext4 -d $SRC, $SIZE ($(mib "$(bytes g/base.vmdk)") MiB of layer file); $N clones

one clone (its layer file $(mib "$RB") MiB; the layer holds $(mib "$HELD") MiB):
| tool | bytes moved | MiB | vs zstd | seconds |
|---|---|---|---|---|
| vdelta pack | $VB | $(mib "$VB") | $(ratio "$VB" "$ZB") | $P |
| vdelta unpack (reads the base for its digest) | | | | $U ($(rate "$HELD" "$U" 1000000) MB/s of layer data) |
| vdelta unpack (base digest recorded) | | | | $U2 ($(rate "$HELD" "$U2" 1000000) MB/s of layer data) |
| zstd -T0 -3 | $ZB | $(mib "$ZB") | 1.00 | $Z (zstd -d: $ZD) |
| rsync --sparse | $RB | $(mib "$RB") | $(ratio "$RB" "$ZB") | $R |
| cp --sparse=always | $RB | $(mib "$RB") | $(ratio "$RB" "$ZB") | $C |
| streamOptimized export | $SB | $(mib "$SB") | $(ratio "$SB" "$ZB") | $S |

$N clones and their base:
| tool | bytes moved | MiB | vs ideal | seconds |
|---|---|---|---|---|
| vdelta pack --full | $AVB | $(mib "$AVB") | $(ratio "$AVB" "$ideal") | $AP |
| vdelta unpack | | | | $AU ($(rate "$AHELD" "$AU" 1000000) MB/s of layer data) |
| ideal: base bundle + $N clone bundles | $ideal | $(mib "$ideal") | 1.00 | |
| tar -S \| zstd -T0 -3 | $AZB | $(mib "$AZB") | $(ratio "$AZB" "$ideal") | $AZ |
| rsync --sparse | $ARB | $(mib "$ARB") | $(ratio "$ARB" "$ideal") | $AR |
| cp --sparse=always | $ARB | $(mib "$ARB") | $(ratio "$ARB" "$ideal") | $AC |
| streamOptimized exports | $ASB | $(mib "$ASB") | $(ratio "$ASB" "$ideal") | $AS |

aims:
- one clone's bundle <= 0.9x zstd -3 of its layer file: $(ratio "$VB" "$ZB")x, $(aim "$VB <= 0.9 * $ZB")
- pack within 1.2x the time of that zstd: $(ratio "$P" "$Z")x, $(aim "$P <= 1.2 * $Z")
- unpack >= 1 GB/s of layer data: one clone $(rate "$HELD" "$U" 1000000000) GB/s ($(rate "$HELD" "$U2" 1000000000) GB/s with the base's digest recorded), the group $(rate "$AHELD" "$AU" 1000000000) GB/s, $(aim "$AHELD >= 1000000000 * $AU")
- $N clones in under 1.2x one base + $N deltas: $(ratio "$AVB" "$ideal")x, $(aim "$AVB < 1.2 * $ideal")
EOF
}

make_base
make_content
make_group
one
all
report
