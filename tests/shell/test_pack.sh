#!/usr/bin/env bash
# test_pack.sh — `vdelta pack`, `pack --list` and `unpack`: a group's own
# layers shipped as a bundle and rebuilt elsewhere (tests layer).
#
# Each scenario has its own folder under $T: SCEN/src (the group, one
# folder per VM) and SCEN/dst (the other side: holding only what the
# bundle needs, copied with cp).  Oracles:
#  - a raw export of every packed disk taken with qemu-img before packing:
#    after the unpack, `qemu-img compare` of the new disk with it, and
#    `vdelta digest` of the new disk equal to `xxhsum -H2` of it;
#  - `qemu-img info --backing-chain`: the same chain of file names;
#    `qemu-img check` (where qemu checks the kind) and `vdelta check` clean;
#  - `vdelta tree` of both sides: the same groups (names relative);
#  - sha256 of every file and the folder listing before and after a
#    refused or dry-run unpack: nothing written;
#  - for damage (flipped bit, truncated, frames swapped, newer version, a
#    decompression bomb): the message names the frame and its byte offset;
#    memory stays under 256 MiB (getrusage of the child).
# Kinds: hosted (monolithicSparse), ESXi (vmfs base, vmfsSparse and
# seSparse deltas), split (twoGbMaxExtentSparse over 2 GiB); --since
# chains, --full groups of several disks; through a pipe, and between two
# network namespaces with socat.
# shellcheck source=tests/shell/lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io xxhsum sha256sum python3 zstd
need_vdelta
need_vdio

MB=$((1 << 20))

qraw()
{
	qemu-img convert -U -O raw "$1" "$2"
}

# state DIR: the listing (hidden entries too) and the sha256 of every file
state()
{
	(cd "$1" && find . | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

# chain_names DISK: the file names of its chain, as qemu sees it
chain_names()
{
	qemu-img info -U --backing-chain "$1" | sed -n 's/^image: //p' | xargs -n1 basename | tr '\n' ' '
}

# same_disk WHAT NEW OLD RAW: NEW reads as RAW (OLD's export before the
# pack), has OLD's chain of names, and is clean.
same_disk()
{
	local what=$1 new=$2 old=$3 raw=$4 d x
	d=$("$VDELTA" digest "$new" 2>/dev/null | cut -d' ' -f1)
	x=$(xxhsum -H2 "$raw" 2>/dev/null | cut -d' ' -f1)
	if [ -n "$d" ] && [ "$d" = "$x" ] && qemu-img compare -q -f vmdk -F raw "$new" "$raw"; then
		pass "$what: $(basename "$new") reads as its export before the pack ($d)"
	else
		fail "$what: $new: digest $d, export $x, or qemu-img compare differs"
	fi
	if [ "$(chain_names "$new")" = "$(chain_names "$old")" ]; then
		pass "$what: qemu sees the same chain ($(chain_names "$new"))"
	else
		fail "$what: chain $(chain_names "$new") is not $(chain_names "$old")"
	fi
	expect_ok "$what: vdelta check $(basename "$new")" "$VDELTA" check "$new"
	if qemu-img check -q "$new" 2>"$T/qc.err" || grep -q "not support" "$T/qc.err"; then
		pass "$what: qemu-img check $(basename "$new")"
	else
		fail "$what: qemu-img check $new: $(cat "$T/qc.err")"
	fi
}

# held BUNDLE: the bytes of runs it holds, as pack --list --json says
held()
{
	"$VDELTA" pack --list --json "$1" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["held_bytes"])'
}

# tree_of DIR: `vdelta tree DIR` with the folder names taken out
tree_of()
{
	"$VDELTA" tree "$1" | sed -e "s|$1/||g" -e 's/ [0-9.]* [KMG]*i*B//g'
}

# forge_sidecar SIDE DIGEST: the digest sidecar SIDE made to say DIGEST,
# its checksum made right (so only its key tells it is not true)
forge_sidecar()
{
	sed -e "s/^digest=.*/digest=$2/" -e '/^checksum=/d' "$1" >"$T/side"
	printf 'checksum=%s\n' "$(xxhsum -H3 "$T/side" | awk '{print $NF}')" >>"$T/side"
	cp "$T/side" "$1"
}

# ---- hosted: a clone's own layers over a shared base -----------------------------------------

hosted()
{
	local S=$T/hosted
	mkdir -p "$S"/src/{base,vm1,vm2} "$S"/dst && cd "$S/src" || die "mkdir"
	vd_create base/base.vmdk 64M monolithicSparse || return
	qemu-io -f vmdk base/base.vmdk -c 'write -P 0x11 0 8M' -c 'write -P 0x12 40M 1M' >/dev/null
	run "$VDELTA" snapshot base/base.vmdk
	run "$VDELTA" clone --linked base/base.vmdk vm1/vm1.vmdk
	run "$VDELTA" clone --linked base/base.vmdk vm2/vm2.vmdk
	# whole grains of its own, and grains it wrote a few bytes of (the rest
	# of those is the parent's: parent runs in the bundle)
	qemu-io -f vmdk vm1/vm1.vmdk -c 'write -P 0x21 1M 2M' -c 'write -z 40M 64k' \
		-c 'write -P 0x24 12k 1k' >/dev/null
	run "$VDELTA" snapshot vm1/vm1.vmdk
	qemu-io -f vmdk vm1/vm1-000001.vmdk -c 'write -P 0x22 2M 64k' -c 'write -P 0x23 63M 1M' \
		-c 'write -P 0x25 1052672 4k' -c 'write -P 0x26 41947136 4k' >/dev/null
	qraw vm1/vm1-000001.vmdk "$S/vm1.raw"
	expect_ok "hosted: pack vm1 (its own layers)" "$VDELTA" pack --json vm1/vm1-000001.vmdk -o "$S/vm1.vdb"
	"$PYTHON" - "$T/last.out" <<'PY' && pass "hosted: the bundle holds vm1's two layers and needs the base" || fail "hosted: pack --json: $(cat "$T/last.out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert [l["name"] for l in j["layers"]] == ["vm1.vmdk", "vm1-000001.vmdk"], j["layers"]
assert [n["name"] for n in j["needs"]] == ["base.vmdk"], j["needs"]
assert j["layers"][1]["disk"] and not j["layers"][0]["disk"]
PY
	# the receiver has the base only (a copy: same CID, same content)
	cp base/base.vmdk "$S/dst/"
	run "$VDELTA" pack --list --json "$S/vm1.vdb"
	if "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["needs"][0]["digest"])' \
		"$T/last.out" | grep -qx "$("$VDELTA" digest base/base.vmdk | cut -d' ' -f1)"; then
		pass "hosted: pack --list names the base by the digest vdelta digest prints"
	else
		fail "hosted: pack --list: $(cat "$T/last.out")"
	fi
	state "$S/dst" >"$S/before"
	expect_ok "hosted: unpack --dry-run" "$VDELTA" unpack --dry-run "$S/vm1.vdb" "$S/dst"
	grep -q "found: $S/dst/base.vmdk" "$T/last.out" && grep -q "create  $S/dst/vm1-000001.vmdk" "$T/last.out" &&
		pass "hosted: the dry run names what it needs and would create" ||
		fail "hosted: dry run said: $(cat "$T/last.out")"
	state "$S/dst" | cmp -s - "$S/before" && pass "hosted: the dry run wrote nothing" ||
		fail "hosted: the dry run changed $S/dst"
	expect_ok "hosted: unpack" "$VDELTA" unpack "$S/vm1.vdb" "$S/dst"
	same_disk hosted "$S/dst/vm1-000001.vmdk" vm1/vm1-000001.vmdk "$S/vm1.raw"
	grep -qx 'child=vm1.vmdk' "$S/dst/base.vmdk.vdelta-children" &&
		pass "hosted: the base records its new child" || fail "hosted: no child record in dst"
	# unpacking again: every name is taken
	state "$S/dst" >"$S/before"
	if run "$VDELTA" unpack "$S/vm1.vdb" "$S/dst"; then
		fail "hosted: a second unpack into the same folder succeeded"
	elif grep -q "vm1.vmdk: already exists" "$T/last.err" && state "$S/dst" | cmp -s - "$S/before"; then
		pass "hosted: an unpack that would overwrite a file is refused naming it, nothing written"
	else
		fail "hosted: second unpack: $(cat "$T/last.err")"
	fi
	refusals "$S"
	cd "$T" || die cd
}

# ---- refusals: nothing written ---------------------------------------------------------------

# refused WHAT DIR PATTERN CMD...: CMD exits 1, says PATTERN, DIR unchanged
refused()
{
	local what=$1 dir=$2 pat=$3
	shift 3
	state "$dir" >"$T/refused.before"
	if run "$@"; then
		fail "$what: accepted"
	elif ! grep -qE "$pat" "$T/last.err"; then
		fail "$what: the message does not say /$pat/: $(cat "$T/last.err")"
	elif ! state "$dir" | cmp -s - "$T/refused.before"; then
		fail "$what: refused, but $dir changed"
	else
		pass "$what: refused ($(grep -oE "$pat" "$T/last.err" | head -1)), nothing written"
	fi
}

refusals()
{
	local S=$1 R=$1/refuse
	mkdir -p "$R"/none "$R"/other "$R"/dir
	refused "missing base" "$R/none" "needs base.vmdk \(CID [0-9a-f]{8}" \
		"$VDELTA" unpack "$S/vm1.vdb" "$R/none"
	# same name, other content (and another CID: a new disk)
	vd_create "$R/other/base.vmdk" 64M monolithicSparse
	qemu-io -f vmdk "$R/other/base.vmdk" -c 'write -P 0x99 0 1M' >/dev/null
	refused "other base of the same name" "$R/other" "needs base.vmdk" \
		"$VDELTA" unpack "$S/vm1.vdb" "$R/other"
	# the same CID, other content: named as such
	# (qemu writes the new CID without leading zeros: the embedded
	# descriptor keeps its size, its NUL padding takes up the difference)
	cp "$S/src/base/base.vmdk" "$R/dir/base.vmdk"
	qemu-io -f vmdk "$R/dir/base.vmdk" -c 'write -P 0x98 0 64k' >/dev/null
	"$PYTHON" - "$R/dir/base.vmdk" "$(grep -a -m1 '^CID=' "$S/src/base/base.vmdk" | cut -d= -f2)" <<'PY' ||
import re, sys
p, cid = sys.argv[1], sys.argv[2].encode()
b = bytearray(open(p, "rb").read())
m = re.search(rb"\nCID=([0-9a-f]{1,8})\n", b)
pad = b.index(b"\0", m.end())
grow = len(cid) - len(m.group(1))
assert b[pad:pad + max(grow, 0)] == b"\0" * max(grow, 0), "no padding after the descriptor"
b[m.start(1):pad + max(grow, 0)] = cid + b[m.end(1):pad] + b"\0" * max(-grow, 0)
open(p, "wb").write(b)
PY
		fail "same CID, other content: the CID could not be set back"
	refused "same CID, other content" "$R/dir" "has the CID, not the content" \
		"$VDELTA" unpack "$S/vm1.vdb" "$R/dir"
	refused "DIR that does not exist" "$R" "must exist" \
		"$VDELTA" unpack "$S/vm1.vdb" "$R/nowhere"
}

# ---- damage: refused naming the frame, bounded memory ----------------------------------------

# The blocks are walked as docs/bundle.md lays them out: a 16-byte
# preamble, then blocks of a 40-byte envelope and its stored bytes.
damage()
{
	local S=$T/damage src f
	mkdir -p "$S"/dst && cd "$S" || die "mkdir"
	vd_create base.vmdk 32M monolithicSparse || return
	# content that needs several frames (4 MiB of content each)
	"$PYTHON" -c 'import random,sys; random.seed(7); sys.stdout.buffer.write(bytes(random.choice(b"vdelta ") for _ in range(10 << 20)))' >pat.bin
	qemu-io -f vmdk base.vmdk -c 'write -s pat.bin 0 10M' >/dev/null 2>&1 ||
		"$VDIO" -w base.vmdk -c 'write -P 0x41 0 10M' -c flush >/dev/null
	expect_ok "damage: pack --full" "$VDELTA" pack --full base.vmdk -o good.vdb
	qraw base.vmdk base.raw
	expect_ok "damage: the intact bundle unpacks" "$VDELTA" unpack good.vdb dst
	same_disk damage dst/base.vmdk base.vmdk base.raw
	mkdir -p d
	"$PYTHON" - good.vdb d <<'PY'
import struct, sys
src, out = sys.argv[1], sys.argv[2]
s = open(src, "rb").read()
blocks, o = [], 16
while o + 40 <= len(s):
    stored = struct.unpack_from("<I", s, o + 8)[0]
    blocks.append((o, s[o:o + 4], 40 + stored))
    o += 40 + stored
frames = [b for b in blocks if b[1] == b"FRAM"]
assert len(frames) >= 3, len(frames)
def put(name, data):
    open("%s/%s" % (out, name), "wb").write(data)
f1 = frames[1]
flip = bytearray(s); flip[f1[0] + 40 + f1[2] // 3] ^= 0x10
put("flip.vdb", flip)
put("cut.vdb", s[:f1[0] + f1[2] // 2])
a, b = frames[0], frames[1]
put("swap.vdb", s[:a[0]] + s[b[0]:b[0] + b[2]] + s[a[0]:a[0] + a[2]] + s[b[0] + b[2]:])
put("trailer.vdb", s[:-1] + bytes([s[-1] ^ 1]))
open("%s/frame1.off" % out, "w").write("%d\n" % f1[0])
open("%s/frame1.end" % out, "w").write("%d\n" % (f1[0] + f1[2]))
PY
	local off
	off=$(cat d/frame1.off)
	mkdir dst2
	refused "flipped bit in frame 1" dst2 "frame 1 \(block [0-9]+ at byte $off\)" \
		"$VDELTA" unpack d/flip.vdb dst2
	refused "truncated stream" dst2 "truncated" "$VDELTA" unpack d/cut.vdb dst2
	refused "frames out of order" dst2 "numbered block|runs of layer|out of order" \
		"$VDELTA" unpack d/swap.vdb dst2
	refused "damaged trailer" dst2 "trailer" "$VDELTA" unpack d/trailer.vdb dst2
	# a newer version, its preamble check made right (xxhsum -H3: XXH3-64)
	head -c 8 good.vdb >ver.bin && printf '\002\000\000\000' >>ver.bin
	local h
	h=$(xxhsum -H3 ver.bin | awk '{print $NF}')
	"$PYTHON" -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1][-8:])[::-1])' "$h" >>ver.bin
	tail -c +17 good.vdb >>ver.bin
	refused "newer bundle version" dst2 "version 2.*newer vdelta" "$VDELTA" unpack ver.bin dst2
	refused "newer version, listed" dst2 "newer vdelta" "$VDELTA" pack --list ver.bin
	bomb
	cd "$T" || die cd
}

# A frame of 1 GiB of zeros where 4 MiB are declared, its checksums made
# right: refused in bounded memory; the same without a declared size.
bomb()
{
	truncate -s 1G zeros.bin
	zstd -q -1 zeros.bin -o zeros.zst && rm zeros.bin
	head -c $((64 << 20)) /dev/zero | zstd -q -1 -c >nosize.zst
	bomb_frame zeros.zst bomb.vdb
	bomb_frame nosize.zst nosize.vdb
	local rss
	rss=$("$PYTHON" - "$VDELTA" bomb.vdb dst2 <<'PY' 2>"$T/last.err"
import resource, subprocess, sys
r = subprocess.run([sys.argv[1], "unpack"] + sys.argv[2:], capture_output=True)
sys.stderr.write(r.stderr.decode())
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
	if [ "${rss%% *}" = 1 ] && grep -q "frame 0 (block [0-9]* at byte [0-9]*).*declares 1073741824 bytes" "$T/last.err"; then
		pass "decompression bomb: refused naming frame 0 (it declares 1 GiB)"
	else
		fail "decompression bomb: exit ${rss%% *}: $(cat "$T/last.err")"
	fi
	if ldd "$VDELTA" | grep -q libasan; then
		pass "decompression bomb: memory not measured under ASan (its shadow counts)"
	elif [ "${rss##* }" -lt $((256 << 10)) ]; then
		pass "decompression bomb: at most ${rss##* } KiB resident (< 256 MiB)"
	else
		fail "decompression bomb: ${rss##* } KiB resident"
	fi
	refused "a frame that declares no size" dst2 "does not declare its size" \
		"$VDELTA" unpack nosize.vdb dst2
}

# bomb_frame ZST OUT: good.vdb with frame 0's stored bytes replaced by ZST
bomb_frame()
{
	"$PYTHON" - good.vdb "$1" "$2" <<'PY'
import struct, subprocess, sys
s = open(sys.argv[1], "rb").read()
z = open(sys.argv[2], "rb").read()
def xxh3(b):
    return int(subprocess.run(["xxhsum", "-H3", "-"], input=b, capture_output=True,
                              check=True).stdout.split()[-1], 16)
o = 16
while s[o:o + 4] != b"FRAM":
    o += 40 + struct.unpack_from("<I", s, o + 8)[0]
stored = struct.unpack_from("<I", s, o + 8)[0]
h = bytearray(s[o:o + 40])
struct.pack_into("<II", h, 8, len(z), 4 << 20)
struct.pack_into("<Q", h, 24, xxh3(z))
struct.pack_into("<Q", h, 32, xxh3(bytes(h[:32])))
open(sys.argv[3], "wb").write(s[:o] + bytes(h) + z + s[o + 40 + stored:])
PY
}

# ---- ESXi: vmfs base, vmfsSparse and seSparse deltas -----------------------------------------

esxi()
{
	local S=$T/esxi
	mkdir -p "$S"/src/vm "$S"/dst && cd "$S/src" || die "mkdir"
	vd_create raw.vmdk 64M monolithicSparse || return
	qemu-io -f vmdk raw.vmdk -c 'write -P 0x31 0 6M' -c 'write -P 0x32 50M 512k' >/dev/null
	run "$VDELTA" clone --full -t vmfs raw.vmdk vm/vm.vmdk
	run "$VDELTA" snapshot vm/vm.vmdk
	"$VDIO" -w vm/vm-000001.vmdk -c 'write -P 0x41 1M 100k' -c 'write -z 50M 4k' -c flush >/dev/null
	run "$VDELTA" snapshot -t seSparse vm/vm-000001.vmdk
	"$VDIO" -w vm/vm-000002.vmdk -c 'write -P 0x51 3M 60k' -c 'write -z 0 4k' -c flush >/dev/null
	qraw vm/vm-000002.vmdk "$S/vm.raw"
	expect_ok "esxi: pack --since the vmfs base" "$VDELTA" pack --since vm/vm.vmdk vm/vm-000002.vmdk -o "$S/vm.vdb"
	cp vm/vm.vmdk vm/vm-flat.vmdk "$S/dst/"
	expect_ok "esxi: unpack" "$VDELTA" unpack "$S/vm.vdb" "$S/dst"
	grep -q "vmfsSparse" "$S/dst/vm-000001.vmdk" && grep -q "seSparse" "$S/dst/vm-000002.vmdk" &&
		[ -f "$S/dst/vm-000001-delta.vmdk" ] && [ -f "$S/dst/vm-000002-sesparse.vmdk" ] &&
		pass "esxi: the deltas stay vmfsSparse and seSparse, named as ESXi names them" ||
		fail "esxi: kinds or names changed: $(ls "$S/dst")"
	same_disk esxi "$S/dst/vm-000002.vmdk" vm/vm-000002.vmdk "$S/vm.raw"
	# the whole chain, the vmfs base included
	mkdir -p "$S/full"
	expect_ok "esxi: pack --full" "$VDELTA" pack --full vm/vm-000002.vmdk -o "$S/full.vdb"
	expect_ok "esxi: unpack --full into an empty folder" "$VDELTA" unpack "$S/full.vdb" "$S/full"
	grep -q 'createType="vmfs"' "$S/full/vm.vmdk" && [ -f "$S/full/vm-flat.vmdk" ] &&
		pass "esxi: the vmfs base stays a vmfs base" || fail "esxi: base: $(head -c 400 "$S/full/vm.vmdk")"
	same_disk "esxi full" "$S/full/vm-000002.vmdk" vm/vm-000002.vmdk "$S/vm.raw"
	cd "$T" || die cd
}

# ---- split layers over 2 GiB -----------------------------------------------------------------

split()
{
	local S=$T/split G=$((2047 * MB))
	mkdir -p "$S"/src "$S"/dst && cd "$S/src" || die "mkdir"
	vd_create base.vmdk 3G twoGbMaxExtentSparse || return
	qemu-io -f vmdk base.vmdk -c "write -P 0x61 $((G - MB)) 2M" -c 'write -P 0x62 0 1M' >/dev/null
	run "$VDELTA" snapshot base.vmdk
	qemu-io -f vmdk base-000001.vmdk -c "write -P 0x63 $((G - 64 * 1024)) 128k" -c 'write -P 0x64 3000M 1M' >/dev/null
	qraw base-000001.vmdk "$S/top.raw"
	expect_ok "split: pack --full" "$VDELTA" pack --full base-000001.vmdk -o "$S/split.vdb"
	expect_ok "split: unpack" "$VDELTA" unpack "$S/split.vdb" "$S/dst"
	[ -f "$S/dst/base-s002.vmdk" ] && [ -f "$S/dst/base-000001-s002.vmdk" ] &&
		pass "split: both layers stay split in 2047 MiB extents" || fail "split: $(ls "$S/dst")"
	same_disk split "$S/dst/base-000001.vmdk" base-000001.vmdk "$S/top.raw"
	cd "$T" || die cd
}

# ---- --since: an incremental over what the other side has ------------------------------------

since()
{
	local S=$T/since
	mkdir -p "$S"/src/vm "$S"/dst && cd "$S/src" || die "mkdir"
	vd_create vm/vm.vmdk 64M monolithicSparse || return
	qemu-io -f vmdk vm/vm.vmdk -c 'write -P 0x71 0 4M' >/dev/null
	expect_ok "since: day 1, pack --full" "$VDELTA" pack --full vm/vm.vmdk -o "$S/day1.vdb"
	expect_ok "since: day 1, unpack" "$VDELTA" unpack "$S/day1.vdb" "$S/dst"
	run "$VDELTA" snapshot vm/vm.vmdk
	qemu-io -f vmdk vm/vm-000001.vmdk -c 'write -P 0x72 1M 1M' >/dev/null
	run "$VDELTA" snapshot vm/vm-000001.vmdk
	qemu-io -f vmdk vm/vm-000002.vmdk -c 'write -P 0x73 2M 64k' >/dev/null
	qraw vm/vm-000002.vmdk "$S/day2.raw"
	expect_ok "since: day 2, pack --since day 1's layer" "$VDELTA" pack --since vm/vm.vmdk vm/vm-000002.vmdk -o "$S/day2.vdb"
	local day1 day2
	day1=$(held "$S/day1.vdb")
	day2=$(held "$S/day2.vdb")
	[ "$day2" -eq $((MB + 64 * 1024)) ] && [ "$day1" -eq $((4 * MB)) ] &&
		pass "since: day 2 holds only what the two new layers wrote ($day2 B; day 1 $day1 B)" ||
		fail "since: day 2 holds $day2 B, day 1 $day1 B"
	expect_ok "since: day 2, unpack over day 1's copy (found by digest, frozen)" \
		"$VDELTA" unpack "$S/day2.vdb" "$S/dst"
	same_disk since "$S/dst/vm-000002.vmdk" vm/vm-000002.vmdk "$S/day2.raw"
	grep -q 'ddb.vdelta.frozen = "1"' "$S/dst/vm.vmdk" && pass "since: day 1's top is frozen now that it has a child" ||
		fail "since: dst/vm.vmdk not frozen"
	cd "$T" || die cd
}

# ---- --full of several disks: the base once, the same groups ---------------------------------

full_group()
{
	local S=$T/full i
	mkdir -p "$S"/src "$S"/dst && cd "$S/src" || die "mkdir"
	vd_create base.vmdk 64M monolithicSparse || return
	qemu-io -f vmdk base.vmdk -c 'write -P 0x81 0 16M' >/dev/null
	run "$VDELTA" snapshot base.vmdk
	for i in 1 2 3; do
		run "$VDELTA" clone --linked base.vmdk "c$i.vmdk"
		qemu-io -f vmdk "c$i.vmdk" -c "write -P 0x8$((i + 1)) $((i * 3))M 1M" >/dev/null
		qraw "c$i.vmdk" "$S/c$i.raw"
	done
	expect_ok "full: pack --full c1 alone" "$VDELTA" pack --full c1.vmdk -o "$S/one.vdb"
	expect_ok "full: pack --full of the 4 disks" "$VDELTA" pack --full c1.vmdk c2.vmdk c3.vmdk base-000001.vmdk -o "$S/all.vdb"
	local one all
	one=$(held "$S/one.vdb")
	all=$(held "$S/all.vdb")
	[ "$one" -eq $((17 * MB)) ] && [ "$all" -eq $((19 * MB)) ] &&
		pass "full: 4 disks hold $all B, one $one B: the base went once" ||
		fail "full: 4 disks hold $all B, one $one B"
	expect_ok "full: unpack" "$VDELTA" unpack "$S/all.vdb" "$S/dst"
	for i in 1 2 3; do
		same_disk "full c$i" "$S/dst/c$i.vmdk" "c$i.vmdk" "$S/c$i.raw"
	done
	if [ "$(tree_of "$S/src")" = "$(tree_of "$S/dst")" ]; then
		pass "full: vdelta tree shows the same group on both sides"
	else
		fail "full: trees differ: $(tree_of "$S/src") // $(tree_of "$S/dst")"
	fi
	cd "$T" || die cd
}

# ---- through a pipe, and between two hosts ---------------------------------------------------

pipe()
{
	local S=$T/pipe
	mkdir -p "$S"/dst "$S"/net && cd "$T/hosted/src" || return
	if "$VDELTA" pack vm1/vm1-000001.vmdk -o - 2>"$S/pack.err" |
		"$VDELTA" unpack - "$S/dst" >/dev/null 2>"$S/unpack.err"; then
		fail "pipe: unpacked without the base on the other side"
	else
		grep -q "needs base.vmdk" "$S/unpack.err" &&
			pass "pipe: without the base the unpack says what it needs" ||
			fail "pipe: $(cat "$S/unpack.err")"
	fi
	cp base/base.vmdk "$S/dst/"
	if "$VDELTA" pack vm1/vm1-000001.vmdk -o - 2>"$S/pack.err" |
		"$VDELTA" unpack - "$S/dst" >/dev/null 2>"$S/unpack.err"; then
		pass "pipe: pack -o - | unpack - DIR"
		same_disk pipe "$S/dst/vm1-000001.vmdk" vm1/vm1-000001.vmdk "$T/hosted/vm1.raw"
	else
		fail "pipe: $(cat "$S/pack.err" "$S/unpack.err")"
	fi
	netns_test "$S"
	cd "$T" || die cd
}

netns_test()
{
	local S=$1 port=$((20000 + $$ % 20000)) pid
	netns_need
	netns_pair send recv
	cp base/base.vmdk "$S/net/"
	netns_run B socat -u "TCP-LISTEN:$port,bind=$NETNS_ADDR_B,reuseaddr" - 2>"$S/socat.err" |
		"$VDELTA" unpack - "$S/net" >"$S/net.out" 2>"$S/net.err" &
	pid=$!
	if netns_run A bash -c '"$1" pack "$2" -o - | socat -u - "TCP:$3:$4,retry=50,interval=0.1"' _ \
		"$VDELTA" vm1/vm1-000001.vmdk "$NETNS_ADDR_B" "$port" 2>"$S/send.err" && wait "$pid"; then
		pass "netns: pack in $NETNS_A | socat | unpack in $NETNS_B ($NETNS_ADDR_A -> $NETNS_ADDR_B)"
		same_disk netns "$S/net/vm1-000001.vmdk" vm1/vm1-000001.vmdk "$T/hosted/vm1.raw"
	else
		fail "netns: $(cat "$S/send.err" "$S/socat.err" "$S/net.err")"
	fi
	netns_cleanup
}

# ---- the digest sidecar ----------------------------------------------------------------------

sidecar()
{
	local S=$T/hosted/src side d want
	cd "$S" || return
	side=base/base.vmdk.vdelta-digest
	sleep 2 # the base's times must be older than the racy window
	expect_ok "sidecar: pack" "$VDELTA" pack vm2/vm2.vmdk -o "$T/vm2.vdb"
	want=$("$VDELTA" digest base/base.vmdk | cut -d' ' -f1)
	grep -qx "digest=$want" "$side" && pass "sidecar: the frozen base's digest is recorded beside it" ||
		fail "sidecar: $side: $(cat "$side" 2>&1)"
	# a recorded digest is used as it is while its key holds: prove it with
	# an edited one (its checksum made right)
	d=0123456789abcdef0123456789abcdef
	forge_sidecar "$side" "$d"
	rm -f "$T/vm2.vdb"
	run "$VDELTA" pack vm2/vm2.vmdk -o "$T/vm2.vdb"
	run "$VDELTA" pack --list "$T/vm2.vdb"
	grep -q "digest $d" "$T/last.out" && pass "sidecar: pack took the digest from the sidecar (not re-read)" ||
		fail "sidecar: not reused: $(cat "$T/last.out")"
	touch base/base.vmdk # a change of time: the key no longer holds
	rm -f "$T/vm2.vdb"
	run "$VDELTA" pack vm2/vm2.vmdk -o "$T/vm2.vdb"
	run "$VDELTA" pack --list "$T/vm2.vdb"
	grep -q "digest $want" "$T/last.out" && pass "sidecar: a changed file makes pack compute the digest again" ||
		fail "sidecar: stale digest used: $(cat "$T/last.out")"
	unpack_sidecar "$want"
	cd "$T" || die cd
}

# unpack_sidecar DIGEST: the receiver records the digest beside the frozen
# base it found, once the unpack is done, and the next unpack takes it
# from there (an edited one, its checksum made right, is believed).
unpack_sidecar()
{
	local D=$T/hosted/dst-side side=$T/hosted/dst-side/base.vmdk.vdelta-digest d
	mkdir -p "$D" && cp base/base.vmdk "$D/" || die "cp"
	sleep 3 # the copy's times must be older than the racy window (2 s)
	expect_ok "sidecar: unpack vm2" "$VDELTA" unpack "$T/vm2.vdb" "$D"
	grep -qx "digest=$1" "$side" && pass "sidecar: unpack recorded the base's digest beside it" ||
		fail "sidecar: $side: $(cat "$side" 2>&1)"
	d=0123456789abcdef0123456789abcdef
	forge_sidecar "$side" "$d"
	mkdir -p "$D/again"
	run "$VDELTA" unpack --base "$D/base.vmdk" "$T/vm2.vdb" "$D/again"
	grep -q "has the CID, not the content" "$T/last.err" &&
		pass "sidecar: unpack took the base's digest from its sidecar (not re-read)" ||
		fail "sidecar: unpack did not use the sidecar: $(cat "$T/last.err")"
}

hosted
sidecar
damage
esxi
split
since
full_group
pipe
finish
