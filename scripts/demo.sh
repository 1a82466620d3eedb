#!/usr/bin/env bash
# demo.sh — build vdelta (scripts/setup.sh), then show what it does, step by
# step, in a temporary directory that is removed afterwards (KEEP=1 keeps
# it).  Each step prints its title and its exact command line; the demo
# stops at the first step that fails.
#
# Adding a step: one `step "title" 'command line'` line in the list at the
# bottom (the command is a shell string, run in the demo directory with
# vdelta on PATH).  Steps that need qemu-img/qemu-io are skipped without.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$src/$build ;; esac
export BUILD_DIR=$build

"$src/scripts/setup.sh" >/dev/null
export PATH=$build/tools:$PATH

dir=$(mktemp -d "${TMPDIR:-/tmp}/vdelta-demo.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
	trap 'echo; echo "(demo files kept in $dir)"' EXIT
else
	trap 'rm -rf "$dir"' EXIT
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

# ---- the demo ----------------------------------------------------------------
step "vdelta and its commands" 'vdelta --version && vdelta help'
step "Create an empty 10 GiB sparse VMDK" 'vdelta create -s 10G empty.vmdk'
step "Its description: one sparse extent, nothing allocated" 'vdelta info empty.vmdk'
step "A raw disk with 4 MiB of data scattered over 3 GiB" 'make_data && ls -ls data.raw'
step "Convert it in: only the data is stored" \
	'vdelta convert -t monolithicSparse data.raw base.vmdk && ls -ls base.vmdk'
step "Check the VMDK's tables" 'vdelta check base.vmdk'
step "Export it as streamOptimized (compressed, for OVF/OVA)" \
	'vdelta convert -t streamOptimized base.vmdk export.vmdk && ls -ls export.vmdk'
step "Split it into twoGbMaxExtentFlat extents (2047 MiB each)" \
	'vdelta convert -t twoGbMaxExtentFlat export.vmdk split.vmdk && ls -ls split*'
step "Convert back out to raw: the same bytes" \
	'vdelta convert -O raw split.vmdk back.raw && cmp data.raw back.raw && echo identical'

# linked clones: a frozen base shared by several disks
step "Snapshot: freeze base.vmdk, add an empty delta over it (the new top)" \
	'vdelta snapshot base.vmdk'
step "Two linked clones of the frozen base" \
	'vdelta clone --linked base.vmdk vm1.vmdk && vdelta clone --linked base.vmdk vm2.vmdk'
if command -v qemu-io >/dev/null; then
	step "A VM (here qemu-io) writes 64 KiB into vm1: copy-on-write into vm1's delta" \
		"qemu-io -f vmdk -c 'write -P 0x42 0 64k' vm1.vmdk"
fi
step "Content digests: vm1 changed, vm2 still reads as the base" \
	'vdelta digest base.vmdk vm1.vmdk vm2.vmdk'
step "Which layer holds each range of vm1" 'vdelta map vm1.vmdk'
step "The linked-clone group: who shares what, space used" 'vdelta tree .'
if command -v qemu-img >/dev/null; then
	step "qemu-img reads vdelta's disks and chains the same way" \
		'qemu-img compare -f raw -F vmdk data.raw export.vmdk &&
		 qemu-img compare -F vmdk -f vmdk base.vmdk vm2.vmdk && qemu-img check vm1.vmdk'
fi

printf '\nDemo done: %d steps.\n' "$nr_steps"
