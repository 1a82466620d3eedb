#!/usr/bin/env bash
# test_mount_esxi.sh — `vdelta mount` read-write of ESXi tops: a vmfs base
# with a vmfsSparse (COWD) delta and one with a seSparse delta (tests
# layer).
#
# Oracle: a raw reference file (qemu's export of the chain before) that
# receives the same writes (qemu-io, format raw) as the served file:
# seeded random sub-grain, unaligned, multi-grain and zero writes from
# gen_writes, plus a python writer's scattered 1..700-byte writes and
# zeroed ranges.  After unmount, `vdelta digest` of the top equals `xxhsum
# -H2` of the reference, qemu-img compares the COWD chain with it (qemu
# reads COWD; its seSparse reader is read-only and is not asked),
# `vdelta check` finds no error in the top and the base files' sha256 is
# unchanged (the base is frozen: never written).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mount.sh"
need sha256sum xxhsum python3
need_vdio

SIZE=$((24 << 20))

# py_writes FILE SEED: scattered small writes and zeroed ranges
py_writes()
{
	"$PYTHON" - "$1" "$2" "$SIZE" <<'PY'
import os, random, sys
p, seed, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
fd = os.open(p, os.O_RDWR)
for i in range(300):
    n = r.randint(1, 700)
    off = r.randrange(0, size - n)
    data = bytes([r.randint(1, 255)]) * n if i % 5 else bytes(n)
    os.pwrite(fd, data, off)
for i in range(8):  # whole and partial grains of zeros
    n = r.choice((512, 4096, 65536, 70000))
    os.pwrite(fd, bytes(n), r.randrange(0, size - n))
os.fsync(fd)
os.close(fd)
PY
}

# esxi_case NAME KIND: vmfs base + KIND delta, mounted and written
esxi_case()
{
	local name=$1 kind=$2 dir=$T/$1 m before digest
	mkdir "$dir"
	expect_ok "$name: vmfs base" "$VDELTA" create -s $SIZE -t vmfs "$dir/vm.vmdk"
	run "$VDIO" -w "$dir/vm.vmdk" -c "write -P 0x5a 0 3M" -c "write -P 0x6b 9M 1M" \
		-c "write -P 0x7c 23M 1M" || fail "$name: base writes"
	expect_ok "$name: $kind delta" "$VDELTA" create -t "$kind" --parent "$dir/vm.vmdk" \
		"$dir/vm-000001.vmdk"
	run "$VDIO" -w -C "$dir/vm-000001.vmdk" -c "write -P 0x11 1M 4096" || fail "$name: delta write"
	qemu-img convert -U -f vmdk -O raw "$dir/vm.vmdk" "$T/$name.raw" ||
		fail "$name: qemu export of the base"
	run "$VDIO" -C "$dir/vm-000001.vmdk" -c "read -P 0x11 1M 4096" ||
		fail "$name: the delta's write reads back"
	"$PYTHON" -c "
import sys
f = open(sys.argv[1], 'r+b'); f.seek(1 << 20); f.write(b'\x11' * 4096)" "$T/$name.raw"
	before=$(sha256sum "$dir/vm.vmdk" "$dir/vm-flat.vmdk")

	m=$(mnt_new "m-$name")
	expect_ok "$name: mount rw" vd_mount "$dir/vm-000001.vmdk=disk" "$m"
	SEED=$((${#name} + 7)) gen_writes $SIZE 80 >"$T/$name.w"
	apply_writes qemu-io-raw "$m/disk" "$T/$name.w" && pass "$name: qemu-io writes through the mount" ||
		fail "$name: qemu-io writes through the mount"
	apply_writes qemu-io-raw "$T/$name.raw" "$T/$name.w" || die "oracle writes"
	py_writes "$m/disk" 5 && py_writes "$T/$name.raw" 5 ||
		fail "$name: python writes"
	cmp -s "$m/disk" "$T/$name.raw" && pass "$name: the served file reads the writes" ||
		fail "$name: the served file differs from the reference"
	expect_ok "$name: umount" vd_umount "$m"

	digest=$(xxhsum -H2 "$T/$name.raw" | cut -d' ' -f1)
	if run "$VDELTA" digest "$dir/vm-000001.vmdk" && [ "$(cut -d' ' -f1 <"$T/last.out")" = "$digest" ]; then
		pass "$name: digest after unmount = xxhsum -H2 of the reference"
	else
		fail "$name: digest after unmount differs from the reference ($digest)"
	fi
	if [ "$kind" = vmfsSparse ]; then
		expect_ok "$name: qemu-img reads the chain as the reference" \
			qemu-img compare -U -f vmdk -F raw "$dir/vm-000001.vmdk" "$T/$name.raw"
	fi
	if run "$VDELTA" check "$dir/vm-000001.vmdk" && grep -q ' 0 errors' "$T/last.out"; then
		pass "$name: check clean"
	else
		fail "$name: check"
	fi
	[ "$before" = "$(sha256sum "$dir/vm.vmdk" "$dir/vm-flat.vmdk")" ] &&
		pass "$name: base files unchanged" || fail "$name: the base changed"
}

esxi_case cowd vmfsSparse
esxi_case sesparse seSparse

finish
