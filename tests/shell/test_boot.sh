#!/usr/bin/env bash
# test_boot.sh — mounting at boot, for real as far as this machine allows,
# from a `meson install` into a DESTDIR:
#  - fstab: in a private mount namespace whose /usr/sbin (and /usr/local)
#    show the installed mount.fuse.vdelta and vdelta, `mount -t
#    fuse.vdelta DISK MNT -o ...`, `mount MNT` from an /etc/fstab of the
#    test's (both fstab forms), and mount.fuse3's drop_privileges: each goes
#    through mount(8) -> mount.fuse.vdelta -> mount.fuse3 -> vdelta;
#  - the unit: vdelta-mount@.service's ExecStart run by hand, as systemd
#    would (instance name, its /etc/vdelta config, a NOTIFY_SOCKET the test
#    listens on, SIGTERM to stop), and again after a SIGKILL (what
#    Restart=on-failure does).
# Each time: what was written through the mount is in the disk after
# unmount (qemu-io reads it back), qemu-img check is clean, and the locks
# are released (qemu-io opens the disk for writing).  systemctl itself is
# test_boot_systemd.sh.
source "$(dirname "$0")/lib.sh"
need_vdelta
need meson qemu-img qemu-io fusermount3 unshare
[ "$(id -u)" = 0 ] || skip "needs root (mount namespace, mount(8))"
[ -c /dev/fuse ] || skip "no /dev/fuse"
[ -x /sbin/mount.fuse3 ] || skip "no /sbin/mount.fuse3 (fuse3)"

if [ -z "${VDELTA_BOOT_NS:-}" ]; then
	# once more inside a private mount namespace: nothing the test mounts
	# there (overlays, fstab, FUSE) is seen outside, and it all goes with it
	rmdir "$T"
	VDELTA_BOOT_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi

# mounts of the test's own, always stopped; sanitizer logs of the daemons
source "$(dirname "$0")/lib_mount.sh"
trap '[ -z "${listener:-}" ] || kill "$listener" 2>/dev/null; t_mount_cleanup' EXIT
D=$T/root
run meson install -C "$BUILD_DIR" --no-rebuild --destdir "$D" || die "meson install failed"
prefix=$(meson introspect "$BUILD_DIR" --buildoptions |
	"$PYTHON" -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')

# What mount(8) and mount.fuse3 find: the installed helper and binary.
mkdir -p "$T/sbin"
cp -a "$D/sbin/mount.fuse.vdelta" "$T/sbin/" || die "no mount.fuse.vdelta installed"
cp "$D$prefix/bin/vdelta" "$T/sbin/vdelta"
for dir in /usr/sbin /usr/local/sbin /usr/local/bin; do
	[ -d "$dir" ] || continue
	mount -t overlay overlay -o "lowerdir=$T/sbin:$dir" "$dir" || skip "no overlayfs on $dir"
done
# the PATH mount(8) gives its helpers
cmp -s "$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v vdelta)" \
	"$T/sbin/vdelta" ||
	die "vdelta on mount(8)'s PATH is not the installed one"

mnt() { mnt_new "$1" >/dev/null; }
mounted() { grep -q " $1 fuse.vdelta " /proc/mounts; }

# disk NAME: a 64 MiB sparse disk with 0x11 in its first MiB
disk()
{
	run "$VDELTA" create -s 64M "$T/$1.vmdk" &&
		run qemu-io -f vmdk -c 'write -P 0x11 0 1M' "$T/$1.vmdk" || die "disk $1"
}

# written MNT FILE PATTERN: write 64 KiB of PATTERN at 1 MiB through the mount
written()
{
	"$PYTHON" -c 'import os,sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, bytes([int(sys.argv[2], 0)]) * 65536, 1 << 20)
os.fsync(fd); os.close(fd)' "$1/$2" "$3"
}

# released DISK PATTERN: within 10 s (a plain umount returns before the
# daemon has closed), qemu-io opens DISK for writing (no lock held) and
# reads PATTERN at 1 MiB; then qemu-img check is clean.
released()
{
	local i
	for ((i = 0; i < 100; i++)); do
		qemu-io -f vmdk -c "read -P $2 1M 64k" -c 'read -P 0x11 0 1M' "$1" \
			>"$T/qio.out" 2>&1 && ! grep -q "Pattern verification failed" "$T/qio.out" &&
			break
		sleep 0.1
	done
	[ $i -lt 100 ] || { fail "$(basename "$1"): $(head -3 "$T/qio.out")"; return 1; }
	run qemu-img check -f vmdk "$1" || { fail "qemu-img check $(basename "$1")"; return 1; }
}

test_mount_type()
{
	disk a && disk b && mnt m1 || return
	if ! run mount -t fuse.vdelta -o allow_other,disk="$T/b.vmdk=bee" "$T/a.vmdk" "$T/m1"; then
		fail "mount -t fuse.vdelta"
		return
	fi
	mounted "$T/m1" || fail "no fuse.vdelta mount on m1"
	[ "$(stat -c %s "$T/m1/a")" = 67108864 ] && [ -f "$T/m1/bee" ] ||
		fail "m1 holds: $(ls "$T/m1")"
	grep " $T/m1 " /proc/mounts | grep -q allow_other || fail "allow_other not passed to FUSE"
	written "$T/m1" a 0xa1 && written "$T/m1" bee 0xb1 || fail "write through m1"
	run umount "$T/m1" || fail "umount m1"
	released "$T/a.vmdk" 0xa1 && released "$T/b.vmdk" 0xb1 &&
		pass "mount -t fuse.vdelta (two disks, allow_other), umount: data in, locks free"
}

test_fstab()
{
	disk c && disk d && mnt m2 && mnt m3 || return
	cat >"$T/fstab" <<-EOF
	# the two forms of mount.fuse3(8)
	$T/c.vmdk  $T/m2  fuse.vdelta  defaults,_netdev,nofail,x-systemd.requires=foo  0 0
	vdelta#$T/d.vmdk=dee  $T/m3  fuse  cache=kernel,noauto  0 0
	EOF
	mount --bind "$T/fstab" /etc/fstab || { fail "bind fstab"; return; }
	run mount "$T/m2" || fail "mount m2 from fstab (type fuse.vdelta)"
	run mount "$T/m3" || fail "mount m3 from fstab (vdelta#, type fuse)"
	umount /etc/fstab
	mounted "$T/m2" && mounted "$T/m3" || { fail "fstab mounts missing"; return; }
	[ -f "$T/m2/c" ] && [ -f "$T/m3/dee" ] || fail "fstab mounts hold: $(ls "$T/m2" "$T/m3")"
	written "$T/m2" c 0xc1 && written "$T/m3" dee 0xd1 || fail "write through fstab mounts"
	run "$VDELTA" umount "$T/m2" || fail "vdelta umount m2"
	run umount "$T/m3" || fail "umount m3"
	released "$T/c.vmdk" 0xc1 && released "$T/d.vmdk" 0xd1 &&
		pass "/etc/fstab: both forms mount, ignore mount(8)'s options, unmount clean"
}

# mount.fuse3 mounts /dev/fuse itself and starts vdelta with no capability.
test_drop_privileges()
{
	local pid caps
	disk e && mnt m4 || return
	run mount -t fuse.vdelta -o drop_privileges "$T/e.vmdk" "$T/m4" ||
		{ fail "mount -o drop_privileges"; return; }
	pid=$(mount_pid "$T/m4")
	caps=$(awk '/^CapEff/ {print $2}' "/proc/$pid/status")
	[ "$caps" = 0000000000000000 ] || fail "daemon $pid has capabilities $caps"
	written "$T/m4" e 0xe1 || fail "write through m4"
	run umount "$T/m4" || fail "umount m4"
	released "$T/e.vmdk" 0xe1 && pass "drop_privileges: no capability, data in, locks free"
}

# ---- the unit, by hand ----------------------------------------------------------

unit=$D$(meson introspect "$BUILD_DIR" --installed |
	"$PYTHON" -c 'import json,sys; print(next(v for v in json.load(sys.stdin).values() if v.endswith("vdelta-mount@.service")))')

# ExecStart of instance $1, split into words as systemd does for a line
# without quotes, %i and %I replaced.
exec_start()
{
	local line
	line=$(sed -n 's/^ExecStart=//p' "$unit")
	line=${line//%i/$1}
	line=${line//%I/$1}
	read -ra start_words <<<"$line"
}

# listen FILE: collect NOTIFY_SOCKET datagrams into FILE, one a line
listen()
{
	[ -z "${listener:-}" ] || kill "$listener" 2>/dev/null
	rm -f "$T/notify.sock" "$1"
	"$PYTHON" -c 'import socket,sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(60)
with open(sys.argv[2], "a") as f:
    while True:
        try: d = s.recv(4096)
        except socket.timeout: break
        f.write(d.decode().replace("\n", " ") + "\n"); f.flush()' "$T/notify.sock" "$1" \
		</dev/null >/dev/null 2>&1 &
	listener=$!
	for ((i = 0; i < 50; i++)); do [ -S "$T/notify.sock" ] && return; sleep 0.1; done
}

# start: the unit's ExecStart in the background (pid $svc), as systemd would
# start it: cwd /, NOTIFY_SOCKET, stderr a file; then wait for READY=1.
start()
{
	listen "$T/notify.log"
	( cd / && NOTIFY_SOCKET=$T/notify.sock exec "${start_words[@]}" ) \
		>"$T/unit.out" 2>"$T/unit.err" </dev/null &
	svc=$!
	for ((i = 0; i < 200; i++)); do
		grep -q "READY=1" "$T/notify.log" 2>/dev/null && return 0
		kill -0 $svc 2>/dev/null || break
		sleep 0.1
	done
	return 1
}

test_unit_by_hand()
{
	local rc i confdir
	disk f && disk g && mnt m5 || return
	exec_start boottest
	confdir=$(dirname "${start_words[-1]}")
	[[ $confdir == */vdelta ]] || { fail "ExecStart's config is ${start_words[-1]}"; return; }
	# the unit's own config path, shown with the test's file in it
	[ -d "${confdir%/vdelta}" ] || { echo "no ${confdir%/vdelta}: the unit is not run"; return; }
	mkdir -p "$T/etc/vdelta"
	cat >"$T/etc/vdelta/boottest.conf" <<-EOF
	# test_boot.sh
	mountpoint = $T/m5
	disk = $T/f.vmdk
	disk = $T/g.vmdk=gee
	cache = kernel
	EOF
	mount -t overlay overlay -o "lowerdir=$T/etc:${confdir%/vdelta}" "${confdir%/vdelta}" ||
		{ fail "overlay on ${confdir%/vdelta}"; return; }
	start || { fail "no READY=1: $(cat "$T/unit.err")"; return; }
	grep -q "MAINPID=$svc" "$T/notify.log" || fail "MAINPID is not $svc: $(cat "$T/notify.log")"
	mounted "$T/m5" && [ -f "$T/m5/gee" ] || fail "unit mount holds: $(ls "$T/m5")"
	written "$T/m5" f 0xf1 && written "$T/m5" gee 0x61 || fail "write through the unit's mount"
	kill -TERM $svc # systemctl stop: KillSignal=SIGTERM to the main process
	wait $svc
	rc=$?
	[ $rc = 0 ] || fail "ExecStart exited $rc on SIGTERM: $(cat "$T/unit.err")"
	sleep 0.2
	grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1: $(cat "$T/notify.log")"
	! mounted "$T/m5" || fail "still mounted after stop"
	released "$T/f.vmdk" 0xf1 && released "$T/g.vmdk" 0x61 &&
		pass "ExecStart by hand: READY=1 with MAINPID, SIGTERM: exit 0, STOPPING=1, data in, locks free"

	# Restart=on-failure: a daemon killed outright leaves the folder free
	# (auto_unmount), and the same ExecStart serves again
	start || { fail "second start: $(cat "$T/unit.err")"; return; }
	kill -KILL $svc
	wait $svc 2>/dev/null
	for ((i = 0; i < 100; i++)); do mounted "$T/m5" || break; sleep 0.1; done
	! mounted "$T/m5" || fail "a killed daemon leaves m5 mounted (auto_unmount)"
	start || { fail "start after SIGKILL: $(cat "$T/unit.err")"; return; }
	kill -TERM $svc
	wait $svc || fail "exit after restart"
	released "$T/f.vmdk" 0xf1 && pass "after SIGKILL the folder is free and ExecStart serves again"
	kill "$listener" 2>/dev/null
	listener=

	# a configuration error: exit 2 (RestartPreventExitStatus=2), no READY,
	# the reason on stderr with the journal's error priority
	echo "disk = relative.vmdk" >>"$T/etc/vdelta/boottest.conf"
	listen "$T/notify2.log"
	( cd / && exec 2>"$T/unit.err" &&
	  JOURNAL_STREAM=$(stat -c '%d:%i' "$T/unit.err") NOTIFY_SOCKET=$T/notify.sock \
	  exec "${start_words[@]}" ) </dev/null
	rc=$?
	[ $rc = 2 ] || fail "a bad config exits $rc, not 2"
	grep -q "^<3>vdelta: .*boottest.conf:6: disk: an absolute path" "$T/unit.err" ||
		fail "bad config, stderr: $(cat "$T/unit.err")"
	! grep -q READY "$T/notify2.log" || fail "READY=1 despite a bad config"
	pass "a bad config: exit 2, '<3>' error naming file:line, no READY"
}

test_mount_type
test_fstab
test_drop_privileges
test_unit_by_hand
finish
