#!/usr/bin/env bash
# test_mount_crash.sh — kill -9 the mount daemon in the middle of fsync'ed
# random writes, ROUNDS times.  After each kill: `vdelta check` and
# `qemu-img check` find no corruption (leaked grains allowed), the remount
# recovers by itself and says so, and every write whose fsync returned
# (logged by mount_writer.py only then) reads back, through the mount and
# through qemu-io on the .vmdk at the end.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mount.sh"

ROUNDS=${ROUNDS:-10}
COUNT=600
SIZE=$((64 << 20))
W=$SOURCE_DIR/tests/shell/mount_writer.py
make_base $SIZE "write -P 0x3c 0 64M"
top=d/base-000001.vmdk
m=$(mnt_new m)
: >acked.log
RANDOM=$SEED

for r in $(seq 0 $((ROUNDS - 1))); do
	vd_mount "$top=disk" "$m" || { fail "round $r: mount"; break; }
	if [ "$r" -gt 0 ]; then
		grep -q "not closed cleanly" "$T/last.err" && pass "round $r: recovery said" ||
			fail "round $r: remount did not say it recovered"
		run "$PYTHON" "$W" verify "$m/disk" acked.log && pass "round $r: acked writes back" ||
			fail "round $r: $(tail -1 "$T/last.out")"
	fi
	pid=$(mount_pid "$m")
	"$PYTHON" "$W" write "$m/disk" acked.log "$SEED" "$r" $COUNT &
	wpid=$!
	kill_in_flow "$pid" "$wpid" acked.log || fail "round $r: kill -9 did not end the daemon"
	fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m"
	echo "round $r: $(wc -l <acked.log) writes acknowledged so far"
	checks_after_kill "$r" "$top"
done

expect_ok "final mount" vd_mount "$top=disk" "$m"
run "$PYTHON" "$W" verify "$m/disk" acked.log && pass "every acked write after $ROUNDS kills" ||
	fail "final: $(tail -1 "$T/last.out")"
expect_ok "final umount" vd_umount "$m"
expect_ok "qemu-img check after a clean stop" qemu-img check -q "$top"
# qemu's view of the last acknowledged block of each round
while read -r off rnd idx; do
	last="$off $rnd $idx"
done <acked.log
[ -n "${last:-}" ] || fail "no write was acknowledged at all"
set -- $last
run "$PYTHON" - "$top" "$1" "$2" "$3" <<'PY' && pass "qemu-io reads an acked block" || fail "qemu-io read"
import struct, subprocess, sys
top, off, rnd, idx = sys.argv[1], *map(int, sys.argv[2:])
want = struct.pack("<QII", off, rnd, idx) * 256
out = subprocess.run(["qemu-img", "dd", "-f", "vmdk", "-O", "raw", "if=" + top,
                      "of=/dev/stdout", "bs=512", "skip=%d" % (off // 512), "count=8"],
                     capture_output=True, check=True).stdout
sys.exit(0 if out[:4096] == want else 1)
PY

finish
