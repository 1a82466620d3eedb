#!/bin/bash
# bench_rbd.sh — a linked-clone group into Ceph RBD: `vdelta rbd export`
# against what a user does today, flattening each clone and `rbd import`-ing
# it (bench layer; not a test).
#
#   bench/bench_rbd.sh [VDELTA]
#
# A one-node cluster (scripts/ceph.sh, bluestore on a sparse file) is
# started in the scratch folder and always stopped.  The group: a base of
# BASE_SIZE holding BASE_DATA_MIB of random data (4 MiB runs spread evenly),
# and CLONES linked clones, each with CLONE_PCT % of the base's size written
# (runs of 64 KiB to 1 MiB of random bytes at random places, seeded).
# Three ways, one after the other in one run, each into its own pool:
#   base     `rbd import` of the base alone (a raw file of its content);
#   flatten  per clone, `qemu-img convert -O raw` to a file, `rbd import`,
#            the file removed; what the image stores (`rbd du`) is taken
#            and the image removed (not timed), so the disk holds one
#            flattened clone at a time, not sixteen;
#   qemu-img per clone, `qemu-img convert -O raw` straight into an rbd:
#            image (when qemu has its rbd driver, Debian qemu-block-extra),
#            measured and removed the same way;
#   vdelta   `vdelta rbd export --all` of the group (every image checked
#            against its disk before the command returns), then again with
#            --verify full (every image read back whole).
# Reported: seconds, and the bytes each way stores: `rbd du` (used: whole
# objects) and, for the pools kept, `ceph df` (stored), with the ratios
# the aims are stated in.
#
# Environment: BENCH_DIR (scratch, default mktemp; ~30 GiB at the
# defaults), CLONES (16), BASE_SIZE (4G), BASE_DATA_MIB (4096: a full
# base), CLONE_PCT (2), SEED (1).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
VDELTA=$(realpath "${1:-$src/build/tools/vdelta}")
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
CLONES=${CLONES:-16}
BASE_SIZE=${BASE_SIZE:-4G}
BASE_DATA_MIB=${BASE_DATA_MIB:-4096}
CLONE_PCT=${CLONE_PCT:-2}
SEED=${SEED:-1}
B=${BENCH_DIR:-$(mktemp -d /tmp/bench-rbd.XXXXXX)}
mkdir -p "$B"
B=$(cd "$B" && pwd)
CL=$B/ceph

cleanup()
{
	"$src/scripts/ceph.sh" stop "$CL" >/dev/null 2>&1 || true
	[ -n "${BENCH_DIR:-}" ] || rm -rf "$B"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc; }
mib() { echo "scale=1; $1 / 1048576" | bc; }

echo "starting a one-node cluster (bluestore) in $CL" >&2
CEPH_STORE=bluestore CEPH_POOL=base "$src/scripts/ceph.sh" start "$CL" >&2
export CEPH_CONF=$CL/ceph.conf
QRBD=
qemu-img --help | grep -qw rbd && QRBD=1
for p in flat qconv vd vdfull; do
	ceph osd pool create "$p" 8 8 >/dev/null 2>&1
	rbd pool init "$p"
done

# ---- the group ---------------------------------------------------------------

G=$B/group
mkdir -p "$G"
size=$(numfmt --from=iec "$BASE_SIZE")
echo "building: base $BASE_SIZE with $BASE_DATA_MIB MiB of data, $CLONES clones" \
	"with $CLONE_PCT % each" >&2
"$PY" - "$B/base.raw" "$size" "$BASE_DATA_MIB" "$SEED" <<'PY'
import os, random, sys
path, size, data_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chunks = data_mib // 4
stride = size // chunks // (4 << 20) * (4 << 20)
random.seed(seed)
with open(path, "wb") as f:
    f.truncate(size)
    for i in range(chunks):
        f.seek(i * stride)
        f.write(random.randbytes(4 << 20))
PY
"$VDELTA" convert -O vmdk -t monolithicSparse "$B/base.raw" "$G/base.vmdk" >/dev/null
for i in $(seq -f %02g 1 "$CLONES"); do
	"$VDELTA" create --parent "$G/base.vmdk" "$G/c$i.vmdk" >/dev/null # freezes the base
	# the runs to write, and the random bytes they take (qemu-io write -s)
	"$PY" - "$G/c$i.vmdk" "$size" "$CLONE_PCT" "$SEED$i" <<'PY'
import random, sys
path, size, pct, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
random.seed(seed)
left, runs = int(size * pct / 100), []
while left > 0:
    n = min(left, random.choice([64, 128, 256, 512, 1024]) << 10)
    runs.append((random.randrange(0, (size - n) >> 16) << 16, n))
    left -= n
with open(path + ".runs", "w") as f:
    f.writelines("%d %d\n" % r for r in runs)
with open(path + ".data", "wb") as f:
    f.write(random.randbytes(1 << 20))
PY
	args=()
	while read -r off n; do
		args+=(-c "write -s $G/c$i.vmdk.data $off $n")
	done <"$G/c$i.vmdk.runs"
	qemu-io -f vmdk "${args[@]}" "$G/c$i.vmdk" >/dev/null
	rm "$G/c$i.vmdk.runs" "$G/c$i.vmdk.data"
done
sync
"$VDELTA" tree "$G" >&2
uses=$("$VDELTA" tree --json "$G" | "$PY" -c \
	'import json, sys; print(sum(g["used-bytes"] for g in json.load(sys.stdin)["groups"]))')
base_bytes=$(du -B1 --apparent-size "$G/base.vmdk" | cut -f1)

# ---- the three ways ------------------------------------------------------------

t0=$(now)
rbd import --no-progress "$B/base.raw" base/base
t_base=$(secs "$t0")
echo "base alone: rbd import $t_base s" >&2
rm "$B/base.raw"

du_of() # POOL [IMAGE]: rbd du's used bytes (of every image and snapshot)
{
	rbd du -p "$1" ${2:+"$2"} --format json 2>/dev/null | "$PY" -c \
		'import json, sys; print(sum(i["used_size"] for i in json.load(sys.stdin)["images"]))'
}

to_flat()	# CLONE: flattened to a raw file, rbd import-ed
{
	qemu-img convert -f vmdk -O raw "$G/c$1.vmdk" "$B/flat.raw"
	rbd import --no-progress "$B/flat.raw" "flat/c$1"
	rm "$B/flat.raw"
}
to_qconv()	# CLONE: qemu-img convert straight into an rbd: image
{
	qemu-img convert -f vmdk -O raw "$G/c$1.vmdk" "rbd:qconv/c$1:conf=$CEPH_CONF"
}
# per_clone POOL WAY: every clone into POOL by WAY, one at a time, each
# image measured and removed after: SUM_T seconds, SUM_DU bytes (rbd du),
# C01 the digest of c01's image
per_clone()
{
	local i t0
	SUM_T=0 SUM_DU=0 C01=
	for i in $(seq -f %02g 1 "$CLONES"); do
		t0=$(now)
		"$2" "$i"
		SUM_T=$(echo "$SUM_T + $(secs "$t0")" | bc)
		[ "$i" = 01 ] && C01=$(rbd export --no-progress "$1/c01" - 2>/dev/null | xxhsum -H2 | cut -d' ' -f1)
		SUM_DU=$((SUM_DU + $(du_of "$1" "c$i")))
		rbd rm --no-progress "$1/c$i"
	done
}

per_clone flat to_flat
t_flat=$SUM_T du_flat=$SUM_DU flat_c01=$C01
echo "flatten + rbd import x $CLONES: $t_flat s" >&2
t_q=- du_q=0
if [ -n "$QRBD" ]; then
	per_clone qconv to_qconv
	t_q=$SUM_T du_q=$SUM_DU q_c01=$C01
	echo "qemu-img convert -O raw rbd: x $CLONES: $t_q s" >&2
fi

t0=$(now)
"$VDELTA" rbd export --pool vd --all "$G" >"$B/export.out"
t_vd=$(secs "$t0")
echo "vdelta rbd export: $t_vd s" >&2
t0=$(now)
"$VDELTA" rbd export --pool vdfull --verify full --all "$G" >"$B/export-full.out"
t_full=$(secs "$t0")
echo "vdelta rbd export --verify full: $t_full s" >&2

# one clone read back every way: the disk, the flattened image, the exports
want=$("$VDELTA" digest "$G/c01.vmdk" | cut -d' ' -f1)
[ "$flat_c01" = "$want" ] || { echo "bench_rbd: flat/c01 does not read as c01.vmdk" >&2; exit 1; }
[ -z "$QRBD" ] || [ "$q_c01" = "$want" ] ||
	{ echo "bench_rbd: qconv/c01 does not read as c01.vmdk" >&2; exit 1; }
for img in vd/c01 vdfull/c01; do
	have=$(rbd export --no-progress "$img" - 2>/dev/null | xxhsum -H2 | cut -d' ' -f1)
	[ "$have" = "$want" ] || { echo "bench_rbd: $img does not read as c01.vmdk" >&2; exit 1; }
done

# ---- what each pool stores -------------------------------------------------------

stored_of() # POOL: ceph df's stored bytes, once the figures settle
{
	local last=-1 cur i
	for i in $(seq 1 30); do
		cur=$(ceph df --format json | "$PY" -c \
			'import json, sys; print(next(p["stats"]["stored"] for p in json.load(sys.stdin)["pools"] if p["name"] == sys.argv[1]))' "$1")
		[ "$cur" = "$last" ] && break
		last=$cur
		sleep 2
	done
	echo "$cur"
}
sleep 3
declare -A du st
for p in base vd vdfull; do
	du[$p]=$(du_of "$p")
	st[$p]=$(stored_of "$p")
done
du[flat]=$du_flat
du[qconv]=$du_q

ratio() { echo "scale=2; $1 / $2" | bc; }
qline="qemu-img convert to rbd         (no rbd driver in qemu-img)"
qratio=
if [ -n "$QRBD" ]; then
	qline="qemu-img convert to rbd         $(printf '%7.1f' "$t_q")   $(printf '%10s' "$(mib "${du[qconv]}")")   $(printf '%10s' "(removed)")"
	qratio="time / qemu-img convert to rbd:          $(ratio "$t_vd" "$t_q")"
fi
cat <<EOF

$CLONES clones of a $BASE_SIZE base ($BASE_DATA_MIB MiB data), $CLONE_PCT % written each
vdelta tree "uses": $(mib "$uses") MiB (base file $(mib "$base_bytes") MiB)

way                             seconds   rbd du MiB   ceph df stored MiB
rbd import, base alone          $(printf '%7.1f' "$t_base")   $(printf '%10s' "$(mib "${du[base]}")")   $(printf '%10s' "$(mib "${st[base]}")")
flatten + rbd import            $(printf '%7.1f' "$t_flat")   $(printf '%10s' "$(mib "${du[flat]}")")   $(printf '%10s' "(removed)")
$qline
vdelta rbd export               $(printf '%7.1f' "$t_vd")   $(printf '%10s' "$(mib "${du[vd]}")")   $(printf '%10s' "$(mib "${st[vd]}")")
vdelta rbd export --verify full $(printf '%7.1f' "$t_full")   $(printf '%10s' "$(mib "${du[vdfull]}")")   $(printf '%10s' "$(mib "${st[vdfull]}")")

stored (ceph df) / vdelta tree uses:     $(ratio "${st[vd]}" "$uses")  (aim <= 1.1)
stored (rbd du) / flatten's (rbd du):    $(ratio "${du[vd]}" "${du[flat]}")
time / flatten + rbd import:             $(ratio "$t_vd" "$t_flat")  (aim <= 0.3)
$qratio
time / rbd import of the base alone:     $(ratio "$t_vd" "$t_base")  (aim <= 1.5)
the same with --verify full:             $(ratio "$t_full" "$t_flat"), $(ratio "$t_full" "$t_base")
EOF
