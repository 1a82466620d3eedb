#!/usr/bin/env bash
# test_nbd_crash.sh — kill -9 of nbdkit serving a linked disk in the middle
# of flushed random writes, ROUNDS times.  After each kill: `vdelta check`
# and `qemu-img check` find no corruption (leaked grains allowed), the
# restart says it recovered the unclean top, and every write whose flush
# returned (logged by mount_writer.py only then) reads back over NBD, and
# through qemu-io on the .vmdk at the end.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_nbd.sh"

ROUNDS=${ROUNDS:-4}
COUNT=600
SIZE=$((64 << 20))
W=$SOURCE_DIR/tests/shell/mount_writer.py
cd "$T" || die "cd $T"
mkdir d
run qemu-img create -q -f vmdk d/base.vmdk $SIZE || die "create base"
run qemu-io -f vmdk -c "write -P 0x3c 0 64M" d/base.vmdk || die "fill base"
run "$VDELTA" snapshot d/base.vmdk || die "snapshot"
top=d/base-000001.vmdk
S=$T/s.sock
uri=$(nbd_unix "$S" disk)
: >acked.log
RANDOM=$SEED

for r in $(seq 0 $((ROUNDS - 1))); do
	vd_serve -U "$S" "$top=disk" || { fail "round $r: serve"; break; }
	if [ "$r" -gt 0 ]; then
		grep -q "not closed cleanly" "$T/last.err" && pass "round $r: the restart says it recovered" ||
			fail "round $r: no word of recovery: $(cat "$T/last.err")"
		run "$PYTHON" "$W" verify "$uri" acked.log && pass "round $r: acked writes back" ||
			fail "round $r: $(tail -1 "$T/last.out")"
	fi
	pid=$(serve_pid "$S.pid")
	"$PYTHON" "$W" write "$uri" acked.log "$SEED" "$r" $COUNT &
	wpid=$!
	kill_in_flow "$pid" "$wpid" acked.log || fail "round $r: kill -9 did not end nbdkit"
	echo "round $r: $(wc -l <acked.log) writes acknowledged so far"
	checks_after_kill "$r" "$top"
done

expect_ok "final serve" vd_serve -U "$S" "$top=disk"
run "$PYTHON" "$W" verify "$uri" acked.log && pass "every acked write after $ROUNDS kills" ||
	fail "final: $(tail -1 "$T/last.out")"
expect_ok "final stop" vd_serve --stop -U "$S"
expect_ok "qemu-img check after a clean stop" qemu-img check -q "$top"
run "$VDELTA" check "$top" # exit 1 for the grains the kills leaked
grep -q ": 0 errors, 0 warnings" "$T/last.out" &&
	pass "vdelta check clean after a clean stop (leaked grains aside)" ||
	fail "check: $(tail -1 "$T/last.out")"
# qemu's view of the last acknowledged block: the oracle that is not ours
last=$(tail -1 acked.log)
[ -n "$last" ] || fail "no write was acknowledged at all"
set -- $last
# (qemu-img 7.2's dd counts the skipped blocks in count: only the first
# 4 KiB written are compared)
run qemu-img dd -f vmdk -O raw "if=$top" of=last.bin bs=512 skip=$(($1 / 512)) \
	count=$(($1 / 512 + 8))
"$PYTHON" -c 'import struct,sys; o,r,i=map(int,sys.argv[2:5]); d=open(sys.argv[1],"rb").read(4096)
sys.exit(0 if d == struct.pack("<QII", o, r, i) * 256 else 1)' last.bin "$1" "$2" "$3" &&
	pass "qemu-img reads the last acked block from the chain" || fail "qemu-img dd of the last block"

finish
