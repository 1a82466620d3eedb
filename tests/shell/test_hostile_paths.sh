#!/usr/bin/env bash
# test_hostile_paths.sh — hostile files and hostile neighbours, class by class:
# embedded descriptors naming other files, extent paths leaving their
# folder (strict and default mode), huge sparse/ZERO/FLAT maps, writers'
# locks under a concurrent qemu-io, chains deeper than can be opened,
# FIFOs / sockets / directories / devices where a file is expected, and
# info --chain on an unreadable layer.  Each refusal is asserted on its
# message (file and field), exit status, peak RSS and wall time, and on
# nothing written (sha256 of every file before and after).
# Oracles: qemu-img / qemu-io (map, info --backing-chain, locks), sha256sum.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io sha256sum timeout
need_vdelta
[ -x /usr/bin/time ] || skip "/usr/bin/time not installed"

# Limits: a sanitizer build needs more memory and time for the same work.
MAX_KB=65536 MAX_S=10
if ldd "$VDELTA" 2>/dev/null | grep -q libasan; then
	MAX_KB=524288 MAX_S=60
fi

cd "$T" || die "cd $T"
mkdir -p w && cd w || die "cd w"

# bounded WHAT RC PATTERN CMD...: CMD exits RC (timeout guard: a hang is a
# failure, not a stuck suite), stderr matches PATTERN (extended regex, ""
# for none), peak RSS <= MAX_KB and wall time <= MAX_S.
bounded()
{
	local what=$1 want=$2 pat=$3 rc kb s
	shift 3
	/usr/bin/time -f "%M %e" -o "$T/time.out" timeout 60 "$@" \
		</dev/null >"$T/last.out" 2>"$T/last.err"
	rc=$?
	sanitizer_clean "$1"
	read -r kb s < <(tail -n 1 "$T/time.out")
	if [ "$rc" -ne "$want" ]; then
		fail "$what: exit $rc, expected $want"
		sed 's/^/  | /' "$T/last.err" >&2
	elif [ -n "$pat" ] && ! grep -Eq -- "$pat" "$T/last.err"; then
		fail "$what: message does not match /$pat/"
		sed 's/^/  | /' "$T/last.err" >&2
	elif [ "${kb:-999999999}" -gt "$MAX_KB" ]; then
		fail "$what: peak RSS $kb KB > $MAX_KB KB"
	elif ! awk -v s="${s:-999}" -v m="$MAX_S" 'BEGIN { exit !(s <= m) }'; then
		fail "$what: $s s > $MAX_S s"
	else
		pass "$what ($kb KB, $s s)"
	fi
}

snap() { find . -mindepth 1 -maxdepth 2 \( -type f -o -type l \) -print0 | sort -z |
	 xargs -0 -r sha256sum 2>/dev/null; find . -mindepth 1 | sort; }
# unchanged WHAT: the folder is as it was at `snap >$T/before`.
unchanged()
{
	if snap | cmp -s - "$T/before"; then
		pass "$1: nothing written"
	else
		fail "$1: files changed"
		snap | diff "$T/before" - >&2
	fi
}

# ---- 1. embedded descriptors name no other file -------------------------------

echo secret >../secret.txt
qemu-img create -q -f vmdk mono.vmdk 1M || die "qemu-img create"
qemu-io -f vmdk -c 'write -P 0x11 0 64k' mono.vmdk >/dev/null || die "qemu-io"
qemu-img convert -O vmdk -o subformat=streamOptimized mono.vmdk stream.vmdk ||
	die "qemu-img convert"

# edit_embedded IN OUT PY-EXPR: rewrite the embedded descriptor of IN (text
# t) with t2 = PY-EXPR into OUT.
edit_embedded()
{
	"$PYTHON" - "$1" "$2" "$3" <<'PY'
import struct, sys
src, dst, expr = sys.argv[1:]
b = bytearray(open(src, 'rb').read())
off, size = struct.unpack_from('<QQ', b, 28)
t = b[off * 512:(off + size) * 512].split(b'\0')[0].decode()
import re
t2 = eval(expr).encode()
assert len(t2) < size * 512
b[off * 512:(off + size) * 512] = t2.ljust(size * 512, b'\0')
open(dst, 'wb').write(b)
PY
}

for base in mono stream; do
	line=$(grep -a -m1 -o 'RW [0-9]* SPARSE "[^"]*"' $base.vmdk)
	edit_embedded $base.vmdk h-$base-passwd.vmdk \
		"t.replace('$line', '$line\nRW 8 FLAT \"/etc/passwd\" 0')"
	edit_embedded $base.vmdk h-$base-dotdot.vmdk \
		"t.replace('$line', '$line\nRW 8 FLAT \"../secret.txt\" 0')"
	edit_embedded $base.vmdk h-$base-second.vmdk \
		"t.replace('$line', '$line\nRW 2048 SPARSE \"mono.vmdk\"')"
	edit_embedded $base.vmdk h-$base-flat0.vmdk \
		"t.replace('$line', 'RW 2048 FLAT \"/etc/passwd\" 0')"
	edit_embedded $base.vmdk h-$base-zero0.vmdk \
		"t.replace('$line', 'RW 2048 ZERO')"
done
snap >"$T/before"
for f in h-*-passwd.vmdk h-*-dotdot.vmdk h-*-second.vmdk; do
	f=${f%.vmdk}
	for cmd in info map convert; do
		out=() && [ $cmd = convert ] && out=("$T/out.raw")
		bounded "$f: $cmd refused" 1 \
			"$f.vmdk: embedded descriptor lists 2 extents \(extent 2: (FLAT|SPARSE)" \
			"$VDELTA" $cmd $f.vmdk "${out[@]}"
	done
done
for f in h-*-flat0.vmdk h-*-zero0.vmdk; do
	f=${f%.vmdk}
	bounded "$f: info refused" 1 \
		"$f.vmdk: embedded descriptor extent 1 is of type (FLAT|ZERO), not SPARSE" \
		"$VDELTA" info $f.vmdk
done
[ ! -e "$T/out.raw" ] && pass "no convert output left" || fail "convert left $T/out.raw"
unchanged "embedded descriptors"
for base in mono stream; do
	expect_ok "untouched $base.vmdk still opens" "$VDELTA" info $base.vmdk
done

# ---- 2. text descriptors: default vs strict paths ------------------------------

mkdir -p p/sub && head -c 1048576 /dev/urandom >p/outside.bin &&
	cp p/outside.bin p/sub/inside.bin && ln -s ../outside.bin p/sub/link.bin &&
	ln -s inside.bin p/sub/inlink.bin || die "setup p"
desc() # NAME EXTENT-NAME
{
	printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'"createType=\"monolithicFlat\"\nRW 2048 FLAT \"%s\" 0\n" "$2" >p/sub/$1.vmdk
}
desc d-dotdot ../outside.bin
desc d-abs "$PWD/p/outside.bin"
desc d-link link.bin
desc d-in inside.bin
desc d-inlink inlink.bin
desc d-absin "$PWD/p/sub/inside.bin"
snap >"$T/before"
for d in d-dotdot d-abs d-link; do
	# default: VMware's and qemu's rule, the same bytes as qemu reads
	qemu-img convert -O raw p/sub/$d.vmdk "$T/q.raw" || fail "qemu-img reads $d"
	expect_ok "$d: default mode reads it" "$VDELTA" convert p/sub/$d.vmdk "$T/v.raw"
	cmp -s "$T/q.raw" "$T/v.raw" && pass "$d: same bytes as qemu" ||
		fail "$d: differs from qemu-img"
	rm -f "$T/q.raw" "$T/v.raw"
	for cmd in info check map digest; do
		bounded "$d: $cmd --strict-paths refused" 1 \
			"$d.vmdk: extent 1 file \"[^\"]*\" resolves to .*outside.bin, outside the descriptor's folder" \
			"$VDELTA" $cmd --strict-paths p/sub/$d.vmdk
	done
done
for d in d-in d-inlink d-absin; do
	bounded "$d: --strict-paths allows an extent inside the folder" 0 "" \
		"$VDELTA" info --strict-paths p/sub/$d.vmdk
done
unchanged "strict paths"

# ---- 3. maps of huge disks cost what is allocated -------------------------------

cat >"$T/mksparse.py" <<'PY'
# OUT CAPACITY OFF...: monolithicSparse, grain directory zero except the
# 64 KiB grains written (0x5a) at each OFF; the rest is a hole.
import struct, sys
out, cap = sys.argv[1], int(sys.argv[2])
G, GTE = 128, 512
cap_s = cap // 512
gd_entries = -(-cap_s // (G * GTE))
gd_off = 21
nxt = -(-(gd_off + -(-gd_entries * 4 // 512)) // G) * G
desc = ('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
        'createType="monolithicSparse"\nRW %d SPARSE "%s"\n' % (cap_s, out)).encode()
with open(out, 'wb') as f:
    f.write(struct.pack('<4sIIQQQQIQQQB4sH', b'KDMV', 1, 1, cap_s, G, 1, 20, GTE, 0,
                        gd_off, nxt, 0, b'\n \r\n', 0).ljust(512, b'\0'))
    f.write(desc.ljust(20 * 512, b'\0'))
    gts = {}
    for off in map(int, sys.argv[3:]):
        g = off // (G * 512)
        gts.setdefault(g // GTE, []).append(g % GTE)
    for gdi, idxs in sorted(gts.items()):
        gt = nxt
        nxt += G
        f.seek(gd_off * 512 + gdi * 4); f.write(struct.pack('<I', gt))
        for i in idxs:
            f.seek(gt * 512 + i * 4); f.write(struct.pack('<I', nxt))
            f.seek(nxt * 512); f.write(b'\x5a' * (G * 512))
            nxt += G
    f.truncate(nxt * 512)
PY
TIB=$((1 << 40))
printf 'version=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW %d ZERO\n' \
	$((64 * TIB / 512)) >zero64.vmdk
truncate -s 1G flat.bin
printf 'version=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW %d FLAT "flat.bin" 0\nRW %d ZERO\n' \
	$((1 << 21)) $((64 * TIB / 512 - (1 << 21))) >flat64.vmdk
"$PYTHON" "$T/mksparse.py" sparse64.vmdk $((64 * TIB)) $((1 << 30)) $((40 * TIB)) ||
	die "mksparse"
"$PYTHON" "$T/mksparse.py" sparse2.vmdk $((2047 << 30)) $((1 << 30)) $((1500 << 30)) ||
	die "mksparse"
snap >"$T/before"
for d in zero64 flat64 sparse64 sparse2; do
	bounded "map of $d: bounded" 0 "" "$VDELTA" map --json $d.vmdk
	cp "$T/last.out" "$T/$d.map.json"
done
# qemu reads neither ZERO extents nor 64 TiB in reasonable time: compare
# the 2 TiB sparse disk, run by run (merged like qemu-img map)
qemu-img map --output=json sparse2.vmdk >"$T/q.json" || fail "qemu-img map sparse2"
if "$PYTHON" - "$T/q.json" "$T/sparse2.map.json" <<'PY'
import json, sys
def runs(p):
    out = []
    for r in json.load(open(p)):
        k = (r["depth"], r["data"], r["zero"] and not r["data"], r["present"])
        if out and out[-1][2] == k and out[-1][0] + out[-1][1] == r["start"]:
            out[-1][1] += r["length"]
        else:
            out.append([r["start"], r["length"], k])
    return out
q, v = runs(sys.argv[1]), runs(sys.argv[2])
sys.exit(0 if q == v else (print(q, v) or 1))
PY
then pass "map of sparse2 equals qemu-img map"; else fail "map of sparse2 differs from qemu-img map"; fi
"$PYTHON" - "$T/sparse64.map.json" $TIB <<'PY' && pass "map of sparse64: two data grains where written" || fail "map of sparse64 wrong"
import json, sys
t = int(sys.argv[2])
d = [(r["start"], r["length"]) for r in json.load(open(sys.argv[1])) if r["data"]]
sys.exit(0 if d == [(1 << 30, 65536), (40 * t, 65536)] else (print(d) or 1))
PY
unchanged "maps"

# ---- 4. writers hold the lock; readers take a shared one ------------------------

# hold IMG: a qemu-io writer that keeps IMG open (its commands come from a
# FIFO we keep open) until release; its PID in $qpid.
hold()
{
	rm -f "$T/ctl" && mkfifo "$T/ctl"
	qemu-io -f vmdk "$1" <"$T/ctl" >"$T/qio.out" 2>&1 &
	qpid=$!
	exec 3>"$T/ctl"
	echo "write -P 0x77 0 4k" >&3
	for _ in $(seq 50); do grep -q wrote "$T/qio.out" && break; sleep 0.1; done
	grep -q wrote "$T/qio.out" || fail "qemu-io did not start writing $1"
}
release() { exec 3>&-; kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; }

"$VDELTA" create -s 64M held.vmdk || die "create held"
hold held.vmdk
snap >"$T/before"
# the lock bytes change nothing on disk, but sha256 of a file qemu-io
# writes is only stable once it wrote: it did, above
bounded "info of a held disk refused" 1 "held.vmdk: lock conflict: write permission is held by qemu-io" \
	"$VDELTA" info held.vmdk
bounded "check of a held disk refused" 1 "held.vmdk: lock conflict: write permission is held by qemu-io" \
	"$VDELTA" check held.vmdk
bounded "info --chain of a held disk refused" 1 "lock conflict" "$VDELTA" info --chain held.vmdk
bounded "info -U reads it" 0 "" "$VDELTA" info -U held.vmdk
bounded "check -U reads it" 0 "" "$VDELTA" check -U held.vmdk
bounded "snapshot of a held disk refused" 1 "held.vmdk: lock conflict" "$VDELTA" snapshot held.vmdk
bounded "create --parent over a held disk refused" 1 "held.vmdk: lock conflict" \
	"$VDELTA" create --parent held.vmdk child.vmdk
bounded "clone --linked of a held disk refused" 1 "held.vmdk: lock conflict" \
	"$VDELTA" clone --linked held.vmdk child.vmdk
bounded "convert of a held disk refused" 1 "held.vmdk: lock conflict" \
	"$VDELTA" convert held.vmdk "$T/held.raw"
unchanged "held disk"
release
# qemu-img check agrees once the writer is gone, and so do we
qemu-img check held.vmdk >/dev/null && pass "qemu-img check: held.vmdk clean" ||
	fail "qemu-img check held.vmdk"

# convert's output is locked while it is made: stop convert mid-copy and
# let qemu-io try to write the new file
head -c $((256 << 20)) /dev/urandom >big.raw
"$VDELTA" convert big.raw conv.vmdk 2>"$T/conv.err" &
cpid=$!
# stop it once data is being copied (past vmdk_create and the lock)
for _ in $(seq 400); do
	[ "$(stat -c %s conv.vmdk 2>/dev/null || echo 0)" -gt $((16 << 20)) ] && break
	sleep 0.02
done
kill -STOP "$cpid"
if qemu-io -f vmdk -c 'write -P 0x66 0 4k' conv.vmdk >"$T/qw.out" 2>&1; then
	fail "qemu-io wrote into a disk convert is making"
else
	grep -q 'lock' "$T/qw.out" && pass "qemu-io refused by convert's lock" ||
		fail "qemu-io failed otherwise: $(head -c 300 "$T/qw.out")"
fi
kill -CONT "$cpid"
wait "$cpid" && pass "convert finished" || fail "convert failed: $(cat "$T/conv.err")"
qemu-img compare -q big.raw conv.vmdk && pass "convert output equals its input (qemu-img compare)" ||
	fail "convert output differs"
rm -f big.raw

# ---- 5. no child deeper than CHAIN_MAX_DEPTH (128) ------------------------------

mkdir -p deep && cd deep || die "cd deep"
"$VDELTA" create -s 1M l000.vmdk || die "create l000"
"$PYTHON" - <<'PY' || die "deep chain"
import struct
b = bytearray(open('l000.vmdk', 'rb').read())
off, size = struct.unpack_from('<QQ', b, 28)
t = b[off * 512:(off + size) * 512].split(b'\0')[0].decode()
import re
cid = lambda i: '%08x' % (0x10000000 + i)
for i in range(128):
    x = re.sub(r'(?m)^CID=.*$', 'CID=' + cid(i), t)
    if i:
        x = x.replace('"l000.vmdk"', '"l%03d.vmdk"' % i)
        x = re.sub(r'(?m)^parentCID=.*$', 'parentCID=' + cid(i - 1), x)
        x = x.replace('createType=', 'parentFileNameHint="l%03d.vmdk"\ncreateType=' % (i - 1))
    if i < 127:
        x = x.replace('#DDB\n', '#DDB\n\nddb.vdelta.frozen = "1"\n')
    c = bytearray(b)
    c[off * 512:(off + size) * 512] = x.encode().ljust(size * 512, b'\0')
    open('l%03d.vmdk' % i, 'wb').write(c)
PY
n=$(qemu-img info --backing-chain l127.vmdk | grep -c '^image:')
[ "$n" = 128 ] && pass "qemu-img: l127.vmdk is 128 layers deep" || fail "qemu-img sees $n layers"
expect_ok "a 128-layer chain opens" "$VDELTA" info --chain l127.vmdk
snap >"$T/before"
bounded "snapshot of a 128-layer chain refused" 1 \
	"l127.vmdk: its chain already has 128 layers.*layer 129" "$VDELTA" snapshot l127.vmdk
bounded "create --parent over 128 layers refused" 1 \
	"l127.vmdk: its chain already has 128 layers" "$VDELTA" create --parent l127.vmdk x.vmdk
bounded "clone --linked over 128 layers refused" 1 \
	"l127.vmdk: its chain already has 128 layers" "$VDELTA" clone --linked l127.vmdk x.vmdk
unchanged "deep chain"
# --from-current shares layer 126 down: the clone is as deep as its source
expect_ok "clone --from-current of a 128-layer top" "$VDELTA" clone --from-current l127.vmdk fc.vmdk
n=$(qemu-img info --backing-chain fc.vmdk | grep -c '^image:')
[ "$n" = 128 ] && pass "qemu-img: the clone is 128 layers deep" || fail "clone is $n deep"
expect_ok "the clone opens" "$VDELTA" info --chain fc.vmdk
cd .. || die "cd .."

# ---- 6. FIFOs, sockets, directories, devices -----------------------------------

mkdir -p k && cd k || die "cd k"
mkfifo fifo.bin fifo.vmdk
"$PYTHON" -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("sock.bin")' &&
	ln -s sock.bin sock.vmdk
mkdir dir.bin dir.vmdk
"$VDELTA" create -s 1M real.vmdk || die "create real"
kdesc() { printf 'version=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "%s" 0\n' "$2" >$1.desc; }
kdesc e-fifo fifo.bin
kdesc e-sock sock.bin
kdesc e-dir dir.bin
kdesc e-zero /dev/zero
kdesc e-null /dev/null
snap >"$T/before"
for e in fifo:FIFO sock:socket dir:directory zero:"character device" null:"character device"; do
	n=${e%%:*} kind=${e#*:}
	bounded "extent is a $n: refused" 1 \
		"e-$n.desc: extent 1 file \"[^\"]*\": is a $kind, not a regular file or block device" \
		"$VDELTA" info e-$n.desc
done
bounded "convert of a FIFO refused" 1 "fifo.vmdk: is a FIFO" "$VDELTA" convert fifo.vmdk "$T/f.raw"
bounded "convert -f raw of a FIFO refused" 1 "fifo.bin: is a FIFO" \
	"$VDELTA" convert -f raw fifo.bin "$T/f.raw"
bounded "info of a FIFO refused" 1 "fifo.vmdk: is a FIFO" "$VDELTA" info fifo.vmdk
bounded "tree skips FIFOs, sockets and directories" 0 "" "$VDELTA" tree .
grep -q 'real.vmdk' "$T/last.out" && ! grep -Eq 'fifo|sock|dir' "$T/last.out" &&
	pass "tree lists real.vmdk only" || fail "tree output: $(cat "$T/last.out")"
unchanged "special files"
cd .. || die "cd .."

# ---- 7. info --chain fails on an unreadable layer -------------------------------

"$VDELTA" create -s 8M ub.vmdk && "$VDELTA" create --parent ub.vmdk uc.vmdk || die "ub/uc"
qemu-io -f vmdk -c 'write -P 1 0 64k' uc.vmdk >/dev/null || die "qemu-io uc"
# point the child's first grain-directory entry far past its end
"$PYTHON" - <<'PY' || die "corrupt uc"
import struct
b = bytearray(open('uc.vmdk', 'rb').read())
gd = struct.unpack_from('<Q', b, 56)[0]
rgd = struct.unpack_from('<Q', b, 48)[0]
for d in (gd, rgd):
    if d:
        struct.pack_into('<I', b, d * 512, 0x7ffffff0)
open('uc.vmdk', 'wb').write(b)
PY
snap >"$T/before"
bounded "plain info of the bad layer fails" 1 "uc.vmdk" "$VDELTA" info uc.vmdk
bounded "info --chain fails too" 1 "uc.vmdk" "$VDELTA" info --chain uc.vmdk
bounded "info --chain --json fails too" 1 "uc.vmdk" "$VDELTA" info --chain --json uc.vmdk
unchanged "unreadable layer"

# ---- 8. after an interrupted writer: what to run, and the override -------------

"$VDELTA" create -s 8M dirty.vmdk || die "create dirty"
qemu-io -f vmdk -c 'write -P 9 0 64k' dirty.vmdk >/dev/null || die "qemu-io dirty"
# what a killed writer leaves: uncleanShutdown set in the sparse header
"$PYTHON" -c "
b = bytearray(open('dirty.vmdk', 'rb').read()); b[72] = 1
open('dirty.vmdk', 'wb').write(b)" || die "set unclean"
qemu-img convert -O raw dirty.vmdk "$T/dirty.raw" || die "qemu-img reads dirty"
snap >"$T/before"
bounded "snapshot of a dirty top refused, naming what to run" 1 \
	"vdelta check dirty.vmdk.*vdelta snapshot --force-dirty dirty.vmdk" \
	"$VDELTA" snapshot dirty.vmdk
bounded "create --parent over a dirty top refused" 1 "create --force-dirty --parent dirty.vmdk" \
	"$VDELTA" create --parent dirty.vmdk dchild.vmdk
unchanged "dirty top"
bounded "snapshot --force-dirty freezes it" 0 "" "$VDELTA" snapshot --force-dirty dirty.vmdk
qemu-img compare -q "$T/dirty.raw" dirty-000001.vmdk &&
	pass "the new top reads like the dirty disk did (qemu-img compare)" ||
	fail "content changed by --force-dirty"

finish
