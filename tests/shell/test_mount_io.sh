#!/usr/bin/env bash
# test_mount_io.sh — real workloads through a served file.
#  fio: 4 jobs of random writes with fsync into their own regions, then
#    fio's own verify pass reads them back through the mount; each job's
#    iolog (offsets and lengths it wrote) is replayed with qemu-io on a copy
#    of the chain, and qemu-img compare must find the two chains equal.
#  loop: a loop device over the served file, mkfs.ext4, files written and
#    unmounted; qemu-img convert of the .vmdk must fsck clean and hold the
#    files (debugfs reads them, sha256 against the originals).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mount.sh"
need fio sha256sum

SIZE=$((128 << 20))
make_base $SIZE "write -P 0x3c 0 64M"
top=d/base-000001.vmdk
cp -a d q
m=$(mnt_new m)

# ---- fio -----------------------------------------------------------------------
expect_ok "mount" vd_mount "$top=disk" "$m"
cat >job.fio <<JOB
[global]
filename=$m/disk
direct=1
ioengine=psync
rw=randwrite
randrepeat=1
size=24m
io_size=3m
fsync=4
verify=pattern
verify_fatal=1
do_verify=1
[j0]
offset=0
bs=4k
verify_pattern=0x11
write_iolog=j0.iolog
[j1]
offset=32m
bs=12k
verify_pattern=0x22
write_iolog=j1.iolog
[j2]
offset=64m
bs=64k
verify_pattern=0x33
write_iolog=j2.iolog
[j3]
offset=96m
bs=20k
verify_pattern=0x44
write_iolog=j3.iolog
JOB
expect_ok "fio random writes + fsync, then verify (4 jobs)" fio --output=fio.out job.fio
grep -q "verify.*fail\|bad pattern" fio.out && fail "fio reported verify failures"
expect_ok "umount after fio" vd_umount "$m"
args=() n=0
for j in 0 1 2 3; do
	pat=0x$((j + 1))$((j + 1))
	while read -r _ _ act off len; do # iolog v3: TIME FILE ACTION OFF LEN
		[ "$act" = write ] || continue
		args+=(-c "write -P $pat $off $len")
		n=$((n + 1))
	done <j$j.iolog
done
[ $n -gt 100 ] && pass "$n writes in the iologs" || fail "only $n writes logged"
run qemu-io -f vmdk "${args[@]}" q/base-000001.vmdk || die "qemu-io replay"
expect_ok "chain = qemu-io replay of fio's writes" qemu-img compare -q "$top" q/base-000001.vmdk
expect_ok "qemu-img check after fio" qemu-img check -q "$top"
expect_ok "vdelta check after fio" "$VDELTA" check "$top"

# ---- loop + ext4 ---------------------------------------------------------------------
[ -e /dev/loop-control ] || { finish; }
need losetup mkfs.ext4 fsck.ext4 debugfs
expect_ok "mount for ext4" vd_mount "$top=disk" "$m"
loop=$(losetup -f --show "$m/disk") || fail "losetup"
t_loops+=("$loop")
mkdir fs
run mkfs.ext4 -q -F "$loop" && pass "mkfs.ext4 on a loop over the served file" ||
	fail "mkfs.ext4"
if run mount "$loop" fs; then
	head -c 5M /dev/urandom >f1
	head -c 300k /dev/urandom >f2
	cp f1 f2 fs/ && mkdir fs/dir && cp f1 fs/dir/f3 && sync
	umount fs || fail "umount ext4"
	pass "files written through ext4"
else
	fail "mount ext4"
fi
losetup -d "$loop" || fail "losetup -d"
expect_ok "umount after ext4" vd_umount "$m"
expect_ok "qemu-img convert the chain" qemu-img convert -O raw "$top" out.raw
expect_ok "fsck.ext4 -n clean" fsck.ext4 -n -f out.raw
for f in f1 f2 dir/f3; do
	got=$(debugfs -R "cat /$f" out.raw 2>/dev/null | sha256sum)
	[ "$got" = "$(sha256sum <"$(basename "$f" | sed 's/f3/f1/')")" ] && pass "$f intact" ||
		fail "$f differs"
done

finish
