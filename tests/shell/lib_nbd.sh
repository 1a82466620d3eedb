# lib_nbd.sh — helpers for the tests of the NBD front end (tests layer),
# sourced after lib.sh.
#
# Owns: skipping without nbdkit and libnbd's tools, the nbdkit command the
# tests run (with the sanitizer runtimes preloaded when the plugin is built
# with them: nbdkit itself is not), starting servers in the test's folder
# and always stopping them, and the second host: a network namespace with a
# veth pair and addresses the test assigns, removed at the end even when
# the test dies half-way.  Only processes, namespaces and links this test
# made are ever touched.
# shellcheck shell=bash

need nbdkit nbdinfo nbdcopy qemu-img qemu-io sha256sum
need_vdelta
: "${NBD_PLUGIN:=$BUILD_DIR/nbd/nbdkit-vdelta-plugin.so}"
[ -f "$NBD_PLUGIN" ] || die "plugin not built at $NBD_PLUGIN"
sanitizer_to_files

# nbdkit (not built with ASan) loads a plugin that is: the sanitizer
# runtimes must be the first libraries of the process, so they are
# preloaded into nbdkit, and only into it.  `vdelta serve` finds this
# nbdkit first on PATH.
nbd_preload=
case ${SANITIZE:-none} in *address*) nbd_preload=$(gcc -print-file-name=libasan.so) ;; esac
case ${SANITIZE:-none} in
*undefined*) nbd_preload="$nbd_preload $(gcc -print-file-name=libubsan.so)" ;;
esac
# With the ASan runtime preloaded, nbdkit hangs in exit (glibc's locale
# lock, in p11-kit's destructor) once a connection has ended in an error
# (a client gone mid-request) or after any TLS session — nbdkit's own file
# plugin does the same.  The tests leave those cases out there.
nbd_asan_exit_hang=false
case $nbd_preload in *libasan*) nbd_asan_exit_hang=true ;; esac
mkdir -p "$T/bin"
{
	echo '#!/bin/sh'
	[ -z "$nbd_preload" ] || echo "LD_PRELOAD='${nbd_preload# }'; export LD_PRELOAD"
	echo "exec $(command -v nbdkit) \"\$@\""
} >"$T/bin/nbdkit"
chmod +x "$T/bin/nbdkit"
PATH=$T/bin:$PATH
NBDKIT=$T/bin/nbdkit

t_ns=
t_nbd_cleanup()
{
	local p pid
	for p in "$T"/*.pid; do
		[ -e "$p" ] || continue
		pid=$(cat "$p" 2>/dev/null)
		[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nbdkit ] &&
			kill -9 "$pid" 2>/dev/null
	done
	[ -z "$t_ns" ] || ip netns del "$t_ns" 2>/dev/null # takes the veth pair along
	t_cleanup
}
trap t_nbd_cleanup EXIT

# vd_serve ARGS... : `vdelta serve` (returns its status; output in last.*).
vd_serve()
{
	run "$VDELTA" serve "$@"
}

# nbd_unix SOCKET EXPORT: the URI of an export on a Unix socket.
nbd_unix()
{
	echo "nbd+unix:///$2?socket=$1"
}

# serve_pid PIDFILE: the pid of the nbdkit serving (empty when none).
serve_pid()
{
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 0
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nbdkit ] && echo "$pid"
}

# ns_up: the second host.  Sets NS_HOST (the server's address, on this
# side of the veth pair) and NS_PEER (the client's, inside the namespace).
ns_up()
{
	local n=$(($$ % 250 + 1))
	t_ns=vdnbd$$
	ip netns add "$t_ns" 2>/dev/null || {
		t_ns=
		skip "the kernel forbids network namespaces (ip netns add failed)"
	}
	NS_HOST=10.213.$n.1
	NS_PEER=10.213.$n.2
	ip link add "vdh$$" type veth peer name "vdn$$" netns "$t_ns" &&
		ip addr add "$NS_HOST/30" dev "vdh$$" && ip link set "vdh$$" up &&
		ip -n "$t_ns" addr add "$NS_PEER/30" dev "vdn$$" &&
		ip -n "$t_ns" link set "vdn$$" up && ip -n "$t_ns" link set lo up ||
		die "veth pair for the second host"
}

# ns_run CMD...: run CMD on the second host.
ns_run()
{
	ip netns exec "$t_ns" "$@"
}

# nbd_py ARG... <<'PY': a libnbd Python script (python3-libnbd) read from
# stdin (run gives commands /dev/null as stdin: the script goes to a file).
nbd_py()
{
	cat >"$T/script.py"
	run "$PYTHON" "$T/script.py" "$@"
}
