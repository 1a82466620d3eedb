#!/usr/bin/env bash
# test_nbd.sh — linked disks served over NBD (`vdelta serve`, the nbdkit
# plugin): from a second host (a network namespace made here) over TCP and
# locally over a Unix socket, qemu-io's random writes and nbdcopy's reads
# equal the same writes applied to a raw reference; after the stop
# qemu-img compare, vdelta check and qemu-img check are clean and the
# base's sha256 is unchanged.  Also: nbdcopy = `vdelta convert -O raw`,
# nbdinfo --map = `vdelta map` run by run, the export list, two
# connections (a write and flush on one read on the other), fast zero and
# trim, bad requests, refusals at start-up (a locked top, a broken CID
# link, a hostile file: non-zero exit naming the file, nothing written),
# and TLS (refused without the key, works with it).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_nbd.sh"

SIZE=$((64 << 20))
M=$((1 << 20))
cd "$T" || die "cd $T"
mkdir d
run qemu-img create -q -f vmdk d/base.vmdk $SIZE || die "create base"
run qemu-io -f vmdk -c "write -P 0x3c 0 8M" -c "write -P 0x7e 40M 3M" d/base.vmdk ||
	die "fill base"
run "$VDELTA" snapshot d/base.vmdk || die "snapshot" # d/base-000001.vmdk
run "$VDELTA" clone --linked d/base.vmdk d/p.vmdk || die "clone p"
# z: a delta with zeroed grains (qemu's zeroed_grain=on), where a trim and
# a fast zero have something to record
run qemu-img create -q -f vmdk -o zeroed_grain=on -b base.vmdk -F vmdk d/z.vmdk ||
	die "create z"
sha_base=$(sha256sum <d/base.vmdk)
run qemu-img convert -f vmdk -O raw d/base.vmdk ref1.raw || die "reference"
cp --sparse=always ref1.raw ref2.raw

# ---- TCP from the second host --------------------------------------------------
ns_up
PORT=$((20000 + $$ % 20000))
uri="nbd://$NS_HOST:$PORT/disk"
expect_ok "serve over TCP on the veth address" vd_serve -b "$NS_HOST" -p "$PORT" \
	--pid-file "$T/tcp.pid" d/base-000001.vmdk=disk
grep -q "^disk	$uri\$" "$T/last.out" && pass "serve prints the export's URI" ||
	fail "URI: $(cat "$T/last.out")"
gen_writes $SIZE 200 >w1.txt
QEMU_IO_WRAP="ip netns exec $t_ns" apply_writes qemu-io-raw "$uri" w1.txt &&
	pass "qemu-io writes from the second host" || fail "qemu-io over TCP"
apply_writes qemu-io-raw ref1.raw w1.txt || die "reference writes"
run ns_run nbdcopy "$uri" "$T/got1.raw" && cmp -s got1.raw ref1.raw &&
	pass "nbdcopy from the second host reads the reference" || fail "TCP reads differ"
expect_ok "serve --stop" vd_serve --stop --pid-file "$T/tcp.pid"
[ ! -e tcp.pid ] && pass "pid file removed" || fail "tcp.pid left"
expect_ok "qemu-img compare chain vs reference" qemu-img compare -q -f vmdk -F raw \
	d/base-000001.vmdk ref1.raw
expect_ok "vdelta check after stop" "$VDELTA" check d/base-000001.vmdk
grep -q ": 0 errors, 0 warnings" "$T/last.out" && pass "closed clean" ||
	fail "check: $(tail -1 "$T/last.out")"
expect_ok "qemu-img check after stop" qemu-img check -q d/base-000001.vmdk

# ---- a Unix socket, locally: three exports in one server ------------------------
S=$T/s.sock
expect_ok "serve three disks on a Unix socket" vd_serve -U "$S" d/z.vmdk=z d/p.vmdk \
	d/base-000001.vmdk:ro=ro
run nbdinfo --list --json "nbd+unix:///?socket=$S"
"$PYTHON" -c 'import json,sys; e=json.load(open(sys.argv[1]))["exports"]
print(" ".join("%s:%s" % (x["export-name"], "ro" if x["is_read_only"] else "rw") for x in e))' \
	"$T/last.out" >list.txt
[ "$(cat list.txt)" = "z:rw p:rw ro:ro" ] && pass "nbdinfo --list names the exports" ||
	fail "export list: $(cat list.txt)"
# a trim over grains z lacks records zeroed grains: they read as zeros
run qemu-io -f raw -c "discard 1M 2M" "$(nbd_unix "$S" z)" || fail "discard"
run qemu-io -f raw -c "write -z 1M 2M" ref2.raw

nbd_py "$(nbd_unix "$S" p)" "$(nbd_unix "$S" z)" "$(nbd_unix "$S" ro)" $SIZE <<'PY'
import errno, nbd, sys
p_uri, z_uri, ro_uri, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def conn(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h
def refused(f, want=None):
    try:
        f()
    except nbd.Error as e:
        return want is None or e.errno in want
    return False
a, b, z, ro = conn(p_uri), conn(p_uri), conn(z_uri), conn(ro_uri)
M = 1 << 20
checks = {
    "multi-conn advertised": a.can_multi_conn() and ro.can_multi_conn(),
    "fua advertised": a.can_fua(),
    "trim only where zeroed grains record it": z.can_trim() and not a.can_trim(),
}
old = a.pread(4096, 5 * M)
b.pwrite(b"\x77" * 4096, 5 * M)
b.flush()
checks["a write and flush on one connection read on the other"] = \
    old == b"\x3c" * 4096 and a.pread(4096, 5 * M) == b"\x77" * 4096
b.pwrite(b"\x55" * 512, 6 * M + 512, nbd.CMD_FLAG_FUA)
checks["FUA write"] = a.pread(512, 6 * M + 512) == b"\x55" * 512
checks["fast zero refused where data would be written (no zeroed grains)"] = \
    refused(lambda: a.zero(65536, 2 * M, nbd.CMD_FLAG_FAST_ZERO), (errno.ENOTSUP, "ENOTSUP", "EOPNOTSUPP")) and \
    a.pread(65536, 2 * M) == b"\x3c" * 65536
a.zero(65536, 2 * M)
checks["plain zero"] = a.pread(65536, 2 * M) == bytes(65536)
checks["fast zero of whole grains z lacks"] = \
    not refused(lambda: z.zero(2 * 65536, 7 * M, nbd.CMD_FLAG_FAST_ZERO)) and \
    z.pread(2 * 65536, 7 * M) == bytes(2 * 65536)
checks["a write past the end refused"] = refused(lambda: a.pwrite(b"x" * 4096, size - 512))
checks["a write to a read-only export refused"] = refused(lambda: ro.pwrite(b"x" * 512, 0))
checks["a read past the end refused"] = refused(lambda: a.pread(4096, size - 512))
for h in (a, b, z):
    h.flush()
bad = [k for k, v in checks.items() if not v]
for k in checks:
    print(("FAIL " if k in bad else "ok ") + k)
sys.exit(1 if bad else 0)
PY
rc=$?
sed 's/^/  /' "$T/last.out"
[ $rc = 0 ] && pass "libnbd client checks" || fail "libnbd client checks"
run qemu-io -f raw -c "write -z 7M 128k" ref2.raw
SEED=$((SEED + 1)) gen_writes $SIZE 200 >w2.txt
apply_writes qemu-io-raw "$(nbd_unix "$S" z)" w2.txt && pass "qemu-io writes over the socket" ||
	fail "qemu-io over the socket"
apply_writes qemu-io-raw ref2.raw w2.txt || die "reference writes"

# a client that disconnects in the middle of a 32 MiB write: the server
# serves on, and the write is all there or not at all
client_gone_mid_write()
{
nbd_py "$(nbd_unix "$S" p)" <<'PY'
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open("old.raw", "wb").write(h.pread(32 << 20, 16 << 20))
h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\x99" * (32 << 20))), 16 << 20)
for _ in range(3):
    h.poll(0)
os._exit(0)
PY
nbd_py "$(nbd_unix "$S" p)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = h.pread(32 << 20, 16 << 20)
sys.exit(0 if data in (open("old.raw", "rb").read(), b"\x99" * (32 << 20)) else 1)
PY
}
if $nbd_asan_exit_hang; then
	echo "skipped under ASan: a client gone mid-write (nbdkit would hang at exit, see lib_nbd.sh)"
else
	client_gone_mid_write && pass "a client gone mid-write: served on, the write all or nothing" ||
		fail "after a client died mid-write"
fi

run nbdinfo --map --json "$(nbd_unix "$S" z)" && cp "$T/last.out" nbdmap.json ||
	fail "nbdinfo --map"
run nbdcopy "$(nbd_unix "$S" z)" got2.raw || fail "nbdcopy"
cmp -s got2.raw ref2.raw && pass "socket reads equal the reference" || fail "socket reads differ"

# ---- start-up refusals, while the server holds its disks ------------------------
# refused_start WHAT FILE PARAM...: nbdkit with the plugin exits non-zero,
# naming FILE, and no byte of FILE's folder changes.
refused_start()
{
	local what=$1 file=$2 before after
	shift 2
	before=$(sha256sum "$(dirname "$file")"/*)
	run "$NBDKIT" --pidfile "$T/refused.pid" -U "$T/r.sock" "$NBD_PLUGIN" "$@"
	local rc=$?
	after=$(sha256sum "$(dirname "$file")"/*)
	[ $rc != 0 ] && grep -q "$(basename "$file")" "$T/last.err" &&
		pass "$what: refused, naming the file" || fail "$what: exit $rc, $(cat "$T/last.err")"
	[ "$before" = "$after" ] && pass "$what: nothing written" || fail "$what: files changed"
}
refused_start "a top another nbdkit serves" d/p.vmdk disk=d/p.vmdk
grep -q "nbdkit (pid $(serve_pid "$S.pid"))" "$T/last.err" && pass "the holder is named" ||
	fail "holder not named: $(cat "$T/last.err")"
mkdir b
run qemu-img create -q -f vmdk b/base.vmdk 8M && run "$VDELTA" snapshot b/base.vmdk &&
	run qemu-io -f vmdk -c "write -P 1 0 64k" b/base.vmdk || die "broken link"
refused_start "a broken CID link" b/base-000001.vmdk disk=b/base-000001.vmdk
grep -qi "cid" "$T/last.err" && pass "the CID mismatch is said" || fail "no CID in the message"
mkdir h
cp "$SOURCE_DIR"/tests/fuzz/seeds/hostile-{embedded-passwd,k-gt-in-grain}.vmdk h/
refused_start "a hostile file (an extent naming /etc/passwd)" h/hostile-embedded-passwd.vmdk \
	disk=h/hostile-embedded-passwd.vmdk:ro
refused_start "a hostile file (tables overlapping) to write" h/hostile-k-gt-in-grain.vmdk \
	disk=h/hostile-k-gt-in-grain.vmdk
run "$VDELTA" serve -U "$T/r.sock" b/base-000001.vmdk
[ $? = 1 ] && pass "vdelta serve exits 1 on a refusal" || fail "vdelta serve refusal status"

expect_ok "stop the socket server" vd_serve --stop -U "$S"
[ ! -e "$S" ] && pass "socket removed" || fail "socket left"

# ---- after the stop: every checker, and the oracles ------------------------------
for top in d/z.vmdk d/p.vmdk d/base-000001.vmdk; do
	run "$VDELTA" check "$top" && grep -q ": 0 errors, 0 warnings" "$T/last.out" &&
		pass "vdelta check $top" || fail "vdelta check $top: $(tail -1 "$T/last.out")"
	expect_ok "qemu-img check $top" qemu-img check -q "$top"
done
expect_ok "qemu-img compare z vs reference" qemu-img compare -q -f vmdk -F raw d/z.vmdk ref2.raw
run "$VDELTA" convert -f vmdk -O raw d/z.vmdk conv2.raw && cmp -s got2.raw conv2.raw &&
	pass "nbdcopy equals vdelta convert -O raw" || fail "nbdcopy vs convert"
run "$VDELTA" map --json d/z.vmdk && cp "$T/last.out" vdmap.json
"$PYTHON" - nbdmap.json vdmap.json >map.out <<'PY'
import json, sys
kind = lambda r: "data" if r["data"] else ("zero" if r["present"] else "hole")
nbd_kind = {0: "data", 2: "zero", 3: "hole"}
def merged(runs):
    out = []
    for off, ln, k in runs:
        if out and out[-1][2] == k and out[-1][0] + out[-1][1] == off:
            out[-1][1] += ln
        else:
            out.append([off, ln, k])
    return out
a = merged((e["offset"], e["length"], nbd_kind[e["type"]]) for e in json.load(open(sys.argv[1])))
b = merged((r["start"], r["length"], kind(r)) for r in json.load(open(sys.argv[2])))
print("%d runs, kinds %s" % (len(a), sorted(set(k for _, _, k in a))))
sys.exit(0 if a == b else 1)
PY
rc=$?
cat map.out
[ $rc = 0 ] && grep -q "'data', 'hole', 'zero'" map.out &&
	pass "nbdinfo --map equals vdelta map run by run (data, zero, hole)" || fail "maps differ"
[ "$(sha256sum <d/base.vmdk)" = "$sha_base" ] && pass "base sha256 unchanged" ||
	fail "base changed"

# ---- TLS (nbdkit's own) ------------------------------------------------------------
# tls_read KEYDIR OUT: qemu-img reads export t with the PSK in KEYDIR/keys.psk
tls_read()
{
	run qemu-img convert --object "tls-creds-psk,id=tls0,endpoint=client,dir=$1,username=alice" \
		--image-opts "driver=nbd,server.type=unix,server.path=$T/t.sock,export=t,tls-creds=tls0" \
		-O raw "$2"
}

tls_section()
{
	mkdir psk wrong
	echo "alice:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >psk/keys.psk
	echo "alice:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >wrong/keys.psk
	chmod 600 psk/keys.psk wrong/keys.psk
	expect_ok "serve with TLS required" vd_serve -U "$T/t.sock" --tls-psk psk/keys.psk \
		d/base-000001.vmdk:ro=t
	run qemu-img info "$(nbd_unix "$T/t.sock" t)"
	[ $? != 0 ] && pass "a client without the key is refused" || fail "plain client got in"
	tls_read "$T/wrong" tls-wrong.raw
	[ $? != 0 ] && pass "a client with another key is refused" || fail "wrong key got in"
	tls_read "$T/psk" tls.raw && cmp -s tls.raw ref1.raw &&
		pass "with the key, reads work (qemu-img tls-creds-psk)" || fail "TLS read"
	expect_ok "stop the TLS server" vd_serve --stop -U "$T/t.sock"
}

if $nbd_asan_exit_hang; then
	echo "skipped under ASan: TLS (nbdkit would hang at exit after any TLS session, see lib_nbd.sh)"
else
	tls_section
fi

finish
