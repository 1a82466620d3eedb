# lib_mount.sh — helpers for the tests of `vdelta mount` (tests layer),
# sourced after lib.sh.
#
# Owns: skipping without /dev/fuse, starting mounts in the test's own
# folder and always stopping them (also when a test dies half-way), the
# daemon's pid, and loop devices the test attached.  Only mounts and loop
# devices this test made are ever touched.
# shellcheck shell=bash

[ -c /dev/fuse ] || skip "no /dev/fuse"
need fusermount3 qemu-img qemu-io
need_vdelta

sanitizer_to_files

t_mounts=()
t_loops=()
t_mount_cleanup()
{
	local m l
	for l in "${t_loops[@]}"; do
		losetup -d "$l" 2>/dev/null
	done
	for m in "${t_mounts[@]}"; do
		grep -q " $m fuse" /proc/mounts && fusermount3 -u -z "$m" 2>/dev/null
	done
	t_cleanup
}
trap t_mount_cleanup EXIT

# mnt_new NAME: a fresh empty mountpoint $T/NAME, remembered for cleanup.
mnt_new()
{
	mkdir -p "$T/$1"
	t_mounts+=("$T/$1")
	echo "$T/$1"
}

# vd_mount ARGS... : `vdelta mount` (returns its status; output in last.*).
vd_mount()
{
	run "$VDELTA" mount "$@"
}

vd_umount()
{
	run "$VDELTA" umount "$1"
}

# mount_pid MOUNTPOINT: the daemon's pid, from the control file.
mount_pid()
{
	sed -n 's/^mount\t.*pid=\([0-9]*\).*/\1/p' "$1/.vdelta-status"
}

# is_mounted MOUNTPOINT
is_mounted()
{
	grep -q " $1 fuse" /proc/mounts
}

# make_base SIZE QEMU-IO-CMD... : in $T/d, a base.vmdk made by qemu-img,
# filled by qemu-io (the commands given), frozen by `vdelta snapshot`;
# its new top is d/base-000001.vmdk.  The test's cwd becomes $T.
make_base()
{
	local size=$1 args=() c
	shift
	for c in "$@"; do args+=(-c "$c"); done
	cd "$T" || die "cd $T"
	mkdir -p d
	run qemu-img create -q -f vmdk d/base.vmdk "$size" || die "create base"
	run qemu-io -f vmdk "${args[@]}" d/base.vmdk || die "fill base"
	run "$VDELTA" snapshot d/base.vmdk || die "snapshot"
}
