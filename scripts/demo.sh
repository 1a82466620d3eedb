#!/usr/bin/env bash
# demo.sh — build vdelta (scripts/setup.sh), then show what it does, step by
# step, in a temporary directory that is removed afterwards (KEEP=1 keeps
# it).  Each step prints its title and its exact command line; the demo
# stops at the first step that fails.
#
# The story: a golden image becomes a frozen base, three linked clones
# over it are mounted in one `vdelta mount` daemon, written differently as
# VMs would, unmounted cleanly, and `vdelta tree` shows the shared base and
# the space saved.  Needs /dev/fuse (present on Debian as root).
#
# Adding a step: one `step "title" 'command line'` line in the list at the
# bottom (the command is a shell string, run in the demo directory with
# vdelta on PATH).  Steps that need qemu-img are skipped without.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$src/$build ;; esac
export BUILD_DIR=$build

"$src/scripts/setup.sh" >/dev/null
export PATH=$build/tools:$PATH

dir=$(mktemp -d "${TMPDIR:-/tmp}/vdelta-demo.XXXXXX")
# a failed step must not leave the demo's mount behind
unmount_demo()
{
	grep -q " $dir/mnt fuse" /proc/mounts && vdelta umount "$dir/mnt" || true
}
if [ "${KEEP:-0}" = 1 ]; then
	trap 'unmount_demo; echo; echo "(demo files kept in $dir)"' EXIT
else
	trap 'unmount_demo; rm -rf "$dir"' EXIT
fi
cd "$dir"

nr_steps=0
step()
{
	nr_steps=$((nr_steps + 1))
	printf '\n== %d. %s\n$ %s\n' "$nr_steps" "$1" "$2"
	eval "$2"
}

# Some guest data for the demo: 4 MiB of random bytes in 1 MiB pieces,
# scattered over a 3 GiB raw disk (the rest is a hole).
make_data()
{
	truncate -s 3G data.raw
	for mib in 3 70 71 2100; do
		head -c 1M /dev/urandom | dd of=data.raw bs=1M seek=$mib conv=notrunc status=none
	done
}

# ---- the demo: one base, three linked clones, one daemon ------------------------
step "vdelta and its commands" 'vdelta --version && vdelta help'
step "A raw disk with 4 MiB of data scattered over 3 GiB (a golden image)" \
	'make_data && ls -ls data.raw'
step "Convert it into a sparse VMDK: only the data is stored" \
	'vdelta convert -t monolithicSparse data.raw base.vmdk && ls -ls base.vmdk'
step "Snapshot: freeze base.vmdk (it is never written again), add a delta over it" \
	'vdelta snapshot base.vmdk'
step "Three linked clones of the frozen base: empty deltas, a few KiB each" \
	'for vm in web1 web2 db; do vdelta clone --linked base.vmdk $vm.vmdk; done; ls -ls *.vmdk'
step "Mount the three clones in ONE daemon: each is a plain file of the disk's size" \
	'mkdir mnt && vdelta mount web1.vmdk web2.vmdk db.vmdk mnt && ls -l mnt'
step "The daemon holds the shared base open once (its descriptors)" \
	'pid=$(sed -n "s/^mount\t.*pid=\([0-9]*\).*/\1/p" mnt/.vdelta-status) &&
	 ls -l /proc/$pid/fd | grep -o "[^/]*\.vmdk$" | sort | uniq -c'
step "Each VM writes its own data (a hypervisor would open mnt/NAME as raw)" \
	'echo "web1 config" | dd of=mnt/web1 bs=512 seek=100 conv=notrunc,fsync status=none &&
	 head -c 2M /dev/urandom | dd of=mnt/web2 bs=1M seek=500 conv=notrunc,fsync status=none &&
	 head -c 8M /dev/urandom | dd of=mnt/db bs=1M seek=1000 oflag=direct conv=notrunc,fsync status=none'
step "Every clone still reads the base's data where it did not write" \
	'for vm in web1 web2 db; do cmp -n 4M -i 3M:3M data.raw mnt/$vm && echo "$vm: base data intact"; done'
step "Live figures: reads served by each layer, copy-on-write grain copies" \
	'vdelta mount --status mnt'
step "Unmount cleanly: flushed, locks released" 'vdelta umount mnt'
step "The linked-clone group: one shared base, three small deltas, space saved" \
	'vdelta tree .'
step "Content digests: three different disks over one base" \
	'vdelta digest base.vmdk web1.vmdk web2.vmdk db.vmdk'
if command -v qemu-img >/dev/null; then
	step "qemu-img agrees: the clones chain to the base and check clean" \
		'qemu-img info --backing-chain web1.vmdk | grep -E "^image|backing file:" &&
		 qemu-img check db.vmdk && qemu-img compare -f raw -F vmdk data.raw base.vmdk'
fi

printf '\nDemo done: %d steps.\n' "$nr_steps"
