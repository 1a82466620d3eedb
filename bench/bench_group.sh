#!/bin/bash
# bench_group.sh — group operations against qemu-img and cp (bench layer;
# not a test).
#
#   bench/bench_group.sh [VDELTA]     (BENCH_DIR: scratch folder, default mktemp)
#
# 1. commit of a 256 MiB delta into a 4 GiB base holding 1 GiB, vs
#    `qemu-img commit` of the same delta on a copy, vs `cp --sparse=always`
#    of the delta's bytes (what must move at least);
# 2. promote --unlink of a depth-8 and a depth-32 chain (32 MiB per layer
#    over a 1 GiB base) vs `qemu-img convert -O vmdk` of the top (an
#    independent copy), vs `cp --sparse=always` of the base and the
#    rewritten layer (what must move);
# 3. consolidate --all of a folder of 16 clones (each pulls 8 MiB) vs
#    `qemu-img rebase` of each to the same result, vs `cp --sparse=always`
#    of the 16 layers whose bytes move.
# Each figure is the wall time of the tool followed by `sync`.
set -eu
VDELTA=$(realpath "${1:-build/tools/vdelta}")
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

promote() # promote DEPTH: base 1 GiB data (shared) + DEPTH-1 layers of 32 MiB
{
	local top=base.vmdk i
	rm -rf p && mkdir p && cd p
	"$VDELTA" create -s 4G base.vmdk >/dev/null
	fill base.vmdk 0 1024 0x11
	for ((i = 1; i < $1; i++)); do
		"$VDELTA" snapshot "$top" >/dev/null
		top=$(printf 'base-%06d.vmdk' $i)
		fill "$top" $((i * 100)) 32 $((i + 20))
	done
	"$VDELTA" clone --linked base.vmdk other.vmdk >/dev/null # base is shared
	sync
	# what must move: the shared base's data and the rewritten layer's own
	cp_s=$(t cp --sparse=always base.vmdk base-000001.vmdk ../)
	rm -f ../base.vmdk ../base-000001.vmdk
	q_s=$(t qemu-img convert -O vmdk "$top" q-flat.vmdk)
	v_s=$(t "$VDELTA" promote --unlink "$top")
	echo "promote --unlink depth $1: vdelta $v_s s, qemu-img convert $q_s s, cp $cp_s s"
	cd ..
}
promote 8
promote 32

# 16 clones of a shared base (2 GiB, 256 MiB data), each base <- a (8 MiB)
# <- b (32 MiB) <- top (1 MiB): consolidate --all pulls each a into its b
# (8 MiB, the fewer bytes).  qemu-img's way to the same result is `rebase`
# of each b onto the base (on a copy of the folder), then removing a.
rm -rf a q && mkdir a && cd a
"$VDELTA" create -s 2G base.vmdk >/dev/null
fill base.vmdk 0 256 0x11
for i in $(seq 1 16); do
	mkdir vm$i
	"$VDELTA" create --parent base.vmdk vm$i/a.vmdk >/dev/null
	fill vm$i/a.vmdk $((300 + i * 8)) 8 0x22
	"$VDELTA" create --parent vm$i/a.vmdk vm$i/b.vmdk >/dev/null
	fill vm$i/b.vmdk $((500 + i * 32)) 32 0x33
	"$VDELTA" create --parent vm$i/b.vmdk vm$i/top.vmdk >/dev/null
	fill vm$i/top.vmdk 1000 1 0x44
done
cd .. && cp -a a q && sync
mkdir cpa
cp_s=$(t sh -c 'for i in $(seq 1 16); do cp --sparse=always a/vm$i/a.vmdk cpa/$i.vmdk; done')
q_s=$(t sh -c 'cd q && for i in $(seq 1 16); do (cd vm$i && qemu-img rebase -q -f vmdk -F vmdk -b ../base.vmdk b.vmdk && rm a.vmdk); done')
v_s=$(t "$VDELTA" consolidate --all a)
echo "consolidate --all, 16 clones: vdelta $v_s s, qemu-img rebase $q_s s, cp $cp_s s"
