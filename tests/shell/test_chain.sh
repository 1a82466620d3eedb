#!/usr/bin/env bash
# test_chain.sh — the chain commands (snapshot, create --parent, clone
# --linked / --from-current / --full, digest, map, info --chain) against
# qemu-img / qemu-io / xxhsum as oracles (tests layer).
#
# For each operation: the content is preserved (vdelta digest == xxhsum -H2
# of qemu-img's raw export, before and after), the layers that were already
# parents keep their bytes (sha256 before/after), qemu reads every result
# (qemu-img check clean, qemu-img info --backing-chain lists the layers),
# and map agrees with qemu-img map grain by grain.
# shellcheck source=tests/shell/lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io xxhsum sha256sum python3
need_vdelta

SIZE=$((32 << 20))

# digest_ok WHAT DISK: vdelta's digest equals xxhsum -H2 of qemu's export
digest_ok()
{
	local what=$1 disk=$2 ours theirs
	rm -f "$T/export.raw"
	qemu-img convert -U -O raw "$disk" "$T/export.raw" || { fail "$what: qemu-img convert $disk"; return; }
	theirs=$(xxhsum -H2 "$T/export.raw" | cut -d' ' -f1)
	if ! run "$VDELTA" digest "$disk"; then
		fail "$what: vdelta digest $disk"
		return
	fi
	ours=$(cut -d' ' -f1 <"$T/last.out")
	if [ "$ours" = "$theirs" ] && [ "$(cut -d' ' -f3- <"$T/last.out")" = "$disk" ]; then
		pass "$what: digest $ours equals xxhsum -H2 of qemu's export"
	else
		fail "$what: digest '$(cat "$T/last.out")' vs xxhsum $theirs"
	fi
	echo "$theirs"  >"$T/last.digest"
}

# qemu_ok WHAT DISK: qemu-img check is clean and the backing chain opens
qemu_ok()
{
	local what=$1 disk=$2
	if run qemu-img check -U "$disk"; then
		pass "$what: qemu-img check clean"
	else
		fail "$what: qemu-img check $disk"
	fi
}

sums() { (cd "$T" && sha256sum "$@"); }

# map_ok DISK: vdelta map --json equals qemu-img map --output=json per grain
map_ok()
{
	local disk=$1
	qemu-img map -U --output=json "$disk" >"$T/qmap.json" || { fail "qemu-img map $disk"; return; }
	run "$VDELTA" map --json "$disk" || { fail "vdelta map $disk"; return; }
	if python3 - "$T/qmap.json" "$T/last.out" <<'PY'
import json, sys
def grains(path):
    out = {}
    for r in json.load(open(path)):
        for g in range(r["start"] // 65536, (r["start"] + r["length"] + 65535) // 65536):
            # qemu reports unallocated-everywhere as zero at the deepest layer
            out[g] = (r["depth"], r["data"], r["zero"] and not r["data"], r["present"])
    return out
q, v = grains(sys.argv[1]), grains(sys.argv[2])
bad = [g for g in q if q[g] != v.get(g)]
if bad:
    print("first mismatch at grain", bad[0], q[bad[0]], v.get(bad[0]))
    sys.exit(1)
PY
	then
		pass "map of $disk agrees with qemu-img map"
	else
		fail "map of $disk differs from qemu-img map"
	fi
}

cd "$T" || die "cd $T"

# ---- a base and a qemu-made delta with data at every depth --------------
qemu-img create -q -f vmdk base.vmdk $SIZE
qemu-io -f vmdk -c 'write -P 0x11 0 3M' -c 'write -P 0x12 10M 100k' -c 'write -z 20M 1M' base.vmdk >/dev/null
qemu-img create -q -f vmdk -b base.vmdk -F vmdk d1.vmdk
qemu-io -f vmdk -c 'write -P 0x21 1M 70000' -c 'write -P 0x22 2M 4096' -c 'write -z 10M 64k' d1.vmdk >/dev/null

digest_ok "qemu chain" d1.vmdk
d0=$(cat last.digest)
map_ok d1.vmdk

# ---- snapshot --------------------------------------------------------------
sums base.vmdk >before.sum
if run "$VDELTA" snapshot d1.vmdk && [ "$(cat last.out)" = "d1-000001.vmdk" ]; then
	pass "snapshot prints the new top d1-000001.vmdk"
else
	fail "snapshot: '$(cat last.out)'"
fi
[ -f d1-000001.vmdk ] || die "no d1-000001.vmdk"
sums -c before.sum >/dev/null && pass "snapshot: base bytes unchanged" || fail "snapshot changed base"
digest_ok "snapshot" d1-000001.vmdk
[ "$(cat last.digest)" = "$d0" ] && pass "snapshot keeps the content" || fail "snapshot changed content"
qemu_ok snapshot d1-000001.vmdk
if qemu-img info -U --backing-chain d1-000001.vmdk | grep -c '^image:' | grep -qx 3; then
	pass "qemu-img info --backing-chain lists 3 layers"
else
	fail "qemu-img info --backing-chain"
fi
grep -aq 'ddb.vdelta.frozen = "1"' d1.vmdk && pass "old top marked frozen" || fail "d1 not frozen"

# the frozen layer refuses writes; a second snapshot numbers on
run "$VDELTA" snapshot d1-000001.vmdk && [ -f d1-000002.vmdk ] &&
	pass "second snapshot is d1-000002.vmdk" || fail "second snapshot"

# ---- writes by qemu into the vdelta-made top; qemu reads it back ---------
qemu-io -f vmdk -c 'write -P 0x31 5M 1000' -c 'write -z 0 64k' d1-000002.vmdk >/dev/null ||
	fail "qemu-io writes into a vdelta-made delta"
qemu_ok "qemu writes" d1-000002.vmdk
digest_ok "after qemu writes" d1-000002.vmdk
d2=$(cat last.digest)
map_ok d1-000002.vmdk

# ---- create --parent -------------------------------------------------------
mkdir -p other
sums base.vmdk d1.vmdk d1-000001.vmdk >before.sum
if run "$VDELTA" create --parent d1-000002.vmdk other/child.vmdk; then
	pass "create --parent"
else
	fail "create --parent"
fi
grep -aq 'parentFileNameHint="../d1-000002.vmdk"' other/child.vmdk &&
	pass "create --parent: hint is relative to the child's folder" ||
	fail "create --parent: hint $(grep -ao 'parentFileNameHint="[^"]*"' other/child.vmdk)"
digest_ok "create --parent" other/child.vmdk
[ "$(cat last.digest)" = "$d2" ] && pass "create --parent keeps the content" || fail "create --parent content"
qemu_ok "create --parent" other/child.vmdk
sums -c before.sum >/dev/null && pass "create --parent: parents unchanged" || fail "create --parent changed a parent"

# ---- clone --linked --------------------------------------------------------
sums base.vmdk d1.vmdk d1-000001.vmdk d1-000002.vmdk >before.sum
run "$VDELTA" clone --linked other/child.vmdk lc.vmdk
if grep -q "snapshot it first" last.err; then
	pass "clone --linked refuses a writable top, saying to snapshot first"
else
	fail "clone --linked of a writable top: $(cat last.err)"
fi
mkdir -p clones
expect_ok "clone --linked of a frozen layer" "$VDELTA" clone --linked d1-000001.vmdk clones/lc1.vmdk
digest_ok "clone --linked" clones/lc1.vmdk
qemu-img convert -U -O raw d1-000001.vmdk snap.raw
[ "$(cat last.digest)" = "$(xxhsum -H2 snap.raw | cut -d' ' -f1)" ] &&
	pass "clone --linked reads as its snapshot" || fail "clone --linked content"
qemu_ok "clone --linked" clones/lc1.vmdk
sums -c before.sum >/dev/null && pass "clone --linked: parents unchanged" || fail "clone --linked changed a parent"

# ---- clone --from-current --------------------------------------------------
qemu-io -f vmdk -c 'write -P 0x41 7M 200k' -c 'write -z 2M 64k' other/child.vmdk >/dev/null
digest_ok "child written" other/child.vmdk
dc=$(cat last.digest)
sums base.vmdk d1.vmdk d1-000001.vmdk d1-000002.vmdk other/child.vmdk >before.sum
expect_ok "clone --from-current" "$VDELTA" clone --from-current other/child.vmdk clones/fc.vmdk
digest_ok "clone --from-current" clones/fc.vmdk
[ "$(cat last.digest)" = "$dc" ] && pass "clone --from-current keeps the content" || fail "clone --from-current content"
qemu_ok "clone --from-current" clones/fc.vmdk
sums -c before.sum >/dev/null && pass "clone --from-current: sources unchanged" || fail "clone --from-current changed a source"
run "$VDELTA" info --chain --json clones/fc.vmdk
python3 -c 'import json,sys; l=json.load(open(sys.argv[1])); sys.exit(0 if len(l)==5 and l[1]["filename"].endswith("d1-000002.vmdk") else 1)' last.out &&
	pass "clone --from-current shares the layers below (info --chain)" || fail "clone --from-current chain: $(cat last.out)"

# ---- clone --full ----------------------------------------------------------
for sf in monolithicSparse twoGbMaxExtentSparse monolithicFlat streamOptimized; do
	expect_ok "clone --full -t $sf" "$VDELTA" clone --full -t $sf other/child.vmdk "full-$sf.vmdk" || continue
	digest_ok "clone --full $sf" "full-$sf.vmdk"
	[ "$(cat last.digest)" = "$dc" ] && pass "clone --full $sf keeps the content" || fail "clone --full $sf content"
	qemu_ok "clone --full $sf" "full-$sf.vmdk"
	qemu-img info -U "full-$sf.vmdk" | grep -q '^backing file' && fail "clone --full $sf has a backing file"
done
sums -c before.sum >/dev/null && pass "clone --full: sources unchanged" || fail "clone --full changed a source"

# ---- info --chain ----------------------------------------------------------
run "$VDELTA" info --chain --json d1-000002.vmdk
python3 - last.out d1-000002.vmdk d1-000001.vmdk d1.vmdk base.vmdk <<'PY' && pass "info --chain: layers, CIDs and links" || fail "info --chain: $(cat last.out)"
import json, subprocess, sys
layers = json.load(open(sys.argv[1]))
names = sys.argv[2:]
assert [l["filename"].split("/")[-1] for l in layers] == names, layers
for child, parent in zip(layers, layers[1:]):
    assert child["parent-cid"] == parent["cid"], (child, parent)
assert layers[-1]["parent-cid"] == "ffffffff"
assert [l["frozen"] for l in layers] == [True, True, True, False], layers  # base: made by qemu, never frozen by us
# CIDs as the descriptors say them (qemu writes them without leading zeros)
import re
for l in layers:
    text = open(l["filename"], "rb").read(65536)
    m = re.search(rb"^CID=([0-9a-fA-F]+)", text, re.M)
    assert m and int(m.group(1), 16) == int(l["cid"], 16), l
PY

# ---- readers accept chains: convert of a top equals qemu's export -----------
rm -f conv.raw export.raw
if run "$VDELTA" convert -O raw other/child.vmdk conv.raw &&
   qemu-img convert -U -O raw other/child.vmdk export.raw && cmp -s conv.raw export.raw; then
	pass "convert reads a chain like qemu does"
else
	fail "convert of a chain differs from qemu-img convert"
fi
rm -f conv.raw export.raw

# ---- a delta over an ESXi seSparse disk (shared corpus) ---------------------
ses=$SHARED_DIR/corpus/dissect.hypervisor
if [ -f "$ses/sesparse-wrapper.vmdk" ]; then
	mkdir -p ses && cp "$ses"/sesparse*.vmdk ses/ && chmod u+w ses/*
	# hosted on purpose (qemu writes it); the default over seSparse is seSparse
	expect_ok "create --parent over seSparse" "$VDELTA" create -t monolithicSparse --parent ses/sesparse-wrapper.vmdk ses/child.vmdk
	qemu-io -f vmdk -c 'write -P 0x99 1000 70000' -c 'write -z 16M 64k' ses/child.vmdk >/dev/null ||
		fail "qemu-io writes over seSparse"
	digest_ok "delta over seSparse" ses/child.vmdk
	map_ok ses/child.vmdk
	rm -rf ses
fi

# ---- tree ---------------------------------------------------------------------
# Oracle: qemu-img info --backing-chain of every disk; a top is a disk no
# other disk names as its backing file.
if run "$VDELTA" tree --json . other clones; then
	pass "tree exits 0 on a healthy folder"
else
	fail "tree on a healthy folder"
fi
python3 - last.out . other clones <<'PY' && pass "tree: groups, reach and flags agree with qemu-img's chains" || fail "tree: $(head -c 3000 last.out)"
import json, os, subprocess, sys
tree = json.load(open(sys.argv[1]))
chains, extents = {}, set()
for d in sys.argv[2:]:
    for f in sorted(os.listdir(d)):
        if not f.endswith(".vmdk"):
            continue
        p = os.path.join(d, f)
        out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", p],
                             capture_output=True, text=True)
        if out.returncode:
            continue
        info = json.loads(out.stdout)
        if info[0]["format"] != "vmdk":
            continue  # a flat extent, opened as raw
        chains[os.path.realpath(p)] = [os.path.realpath(l["filename"]) for l in info]
        for e in info[0].get("format-specific", {}).get("data", {}).get("extents", []):
            if os.path.realpath(e["filename"]) != os.path.realpath(p):
                extents.add(os.path.realpath(e["filename"]))
chains = {p: c for p, c in chains.items() if p not in extents}
parents = {c[1] for c in chains.values() if len(c) > 1}
tops = [p for p in chains if p not in parents]
reach = {}
for t in tops:
    for l in chains[t]:
        reach[l] = reach.get(l, 0) + 1
groups = {os.path.realpath(g["root"]): g for g in tree["groups"]}
bases = {chains[t][-1] for t in tops}
assert set(groups) == bases, (set(groups), bases)
got = {}
for b, g in groups.items():
    assert g["disks"] == sum(1 for t in tops if chains[t][-1] == b), (b, g["disks"])
    got.update({os.path.realpath(l["filename"]): l["reached-by"] for l in g["layers"]})
assert got == reach, (got, reach)
# a layer qemu-img gave children carries no record of them: their
# children are unknown; nothing else is flagged
for g in tree["groups"]:
    for l in g["layers"]:
        p = os.path.realpath(l["filename"])
        unknown = p in parents and not os.path.exists(p + ".vdelta-children")
        assert l["flags"] == (["children-unknown"] if unknown else []), l
PY

# ---- errors ------------------------------------------------------------------
qemu-io -f vmdk -c 'write 0 512' d1.vmdk >/dev/null   # qemu ignores our frozen mark
run "$VDELTA" digest d1-000001.vmdk
if grep -q "parentCID=.*d1.vmdk has CID=" last.err; then
	pass "CID mismatch named with both files and CIDs"
else
	fail "CID mismatch: $(cat last.err)"
fi
run "$VDELTA" digest --ignore-cid d1-000001.vmdk && pass "--ignore-cid reads anyway" || fail "--ignore-cid"

# tree flags the broken link and a missing parent, and exits 1
mkdir -p lost && qemu-img create -q -f vmdk lost/p.vmdk 1M &&
	qemu-img create -q -f vmdk -b p.vmdk -F vmdk lost/c.vmdk && rm lost/p.vmdk
if ! run "$VDELTA" tree --json . lost &&
   python3 - last.out <<'PY'
import json, sys
flags = {l["filename"].split("/")[-1]: l["flags"] for g in json.load(open(sys.argv[1]))["groups"] for l in g["layers"]}
assert "broken-link" in flags["d1-000001.vmdk"], flags
assert "missing-parent" in flags["c.vmdk"], flags
PY
then
	pass "tree flags a broken link and a missing parent"
else
	fail "tree flags: $(head -c 2000 last.out)"
fi

finish
