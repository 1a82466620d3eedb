#!/bin/bash
# test_rbd.sh — `vdelta rbd export` / `vdelta rbd import` against a real
# one-node Ceph cluster started by scripts/ceph.sh (tests layer).
#
# Two groups: A made by vdelta (base, two snapshot levels, clones c1-c3 and
# an ESXi full clone esx.vmdk (vmfs) with a vmfsSparse snapshot), B made by
# qemu-img (base, two levels, four clones).  Oracles: `rbd export` of each
# image against `vdelta convert -O raw` of its disk (sha256), `rbd info`
# for parents, `rbd du` against `vdelta tree`'s "uses", qemu's own rbd:
# driver (qemu-img compare), librbd reads through python3-rbd, qemu-img
# info / check of what import made, xxhsum -H2 of qemu's raw export for
# digests, sha256 of every source file before and after, `rbd ls` (with
# snapshots) before and after every refusal.  The cluster is started once
# and always stopped (trap).  80 s on 2 cores shared with other work (load
# 5.5), the ASan build 130 s.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io sha256sum xxhsum rbd rados ceph ceph-mon ceph-mgr ceph-osd ceph-authtool
need_vdelta
need_vdio
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] || skip "qemu-block-extra (qemu's rbd: driver) not installed"
"$PYTHON" -c 'import rbd' 2>/dev/null || skip "python3-rbd not installed"

CL=$T/ceph
stop_cluster()
{
	"$SOURCE_DIR/scripts/ceph.sh" stop "$CL" >/dev/null 2>&1
	t_cleanup
}
trap stop_cluster EXIT
if ! "$SOURCE_DIR/scripts/ceph.sh" start "$CL" >"$T/ceph.out" 2>&1; then
	cat "$T/ceph.out" >&2
	tail -n 20 "$CL"/log/*.log >&2 2>/dev/null
	die "the one-node cluster did not start (scripts/ceph.sh)"
fi
export CEPH_CONF=$CL/ceph.conf
# meson test sets MALLOC_PERTURB_; with it, librados/librbd 16.2.15 now and
# then abort in their own io_context_pool thread ("terminate called after
# throwing an instance of 'std::system_error' ... Invalid argument"), in
# vdelta (in rbd_snap_create) and in python3-rbd's listing alike; without
# it, none in the same runs.  The test's clients run without it; the unit
# test and the ASan build check vdelta's own memory.
unset MALLOC_PERTURB_
POOL=rbd
pass "cluster up: $(ceph health 2>&1)"

# ---- helpers ----------------------------------------------------------------

vmdk_parent()   # the backing file's name of a layer (qemu-img), "" for a base
{
	qemu-img info -U --output=json "$1" | "$PYTHON" -c \
		'import json, sys, os; b = json.load(sys.stdin).get("backing-filename"); print(os.path.basename(b) if b else "")'
}

raw_sha()       # sha256 of vdelta's raw export of a disk
{
	rm -f "$T/x.raw"
	"$VDELTA" convert -f vmdk -O raw "$1" "$T/x.raw" >/dev/null && sha256sum <"$T/x.raw" | cut -d' ' -f1
}

rbd_sha()       # sha256 of `rbd export` of an image
{
	rbd export --no-progress "$POOL/$1" - 2>/dev/null | sha256sum | cut -d' ' -f1
}

rbd_shas()      # IMAGE...: "IMAGE sha256" each, read through librbd in one process
{
	"$PYTHON" - "$POOL" "$@" <<'PY'
import hashlib, rados, rbd, sys
with rados.Rados(conffile="") as c, c.open_ioctx(sys.argv[1]) as io:
    for name in sys.argv[2:]:
        h = hashlib.sha256()
        try:
            with rbd.Image(io, name, read_only=True) as img:
                size, off = img.size(), 0
                while off < size:
                    n = min(4 << 20, size - off)
                    h.update(img.read(off, n))
                    off += n
            print(name, h.hexdigest())
        except rbd.ImageNotFound:
            print(name, "missing")
PY
}

qdigest()       # xxhsum -H2 of qemu's raw export
{
	rm -f "$T/q.raw"
	qemu-img convert -U -O raw "$1" "$T/q.raw" && xxhsum -H2 "$T/q.raw" | cut -d' ' -f1
}

rbd_list()      # every image and snapshot of the pool, sorted
{
	"$PYTHON" - "$POOL" <<'PY'
import rados, rbd, sys
with rados.Rados(conffile="") as c, c.open_ioctx(sys.argv[1]) as io:
    for name in sorted(rbd.RBD().list(io)):
        print(name)
        with rbd.Image(io, name, read_only=True) as img:
            for s in img.list_snaps():
                print(name + "@" + s["name"])
PY
}

rbd_remove()    # PREFIX: remove the images named PREFIX*, clones first
{
	"$PYTHON" - "$POOL" "$1" <<'PY'
import rados, rbd, sys
with rados.Rados(conffile="") as c, c.open_ioctx(sys.argv[1]) as io:
    names = [n for n in rbd.RBD().list(io) if n.startswith(sys.argv[2])]
    while names:
        left = []
        for n in names:
            try:
                with rbd.Image(io, n) as img:
                    for s in list(img.list_snaps()):
                        if img.is_protected_snap(s["name"]):
                            img.unprotect_snap(s["name"])
                        img.remove_snap(s["name"])
                rbd.RBD().remove(io, n)
            except (rbd.ImageBusy, rbd.ImageHasSnapshots):
                left.append(n)
        if left == names:
            sys.exit("cannot remove " + " ".join(left))
        names = left
PY
}

usecs()         # microseconds since $1 (an $EPOCHREALTIME)
{
	echo $((${EPOCHREALTIME/[.,]/} - ${1/[.,]/}))
}

# ---- the groups ---------------------------------------------------------------

A=$T/A
B=$T/B
mkdir -p "$A" "$B"
LAYERS_A="base base-000001 base-000002 c1 c2 c3 esx esx-000001"
LAYERS_B="b s1 s2 q1 q2 q3 q4"

build_a()
{
	vd() { run "$VDIO" -w "$A/$1" "${@:2}"; }
	run "$VDELTA" create -s 64M "$A/base.vmdk" &&
	vd base.vmdk -c 'write -P 0x11 0 8M' -c 'write -P 0x12 16M 4M' &&
	run "$VDELTA" snapshot "$A/base.vmdk" &&
	vd base-000001.vmdk -c 'write -P 0x21 0 64k' -c 'write -z 4M 128k' -c 'write -P 0x22 20M 1M' &&
	run "$VDELTA" snapshot "$A/base-000001.vmdk" &&
	vd base-000002.vmdk -c 'write -P 0x31 8M 256k' &&
	run "$VDELTA" clone --linked "$A/base.vmdk" "$A/c1.vmdk" &&
	run "$VDELTA" clone --linked "$A/base-000001.vmdk" "$A/c2.vmdk" &&
	run "$VDELTA" clone --linked "$A/base-000001.vmdk" "$A/c3.vmdk" &&
	vd c1.vmdk -c 'write -P 0x41 2M 512k' &&
	vd c2.vmdk -c 'write -z 16M 64k' -c 'write -P 0x42 40M 64k' &&
	vd c3.vmdk -c 'write -P 0x43 32M 4M' &&
	run "$VDELTA" clone --full -t vmfs "$A/c2.vmdk" "$A/esx.vmdk" &&
	run "$VDELTA" snapshot "$A/esx.vmdk" &&
	vd esx-000001.vmdk -c 'write -P 0x44 1M 64k' -c 'write -z 16M 1M'
}

build_b()
{
	local q=(qemu-img create -q -f vmdk)
	run "${q[@]}" "$B/b.vmdk" 32M &&
	run qemu-io -f vmdk -c 'write -P 0x51 0 4M' -c 'write -P 0x52 12M 4M' "$B/b.vmdk" &&
	run "${q[@]}" -b b.vmdk -F vmdk "$B/s1.vmdk" &&
	run qemu-io -f vmdk -c 'write -P 0x61 1M 64k' "$B/s1.vmdk" &&
	run "${q[@]}" -b s1.vmdk -F vmdk "$B/s2.vmdk" &&
	run qemu-io -f vmdk -c 'write -z 12M 128k' -c 'write -P 0x62 20M 1M' "$B/s2.vmdk" &&
	run "${q[@]}" -b b.vmdk -F vmdk "$B/q1.vmdk" &&
	run "${q[@]}" -b s1.vmdk -F vmdk "$B/q2.vmdk" &&
	run "${q[@]}" -b s2.vmdk -F vmdk "$B/q3.vmdk" &&
	run "${q[@]}" -b s2.vmdk -F vmdk "$B/q4.vmdk" &&
	run qemu-io -f vmdk -c 'write -P 0x71 2M 1M' "$B/q1.vmdk" &&
	run qemu-io -f vmdk -c 'write -P 0x72 0 64k' "$B/q2.vmdk" &&
	run qemu-io -f vmdk -c 'write -z 0 4M' "$B/q4.vmdk"
}

build_a || die "building group A failed"
build_b || die "building group B failed"
declare -A RAW_B
for l in $LAYERS_B; do RAW_B[$l]=$(raw_sha "$B/$l.vmdk"); done
src_sums() { (cd "$T" && find A B -type f | sort | xargs sha256sum); }
src_sums >"$T/src.before"

# ---- export -------------------------------------------------------------------------

expect_ok "export group A (made by vdelta)" "$VDELTA" rbd export --prefix a- -p --all "$A"
grep -q '%' "$T/last.err" && pass "-p shows progress" || fail "-p showed no progress"
t0=$EPOCHREALTIME
expect_ok "export group B (made by qemu-img), each image read back whole" \
	"$VDELTA" rbd export --prefix q- --verify full --json --all "$B"
T_EXPORT_B=$(usecs "$t0")
for l in $LAYERS_B; do echo "q-$l $(qdigest "$B/$l.vmdk")"; done >"$T/b.qdig"
"$PYTHON" - "$T/last.out" "$T/b.qdig" <<'PY' && pass "--verify full: every image of B verified, its disk-digest qemu's" ||
import json, sys
d = json.load(open(sys.argv[1]))["images"]
want = dict(l.split() for l in open(sys.argv[2]))
sys.exit(0 if len(d) == len(want) and all(i["verified"] and i["disk-digest"] == want[i["image"]] for i in d) else 1)
PY
	fail "--verify full: $(cat "$T/last.out")"
src_sums | cmp -s - "$T/src.before" && pass "export wrote nothing of the source (sha256 of every file)" ||
	fail "export changed source files: $(src_sums | diff "$T/src.before" - | head -4)"

# check_group DIR PREFIX LAYERS: each image's content (read through librbd,
# and by `rbd export` for each disk's top) and its parent (rbd info)
check_group()
{
	local dir=$1 pre=$2 l want have par info
	declare -A par_of=() is_parent=()
	for l in $3; do
		par_of[$l]=$(vmdk_parent "$dir/$l.vmdk")
		[ -z "${par_of[$l]}" ] || is_parent[${par_of[$l]%.vmdk}]=1
	done
	# shellcheck disable=SC2046
	rbd_shas $(printf "$pre%s " $3) >"$T/g.sums"
	for l in $3; do
		want=$(raw_sha "$dir/$l.vmdk")
		have=$(sed -n "s/^$pre$l //p" "$T/g.sums")
		[ -n "$want" ] && [ "$want" = "$have" ] &&
			pass "$pre$l: librbd reads what vdelta convert -O raw of $l.vmdk holds" ||
			fail "$pre$l: librbd reads $have, the disk $want"
		if [ -z "${is_parent[$l]:-}" ]; then
			have=$(rbd_sha "$pre$l")
			[ "$want" = "$have" ] && pass "$pre$l (a disk's top): rbd export = vdelta convert -O raw" ||
				fail "$pre$l: rbd export $have, the disk $want"
		fi
		par=${par_of[$l]}
		info=$(rbd info --format json "$POOL/$pre$l" | "$PYTHON" -c \
			'import json, sys; p = json.load(sys.stdin).get("parent"); print(p["image"] + "@" + p["snapshot"] if p else "")')
		if [ -z "$par" ]; then
			[ -z "$info" ] && pass "$pre$l: a base, no parent" || fail "$pre$l: parent $info"
		else
			case $info in
			"$pre${par%.vmdk}@vdelta-"*) pass "$pre$l: rbd info: parent $info" ;;
			*) fail "$pre$l: rbd info: parent '$info', expected $pre${par%.vmdk}@vdelta-*" ;;
			esac
		fi
	done
}
check_group "$A" a- "$LAYERS_A"
check_group "$B" q- "$LAYERS_B"

# rbd children of each snapshot = the layer's children (qemu-img's backing files)
kids_ok=1
for l in $LAYERS_A; do echo "$l $(vmdk_parent "$A/$l.vmdk")"; done >"$T/a.parents"
for l in $LAYERS_A; do
	want=$(awk -v p="$l.vmdk" -v pre="$POOL/a-" '$2 == p { print pre $1 }' "$T/a.parents" | sort)
	snap=$(rbd snap ls --format json "$POOL/a-$l" | "$PYTHON" -c 'import json, sys; s = json.load(sys.stdin); print(s[0]["name"] if s else "")')
	have=$([ -n "$snap" ] && rbd children "$POOL/a-$l@$snap" | sort)
	[ "$want" = "$have" ] || { kids_ok=0; echo "children of $l: '$have', want '$want'" >&2; }
done
[ $kids_ok = 1 ] && pass "rbd children mirrors the tree of A" || fail "rbd children differs from A's tree"

# rbd du of a group's images within 10% of vdelta tree's "uses"
check_du()
{
	local dir=$1 pre=$2 du uses
	du=$(rbd du -p "$POOL" --format json 2>/dev/null | "$PYTHON" -c \
		'import json, sys; print(sum(i["used_size"] for i in json.load(sys.stdin)["images"] if i["name"].startswith(sys.argv[1])))' "$pre")
	uses=$("$VDELTA" tree --json "$dir" | "$PYTHON" -c \
		'import json, sys; print(sum(g["used-bytes"] for g in json.load(sys.stdin)["groups"]))')
	if [ -n "$du" ] && [ -n "$uses" ] && [ $((du * 10)) -le $((uses * 11)) ] &&
		[ $((du * 10)) -ge $((uses * 9)) ]; then
		pass "$pre*: rbd du $du bytes, vdelta tree uses $uses (within 10%)"
	else
		fail "$pre*: rbd du $du bytes, vdelta tree uses $uses"
	fi
}
check_du "$A" a-
check_du "$B" q-

# qemu reads an exported clone through its own rbd: driver
for pair in "$A/c2.vmdk a-c2" "$A/esx.vmdk a-esx" "$B/q3.vmdk q-q3"; do
	set -- $pair
	expect_ok "qemu-img compare $(basename "$1") with rbd:$POOL/$2" \
		qemu-img compare -U -f vmdk -F raw "$1" "rbd:$POOL/$2:conf=$CEPH_CONF"
done

# ---- re-run --------------------------------------------------------------------------

before=$(rbd_list)
expect_ok "export A again" "$VDELTA" rbd export --prefix a- --json --all "$A"
"$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["sent-bytes"] == 0 and all(i["action"] == "keep" for i in d["images"]) else 1)' \
	"$T/last.out" && pass "re-run: every image kept, nothing sent" || fail "re-run sent or changed something"
[ "$(rbd_list)" = "$before" ] && pass "re-run: rbd ls as before" || fail "re-run changed rbd ls"

expect_ok "a dry run of a new prefix" "$VDELTA" rbd export -n --prefix n- --all "$A"
grep -q '^rbd/n-base  create' "$T/last.out" && pass "dry run: prints the plan" || fail "dry run: no plan printed"
expect_ok "a dry run for one disk" "$VDELTA" rbd export -n --json --prefix x- "$B/q2.vmdk"
"$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1]))["images"]; sys.exit(0 if sorted(i["image"] for i in d) == sorted("x-" + l for l in sys.argv[2:]) else 1)' \
	"$T/last.out" $LAYERS_B && pass "a disk named: its whole group is planned" ||
	fail "a disk named: $(cat "$T/last.out")"
[ "$(rbd_list)" = "$before" ] && pass "dry run: rbd ls as before" || fail "dry run changed rbd ls"

# librados and librbd are loaded by `vdelta rbd` alone (rbd/rbd_lib.c): no
# other command maps them, and a library that cannot be loaded is an error
# naming it and its package, before anything is sent
ldd "$VDELTA" | grep -E 'librbd|librados|libceph' && fail "vdelta links the Ceph libraries" ||
	pass "vdelta links neither librbd nor librados"
mkdir -p "$T/nolib" && echo "not a library" >"$T/nolib/librados.so.2"
if LD_LIBRARY_PATH=$T/nolib run "$VDELTA" rbd export --prefix l- --all "$A"; then
	fail "export without a loadable librados succeeded"
else
	grep -q "librados.so.2 (Debian: apt-get install librbd1)" "$T/last.err" &&
		pass "no loadable librados: refused, naming the library and its package" ||
		fail "no loadable librados: $(cat "$T/last.err")"
fi
[ "$(rbd_list)" = "$before" ] && pass "no library: rbd ls as before" || fail "no library, but rbd ls changed"

# a new snapshot of c1: c1 gets its snapshot, the new top is cloned from it
run "$VDELTA" snapshot "$A/c1.vmdk"
run "$VDIO" -w "$A/c1-000001.vmdk" -c 'write -P 0x45 3M 64k'
expect_ok "export A after a snapshot of c1" "$VDELTA" rbd export --prefix a- --json --all "$A"
"$PYTHON" - "$T/last.out" <<'PY' && pass "re-run: c1 snapshotted, c1-000001 cloned, the rest kept" || fail "re-run after a snapshot: wrong actions"
import json, sys
acts = {i["image"]: i["action"] for i in json.load(open(sys.argv[1]))["images"]}
want = {"a-c1": "snapshot", "a-c1-000001": "clone"}
sys.exit(0 if all(acts.get(k) == v for k, v in want.items()) and
         all(v == "keep" for k, v in acts.items() if k not in want) else 1)
PY
check_group "$A" a- "c1 c1-000001"
LAYERS_A="$LAYERS_A c1-000001"

# a top written since it was exported: refused, the pool as it was
for l in $LAYERS_A; do qdigest "$A/$l.vmdk" >"$T/dig.$l"; done
before=$(rbd_list)
run "$VDIO" -w "$A/c3.vmdk" -c 'write -P 0x46 5M 64k'
if run "$VDELTA" rbd export --prefix a- --all "$A"; then
	fail "export after c3 changed succeeded"
else
	grep -q "a-c3.*exists and holds another layer" "$T/last.err" &&
		pass "export after c3 changed: refused, naming the image" ||
		fail "refusal does not name rbd/a-c3: $(cat "$T/last.err")"
fi
[ "$(rbd_list)" = "$before" ] && pass "refused: rbd ls as before" || fail "refused, but rbd ls changed"

# ---- import --------------------------------------------------------------------------

I=$T/I
mkdir "$I"
t0=$EPOCHREALTIME
expect_ok "import A's disks into another folder" "$VDELTA" rbd import \
	"$POOL/a-base-000002" "$POOL/a-c1-000001" "$POOL/a-c2" "$POOL/a-c3" "$POOL/a-esx-000001" "$I"
for l in $LAYERS_A; do
	f=$I/a-$l.vmdk
	want=$(cat "$T/dig.$l")
	have=$(qdigest "$f")
	[ -n "$want" ] && [ "$want" = "$have" ] && pass "imported $l: digest as its source when exported" ||
		fail "imported $l: $have, source $want"
	run qemu-img check "$f" && pass "imported $l: qemu-img check clean" || fail "imported $l: qemu-img check"
	pa=$(vmdk_parent "$A/$l.vmdk")
	pi=$(vmdk_parent "$f")
	[ "$pi" = "${pa:+a-$pa}" ] && pass "imported $l: parent ${pi:-none}, as in A" ||
		fail "imported $l: parent '$pi', in A '$pa'"
done
chain_names()   # the chain qemu-img shows, as names without folder or prefix
{
	qemu-img info -U --backing-chain "$1" | sed -n 's/^image: //p' | xargs -n1 basename | sed "s/^$2//"
}
[ "$(chain_names "$I/a-c2.vmdk" a-)" = "$(chain_names "$A/c2.vmdk" '')" ] &&
	pass "qemu-img info --backing-chain: the same chain for c2" ||
	fail "backing chains differ: $(chain_names "$I/a-c2.vmdk" a-) / $(chain_names "$A/c2.vmdk" '')"
group_shape()   # "N disks, M layers" of each group vdelta tree prints
{
	"$VDELTA" tree "$1" | sed -n 's/^group .*: \([0-9]* disks\?, [0-9]* layers\?\),.*/\1/p' | sort
}
[ "$(group_shape "$I")" = "$(group_shape "$A")" ] && pass "vdelta tree: the import has A's groups ($(group_shape "$I" | tr '\n' ' '))" ||
	fail "vdelta tree: import $(group_shape "$I" | tr '\n' ' '), A $(group_shape "$A" | tr '\n' ' ')"
# each imported parent records the children qemu-img finds over it
rec_ok=1
for f in "$I"/*.vmdk; do echo "$(basename "$f") $(vmdk_parent "$f")"; done >"$T/i.parents"
for f in "$I"/*.vmdk; do
	n=$(basename "$f")
	want=$(awk -v p="$n" '$2 == p { print $1 }' "$T/i.parents" | sort)
	have=$(sed -n 's/^child=//p' "$f.vdelta-children" 2>/dev/null | sort)
	[ "$want" = "$have" ] || { rec_ok=0; echo "$n records '$have', has '$want'" >&2; }
done
[ $rec_ok = 1 ] && pass "import: every parent's child record names its children in $I" ||
	fail "import: child records differ from the chains"
# the group commands load the import as a group of their own: vdelta tree
# flags nothing (children known, links whole), vdelta check is clean on
# every layer, and a group command plans over it
if run "$VDELTA" tree --json "$I"; then
	"$PYTHON" - "$T/last.out" <<'PY' && pass "vdelta tree --json: no layer of the import flagged" ||
import json, sys
t = json.load(open(sys.argv[1]))
bad = [(n.get("path"), n.get("flags")) for g in t["groups"] for n in g.get("layers", g.get("nodes", [])) if n.get("flags")]
print(bad, file=sys.stderr)
sys.exit(1 if bad or not t["groups"] else 0)
PY
		fail "vdelta tree --json flags layers of the import"
else
	fail "vdelta tree $I: $(cat "$T/last.err")"
fi
chk_ok=1
for f in "$I"/*.vmdk; do run "$VDELTA" check "$f" || { chk_ok=0; echo "check $f: $(cat "$T/last.err")" >&2; }; done
[ $chk_ok = 1 ] && pass "vdelta check: every imported layer clean" || fail "vdelta check: an imported layer is not clean"
run "$VDELTA" consolidate --dry-run "$I/a-c2.vmdk" && pass "consolidate --dry-run loads the imported group" ||
	fail "consolidate --dry-run on the import: $(cat "$T/last.err")"
[ -z "$(ls -A "$I" | grep '^\.')" ] && pass "import: no staging folder left" || fail "import left $(ls -A "$I" | grep '^\.')"

# a clone shrunk and grown again reads zeros past its parent overlap; a
# clone larger than its parent has no VMDK shape
head -c 8M /dev/urandom >"$T/r8.raw"
run rbd import --no-progress "$T/r8.raw" "$POOL/ov-p" && run rbd snap create "$POOL/ov-p@s" &&
	run rbd snap protect "$POOL/ov-p@s" && run rbd clone "$POOL/ov-p@s" "$POOL/ov-c" &&
	run rbd resize --allow-shrink --size 2M "$POOL/ov-c" && run rbd resize --size 8M "$POOL/ov-c" &&
	run rbd bench --io-type write --io-size 4K --io-total 64K "$POOL/ov-c" &&
	run rbd clone "$POOL/ov-p@s" "$POOL/ov-g" && run rbd resize --size 16M "$POOL/ov-g" ||
	fail "could not make the resized clones"
O=$T/O
mkdir "$O"
expect_ok "import a clone shrunk and grown again" "$VDELTA" rbd import "$POOL/ov-c" "$O"
[ "$(qdigest "$O/ov-c.vmdk")" = "$(rbd export --no-progress "$POOL/ov-c" - 2>/dev/null | xxhsum -H2 | cut -d' ' -f1)" ] &&
	pass "ov-c: the import reads as the image (zeros past the overlap)" || fail "ov-c: the import differs from rbd export"
if run "$VDELTA" rbd import "$POOL/ov-g" "$O"; then
	fail "import of a clone larger than its parent succeeded"
else
	grep -q "ov-g: .* one size" "$T/last.err" && pass "a clone larger than its parent: refused" ||
		fail "ov-g: $(cat "$T/last.err")"
fi
[ "$(ls -A "$O" | tr '\n' ' ')" = "ov-c.vmdk ov-p.vmdk ov-p.vmdk.vdelta-children " ] &&
	pass "refused import: nothing made" || fail "refused import left: $(ls -A "$O")"

# ---- a write through librbd into one clone ---------------------------------------------

# shellcheck disable=SC2046
rbd_shas $(printf 'q-%s ' $LAYERS_B) >"$T/b.before"
run rbd bench --io-type write --io-size 64K --io-total 1M --io-pattern seq "$POOL/q-q2"
# shellcheck disable=SC2046
rbd_shas $(printf 'q-%s ' $LAYERS_B) >"$T/b.after"
changed=$(diff "$T/b.before" "$T/b.after" | grep -c '^>')
diff "$T/b.before" "$T/b.after" | grep -q '^> q-q2 ' && [ "$changed" = 1 ] &&
	pass "a librbd write into q-q2 leaves every sibling's export unchanged" ||
	fail "after a write into q-q2, $changed images changed"

# ---- kill -9, then again ---------------------------------------------------------------

# whole_b PREFIX WHAT: every layer of B is PREFIX+layer with B's content,
# and no PREFIX*%part is left
whole_b()
{
	local l bad=0
	# shellcheck disable=SC2046
	rbd_shas $(printf "$1%s " $LAYERS_B) >"$T/whole.sums"
	for l in $LAYERS_B; do
		grep -qx "$1$l ${RAW_B[$l]}" "$T/whole.sums" || bad=1
	done
	rbd ls "$POOL" | grep -q "^$1.*%part" && bad=1
	[ $bad = 0 ] && pass "$2" || fail "$2: $(rbd ls "$POOL" | grep "^$1" | tr '\n' ' ')"
}

# Killed at a quarter, half and three quarters of the time B's export took
# (the same command); run again without --verify full.
partway=0
for frac in 25 50 75; do
	pre=k$frac-
	us=$((T_EXPORT_B * frac / 100))
	"$VDELTA" rbd export --verify full --prefix "$pre" --all "$B" >/dev/null 2>&1 &
	pid=$!
	sleep "$((us / 1000000)).$(printf '%06d' $((us % 1000000)))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	made=$(rbd ls "$POOL" | grep -c "^$pre")
	[ "$made" -gt 0 ] && { [ "$made" -lt 7 ] || rbd ls "$POOL" | grep -q "^$pre.*%part"; } &&
		partway=$((partway + 1))
	expect_ok "export killed at $frac% ($made images there), run again" \
		"$VDELTA" rbd export --prefix "$pre" --all "$B"
	whole_b "$pre" "after the kill at $frac% and the re-run: every image whole, none half made"
	rbd_remove "$pre"
done
[ $partway -gt 0 ] && pass "$partway of 3 kills stopped an export part way" ||
	fail "no kill stopped an export part way (all before or after it)"

# What a kill inside rbd_clone3 can leave, made on purpose: a NAME%part
# the pool lists but whose header is gone (it does not open; a new clone
# of that name fails with "File exists").  The run again removes it and
# makes the image whole.  (Made as a plain image, so that no parent
# records it as a child.)
pre=h-
expect_ok "export for the half-made clone" "$VDELTA" rbd export --prefix "$pre" --all "$B"
run rbd rm --no-progress "$POOL/${pre}q1"
run rbd create --size 32M "$POOL/${pre}q1%part"
id=$(rbd info --format json "$POOL/${pre}q1%part" 2>/dev/null |
	"$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
run rados -p "$POOL" rm "rbd_header.$id"
if [ -n "$id" ] && rbd ls "$POOL" | grep -qx "${pre}q1%part" &&
	! rbd info "$POOL/${pre}q1%part" >/dev/null 2>&1; then
	expect_ok "export over a clone listed without its header" \
		"$VDELTA" rbd export --prefix "$pre" --all "$B"
	whole_b "$pre" "the half-made clone removed, q1 made whole, every image whole"
else
	fail "could not leave ${pre}q1%part listed without its header (id '$id')"
fi
rbd_remove "$pre"

# A rename (X4) stopped inside librbd, made on purpose: librbd writes the
# new name's id object, then changes the pool's directory, then removes
# the old id object.  Stopped after the first step, r-q2 opens but the
# pool lists r-q2%part; after the second, r-q3%part's id object is left.
# The run again finishes both renames.
pre=r-
expect_ok "export for the stopped renames" "$VDELTA" rbd export --prefix "$pre" --all "$B"
run rbd rename "$POOL/${pre}q2" "$POOL/${pre}q2%part"
run rados -p "$POOL" get "rbd_id.${pre}q2%part" "$T/q2.id"
run rados -p "$POOL" put "rbd_id.${pre}q2" "$T/q2.id"
run rados -p "$POOL" get "rbd_id.${pre}q3" "$T/q3.id"
run rados -p "$POOL" put "rbd_id.${pre}q3%part" "$T/q3.id"
if rbd ls "$POOL" | grep -qx "${pre}q2%part" && ! rbd ls "$POOL" | grep -qx "${pre}q2" &&
	rbd info "$POOL/${pre}q2" >/dev/null 2>&1; then
	expect_ok "export over two stopped renames" "$VDELTA" rbd export --prefix "$pre" --all "$B"
	whole_b "$pre" "both renames finished: r-q2 listed, no part left, every image whole"
	rados -p "$POOL" stat "rbd_id.${pre}q3%part" >/dev/null 2>&1 &&
		fail "rbd_id.${pre}q3%part is left" || pass "the stale id object of r-q3%part removed"
else
	fail "could not leave ${pre}q2 half renamed"
fi
rbd_remove "$pre"

K=$T/K
mkdir "$K"
t0=$EPOCHREALTIME
expect_ok "import q3 and q1" "$VDELTA" rbd import "$POOL/q-q3" "$POOL/q-q1" "$K"
T_IMPORT=$(usecs "$t0")
for frac in 30 70; do
	K=$T/K$frac
	mkdir "$K"
	us=$((T_IMPORT * frac / 100))
	"$VDELTA" rbd import "$POOL/q-q3" "$POOL/q-q1" "$K" >/dev/null 2>&1 &
	pid=$!
	sleep "$((us / 1000000)).$(printf '%06d' $((us % 1000000)))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	left=$(ls -A "$K" | tr '\n' ' ')
	if run "$VDELTA" rbd import "$POOL/q-q3" "$POOL/q-q1" "$K" ||
		grep -q "exists" "$T/last.err"; then
		pass "import killed at $frac% (left: ${left:-nothing}), run again: done or already published"
	else
		fail "import after a kill at $frac%"
	fi
	ok=1
	for l in q3 q1; do
		[ "$(qdigest "$K/q-$l.vmdk")" = "$(qdigest "$B/$l.vmdk")" ] || ok=0
	done
	ls -A "$K" | grep -q '^\.vdelta-rbd-import' && ok=0
	[ $ok = 1 ] && pass "import after the kill: q3 and q1 whole, no staging folder left" ||
		fail "import after the kill at $frac%: $(ls -A "$K" | tr '\n' ' ')"
done

# ---- refusals, each leaving the pool as it was -----------------------------------------

# POOL_NOW: rbd_list as it was after the last refusal (reset it after a
# change of the pool's images)
refused()   # WHAT PATTERN COMMAND...: fails, says PATTERN, rbd ls unchanged
{
	local what=$1 pat=$2
	shift 2
	[ -n "$POOL_NOW" ] || POOL_NOW=$(rbd_list)
	if run "$@"; then
		fail "$what: succeeded"
	elif grep -qE "$pat" "$T/last.err"; then
		pass "$what: refused ($(head -c 120 "$T/last.err" | head -1))"
	else
		fail "$what: the message does not say '$pat': $(cat "$T/last.err")"
	fi
	[ "$(rbd_list)" = "$POOL_NOW" ] && pass "$what: rbd ls as before" || fail "$what: rbd ls changed"
}
POOL_NOW=

refused "a missing pool" "pool nosuch does not exist" \
	"$VDELTA" rbd export --pool nosuch --prefix m- --all "$B"
printf '[client.admin]\n\tkey = %s\n' "$(ceph-authtool --gen-print-key)" >"$T/wrong.keyring"
refused "a wrong key" "refused client.admin" \
	"$VDELTA" rbd export --keyring "$T/wrong.keyring" --prefix w- --all "$B"
run rbd create --size 32M "$POOL/t-q1"
POOL_NOW=
refused "an image name taken" "t-q1: the name is taken" \
	"$VDELTA" rbd export --prefix t- --all "$B"
refused "import into a folder where the name exists" "a-c2.vmdk: exists" \
	"$VDELTA" rbd import "$POOL/a-c2" "$I"

# An unreachable cluster: the export gives up after --timeout; meanwhile it
# holds the source layers with a reader's lock, so a writer is refused.
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed "s/^mon_host = .*/mon_host = v2:127.0.0.1:$port/" "$CEPH_CONF" >"$T/nowhere.conf"
t0=$SECONDS
"$VDELTA" rbd export --conf "$T/nowhere.conf" --timeout 4 --prefix u- --all "$B" >"$T/u.out" 2>"$T/u.err" &
pid=$!
sleep 1.5
if run qemu-io -f vmdk -c 'write -P 0x74 0 4k' "$B/q4.vmdk"; then
	fail "a write into q4.vmdk succeeded while an export read it"
else
	grep -qi 'lock' "$T/last.err" && pass "a write into a source layer while the export runs: refused (lock)" ||
		fail "the write failed, but not for the lock: $(cat "$T/last.err")"
fi
if wait $pid; then
	fail "an unreachable cluster: the export succeeded"
else
	grep -q "no monitor answered within 4 s" "$T/u.err" && pass "an unreachable cluster: refused ($(head -1 "$T/u.err"))" ||
		fail "an unreachable cluster: $(cat "$T/u.err")"
fi
[ $((SECONDS - t0)) -lt 15 ] && pass "unreachable: gave up in $((SECONDS - t0)) s" ||
	fail "unreachable: took $((SECONDS - t0)) s"
[ "$(rbd_list)" = "$POOL_NOW" ] && pass "unreachable: rbd ls as before" || fail "unreachable: rbd ls changed"

# q-q2 was written through librbd above; once q2 is snapshotted here its
# image would become a parent: read back against the disk first, refused
run "$VDELTA" snapshot "$B/q2.vmdk"
refused "an image written in RBD that would become a parent" "q-q2: read back, byte [0-9]* differs" \
	"$VDELTA" rbd export --prefix q- --all "$B"
run qemu-io -f vmdk -c 'write -P 0x73 8M 64k' "$B/q4.vmdk"
refused "a layer that changed under its exported image" "q-q4.*exists" \
	"$VDELTA" rbd export --prefix q- --all "$B"

# An RBD chain deeper than CHAIN_MAX_DEPTH (128 layers).  Opening a clone
# opens its parents, so a chain made the plain way costs n^2/2 opens
# (minutes at 130); each clone here is shrunk to 0 and grown back first,
# which sets its parent overlap to 0: librbd then opens no parent, while
# the header still names it (rbd children lists the clone, the snapshot
# stays protected).  Each image then holds only its own 4 KiB.
"$PYTHON" - "$POOL" <<'PY' || fail "could not make a 130-image clone chain"
import rados, rbd, sys
S = 256 << 10
with rados.Rados(conffile="") as c, c.open_ioctx(sys.argv[1]) as io:
    r = rbd.RBD()
    r.create(io, "deep0", S, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    for i in range(130):
        with rbd.Image(io, "deep%d" % i) as img:
            if i:
                img.resize(0)
                img.resize(S)
            img.write(bytes([i % 251 + 1]) * 4096, i * 4096 % S)
            if i < 129:
                img.create_snap("s")
                img.protect_snap("s")
        if i < 129:
            r.clone(io, "deep%d" % i, "s", io, "deep%d" % (i + 1),
                    features=rbd.RBD_FEATURE_LAYERING)
PY
[ "$(rbd children "$POOL/deep128@s")" = "$POOL/deep129" ] &&
	pass "rbd children: deep129 is a clone of deep128@s" || fail "deep129 is not deep128's child"
POOL_NOW=
D=$T/D
mkdir "$D"
refused "an RBD chain deeper than 128" "deep129: its parent chain is deeper than 128" \
	"$VDELTA" rbd import "$POOL/deep129" "$D"
[ -z "$(ls -A "$D")" ] && pass "deep chain: nothing made in the folder" || fail "deep chain: $(ls -A "$D")"
expect_ok "an RBD chain of 128 images imports" "$VDELTA" rbd import "$POOL/deep127" "$D"
[ "$(qemu-img info -U --backing-chain "$D/deep127.vmdk" | grep -c '^image:')" = 128 ] &&
	pass "qemu-img info: a 128-layer chain" || fail "the 128-image import is not 128 layers deep"
for l in deep0 deep64 deep127; do
	[ "$(qdigest "$D/$l.vmdk")" = "$(rbd export --no-progress "$POOL/$l" - 2>/dev/null | xxhsum -H2 | cut -d' ' -f1)" ] &&
		pass "$l: the imported layer reads as the image (its parents masked)" ||
		fail "$l: the imported layer differs from rbd export"
done

finish
