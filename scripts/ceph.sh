#!/usr/bin/env bash
# ceph.sh — a one-node Ceph cluster in a scratch folder, for the rbd tests
# and benchmarks.  Debian 12's packages (ceph-mon ceph-mgr ceph-osd
# ceph-common, installed by setup.sh); no cephadm, containers or systemd.
#
#   scripts/ceph.sh start DIR   make DIR (must not exist, or be empty), start
#                               one mon, one mgr and one OSD bound to
#                               127.0.0.1, create the pool, wait for HEALTH_OK
#   scripts/ceph.sh stop DIR    kill the daemons by the pids start recorded
#                               (TERM, then KILL after 3 s); the
#                               folder is left for the caller to remove
#   scripts/ceph.sh env DIR     print `export CEPH_CONF=...` for clients
#                               (ceph, rbd, rados, librados, qemu's rbd:)
#
# Every path (mon store, OSD data, keyrings, logs, sockets, pid files) is
# inside DIR; the mon listens on 127.0.0.1:PORT (msgr2 only), the mgr and
# the OSD on ports of 127.0.0.1 they choose.  cephx is on: the admin key is
# DIR/keyring, named in ceph.conf for clients.  Pool size 1, and the
# warnings a one-node cluster raises are turned off, so health is HEALTH_OK.
#
# Environment (start):
#   CEPH_STORE     memstore (default: in RAM, grows with the data) or
#                  bluestore (on a sparse file DIR/osd/block)
#   CEPH_STORE_GB  size of the store: memstore's limit, bluestore's file
#                  (default 4 for memstore, 200 for bluestore)
#   CEPH_POOL      the pool to create and `rbd pool init` (default rbd;
#                  empty: none)
#   CEPH_PORT      the mon's port (default: a free one)
#   CEPH_TIMEOUT   seconds to wait for HEALTH_OK (default 60)
#
# A caller that starts a cluster stops it in a trap, so no daemon outlives
# a failed run:   trap 'scripts/ceph.sh stop "$dir"' EXIT
set -euo pipefail

# Debian's python3 (a pyenv shim on PATH costs seconds per call).
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

die()
{
	echo "ceph.sh: $*" >&2
	exit 1
}

usage()
{
	echo "usage: ceph.sh start|stop|env DIR" >&2
	exit 2
}

# A free TCP port on 127.0.0.1 (bound, read, released).
free_port()
{
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf()
{
	local dir=$1 fsid=$2 port=$3 store=$4 gb=$5
	cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$port
public_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
crash_dir = $dir/crash
exporter_sock_dir = $dir/run
mon_data = $dir/mon/\$cluster-\$id
mgr_data = $dir/mgr/\$cluster-\$id
osd_data = $dir/osd/\$cluster-\$id
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
mon_osd_full_ratio = 0.97
mon_osd_backfillfull_ratio = 0.96
mon_osd_nearfull_ratio = 0.95
mgr_initial_modules =
mgr_stats_period = 1
mon_mgr_digest_period = 1

[mon]
mon_initial_members = a
mon_cluster_log_file = $dir/log/cluster.log
# One mon commits at once: a map change (a snapshot id, a pool) need not
# wait for the 1 s a quorum of several gathers proposals in.
paxos_propose_interval = 0.01
paxos_min_wait = 0.001

[osd]
osd_objectstore = $store
memstore_device_bytes = $((gb << 30))
bluestore_block_path = $dir/osd/block
bluestore_block_size = $((gb << 30))
bluestore_block_create = true
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
bluestore_cache_autotune = false
bluestore_cache_size = 268435456
osd_memory_target = 1073741824
osd_op_num_shards = 2
# a killed client's watch on an image ends sooner than the 30 s default:
# the kill tests re-run at once and wait it out (rbd_image.c)
osd_client_watch_timeout = 8
osd_op_num_threads_per_shard = 1

[client]
keyring = $dir/keyring
log_file = $dir/log/client.log
admin_socket =
EOF
}

# Run a daemon in the foreground of a background job; its pid goes to
# DIR/pids so that stop kills exactly what start started.
spawn()
{
	local dir=$1 name=$2
	shift 2
	"$@" -f -c "$dir/ceph.conf" </dev/null >>"$dir/log/$name.out" 2>&1 &
	echo $! >>"$dir/pids"
}

mk_keys()
{
	local dir=$1
	ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. \
		--cap mon 'allow *' >/dev/null
	ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' \
		--cap mds 'allow *' >/dev/null
	ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
}

start_mon()
{
	local dir=$1 fsid=$2 port=$3
	monmaptool --create --addv a "[v2:127.0.0.1:$port]" --fsid "$fsid" \
		"$dir/monmap" >/dev/null
	ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" \
		--keyring "$dir/mon.keyring" >>"$dir/log/mkfs.out" 2>&1 ||
		die "ceph-mon --mkfs failed (see $dir/log)"
	spawn "$dir" mon.a ceph-mon -i a
}

start_mgr()
{
	local dir=$1
	mkdir -p "$dir/mgr/ceph-x"
	ceph -c "$dir/ceph.conf" auth get-or-create mgr.x mon 'allow profile mgr' \
		osd 'allow *' mds 'allow *' -o "$dir/mgr/ceph-x/keyring" >/dev/null
	spawn "$dir" mgr.x ceph-mgr -i x
}

start_osd()
{
	local dir=$1 uuid key id
	uuid=$(cat /proc/sys/kernel/random/uuid)
	key=$(ceph-authtool --gen-print-key)
	id=$(echo "{\"cephx_secret\": \"$key\"}" |
		ceph -c "$dir/ceph.conf" osd new "$uuid" -i -)
	mkdir -p "$dir/osd/ceph-$id"
	ceph-authtool --create-keyring "$dir/osd/ceph-$id/keyring" \
		--name "osd.$id" --add-key "$key" >/dev/null
	ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" \
		>>"$dir/log/mkfs.out" 2>&1 || die "ceph-osd --mkfs failed (see $dir/log)"
	spawn "$dir" "osd.$id" ceph-osd -i "$id"
}

# Every placement group active+clean (HEALTH_OK alone does not wait for
# the PGs of a pool just created).
pgs_clean()
{
	ceph -c "$1/ceph.conf" --connect-timeout 5 pg stat -f json 2>/dev/null |
		"$PY" -c 'import json, sys
s = json.load(sys.stdin)["pg_summary"]
clean = sum(x["num"] for x in s["num_pg_by_state"] if x["name"] == "active+clean")
sys.exit(0 if s["num_pgs"] and clean == s["num_pgs"] else 1)'
}

wait_healthy()
{
	local dir=$1 timeout=$2 t0=$SECONDS h=
	while [ $((SECONDS - t0)) -lt "$timeout" ]; do
		h=$(ceph -c "$dir/ceph.conf" --connect-timeout 5 health 2>/dev/null) || h=
		[ "$h" = HEALTH_OK ] && pgs_clean "$dir" && return 0
		sleep 0.5
	done
	die "no HEALTH_OK after $timeout s (last: ${h:-no answer}; see $dir/log)"
}

make_pool()
{
	local dir=$1 pool=$2
	[ -n "$pool" ] || return 0
	ceph -c "$dir/ceph.conf" osd pool create "$pool" 8 8 >/dev/null 2>&1 ||
		die "cannot create pool $pool"
	rbd -c "$dir/ceph.conf" pool init "$pool" || die "rbd pool init $pool failed"
}

cmd_start()
{
	local dir=$1 store=${CEPH_STORE:-memstore} gb port fsid
	case $store in
	memstore) gb=${CEPH_STORE_GB:-4} ;;
	bluestore) gb=${CEPH_STORE_GB:-200} ;;
	*) die "CEPH_STORE=$store: memstore or bluestore" ;;
	esac
	[ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || die "$dir exists and is not empty"
	command -v ceph-mon >/dev/null || die "ceph-mon not installed (scripts/setup.sh)"
	mkdir -p "$dir"/{run,log,crash,mon,osd}
	dir=$(cd "$dir" && pwd)
	port=${CEPH_PORT:-$(free_port)}
	fsid=$(cat /proc/sys/kernel/random/uuid)
	write_conf "$dir" "$fsid" "$port" "$store" "$gb"
	mk_keys "$dir"
	start_mon "$dir" "$fsid" "$port"
	start_mgr "$dir"
	start_osd "$dir"
	# rbd pool init waits for the pool's PGs to be active (it writes).
	make_pool "$dir" "${CEPH_POOL-rbd}"
	wait_healthy "$dir" "${CEPH_TIMEOUT:-60}"
}

# Only a pid whose command line names this cluster's ceph.conf is ours
# (a pid may have been reused since start).
is_ours()
{
	local dir=$1 pid=$2
	[ -r "/proc/$pid/cmdline" ] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-c $dir/ceph.conf"
}

# TERM, then KILL when it is still there after 3 s.
stop_one()
{
	local dir=$1 pid=$2 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 30; i++)); do
		is_ours "$dir" "$pid" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# The OSD first, the mon last: an OSD whose mon is gone waits for it
# before it exits.
cmd_stop()
{
	local dir=$1 pid
	[ -f "$dir/pids" ] || return 0
	dir=$(cd "$dir" && pwd)
	for pid in $(tac "$dir/pids"); do
		is_ours "$dir" "$pid" && stop_one "$dir" "$pid"
	done
	rm -f "$dir/pids"
}

[ $# -eq 2 ] || usage
case $1 in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
env)
	[ -f "$2/ceph.conf" ] || die "$2: no ceph.conf (not started?)"
	echo "export CEPH_CONF=$(cd "$2" && pwd)/ceph.conf"
	;;
*) usage ;;
esac
