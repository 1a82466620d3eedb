#!/usr/bin/env bash
# test_mount_clones.sh — 32 linked clones of one base served by one daemon:
# each clone reads back its own writes (qemu-io through the served files,
# then qemu-io on each .vmdk after unmount), the base's sha256 is
# unchanged, and the daemon holds the base open once (/proc/PID/fd).
# The 32 are mounted again under a soft open-file limit of 24 (the daemon
# takes the hard limit). Prints the daemon's RSS for 1 and for 32 disks.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mount.sh"
need sha256sum

N=32
SIZE=$((256 << 20))
make_base $SIZE "write -P 0x3c 0 32M" "write -P 0x7e 200M 8M"
rm -f d/base-000001.vmdk
for i in $(seq $N); do
	run "$VDELTA" clone --linked d/base.vmdk d/c$i.vmdk || die "clone $i"
done
sha_base=$(sha256sum <d/base.vmdk)

# one disk, for the RSS figure
m=$(mnt_new m)
expect_ok "mount one clone" vd_mount d/c1.vmdk "$m"
run qemu-img compare -q -f raw -F vmdk "$m/c1" d/base.vmdk # touch every grain table
rss1=$(rss_kib "$(mount_pid "$m")")
expect_ok "umount one" vd_umount "$m"

args=()
for i in $(seq $N); do args+=(d/c$i.vmdk); done
expect_ok "mount $N clones in one daemon" vd_mount "${args[@]}" "$m"
pid=$(mount_pid "$m")
[ "$(ls "$m" | wc -l)" = $N ] && pass "$N files served" || fail "served: $(ls "$m" | wc -l)"
base_fds=$(ls -l "/proc/$pid/fd" | grep -c " -> $T/d/base.vmdk\$")
[ "$base_fds" = 1 ] && pass "base open once in the daemon" ||
	fail "base open $base_fds times"

# each clone written differently, then every clone read back, through the
# served files (one process for all: 32 qemu-io starts cost more than the I/O)
"$PYTHON" - "$m" $N >rw.out 2>&1 <<'PY'
import os, sys
m, n = sys.argv[1], int(sys.argv[2])
M = 1 << 20
def own(i):  # (offset, bytes) clone i writes
    return [(M, bytes([i]) * 4096), (4 * M + i * 65536 + 512, bytes([i + 100]) * 1000)]
fds = [os.open("%s/c%d" % (m, i), os.O_RDWR) for i in range(1, n + 1)]
for i, fd in enumerate(fds, 1):
    for off, data in own(i):
        os.pwrite(fd, data, off)
    os.fsync(fd)
bad = 0
for i, fd in enumerate(fds, 1):
    ok = all(os.pread(fd, len(d), off) == d for off, d in own(i))
    ok = ok and os.pread(fd, 60 * 1024, M + 4096) == b"\x3c" * 60 * 1024
    ok = ok and os.pread(fd, 8 * M, 200 * M) == b"\x7e" * 8 * M
    if not ok:
        bad += 1
        print("clone %d reads wrong" % i)
print("%d clones wrong" % bad)
PY
grep -q "^0 clones wrong" rw.out && pass "each clone reads its own writes over the base" ||
	fail "$(tail -3 rw.out)"
rss32=$(rss_kib "$pid")
echo "daemon RSS: 1 disk ${rss1} KiB, $N disks ${rss32} KiB (base $((SIZE >> 20)) MiB, 40 MiB of data)"
expect_ok "status" "$VDELTA" mount --status --json "$m"
grep -q '"pool_layers": 1' "$T/last.out" && pass "pool holds 1 shared layer" ||
	fail "pool: $(grep pool_layers "$T/last.out")"
expect_ok "umount $N" vd_umount "$m"

[ "$(sha256sum <d/base.vmdk)" = "$sha_base" ] && pass "base sha256 unchanged" ||
	fail "base changed"
bad=0
for i in $(seq $N); do
	run qemu-io -f vmdk -c "read -P $i 1M 4k" -c "read -P $((i + 100)) $((4 * 1048576 + i * 65536 + 512)) 1000" \
		-c "read -P 0x3c 2M 1M" d/c$i.vmdk || bad=$((bad + 1))
done
[ $bad = 0 ] && pass "each clone's chain holds its writes (qemu-io)" || fail "$bad clones wrong"
expect_ok "qemu-img check c$N" qemu-img check -q d/c$N.vmdk

# more clones than the soft open-file limit allows descriptors: the daemon
# takes the hard limit (1,024 clones under the usual 1024)
if [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -gt 64 ]; then
	(ulimit -Sn 24 && exec "$VDELTA" mount "${args[@]}" "$m") >"$T/last.out" 2>&1 &&
		pass "$N clones mounted under a soft limit of 24 open files" ||
		fail "mount under a soft limit of 24: $(tail -2 "$T/last.out")"
	# -U: the daemon holds c$N's write lock; nothing writes meanwhile
	expect_ok "c$N reads its chain's content there (qemu-img compare)" \
		qemu-img compare -q -U -f raw -F vmdk "$m/c$N" d/c$N.vmdk
	expect_ok "umount" vd_umount "$m"
else
	echo "hard open-file limit $(ulimit -Hn): the low soft limit case is not run"
fi

finish
