#!/usr/bin/env bash
# test_interop.sh — vdelta and qemu read and write each other's VMDKs
# (tests layer: integration, oracles qemu-img/qemu-io and libvmdk).
#
# For every subformat qemu-img creates, one seeded random write list
# (sub-grain, cross-grain, multi-grain, unaligned, zero writes, the last
# sector, across extent boundaries) is replayed:
#   1. by qemu-io into a qemu-made image: vdelta must read it byte-exact
#      (vdelta convert -O raw vs qemu-img convert -O raw);
#   2. by vdio into a vdelta-made image, and 3. vdelta convert from the raw
#      content: the results must pass qemu-img check, qemu-img compare
#      against qemu's image, vmdkinfo, vdelta check, and (when FUSE works)
#      read the same through libvmdk's vmdkmount.
# Then zeroed-grain images (version 2: qemu's read by vdelta, vdelta's
# checked by qemu, vdio writes over qemu's GTE-1 grains) and a qemu image
# whose grain directory has zero entries (GTs vdelta must allocate).
# With ../shared: vdio writes into VMware-made and COWD files from the
# corpus (qemu-io on a raw export gives the expected content), and a
# finished stream refuses writes.
#
# SEED=N picks another write list; SUBFORMATS="a b" runs a subset.
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io vmdkinfo "$PYTHON"
need_vdelta
need_vdio

MiB=$((1024 * 1024))
SMALL=$((100 * MiB + 7 * 512))  # partial last grain
BIG=$((2148 * MiB + 7 * 512))   # two extents with qemu's and VMware's split
# extent boundaries of both split sizes (qemu 2048 MiB, VMware 2047 MiB)
BOUNDS="$((2047 * MiB)) $((2048 * MiB))"
NR_WRITES=${NR_WRITES:-150}
: "${SUBFORMATS:=monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized}"

echo "seed $SEED"

# ---- oracles --------------------------------------------------------------

# Read IMG with libvmdk (vmdkmount) and compare to RAW.  libvmdk is an
# extra oracle: where it misreads qemu's own reference too it says nothing.
libvmdk_cmp()
{
	local img=$1 raw=$2 ref=$3 what=$4 mnt=$T/mnt partial=
	[ -c /dev/fuse ] && command -v vmdkmount >/dev/null || return 0
	# a FUSE file reads slowly: past 256 MiB compare where the data is
	[ "$(stat -c %s "$raw")" -le $((256 * MiB)) ] || partial=--data-of-b
	mkdir -p "$mnt"
	if ! run vmdkmount "$img" "$mnt"; then
		if run vmdkmount "$ref" "$mnt"; then
			umount "$mnt"
			fail "$what: vmdkmount could not open it (it opens qemu's image)"
		else
			echo "note: $what: libvmdk cannot open qemu's image either"
		fi
		return
	fi
	if same_content "$mnt/vmdk1" "$raw" $partial 2>/dev/null; then
		pass "$what: libvmdk reads the same content"
	else
		umount "$mnt"
		run vmdkmount "$ref" "$mnt" || return
		if same_content "$mnt/vmdk1" "$raw" $partial 2>/dev/null; then
			fail "$what: libvmdk reads it differently (it reads qemu's image right)"
		else
			echo "note: $what: libvmdk misreads qemu's image too; not an oracle here"
		fi
	fi
	umount "$mnt"
}

# "errors warnings leaked" from vdelta check --json (exit 1 on leaks is
# fine here: a qemu-made start leaks a grain per zero write over data).
vd_check_counts()
{
	run "$VDELTA" check --json "$1"
	"$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(r["errors"], r["warnings"], r["leaked"]) if r.get("complete") else print("x x x")' \
		"$T/last.out" 2>/dev/null || echo "x x x"
}

# check_written WHAT IMG REF_VMDK REF_RAW [LEAKED]: an image vdelta wrote
# (LEAKED: bytes already leaked in the image vdelta started from).
check_written()
{
	local what=$1 img=$2 ref=$3 raw=$4 leak_ok=${5:-0} e w l
	expect_ok "$what: qemu-img check" qemu-img check -f vmdk "$img"
	expect_ok "$what: qemu-img compare with qemu's image" \
		qemu-img compare -f vmdk -F vmdk "$ref" "$img"
	expect_ok "$what: vmdkinfo" vmdkinfo "$img"
	read -r e w l < <(vd_check_counts "$img")
	if [ "$e" = 0 ] && [ "$w" = 0 ] && [ "$l" -le "$leak_ok" ]; then
		pass "$what: vdelta check clean (leaked $l, started with $leak_ok)"
	else
		fail "$what: vdelta check: errors=$e warnings=$w leaked=$l (started with $leak_ok leaked)"
	fi
	if vd_to_raw "$img" "$T/back.raw" && same_content "$raw" "$T/back.raw"; then
		pass "$what: vdelta reads back what it wrote"
	else
		fail "$what: vdelta convert -O raw of its own image differs"
	fi
	rm -f "$T/back.raw"
	libvmdk_cmp "$img" "$raw" "$ref" "$what"
}

# check_read WHAT IMG REF_RAW: vdelta reads a qemu-made image.
check_read()
{
	local what=$1 img=$2 raw=$3
	if ! vd_to_raw "$img" "$T/read.raw"; then
		fail "$what: vdelta convert -O raw failed"
	elif same_content "$raw" "$T/read.raw"; then
		pass "$what: vdelta reads qemu's image byte-exact"
	else
		fail "$what: vdelta reads qemu's image differently"
	fi
	rm -f "$T/read.raw"
}

# ---- one subformat --------------------------------------------------------

# qemu_image SF SIZE LIST OUT: qemu's reference image with the writes.
# qemu's stream writer is append-only, so a stream reference is converted
# from a sparse one.
qemu_image()
{
	local sf=$1 size=$2 list=$3 out=$4 opts=${5:-}
	if [ "$sf" = streamOptimized ]; then
		qemu_image monolithicSparse "$size" "$list" "$T/src.vmdk" || return 1
		run qemu-img convert -f vmdk -O vmdk -o subformat=streamOptimized \
			"$T/src.vmdk" "$out" || return 1
		rm -f "$T/src.vmdk"
		return
	fi
	run qemu-img create -q -f vmdk -o "subformat=$sf$opts" "$out" "$size" &&
		apply_writes qemu-io "$out" "$list"
}

# vdelta_image SF SIZE LIST OUT [OPTION]: the same through vdelta + vdio.
vdelta_image()
{
	local sf=$1 size=$2 list=$3 out=$4
	shift 4
	if [ "$sf" = streamOptimized ]; then
		vdelta_image monolithicSparse "$size" "$list" "$T/vsrc.vmdk" "$@" ||
			return 1
		vd_to_vmdk "$T/vsrc.vmdk" "$out" streamOptimized || return 1
		rm -f "$T"/vsrc*.vmdk
		return
	fi
	vd_create "$out" "$size" "$sf" "$@" && apply_writes vdio "$out" "$list"
}

test_subformat()
{
	local sf=$1 size=$SMALL d=$T/$1
	case $sf in twoGb*) size=$BIG ;; esac
	mkdir -p "$d"
	gen_writes "$size" "$NR_WRITES" $BOUNDS >"$d/writes"

	if ! qemu_image "$sf" "$size" "$d/writes" "$d/ref.vmdk" ||
	   ! run qemu-img convert -f vmdk -O raw "$d/ref.vmdk" "$d/ref.raw"; then
		fail "$sf: could not build qemu's reference"
		return
	fi
	check_read "$sf" "$d/ref.vmdk" "$d/ref.raw"

	if vdelta_image "$sf" "$size" "$d/writes" "$d/vd.vmdk"; then
		pass "$sf: vdelta create + vdio writes"
		check_written "$sf (vdio writes)" "$d/vd.vmdk" "$d/ref.vmdk" "$d/ref.raw"
	else
		fail "$sf: vdelta create + vdio writes failed"
	fi

	if vd_to_vmdk "$d/ref.raw" "$d/conv.vmdk" "$sf"; then
		pass "$sf: vdelta convert raw -> vmdk"
		check_written "$sf (convert from raw)" "$d/conv.vmdk" "$d/ref.vmdk" "$d/ref.raw"
	else
		fail "$sf: vdelta convert -O vmdk -o subformat=$sf failed"
	fi
	rm -rf "$d"
}

# ---- zeroed grains ----------------------------------------------------------

# Number of zeroed-grain ranges (GTE 1) qemu-img map reports: present,
# reads as zero, holds no data.
zeroed_ranges()
{
	qemu-img map -f vmdk --output=json "$1" |
		grep -c '"present": true, "zero": true, "data": false' || true
}

# "version flags" of a KDMV header (u32 at 4 and 8, vmdk-format.md 2.1).
kdmv_version_flags()
{
	od -An -tu4 -j4 -N8 "$1" | awk '{ print $1, $2 }'
}

test_zeroed_grain()
{
	local d=$T/zg vf leaked
	mkdir -p "$d"
	gen_writes "$SMALL" "$NR_WRITES" >"$d/writes"
	SEED=$((SEED + 1)) gen_writes "$SMALL" "$NR_WRITES" >"$d/writes2"
	if ! qemu_image monolithicSparse "$SMALL" "$d/writes" "$d/ref.vmdk" ,zeroed_grain=on ||
	   ! run qemu-img convert -f vmdk -O raw "$d/ref.vmdk" "$d/ref.raw"; then
		fail "zeroed_grain: could not build qemu's reference"
		return
	fi
	[ "$(zeroed_ranges "$d/ref.vmdk")" -gt 0 ] ||
		die "write list made no zeroed grain in qemu's image; change SEED"
	check_read "zeroed_grain (qemu-made, $(zeroed_ranges "$d/ref.vmdk") zeroed runs)" \
		"$d/ref.vmdk" "$d/ref.raw"

	# vdelta's own zeroed-grain disk: version 2 with flag bit 2, and the
	# same content as qemu's
	if vdelta_image monolithicSparse "$SMALL" "$d/writes" "$d/vd.vmdk" --zeroed-grain; then
		vf=$(kdmv_version_flags "$d/vd.vmdk")
		[ $((${vf#* } & 4)) -ne 0 ] && [ "${vf% *}" -ge 2 ] &&
			pass "zeroed_grain: header version 2, flag bit 2 ($vf)" ||
			fail "zeroed_grain: header version/flags are '$vf', want 2 and bit 2"
		check_written "zeroed_grain (vdio writes)" "$d/vd.vmdk" "$d/ref.vmdk" "$d/ref.raw"
	else
		fail "zeroed_grain: vdelta create --zeroed-grain + vdio writes failed"
	fi

	# writes over qemu's zeroed grains (GTE 1): the rest of a partly
	# written grain must read as zeros
	cp --sparse=always "$d/ref.vmdk" "$d/vd2.vmdk"
	read -r _ _ leaked < <(vd_check_counts "$d/vd2.vmdk")
	apply_writes qemu-io "$d/ref.vmdk" "$d/writes2" &&
		run qemu-img convert -f vmdk -O raw "$d/ref.vmdk" "$d/ref2.raw" ||
		die "zeroed_grain: qemu could not apply the second write list"
	if apply_writes vdio "$d/vd2.vmdk" "$d/writes2"; then
		check_written "zeroed_grain (vdio writes over qemu's zeroed grains)" \
			"$d/vd2.vmdk" "$d/ref.vmdk" "$d/ref2.raw" "$leaked"
	else
		fail "zeroed_grain: vdio writes into qemu's zeroed-grain image failed"
	fi
	rm -rf "$d"
}

# ---- grain directory with zero entries --------------------------------------

# gd_unhook IMG: clear the GD and RGD entries whose grain tables are all
# zero (a qemu image has them all preallocated; VMware streams and other
# writers leave them 0).  Prints how many were cleared.  Offsets from the
# KDMV header (vmdk-format.md 2.1): numGTEsPerGT @44, rgdOffset @48,
# gdOffset @56, capacity @12, grainSize @20.
gd_unhook()
{
	"$PYTHON" - "$1" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(512)
cap, grain = struct.unpack_from("<QQ", h, 12)
ngte, = struct.unpack_from("<I", h, 44)
rgd, gd = struct.unpack_from("<QQ", h, 48)
n = -(-cap // (grain * ngte))
def entries(sec):
    f.seek(sec * 512)
    return list(struct.unpack("<%dI" % n, f.read(4 * n)))
gde, rgde = entries(gd), entries(rgd)
cleared = 0
for i in range(n):
    f.seek(gde[i] * 512)
    if f.read(4 * ngte).strip(b"\0"):
        continue
    for base in (gd, rgd):
        f.seek(base * 512 + 4 * i)
        f.write(b"\0\0\0\0")
    cleared += 1
print(cleared)
PY
}

test_gd_zero()
{
	local d=$T/gd0 size=$((256 * MiB))
	mkdir -p "$d"
	# data in the first 32 MiB only; the second list writes everywhere
	echo "write -P 0x31 $((MiB + 4096)) $((3 * MiB))" >"$d/first"
	gen_writes "$size" 60 $((160 * MiB)) >"$d/second"
	run qemu-img create -q -f vmdk "$d/orig.vmdk" "$size" &&
		apply_writes qemu-io "$d/orig.vmdk" "$d/first" || {
		fail "gd0: could not build the qemu image"
		return
	}
	cp --sparse=always "$d/orig.vmdk" "$d/hole.vmdk"
	local cleared
	cleared=$(gd_unhook "$d/hole.vmdk")
	[ "$cleared" -ge 6 ] || die "gd0: expected >= 6 empty grain tables, cleared $cleared"
	run qemu-img convert -f vmdk -O raw "$d/hole.vmdk" "$d/hole.raw" ||
		die "gd0: qemu cannot read the image with zero GD entries"
	check_read "gd0 ($cleared zero GD entries)" "$d/hole.vmdk" "$d/hole.raw"

	# expected: the same writes over the intact image, by qemu
	apply_writes qemu-io "$d/orig.vmdk" "$d/second" &&
		run qemu-img convert -f vmdk -O raw "$d/orig.vmdk" "$d/ref.raw" ||
		die "gd0: qemu could not apply the write list"
	if apply_writes vdio "$d/hole.vmdk" "$d/second"; then
		check_written "gd0 (vdio writes under zero GD entries)" \
			"$d/hole.vmdk" "$d/orig.vmdk" "$d/ref.raw"
	else
		fail "gd0: vdio writes into ranges whose GD entry is 0 failed"
	fi
	rm -rf "$d"
}

# ---- writing into other writers' files --------------------------------------

# vdio replays a write list into a copy of a VMware / hand-made disk from
# the corpus; the expected content is the same list replayed by qemu-io on
# a raw export (qemu's own VMDK writer is unsafe on such files, §7.1).
# qemu-img must then read what vdelta wrote as expected.
test_foreign_write()
{
	local rel=$1 d=$T/foreign img size
	rm -rf "$d"
	mkdir -p "$d"
	cp -a "$SHARED_DIR/corpus/$(dirname "$rel")/." "$d/"
	chmod -R u+w "$d"
	img=$d/$(basename "$rel")
	run qemu-img convert -f vmdk -O raw "$img" "$d/want.raw" ||
		die "$rel: qemu-img cannot read it"
	size=$(stat -c %s "$d/want.raw")
	gen_writes "$size" 60 >"$d/writes"
	apply_writes qemu-io-raw "$d/want.raw" "$d/writes" || die "$rel: qemu-io on raw failed"
	if ! apply_writes vdio "$img" "$d/writes"; then
		fail "$rel: vdio writes into it failed"
	elif run qemu-img convert -f vmdk -O raw "$img" "$d/got.raw" &&
	     same_content "$d/want.raw" "$d/got.raw"; then
		pass "$rel: qemu reads vdelta's writes into it as expected"
	else
		fail "$rel: qemu reads vdelta's writes into it differently"
	fi
	read -r e w _ < <(vd_check_counts "$img")
	[ "$e" = 0 ] && [ "$w" = 0 ] && pass "$rel: vdelta check: no errors after writes" ||
		fail "$rel: vdelta check after writes: errors=$e warnings=$w"
	rm -rf "$d"
}

# A finished stream is never rewritten: writing is refused, nothing changes.
test_stream_refuses_writes()
{
	local d=$T/stream-ro sum
	mkdir -p "$d"
	cp "$SHARED_DIR/corpus/vmdk-rs/streamOptimized.vmdk" "$d/s.vmdk"
	sum=$(sha256sum <"$d/s.vmdk")
	if run "$VDIO" -w "$d/s.vmdk" -c 'write -P 0x11 0 4096'; then
		fail "stream: vdio wrote into a finished streamOptimized disk"
	else
		pass "stream: a write into a finished stream is refused"
	fi
	[ "$sum" = "$(sha256sum <"$d/s.vmdk")" ] && pass "stream: the refused file is unchanged" ||
		fail "stream: the refused write changed the file"
	rm -rf "$d"
}

for sf in $SUBFORMATS; do
	test_subformat "$sf"
done
test_zeroed_grain
test_gd_zero
if [ -f "$SHARED_DIR/corpus/INDEX.md" ]; then
	for rel in vmdk-rs/monolithicSparse.vmdk vmdk-rs/twoGbMaxExtentSparse.vmdk \
		   vmdk-rs/monolithicFlat.vmdk vmdk-rs/vmfs_thick.vmdk \
		   synthetic/cowd/test.vmdk; do
		test_foreign_write "$rel"
	done
	test_stream_refuses_writes
else
	echo "note: no $SHARED_DIR/corpus: writes into VMware-made files not tested"
fi
finish
