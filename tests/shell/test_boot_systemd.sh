#!/usr/bin/env bash
# test_boot_systemd.sh — vdelta-mount@.service under the machine's systemd:
# systemctl start (active only once the mount serves), stop (data in, locks
# free, folder unmounted), a SIGKILL restarted by Restart=on-failure, and a
# configuration error in the journal at error priority without a restart.
# The installed unit runs with one drop-in: ExecStart pointing at the
# binary under test and a config file of the test's.  Needs systemd as
# PID 1; test_boot.sh runs the same ExecStart by hand everywhere.
source "$(dirname "$0")/lib.sh"
need_vdelta
[ "$(id -u)" = 0 ] || skip "needs root (systemctl)"
[ -d /run/systemd/system ] ||
	skip "systemd is not PID 1 here (PID 1: $(ps -p 1 -o comm= 2>/dev/null)): systemctl start/stop/restart not exercised"
need systemctl journalctl qemu-io qemu-img meson
[ -c /dev/fuse ] || skip "no /dev/fuse"

D=$T/root
run meson install -C "$BUILD_DIR" --no-rebuild --destdir "$D" || die "meson install failed"
unit=$D$(meson introspect "$BUILD_DIR" --installed |
	"$PYTHON" -c 'import json,sys; print(next(v for v in json.load(sys.stdin).values() if v.endswith("vdelta-mount@.service")))')
name=vdtest$$
svc=vdelta-mount@$name.service
units=/run/systemd/system
cleanup()
{
	systemctl stop "$svc" 2>/dev/null
	systemctl reset-failed "$svc" 2>/dev/null
	rm -rf "$units/vdelta-mount@.service" "$units/$svc.d"
	systemctl daemon-reload
	grep -q " $T/m fuse" /proc/mounts && fusermount3 -u -z "$T/m"
	t_cleanup
}
[ ! -e "$units/vdelta-mount@.service" ] || skip "a vdelta-mount@.service is in $units already"
trap cleanup EXIT
cp "$unit" "$units/vdelta-mount@.service"
mkdir -p "$units/$svc.d" "$T/m"
cat >"$units/$svc.d/test.conf" <<EOF
[Service]
ExecStart=
ExecStart=$VDELTA mount --foreground -o auto_unmount --config $T/$name.conf
RestartSec=1s
EOF
run "$VDELTA" create -s 64M "$T/a.vmdk" || die "create"
cat >"$T/$name.conf" <<EOF
mountpoint = $T/m
disk = $T/a.vmdk
EOF
systemctl daemon-reload

prop() { systemctl show -p "$1" --value "$svc"; }

test_start_stop()
{
	run systemctl start "$svc" || { fail "systemctl start: $(journalctl -u "$svc" -n 5)"; return; }
	[ "$(prop ActiveState)" = active ] || fail "not active after start"
	grep -q " $T/m fuse.vdelta " /proc/mounts || fail "start returned before the mount"
	[ "$(prop MainPID)" = "$(sed -n 's/^mount\t.*pid=\([0-9]*\).*/\1/p' "$T/m/.vdelta-status")" ] ||
		fail "MainPID is not the daemon"
	qemu-io -f raw -c 'write -P 0x5e 1M 64k' -c flush "$T/m/a" >/dev/null || fail "write"
	run systemctl stop "$svc" || fail "systemctl stop"
	! grep -q " $T/m fuse" /proc/mounts || fail "mounted after stop"
	run qemu-io -f vmdk -c 'read -P 0x5e 1M 64k' "$T/a.vmdk" || fail "data or lock after stop"
	run qemu-img check "$T/a.vmdk" || fail "qemu-img check after stop"
	pass "systemctl start: active once mounted; stop: data in, locks free"
}

test_restart()
{
	local pid i
	run systemctl start "$svc" || { fail "start"; return; }
	pid=$(prop MainPID)
	kill -KILL "$pid"
	for ((i = 0; i < 150; i++)); do
		[ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$pid" ] &&
			[ "$(prop MainPID)" != 0 ] && break
		sleep 0.1
	done
	[ $i -lt 150 ] || fail "not restarted after SIGKILL: $(prop ActiveState)"
	[ -f "$T/m/a" ] || fail "the restarted service does not serve"
	run systemctl stop "$svc"
	pass "Restart=on-failure: a killed daemon is started again and serves"
}

test_bad_config()
{
	local n0
	n0=$(prop NRestarts)
	echo "disk = relative.vmdk" >>"$T/$name.conf"
	systemctl start "$svc" 2>/dev/null && fail "started with a bad config"
	sleep 2
	[ "$(prop ActiveState)" = failed ] || fail "not failed: $(prop ActiveState)"
	[ "$(prop NRestarts)" = "$n0" ] || fail "restarted on exit 2 ($n0 -> $(prop NRestarts))"
	journalctl -u "$svc" -p err --no-pager | grep -q "$name.conf:3: disk" ||
		fail "no error-priority message in the journal"
	pass "bad config: failed, no restart, the reason in the journal at priority err"
}

test_start_stop
test_restart
test_bad_config
finish
