#!/bin/bash
# bench_group.sh — group operations against qemu-img and cp (bench layer;
# not a test).
#
#   bench/bench_group.sh [VDELTA]     (BENCH_DIR: scratch folder, default mktemp)
#
# 1. commit of a 256 MiB delta into a 4 GiB base holding 1 GiB, vs
#    `qemu-img commit` of the same delta on a copy, vs `cp --sparse=always`
#    of the delta's bytes (what must move at least);
# 2. promote --unlink of a depth-8 chain (32 MiB per layer over a 1 GiB base)
#    vs `qemu-img convert -O vmdk` of the top (an independent copy), vs
#    `cp --sparse=always` of every layer.
# Each figure is the wall time of the tool followed by `sync`.
set -eu
VDELTA=${1:-build/tools/vdelta}
B=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$B"
cd "$B"

t() # t CMD... : seconds of CMD + sync
{
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	sync
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}

fill() # fill DISK OFF_MIB LEN_MIB PATTERN
{
	local args=() i
	for ((i = 0; i < $3; i += 64)); do
		args+=(-c "write -P $4 $(( ($2 + i) ))M $(( $3 - i < 64 ? $3 - i : 64 ))M")
	done
	qemu-io -f vmdk "$1" "${args[@]}" >/dev/null
}

rm -rf c && mkdir c && cd c
"$VDELTA" create -s 4G base.vmdk >/dev/null
fill base.vmdk 0 1024 0x11
"$VDELTA" snapshot base.vmdk >/dev/null
fill base-000001.vmdk 512 256 0x22
cp --sparse=always base.vmdk q-base.vmdk
qemu-img create -q -f vmdk -b q-base.vmdk -F vmdk q-top.vmdk
fill q-top.vmdk 512 256 0x22
sync
cp_s=$(t cp --sparse=always base-000001.vmdk ../cp-copy.raw) # outside the group
q_s=$(t qemu-img commit -q q-top.vmdk)
v_s=$(t "$VDELTA" commit base-000001.vmdk)
echo "commit 256 MiB into 4 GiB: vdelta $v_s s, qemu-img commit $q_s s, cp $cp_s s"
cd ..

rm -rf p && mkdir p && cd p
"$VDELTA" create -s 4G base.vmdk >/dev/null
fill base.vmdk 0 1024 0x11
top=base.vmdk
for i in 1 2 3 4 5 6 7; do
	"$VDELTA" snapshot "$top" >/dev/null
	top=$(printf 'base-%06d.vmdk' $i)
	fill "$top" $((i * 100)) 32 0x$((i + 20))
done
"$VDELTA" clone --linked base.vmdk other.vmdk # base is shared
sync
cp_s=$(t cp --sparse=always base.vmdk ../cp-base.raw) # the bytes read from shared layers
q_s=$(t qemu-img convert -O vmdk "$top" q-flat.vmdk)
v_s=$(t "$VDELTA" promote --unlink "$top")
echo "promote --unlink depth 8: vdelta $v_s s, qemu-img convert $q_s s, cp $cp_s s"
