#!/usr/bin/env bash
# setup.sh — make a fresh Debian 12 machine ready to build vdelta, then build.
#
# Installs (as root, with apt-get) whatever of the build and test
# dependencies is missing, configures build/ with meson if needed and builds
# it with ninja.  Running it again changes nothing that is already in place.
#
# Environment:
#   BUILD_DIR   build directory (default: build, relative to the source root)
#   MESON_ARGS  extra arguments for the first `meson setup` (e.g. -Dwerror=true)
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$src/$build ;; esac

# Build tools, libraries, and the oracles the tests compare against
# (qemu-utils: qemu-img/qemu-io; libvmdk-utils: vmdkinfo, vmdkmount;
# xxhash: xxhsum for `vdelta digest`; libssl-dev: fast hashing of the
# multi-GiB corpus disks in the stream unit tests; python3: test helpers;
# fio, e2fsprogs, util-linux: workloads, mkfs/fsck and loop devices through
# a mount; strace: independent I/O counts; gnuplot-nox: bench plots;
# nbdkit, nbdkit-plugin-dev: the NBD server and the header its plugin is
# built against; libnbd-bin, python3-libnbd: nbdinfo, nbdcopy, nbdfuse and
# scripted NBD clients; iproute2: the tests' second host, a network
# namespace (fio's nbd engine comes with fio, over libnbd);
# qemu-system-common: qemu-storage-daemon, a running user of a disk in the
# lock tests and a peer of the mount in the benchmarks; linux-perf: the CPU
# figures and profiles of bench_fuse_reply.sh; scdoc: the man
# pages; groff, man-db: rendering them in the tests; bash-completion, zsh:
# loading the completions; systemd: systemd-analyze verify of the unit;
# debhelper, dpkg-dev, lintian: the Debian package; librbd-dev: `vdelta
# rbd`; ceph-mon ceph-mgr ceph-osd ceph-common: the one-node cluster of
# scripts/ceph.sh and its rbd/rados clients; rbd-fuse and qemu-block-extra
# (qemu's rbd: driver), python3-rbd (librbd reads and clone chains made in
# one process): oracles of the rbd tests; socat: bundles piped between two network
# namespaces; rsync: the pack benchmark's peer).
packages=(meson ninja-build pkg-config gcc libfuse3-dev fuse3 zlib1g-dev
	  libzstd-dev libxxhash-dev xxhash libcmocka-dev libssl-dev qemu-utils
	  libvmdk-utils python3 fio e2fsprogs util-linux strace gnuplot-nox
	  nbdkit nbdkit-plugin-dev libnbd-bin python3-libnbd iproute2
	  qemu-system-common scdoc groff man-db bash-completion zsh systemd debhelper
	  dpkg-dev lintian librbd-dev ceph-mon ceph-mgr ceph-osd ceph-common rbd-fuse
	  qemu-block-extra python3-rbd linux-perf socat rsync)

missing=()
for p in "${packages[@]}"; do
	# dpkg -s alone also succeeds for removed packages with config left
	[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
		missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: missing packages: ${missing[*]}" >&2
		echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q "${missing[@]}"
fi

if [ ! -f "$build/build.ninja" ]; then
	# shellcheck disable=SC2086 # MESON_ARGS is a word list on purpose
	meson setup "$build" "$src" ${MESON_ARGS:-}
fi
ninja -C "$build"
