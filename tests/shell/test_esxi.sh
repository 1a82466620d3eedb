#!/usr/bin/env bash
# test_esxi.sh — ESXi datastores: vmfs bases, vmfsSparse (COWD) and
# seSparse deltas, read, created, written and consolidated (tests layer).
#
# Oracles:
#  - a generator (below, from vmdk-format.md §3-§4, not from vdelta) builds
#    COWD and seSparse files of several shapes and the raw bytes they hold;
#    vdelta and qemu-img must both read exactly those bytes;
#  - chains made by vdelta (vmfs base, vmfsSparse / seSparse / hosted
#    deltas) are written through chain/ (vdio -C) while qemu-io replays the
#    same writes on a raw file; vdelta and qemu-img read the top as that
#    raw file, vdelta digest equals xxhsum -H2 of qemu's export, and
#    vdelta check finds no error;
#  - clone --full -t vmfs keeps the digest and qemu-img reads the result as
#    the raw file;
#  - truncated seSparse/COWD files are refused by check, convert and
#    writes, with a message naming the file, and stay byte-identical.
# shellcheck source=tests/shell/lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io xxhsum sha256sum python3
need_vdelta
need_vdio

cd "$T" || die "cd $T"

# ---- generated ESXi extents --------------------------------------------------

# gen DIR: writes NAME.vmdk + extent + NAME.raw for each shape
gen()
{
	"$PYTHON" - "$1" <<'PY'
import os, struct, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

def fill(index, size):
    # a recognisable, index-dependent byte pattern
    return bytes((index * 7 + i // 512 + 1) & 0xff or 1 for i in range(size))

def write_desc(name, ctype, etype, ext, sectors):
    with open(os.path.join(out, name + ".vmdk"), "w") as f:
        f.write('# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=12345678\n'
                'parentCID=ffffffff\nisNativeSnapshot="no"\ncreateType="%s"\n\n'
                '# Extent description\nRW %d %s "%s"\n\n# The Disk Data Base\n#DDB\n\n'
                'ddb.longContentID = "00000000000000000000000012345678"\n'
                % (ctype, sectors, etype, ext))

def cowd(name, sectors, gs, tables):
    """tables: {gd_index: {gte_index: True}}; grains hold fill(grain index)."""
    gte_per_gt, nr_gd = 4096, -(-sectors // (4096 * gs))
    gd_sectors = -(-nr_gd * 4 // 512)
    f = bytearray(2048 + gd_sectors * 512)
    raw = bytearray(sectors * 512)
    for gdi in sorted(tables):
        gt_at = len(f) // 512
        f += bytes(gte_per_gt * 4)
        struct.pack_into("<I", f, 2048 + gdi * 4, gt_at)
        for e in sorted(tables[gdi]):
            g = gdi * gte_per_gt + e
            at = len(f) // 512
            data = fill(g, gs * 512)
            f += data
            struct.pack_into("<I", f, gt_at * 512 + e * 4, at)
            lo = g * gs * 512
            n = min(gs * 512, len(raw) - lo)
            raw[lo:lo + n] = data[:n]
    struct.pack_into("<4sIIIIIII", f, 0, b"COWD", 1, 3, sectors, gs, 4, nr_gd, len(f) // 512)
    ext = name + "-delta.vmdk"
    open(os.path.join(out, ext), "wb").write(f)
    open(os.path.join(out, name + ".raw"), "wb").write(raw)
    write_desc(name, "vmfsSparse", "VMFSSPARSE", ext, sectors)

def sesparse(name, sectors, gd, gts):
    """gd: {gd_index: gt_index}; gts: {gt_index: {entry: kind}} with kind
    'data', 'zero', 'unmapped'.  Grains are stored in reverse order of use."""
    nr_grains = -(-sectors // 8)
    nr_gd = -(-nr_grains // 4096)
    nr_gt = max(gts) + 1
    regions = [(1, 1), (2, 2), (4, 4), (8, -(-nr_gd * 8 // 512)),
               (16, nr_gt * 64), (16 + nr_gt * 64, 8), (24 + nr_gt * 64, 64),
               (88 + nr_gt * 64, nr_grains * 8)]
    grains_at = regions[7][0]
    data = [(gdi, e) for gdi, k in sorted(gd.items()) for e, kind in sorted(gts[k].items())
            if kind == "data"]
    f = bytearray(grains_at * 512 + len(data) * 4096)
    raw = bytearray(sectors * 512)
    hdr = [0xCAFEBABE, 0x200000001, sectors, 8, 64, 0, 0, 0, 0, 0]
    for off, size in regions:
        hdr += [off, size]
    struct.pack_into("<26Q", f, 0, *hdr)
    struct.pack_into("<4Q", f, 512, 0xCAFECAFE, nr_gt, 1, 0)
    cluster = {d: len(data) - 1 - i for i, d in enumerate(data)}
    for gdi, k in gd.items():
        struct.pack_into("<Q", f, regions[3][0] * 512 + gdi * 8, 0x1000000000000000 | k)
        for e, kind in gts[k].items():
            g = gdi * 4096 + e
            if kind == "data":
                c = cluster[(gdi, e)]
                v = 0x3000000000000000 | (c & 0xfff) << 48 | c >> 12
                f[(grains_at + c * 8) * 512:(grains_at + c * 8 + 8) * 512] = fill(g, 4096)
                lo = g * 4096
                n = min(4096, len(raw) - lo)
                raw[lo:lo + n] = fill(g, 4096)[:n]
                f[regions[5][0] * 512 + c // 8] |= 1 << (c % 8)
                struct.pack_into("<Q", f, regions[6][0] * 512 + c * 8,
                                 0x1000000000000000 | ((k * 4096 + e) & 0xfff) << 48 |
                                 (k * 4096 + e) >> 12)
            else:
                v = 0x2000000000000000 if kind == "zero" else 0x1000000000000000
            struct.pack_into("<Q", f, (16 + k * 64) * 512 + e * 8, v)
    ext = name + "-sesparse.vmdk"
    open(os.path.join(out, ext), "wb").write(f)
    open(os.path.join(out, name + ".raw"), "wb").write(raw)
    write_desc(name, "seSparse", "SESPARSE", ext, sectors)

# COWD, 512-byte grains: GTs 1 and 3 left unallocated, the last sector mapped
cowd("cowd1", 20000, 1, {0: {0: 1, 3: 1, 4095: 1}, 2: {17: 1}, 4: {19999 - 4 * 4096: 1}})
# COWD, 4 KiB grains, capacity not a multiple of the grain (partial last grain)
cowd("cowd8", 70001, 8, {0: {1: 1, 2: 1}, 2: {8750 - 8192: 1}})
# seSparse: GD 0 -> GT 1, GD 1 unallocated, GD 2 -> GT 0; data, zero and
# unmapped grains; capacity not a multiple of the grain; last grain mapped
sesparse("ses1", 81923, {0: 1, 2: 0},
         {1: {0: "data", 1: "zero", 2: "unmapped", 5: "data", 4095: "data"},
          0: {0: "unmapped", 7: "data", 2048: "data"}})
# seSparse: one GT, mostly zero/unmapped grains
sesparse("ses2", 32768, {0: 0}, {0: {i: ("zero", "unmapped", "data")[i % 3] for i in range(0, 4096, 5)}})
PY
}

if gen gen; then
	for name in cowd1 cowd8 ses1 ses2; do
		rm -f q.raw v.raw
		if run "$VDELTA" convert -f vmdk -O raw "gen/$name.vmdk" v.raw && cmp -s v.raw "gen/$name.raw"; then
			pass "$name: vdelta reads the generated bytes"
		else
			fail "$name: vdelta's reading differs from the generator's bytes"
		fi
		if run qemu-img convert -U -f vmdk -O raw "gen/$name.vmdk" q.raw && cmp -s q.raw v.raw; then
			pass "$name: qemu-img reads what vdelta reads"
		else
			fail "$name: qemu-img and vdelta read differently"
		fi
		if run "$VDELTA" check "gen/$name.vmdk" && grep -q ' 0 errors' "$T/last.out"; then
			pass "$name: check clean"
		else
			fail "$name: check"
		fi
	done
	rm -f q.raw v.raw
else
	fail "the generator failed"
fi

# The one real ESXi seSparse file: its free bitmap and backmap agree with
# the tables as vdelta reads and writes them (check warns otherwise).
real=$SHARED_DIR/corpus/dissect.hypervisor/sesparse-wrapper.vmdk
if [ -f "$real" ]; then
	if run "$VDELTA" check "$real" && grep -q ' 0 errors, 0 warnings' "$T/last.out"; then
		pass "ESXi's own seSparse maps agree with vdelta's reading of them"
	else
		fail "check of ESXi's seSparse file is not clean"
	fi
fi

# ---- chains made and written by vdelta ----------------------------------------

SIZE=$((48 << 20))

# vdio through chain/ (reads fall through, writes copy-on-write)
printf '#!/bin/sh\nexec "%s" -C "$@"\n' "$VDIO" >vdio-chain && chmod +x vdio-chain

# write_both WHAT TOP MIRROR SEED: the same random writes through chain/
# into TOP and with qemu-io into the raw MIRROR
write_both()
{
	local what=$1 top=$2 mirror=$3
	SEED=$4 gen_writes $SIZE 60 >"$T/w.list"
	if VDIO=$T/vdio-chain apply_writes vdio "$top" "$T/w.list" &&
	   apply_writes qemu-io-raw "$mirror" "$T/w.list"; then
		pass "$what: writes through chain/"
	else
		fail "$what: writes through chain/"
	fi
}

# reads_as WHAT DISK RAW: vdelta and qemu-img read DISK as RAW, and the
# digest is xxhsum -H2 of qemu's export
reads_as()
{
	local what=$1 disk=$2 raw=$3 ours theirs
	rm -f v.raw q.raw
	if run "$VDELTA" convert -f vmdk -O raw "$disk" v.raw && cmp -s v.raw "$raw"; then
		pass "$what: vdelta reads the written bytes"
	else
		fail "$what: vdelta's content differs from qemu-io's on raw"
	fi
	if run qemu-img convert -U -f vmdk -O raw "$disk" q.raw && cmp -s q.raw "$raw"; then
		pass "$what: qemu-img reads the written bytes"
	else
		fail "$what: qemu-img's reading differs from qemu-io's on raw"
	fi
	theirs=$(xxhsum -H2 q.raw 2>/dev/null | cut -d' ' -f1)
	if run "$VDELTA" digest "$disk" && [ "$(cut -d' ' -f1 <"$T/last.out")" = "$theirs" ]; then
		pass "$what: digest equals xxhsum -H2 of qemu's export"
	else
		fail "$what: digest differs from xxhsum -H2 of qemu's export ($theirs)"
	fi
	rm -f v.raw q.raw
}

check_clean()
{
	local disk
	for disk in "$@"; do
		if run "$VDELTA" check "$disk" && grep -q ' 0 errors' "$T/last.out"; then
			pass "check $disk: no errors"
		else
			fail "check $disk"
		fi
	done
}

# expect_desc WHAT DESC REGEX...: each extended regex matches a line of DESC
expect_desc()
{
	local what=$1 desc=$2 re ok=1
	shift 2
	for re in "$@"; do
		grep -qE "$re" "$desc" || { ok=0; echo "  no line matching $re in $desc" >&2; }
	done
	if [ $ok = 1 ]; then pass "$what"; else fail "$what"; fi
}

# Chain A: vmfs base -> vmfsSparse (the default) -> monolithicSparse (-t)
mkdir a && truncate -s $SIZE a.raw
expect_ok "create -t vmfs" "$VDELTA" create -s $SIZE -t vmfs --adapter lsilogic a/vm.vmdk
expect_desc "vmfs base described as ESXi does" a/vm.vmdk '^createType="vmfs"$' \
	'^RW 98304 VMFS "vm-flat.vmdk"$' '^ddb.thinProvisioned = "1"$' '^ddb.uuid = '
write_both "vmfs base" a/vm.vmdk a.raw 11
expect_ok "snapshot of a vmfs base" "$VDELTA" snapshot a/vm.vmdk
expect_desc "the delta is vmfsSparse, named as ESXi names it" a/vm-000001.vmdk \
	'^createType="vmfsSparse"$' '^RW 98304 VMFSSPARSE "vm-000001-delta.vmdk"$' \
	'^parentFileNameHint="vm.vmdk"$' '^ddb.longContentID = "[0-9a-f]{32}"$' '^isNativeSnapshot="no"$'
[ -f a/vm-000001-delta.vmdk ] && pass "vm-000001-delta.vmdk exists" || fail "no vm-000001-delta.vmdk"
write_both "vmfsSparse delta" a/vm-000001.vmdk a.raw 12
expect_ok "snapshot -t monolithicSparse over vmfsSparse" "$VDELTA" snapshot -t monolithicSparse a/vm-000001.vmdk
write_both "hosted delta over vmfsSparse" a/vm-000002.vmdk a.raw 13
reads_as "chain A (vmfs, vmfsSparse, monolithicSparse)" a/vm-000002.vmdk a.raw
check_clean a/vm.vmdk a/vm-000001.vmdk a/vm-000002.vmdk

# Chain B: vmfs base -> seSparse (-t) -> seSparse (the default over seSparse)
mkdir b && truncate -s $SIZE b.raw
expect_ok "create -t vmfs" "$VDELTA" create -s $SIZE -t vmfs b/vm.vmdk
write_both "vmfs base" b/vm.vmdk b.raw 21
expect_ok "create -t seSparse --parent" "$VDELTA" create -t seSparse --parent b/vm.vmdk b/vm-000001.vmdk
expect_desc "the delta is seSparse, named as ESXi names it" b/vm-000001.vmdk \
	'^createType="seSparse"$' '^RW 98304 SESPARSE "vm-000001-sesparse.vmdk"$' '^ddb.grain = "8"$'
write_both "seSparse delta" b/vm-000001.vmdk b.raw 22
expect_ok "snapshot of a seSparse delta" "$VDELTA" snapshot b/vm-000001.vmdk
expect_desc "the default over seSparse is seSparse" b/vm-000002.vmdk '^createType="seSparse"$' \
	'^RW 98304 SESPARSE "vm-000002-sesparse.vmdk"$'
write_both "seSparse over seSparse" b/vm-000002.vmdk b.raw 23
reads_as "chain B (vmfs, seSparse, seSparse)" b/vm-000002.vmdk b.raw
check_clean b/vm.vmdk b/vm-000001.vmdk b/vm-000002.vmdk

# Chain C: a linked clone of chain A's frozen vmfsSparse layer is vmfsSparse
expect_ok "clone --linked of a vmfsSparse snapshot" "$VDELTA" clone --linked a/vm-000001.vmdk c.vmdk
expect_desc "the linked clone is vmfsSparse" c.vmdk '^createType="vmfsSparse"$' '^RW 98304 VMFSSPARSE "c-delta.vmdk"$'

# the readers accept mixed chains
for top in a/vm-000002.vmdk b/vm-000002.vmdk c.vmdk; do
	expect_ok "info --chain $top" "$VDELTA" info --chain "$top"
	expect_ok "map $top" "$VDELTA" map --json "$top"
done
expect_ok "tree over ESXi chains" "$VDELTA" tree a b

# ---- clone --full -t vmfs -----------------------------------------------------
for chain in a b; do
	expect_ok "clone --full -t vmfs of chain $chain" "$VDELTA" clone --full -t vmfs "$chain/vm-000002.vmdk" "full-$chain.vmdk"
	expect_desc "full clone of $chain is a vmfs disk" "full-$chain.vmdk" '^createType="vmfs"$' \
		"^RW 98304 VMFS \"full-$chain-flat.vmdk\"$"
	reads_as "full clone of chain $chain" "full-$chain.vmdk" "$chain.raw"
done
expect_ok "clone --full -t vmfs --preallocate" "$VDELTA" clone --full -t vmfs --preallocate a/vm-000002.vmdk full-p.vmdk
used=$(du -B1 full-p-flat.vmdk | cut -f1)
if [ "$used" -ge $SIZE ]; then
	pass "--preallocate allocates every byte ($used bytes)"
else
	fail "--preallocate left holes: $used of $SIZE bytes allocated"
fi
expect_desc "a preallocated vmfs is not thin" full-p.vmdk '^createType="vmfs"$'
grep -q thinProvisioned full-p.vmdk && fail "preallocated vmfs says thinProvisioned" || pass "preallocated vmfs is not marked thin"
reads_as "preallocated full clone" full-p.vmdk a.raw

# ---- truncated extents: refused, nothing written -----------------------------
# refused WHAT DISK WORD: check and convert fail naming WORD and the extent,
# a write through chain/ fails, and no file changed
refused()
{
	local what=$1 disk=$2 word=$3 before
	before=$(sha256sum "$(dirname "$disk")"/* | sha256sum)
	if ! run "$VDELTA" check "$disk" && grep -q "past the end of the file" "$T/last.err" &&
	   grep -q "$word" "$T/last.err"; then
		pass "$what: check refuses naming $word"
	else
		fail "$what: check did not refuse naming $word"
	fi
	rm -f v.raw
	if ! run "$VDELTA" convert -f vmdk -O raw "$disk" v.raw; then
		pass "$what: convert refuses"
	else
		fail "$what: convert read a truncated file"
	fi
	rm -f v.raw
	run "$VDIO" -w -C "$disk" -c "write -P 0x77 0 $SIZE" && fail "$what: a write went through"
	if [ "$before" = "$(sha256sum "$(dirname "$disk")"/* | sha256sum)" ]; then
		pass "$what: nothing written"
	else
		fail "$what: files changed"
	fi
}

ext=b/vm-000002-sesparse.vmdk
gd=$(( $(od -An -t u8 -j 128 -N 8 "$ext") * 512 ))
grains=$(( $(od -An -t u8 -j 192 -N 8 "$ext") * 512 ))
for cut in "directory:$((gd + 4)):grain_dir" "grain:$((grains + 4096 + 100)):grain table entry"; do
	IFS=: read -r shape at word <<<"$cut"
	mkdir -p "t-$shape" && cp b/vm-000002.vmdk "$ext" "t-$shape/"
	sed -i '/^parentFileNameHint/d; s/^parentCID=.*/parentCID=ffffffff/' "t-$shape/vm-000002.vmdk"
	truncate -s "$at" "t-$shape/vm-000002-sesparse.vmdk"
	refused "seSparse truncated in the $shape" "t-$shape/vm-000002.vmdk" "$word"
done
mkdir -p t-cowd && cp a/vm-000001.vmdk a/vm-000001-delta.vmdk t-cowd/
sed -i '/^parentFileNameHint/d; s/^parentCID=.*/parentCID=ffffffff/' t-cowd/vm-000001.vmdk
truncate -s 2100 t-cowd/vm-000001-delta.vmdk
if ! run "$VDELTA" check t-cowd/vm-000001.vmdk && grep -q "vm-000001-delta.vmdk" "$T/last.err"; then
	pass "COWD truncated in its directory: refused naming the file"
else
	fail "COWD truncated in its directory was not refused"
fi

# ---- group operations on ESXi chains ------------------------------------------
# Oracles: qemu's raw export of the disk taken before each operation
# (`qemu-img compare` after, `xxhsum -H2` of it = `vdelta digest`), `qemu-img
# check` of the flattened vmfs layer, sha256 of the shared base files, the
# descriptors (kind and file names as ESXi names them), `vdelta check`.
GS=$((16 << 20))

# mkchain DIR K1 K2 [clone]: vmfs base <- s1 (K1) <- s2 (K2), written; with
# "clone", a linked clone shares the base
mkchain()
{
	local d=$1
	mkdir "$d"
	run "$VDELTA" create -s $GS -t vmfs "$d/vm.vmdk" &&
	run "$VDIO" -w "$d/vm.vmdk" -c "write -P 0x21 0 2M" -c "write -P 0x22 15M 1M" &&
	run "$VDELTA" create -t "$2" --parent "$d/vm.vmdk" "$d/s1.vmdk" &&
	run "$VDIO" -w -C "$d/s1.vmdk" -c "write -P 0x31 1M 1536k" -c "write -z 15M 8k" \
		-c "write -P 0x32 7000 3" &&
	run "$VDELTA" create -t "$3" --parent "$d/s1.vmdk" "$d/s2.vmdk" &&
	run "$VDIO" -w -C "$d/s2.vmdk" -c "write -P 0x41 3M 70000" -c "write -z 512k 100k" \
		-c "write -P 0x42 15M 4096" || fail "$d: building the chain"
	[ "${4:-}" = clone ] && { run "$VDELTA" clone --linked "$d/vm.vmdk" "$d/other.vmdk" ||
		fail "$d: linked clone"; }
	true
}

# export DISK RAW: qemu's raw export
export_raw()
{
	rm -f "$2"
	run qemu-img convert -U -f vmdk -O raw "$1" "$2" || fail "qemu-img export of $1"
}

# same_as WHAT DISK RAW: qemu-img compare and the digest against RAW
same_as()
{
	local what=$1 disk=$2 raw=$3 want
	expect_ok "$what: qemu-img compare with the export before" \
		qemu-img compare -U -f vmdk -F raw "$disk" "$raw"
	want=$(xxhsum -H2 "$raw" | cut -d' ' -f1)
	if run "$VDELTA" digest "$disk" && [ "$(cut -d' ' -f1 <"$T/last.out")" = "$want" ]; then
		pass "$what: digest = xxhsum -H2 of the export"
	else
		fail "$what: digest differs from the export's ($want)"
	fi
}

# commit into the vmfs base (unshared), in place
mkchain g1 vmfsSparse vmfsSparse
export_raw g1/s2.vmdk g1.raw
expect_ok "commit COWD into a vmfs base" "$VDELTA" commit g1/s1.vmdk
same_as "COWD committed into vmfs" g1/s2.vmdk g1.raw
[ ! -e g1/s1.vmdk ] && [ ! -e g1/s1-delta.vmdk ] && pass "the committed COWD layer is gone" ||
	fail "s1 files left after commit"
expect_desc "the base stays a vmfs disk" g1/vm.vmdk '^createType="vmfs"$' '^RW 32768 VMFS "vm-flat.vmdk"$'
# and the COWD top into the vmfs base: the base is the disk again
expect_ok "commit the COWD top into the vmfs base" "$VDELTA" commit g1/s2.vmdk
same_as "vmfs base after both commits" g1/vm.vmdk g1.raw
check_clean g1/vm.vmdk

mkchain g2 seSparse seSparse
export_raw g2/s2.vmdk g2.raw
expect_ok "commit seSparse into seSparse" "$VDELTA" commit g2/s2.vmdk
same_as "seSparse committed into seSparse" g2/s1.vmdk g2.raw
expect_ok "commit seSparse into a vmfs base" "$VDELTA" commit g2/s1.vmdk
same_as "seSparse committed into vmfs" g2/vm.vmdk g2.raw
check_clean g2/vm.vmdk

mkchain g3 vmfsSparse monolithicSparse clone
export_raw g3/s2.vmdk g3.raw
expect_ok "commit a hosted delta into a COWD parent" "$VDELTA" commit g3/s2.vmdk
same_as "hosted committed into COWD" g3/s1.vmdk g3.raw
check_clean g3/s1.vmdk

# promote --unlink: the flattened ESXi delta becomes a vmfs base
for kinds in "vmfsSparse seSparse" "seSparse seSparse" "vmfsSparse vmfsSparse"; do
	set -- $kinds
	d=u-$1-$2
	mkchain "$d" "$1" "$2" clone
	export_raw "$d/s2.vmdk" "$d.raw"
	export_raw "$d/other.vmdk" "$d-other.raw"
	shared=$(sha256sum "$d/vm.vmdk" "$d/vm-flat.vmdk")
	cid=$(grep '^CID=' "$d/s1.vmdk")
	expect_ok "promote --unlink of vmfs <- $1 <- $2" "$VDELTA" promote --unlink "$d/s2.vmdk"
	expect_desc "$d: the flattened layer is a vmfs base, same name and CID" "$d/s1.vmdk" \
		'^createType="vmfs"$' '^RW 32768 VMFS "s1-flat.vmdk"$' "^$cid\$" '^parentCID=ffffffff$'
	[ ! -e "$d/s1-delta.vmdk" ] && [ ! -e "$d/s1-sesparse.vmdk" ] &&
		pass "$d: the former delta extent is gone" || fail "$d: the former delta extent is left"
	same_as "$d after promote --unlink" "$d/s2.vmdk" "$d.raw"
	same_as "$d: the clone sharing the base" "$d/other.vmdk" "$d-other.raw"
	expect_ok "$d: qemu-img check of the flattened vmfs layer" qemu-img check -U "$d/s1.vmdk"
	[ "$shared" = "$(sha256sum "$d/vm.vmdk" "$d/vm-flat.vmdk")" ] &&
		pass "$d: the shared base is byte-identical" || fail "$d: the shared base changed"
	ls -A "$d" | grep -q 'vdelta-promote' && fail "$d: staging left" || pass "$d: no staging left"
	check_clean "$d/s1.vmdk" "$d/s2.vmdk"
done

# revert: an empty delta of the same kind, same file names
for k in vmfsSparse seSparse; do
	d=r-$k
	mkchain "$d" "$k" "$k" clone
	export_raw "$d/s1.vmdk" "$d.raw"
	ext=$(grep -E '^RW ' "$d/s2.vmdk")
	expect_ok "revert of a $k top" "$VDELTA" revert "$d/s2.vmdk"
	expect_desc "$d: still $k, same extent line" "$d/s2.vmdk" "^createType=\"$k\"$" "^$ext\$"
	same_as "$d: the reverted top reads its parent" "$d/s2.vmdk" "$d.raw"
	check_clean "$d/s2.vmdk"
done

# check --repair of a COWD top with leaked grains (past the last one used)
mkchain rp vmfsSparse vmfsSparse clone
export_raw rp/s2.vmdk rp.raw
head -c 300000 /dev/urandom >>rp/s2-delta.vmdk
cid=$(grep '^CID=' rp/s2.vmdk)
run "$VDELTA" check rp/s2.vmdk
if grep -q ' [1-9][0-9]* bytes leaked' "$T/last.out"; then
	pass "check counts the COWD leak"
else
	fail "check does not count the COWD leak"
fi
expect_ok "check --repair compacts a COWD top" "$VDELTA" check --repair rp/s2.vmdk
expect_desc "rp: still vmfsSparse, same CID and extent" rp/s2.vmdk '^createType="vmfsSparse"$' \
	"^$cid\$" '^RW 32768 VMFSSPARSE "s2-delta.vmdk"$'
if run "$VDELTA" check rp/s2.vmdk && grep -q ' 0 errors, .* 0 bytes leaked' "$T/last.out"; then
	pass "rp: no leak after compaction"
else
	fail "rp: leak or error after compaction"
fi
same_as "rp: the compacted top" rp/s2.vmdk rp.raw

# relocate of an ESXi chain, vmfs <- COWD <- seSparse with the base shared
# by a clone: no-share moves s1 and s2 (every file: descriptor and extent)
# and copies the shared base, which stays byte-identical for the clone
mkchain rl vmfsSparse seSparse clone
export_raw rl/s2.vmdk rl.raw
export_raw rl/other.vmdk rl-other.raw
shared=$(cd rl && sha256sum vm.vmdk vm-flat.vmdk)
mkdir rldst
expect_ok "relocate --mode no-share of an ESXi chain" \
	"$VDELTA" relocate --mode no-share --scan rl rl/s2.vmdk rldst
same_as "the relocated ESXi chain" rldst/s2.vmdk rl.raw
same_as "the clone sharing the base, after relocate" rl/other.vmdk rl-other.raw
[ "$shared" = "$(cd rl && sha256sum vm.vmdk vm-flat.vmdk)" ] &&
	pass "relocate left the shared vmfs base byte-identical" || fail "relocate changed the shared base"
[ ! -e rl/s1.vmdk ] && [ ! -e rl/s1-delta.vmdk ] && [ ! -e rl/s2-sesparse.vmdk ] &&
	[ -e rldst/s1-delta.vmdk ] && [ -e rldst/s2-sesparse.vmdk ] && [ -e rldst/vm-flat.vmdk ] &&
	pass "the unshared layers moved with their extents, the base was copied" ||
	fail "relocate: rl: $(ls rl | tr '\n' ' ') rldst: $(ls rldst | tr '\n' ' ')"
check_clean rldst/s1.vmdk rldst/s2.vmdk

# commit into a kind vdelta does not write (a stream): refused naming the
# extent kind, nothing written
mkdir st
run "$VDELTA" convert -t streamOptimized g1/vm.vmdk st/base.vmdk &&
	run "$VDELTA" create --parent st/base.vmdk st/top.vmdk || fail "stream parent"
before=$(sha256sum st/*)
if ! run "$VDELTA" commit st/top.vmdk && grep -q 'STREAM extent' "$T/last.err"; then
	pass "commit into a stream refused naming the extent kind"
else
	fail "commit into a stream not refused as expected"
fi
[ "$before" = "$(sha256sum st/*)" ] && pass "refused commit wrote nothing" || fail "refused commit changed files"

finish
