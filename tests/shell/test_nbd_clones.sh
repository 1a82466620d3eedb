#!/usr/bin/env bash
# test_nbd_clones.sh — 32 linked clones of one base as 32 exports of one
# nbdkit: each export reads back its own writes over the base (libnbd,
# then qemu-io on each .vmdk after the stop), nbdinfo --list lists them
# all, /proc/PID/fd shows the base open once, RSS stays under twice one
# export's, and the base's sha256 is unchanged.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_nbd.sh"

N=32
SIZE=$((256 << 20))
cd "$T" || die "cd $T"
mkdir d
run qemu-img create -q -f vmdk d/base.vmdk $SIZE || die "create base"
run qemu-io -f vmdk -c "write -P 0x3c 0 32M" -c "write -P 0x7e 200M 8M" d/base.vmdk ||
	die "fill base"
run "$VDELTA" snapshot d/base.vmdk && rm d/base-000001.vmdk || die "freeze base"
for i in $(seq $N); do
	run "$VDELTA" clone --linked d/base.vmdk d/c$i.vmdk || die "clone $i"
done
sha_base=$(sha256sum <d/base.vmdk)

# RSS after the same client work, 32 nbdcopy runs (nbdkit's own memory
# grows with its connections' threads and buffers): of one export, all
# runs reading it, and of 32 exports, one run each
expect_ok "serve one clone" vd_serve -U "$T/one.sock" d/c1.vmdk
for i in $(seq $N); do run nbdcopy "$(nbd_unix "$T/one.sock" c1)" /dev/null; done
rss1=$(rss_kib "$(serve_pid "$T/one.sock.pid")")
expect_ok "stop one" vd_serve --stop -U "$T/one.sock"

args=()
for i in $(seq $N); do args+=(d/c$i.vmdk); done
expect_ok "serve $N clones in one nbdkit" vd_serve -U "$T/s.sock" "${args[@]}"
pid=$(serve_pid "$T/s.sock.pid")
run nbdinfo --list --json "nbd+unix:///?socket=$T/s.sock"
n=$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["exports"]))' "$T/last.out")
[ "$n" = $N ] && pass "nbdinfo --list: $N exports" || fail "exports listed: $n"
for i in $(seq $N); do run nbdcopy "$(nbd_unix "$T/s.sock" c$i)" /dev/null; done
rss32=$(rss_kib "$pid")
echo "nbdkit RSS after $N nbdcopy runs: 1 export ${rss1} KiB, $N exports ${rss32} KiB"
[ "$rss32" -lt $((2 * rss1)) ] && pass "RSS of $N exports under twice one export's" ||
	fail "RSS $rss32 KiB for $N exports, $rss1 KiB for one"
base_fds=$(ls -l "/proc/$pid/fd" | grep -c " -> $T/d/base.vmdk\$")
[ "$base_fds" = 1 ] && pass "base open once in nbdkit" || fail "base open $base_fds times"

# each clone written differently, then every clone read back, one client
# process for all (one connection per export)
nbd_py "$T/s.sock" $N <<'PY'
import nbd, sys
sock, n = sys.argv[1], int(sys.argv[2])
M = 1 << 20
def own(i):  # (offset, bytes) clone i writes
    return [(M, bytes([i]) * 4096), (4 * M + i * 65536 + 512, bytes([i + 100]) * 1000)]
hs = []
for i in range(1, n + 1):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///c%d?socket=%s" % (i, sock))
    hs.append(h)
for i, h in enumerate(hs, 1):
    for off, data in own(i):
        h.pwrite(data, off)
    h.flush()
bad = 0
for i, h in enumerate(hs, 1):
    ok = all(h.pread(len(d), off) == d for off, d in own(i))
    ok = ok and h.pread(60 * 1024, M + 4096) == b"\x3c" * 60 * 1024
    ok = ok and h.pread(8 * M, 200 * M) == b"\x7e" * 8 * M
    if not ok:
        bad += 1
        print("clone %d reads wrong" % i)
for h in hs:
    h.shutdown()
print("%d clones wrong" % bad)
sys.exit(1 if bad else 0)
PY
[ $? = 0 ] && pass "each export reads its own writes over the base" || fail "$(tail -3 "$T/last.out")"
expect_ok "stop $N" vd_serve --stop -U "$T/s.sock"

[ "$(sha256sum <d/base.vmdk)" = "$sha_base" ] && pass "base sha256 unchanged" ||
	fail "base changed"
bad=0
for i in $(seq $N); do
	run qemu-io -f vmdk -c "read -P $i 1M 4k" \
		-c "read -P $((i + 100)) $((4 * 1048576 + i * 65536 + 512)) 1000" \
		-c "read -P 0x3c 2M 1M" d/c$i.vmdk || bad=$((bad + 1))
done
[ $bad = 0 ] && pass "each clone's chain holds its writes (qemu-io)" || fail "$bad clones wrong"
bad=0
for i in 1 16 32; do
	run "$VDELTA" check d/c$i.vmdk && grep -q ": 0 errors, 0 warnings" "$T/last.out" ||
		bad=$((bad + 1))
	run qemu-img check -q d/c$i.vmdk || bad=$((bad + 1))
done
[ $bad = 0 ] && pass "checkers clean after the stop" || fail "$bad checks failed"

finish
