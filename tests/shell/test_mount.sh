#!/usr/bin/env bash
# test_mount.sh — `vdelta mount` of one linked disk: what a hypervisor sees
# through the served file (qemu-io/qemu-img with format=raw), what lands in
# the chain (qemu-img on the .vmdk after unmount, against the same writes
# applied by qemu-io to a copy), file semantics (end of disk, truncate,
# O_DIRECT), the modes (ro, nonpersistent: every file's sha256 unchanged,
# snapshot: old top unchanged, new delta holds the writes), refusals
# (frozen top, a second mount, qemu writing a mounted top), live figures
# and clean stops (umount, SIGTERM).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mount.sh"
need sha256sum

SIZE=$((64 << 20))
make_base $SIZE "write -P 0x3c 0 8M" "write -P 0x7e 40M 3M"
top=d/base-000001.vmdk
cp -a d q # the oracle's copy: qemu-io gets the same writes
gen_writes $SIZE 60 >writes.txt

# unclean_flag FILE: byte 72 of a hosted sparse header (VMDK spec)
unclean_flag()
{
	od -An -tu1 -j72 -N1 "$1" | tr -d ' '
}

# ---- read-write through the served file -------------------------------------
m=$(mnt_new m)
expect_ok "mount rw" vd_mount "$top=web" "$m"
[ -f "$m/web" ] && pass "disk file appears" || fail "no $m/web"
want=$(qemu-img info -U --output=json "$top" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
[ "$(stat -c %s "$m/web")" = "$want" ] && pass "file size = capacity" ||
	fail "size $(stat -c %s "$m/web"), qemu says $want"
[ "$(stat -c %a "$m/web")" = "$(stat -c %a "$top")" ] && pass "mode follows the top" ||
	fail "mode $(stat -c %a "$m/web") vs top $(stat -c %a "$top")"
ls -A "$m" | grep -q vdelta-status && fail "control file listed" || pass "control file hidden"
apply_writes qemu-io-raw "$m/web" writes.txt && pass "qemu-io raw writes" ||
	fail "qemu-io raw writes"
apply_writes qemu-io q/base-000001.vmdk writes.txt || die "oracle writes"
expect_ok "served file = qemu's chain" qemu-img compare -q -f raw -F vmdk "$m/web" \
	q/base-000001.vmdk

# file semantics
"$PYTHON" - "$m/web" $SIZE >sem.out 2>&1 <<'PY'
import errno, os, sys
p, size = sys.argv[1], int(sys.argv[2])
fd = os.open(p, os.O_RDWR)
assert os.pread(fd, 4096, size) == b"", "read at the end"
assert len(os.pread(fd, 4096, size - 100)) == 100, "short read at the end"
try:
    os.pwrite(fd, b"x" * 512, size)
    sys.exit("write past the end succeeded")
except OSError as e:
    assert e.errno in (errno.EFBIG, errno.ENOSPC), e
for bad in (0, size + 4096):
    try:
        os.ftruncate(fd, bad)
        sys.exit("truncate to %d succeeded" % bad)
    except OSError:
        pass
d = os.open(p, os.O_RDONLY | os.O_DIRECT)
import mmap
buf = mmap.mmap(-1, 65536)
assert os.preadv(d, [buf], 0) == 65536, "O_DIRECT read"
print("ok")
PY
grep -q '^ok$' sem.out && pass "end of disk, truncate, O_DIRECT" || fail "semantics: $(cat sem.out)"

# refusals while mounted
run qemu-io -f vmdk -c "write 0 512" "$top" && fail "qemu-io wrote a mounted top" ||
	pass "qemu-io refused on a mounted top"
m2=$(mnt_new m2)
if vd_mount "$top" "$m2"; then
	fail "second mount of one top accepted"
else
	grep -q "base-000001.vmdk" "$T/last.err" && pass "second mount refused, names the file" ||
		fail "second mount refused without naming the file: $(cat "$T/last.err")"
fi
is_mounted "$m2" && fail "refused mount left a mount"

# live figures: one direct 256 KiB write counted as such
run dd if=/dev/zero of="$m/web" bs=64k count=4 seek=100 oflag=direct conv=notrunc ||
	fail "dd direct write"
run qemu-io -f vmdk -c "write -z $((100 * 65536)) 262144" q/base-000001.vmdk
expect_ok "status --json" "$VDELTA" mount --status --json "$m"
"$PYTHON" - "$T/last.out" >st.out 2>&1 <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
d = s["disks"][0]
assert d["name"] == "web" and d["mode"] == "rw", d
assert d["writes"] >= 4 and d["reads"] > 0, d
assert len(d["layer_bytes"]) == d["layers"] == 2, d
assert d["read_bytes"] == d["zero_bytes"] + d["walked_bytes"] + sum(d["layer_bytes"]), d
assert s["mount"]["pool_layers"] == 1 and s["mount"]["disks"] == 1, s
print("ok")
PY
grep -q '^ok$' st.out && pass "status figures add up" || fail "status: $(cat st.out)"
pid=$(mount_pid "$m")
expect_ok "umount" vd_umount "$m"
pid_gone "$pid" && pass "daemon gone" || fail "daemon still running after umount"
expect_ok "chain = qemu's copy" qemu-img compare -q "$top" q/base-000001.vmdk
expect_ok "qemu-img check" qemu-img check -q "$top"
[ "$(unclean_flag "$top")" = 0 ] && pass "unclean flag cleared" || fail "top left unclean"
cmp -s d/base.vmdk q/base.vmdk && pass "base unchanged" || fail "base changed"

# ---- frozen top ---------------------------------------------------------------
if vd_mount d/base.vmdk "$m"; then
	fail "frozen top mounted rw"
	vd_umount "$m"
else
	grep -q -- "--snapshot" "$T/last.err" && pass "frozen top refused, names --snapshot" ||
		fail "refusal does not name --snapshot: $(cat "$T/last.err")"
fi

# ---- ro ------------------------------------------------------------------------
expect_ok "mount --ro" vd_mount --ro "$top" "$m"
run qemu-io -f raw -c "write 0 512" "$m/base-000001" && fail "write to ro disk" ||
	pass "ro disk refuses writes"
expect_ok "ro reads the chain" qemu-img compare -q -f raw -F vmdk "$m/base-000001" "$top"
# readers share: qemu may read a top we serve read-only
expect_ok "qemu reads beside a ro mount" qemu-img compare -q -U "$top" q/base-000001.vmdk
expect_ok "umount ro" vd_umount "$m"

# ---- nonpersistent: no file changes -------------------------------------------
sha256sum d/* >np.sha
mkdir np-tmp
SEED=$((SEED + 1)) gen_writes $SIZE 40 >np-writes.txt
TMPDIR=$T/np-tmp run "$VDELTA" mount --nonpersistent "$top=np" "$m" || fail "mount --nonpersistent"
apply_writes qemu-io-raw "$m/np" np-writes.txt && pass "writes to a nonpersistent disk" ||
	fail "nonpersistent writes"
cp -a q np-q
apply_writes qemu-io np-q/base-000001.vmdk np-writes.txt || die "oracle np writes"
expect_ok "nonpersistent reads its writes" qemu-img compare -q -f raw -F vmdk "$m/np" \
	np-q/base-000001.vmdk
[ -z "$(ls -A np-tmp)" ] && pass "no throw-away file visible" || fail "left in TMPDIR: $(ls np-tmp)"
expect_ok "umount nonpersistent" vd_umount "$m"
expect_ok "every layer's sha256 unchanged" sha256sum -c --quiet np.sha
[ -z "$(ls -A np-tmp)" ] && pass "nothing left in TMPDIR" || fail "left: $(ls np-tmp)"

# ---- snapshot: the old top is frozen, writes go to a new delta ----------------
sha_top=$(sha256sum <"$top")
expect_ok "mount --snapshot" vd_mount --snapshot "$top=snap" "$m"
new=$(sed -n 's/^snap: writes go into //p' "$T/last.out")
[ -f "$new" ] && pass "new delta named at mount: $(basename "$new")" || fail "no new delta named"
cp -a d s-q
apply_writes qemu-io-raw "$m/snap" np-writes.txt || fail "snapshot writes"
expect_ok "umount snapshot" vd_umount "$m"
run qemu-img info --backing-chain "$new"
grep -q "base-000001.vmdk" "$T/last.out" && pass "new delta's parent is the old top" ||
	fail "backing chain: $(cat "$T/last.out")"
apply_writes qemu-io s-q/base-000001.vmdk np-writes.txt || die "oracle snapshot writes"
expect_ok "new delta holds the writes" qemu-img compare -q "$new" s-q/base-000001.vmdk
run "$VDELTA" check "$new" && pass "vdelta check of the new delta" || fail "vdelta check"
cmp -s <(sha256sum <"$top") <(echo "$sha_top") && fail "old top not frozen" ||
	pass "old top marked frozen"
expect_ok "old top's data unchanged" qemu-img compare -q "$top" q/base-000001.vmdk

# ---- SIGTERM ----------------------------------------------------------------------
expect_ok "mount for SIGTERM" vd_mount "$new=t" "$m"
run qemu-io -f raw -c "write -P 0x42 1M 64k" "$m/t" || fail "write before SIGTERM"
pid=$(mount_pid "$m")
kill -TERM "$pid"
wait_gone "$pid" && pass "SIGTERM stops" || fail "SIGTERM did not stop the daemon"
is_mounted "$m" && fail "still mounted after SIGTERM" || pass "unmounted by SIGTERM"
[ "$(unclean_flag "$new")" = 0 ] && pass "clean after SIGTERM" || fail "unclean after SIGTERM"
expect_ok "SIGTERM kept the write" qemu-io -f vmdk -c "read -P 0x42 1M 64k" "$new"

# ---- other subformats as tops: flat (read from the file directly), stream
# (compressed: copied); another user through -o allow_other -----------------------
head -c 3M /dev/urandom >r.raw
truncate -s 20M r.raw
run "$VDELTA" convert -t monolithicFlat r.raw flat.vmdk || die "convert flat"
run "$VDELTA" convert -t streamOptimized r.raw so.vmdk || die "convert stream"
expect_ok "mount flat + stream, allow_other" vd_mount --ro -o allow_other flat.vmdk so.vmdk "$m"
cmp -s r.raw "$m/flat" && pass "flat top reads the raw bytes" || fail "flat differs"
cmp -s r.raw "$m/so" && pass "stream top reads the raw bytes" || fail "stream differs"
# 256 KiB requests are spliced (file ranges); cmp's small ones are copied
for f in flat so; do
	dd if="$m/$f" bs=256k iflag=direct status=none | cmp -s - r.raw ||
		fail "$f read in 256 KiB requests differs"
done
run "$VDELTA" mount --status --json "$m"
"$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1]))["disks"]; sys.exit(0 if d[0]["direct_bytes"] > 0 and d[1]["direct_bytes"] == 0 else 1)' \
	"$T/last.out" && pass "flat data handed out as file ranges, stream copied" ||
	fail "direct bytes: $(grep direct "$T/last.out")"
# 1 MiB reads reach the daemon as requests small enough to splice through a
# pipe of pipe-max-size (max_read), so every byte of them goes as file ranges
direct_of() { sed -n 's/.*name=flat\t.*direct_bytes=\([0-9]*\).*/\1/p' "$m/.vdelta-status"; }
max_read=$(sed -n 's/^mount\t.*max_read=\([0-9]*\).*/\1/p' "$m/.vdelta-status")
if [ "$(cat /proc/sys/fs/pipe-max-size)" -ge 1048576 ]; then
	d0=$(direct_of)
	dd if="$m/flat" bs=1M iflag=direct status=none | cmp -s - r.raw || fail "flat read in 1 MiB differs"
	d1=$(direct_of)
	[ "$max_read" -ge 524288 ] && [ "$max_read" -le 1048576 ] &&
		[ $((d1 - d0)) = "$(stat -c %s r.raw)" ] &&
		pass "1 MiB reads spliced whole (max_read $max_read)" ||
		fail "1 MiB reads: max_read $max_read, $((d1 - d0)) bytes as file ranges"
fi
if command -v runuser >/dev/null; then
	chmod 755 "$T"
	runuser -u nobody -- cmp -s r.raw "$m/flat" && pass "another user reads (allow_other)" ||
		fail "nobody cannot read through allow_other"
fi
expect_ok "umount flat + stream" vd_umount "$m"

finish
