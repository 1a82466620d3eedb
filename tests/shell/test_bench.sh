#!/usr/bin/env bash
# test_bench.sh — `vdelta bench` against independent oracles (tests layer).
#
#  - the physical reads it counts agree within 2% with strace's count of
#    the pread64 calls of the same process, on a chain qemu-img built;
#  - the synthetic chains it builds read the same through qemu (qemu-img
#    check clean, qemu-img info --backing-chain lists depth layers, the
#    digest of qemu-img's raw export equals vdelta digest) and each delta
#    really changes the content (qemu-img compare against its parent);
#  - a run with writes and a trace leaves every file of the disk unchanged
#    (sha256 before/after) and no scratch files behind;
#  - --json validates against docs/bench.schema.json (a small validator for
#    the subset of JSON Schema the file uses), --plot writes an SVG whose
#    series and points match the JSON and whose throughput axes are
#    logarithmic (every tick a power of ten), --csv has one row per result;
#  - --peers names every server it could not run and the package that brings
#    its program (dpkg -S of the program, where it is installed), and runs
#    vdelta through FUSE beside the FUSE peers: each FUSE figure is set
#    against vdelta-fuse (the ratio recomputed from the JSON), the in-process
#    row is labelled as such;
#  - every script under bench/ is executable.
# shellcheck source=tests/shell/lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io xxhsum sha256sum python3
need_vdelta

SCHEMA=$SOURCE_DIR/docs/bench.schema.json

# ---- a small chain built by qemu ---------------------------------------------
mkdir -p "$T/q"
qemu-img create -q -f vmdk "$T/q/base.vmdk" 16M
qemu-io -f vmdk -c 'write -P 0x11 0 12M' "$T/q/base.vmdk" >/dev/null
qemu-img create -q -f vmdk -b base.vmdk -F vmdk "$T/q/mid.vmdk"
qemu-io -f vmdk -c 'write -P 0x22 1M 2M' -c 'write -P 0x23 9M 4k' "$T/q/mid.vmdk" >/dev/null
qemu-img create -q -f vmdk -b mid.vmdk -F vmdk "$T/q/top.vmdk"
qemu-io -f vmdk -c 'write -P 0x33 2M 1M' -c 'write -P 0x34 14M 64k' "$T/q/top.vmdk" >/dev/null
TOP=$T/q/top.vmdk

# ---- counted reads vs strace --------------------------------------------------
if command -v strace >/dev/null; then
	# LeakSanitizer cannot run under ptrace: no leak check for this run
	if run env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
		strace -f -qq -c -e trace=pread64 -o "$T/strace.txt" "$VDELTA" bench -q --json --threads 1,2 --ops 3000 "$TOP"; then
		cp "$T/last.out" "$T/count.json"
		"$PYTHON" - "$T/count.json" "$T/strace.txt" <<'PY' && pass "counted reads agree with strace within 2%" || fail "counted reads vs strace: see above"
import json, sys
d = json.load(open(sys.argv[1]))
ours = sum(k["open_reads"] + k["map_build_reads"] for k in d["disks"])
ours += sum(r["physical"]["reads"] for r in d["results"])
calls = None
for line in open(sys.argv[2]):
    f = line.split()
    if f and f[-1] == "pread64":
        calls = int(f[3])
if calls is None or abs(ours - calls) > 0.02 * calls:
    print(f"bench counted {ours} physical reads, strace saw {calls} pread64", file=sys.stderr)
    sys.exit(1)
print(f"bench {ours}, strace {calls}")
PY
		# sequential 1 MiB reads: one data read per run of qemu-img map
		# (host-contiguous) inside each MiB, and exactly its bytes
		qemu-img map -U --output=json "$TOP" >"$T/qmap.json"
		"$PYTHON" - "$T/count.json" "$T/qmap.json" <<'PY' && pass "sequential data reads and bytes match qemu-img map" || fail "sequential reads vs qemu-img map"
import json, sys
d = json.load(open(sys.argv[1]))
runs = [r for r in json.load(open(sys.argv[2])) if r["data"]]
cap, mib = d["disks"][0]["capacity"], 1 << 20
reads = nbytes = 0
for b in range(0, cap, mib):
    for r in runs:
        lo, hi = max(b, r["start"]), min(b + mib, r["start"] + r["length"])
        if lo < hi:
            reads += 1
            nbytes += hi - lo
seq = [r for r in d["results"] if r["pattern"] == "seq-read-1M"][0]["physical"]
if (seq["data_reads"], seq["data_bytes"]) != (reads, nbytes):
    print("bench", seq, "qemu-img map:", reads, "reads", nbytes, "bytes", file=sys.stderr)
    sys.exit(1)
PY
	else
		fail "vdelta bench under strace: $(cat "$T/last.err")"
	fi
else
	echo "strace not installed: read count check skipped"
fi

# ---- synthetic chains read identically through qemu ------------------------------
if run "$VDELTA" bench -q --synthetic --size 8M --depths 1,3,6 --fill 50 --churn 10 \
	--dir "$T/s" --ops 500 --seq-bytes 2M --json; then
	pass "bench --synthetic built and measured depths 1,3,6"
	cp "$T/last.out" "$T/synth.json"
else
	fail "bench --synthetic: $(cat "$T/last.err")"
fi
for d in 1 3 6; do
	top=$T/s/synth-0$((d - 1)).vmdk
	qemu-img check -q "$top" && pass "depth $d: qemu-img check clean" || fail "depth $d: qemu-img check $top"
	n=$(qemu-img info -U --backing-chain "$top" | grep -c '^image:')
	[ "$n" = "$d" ] && pass "depth $d: qemu sees $n layers" || fail "depth $d: qemu sees $n layers"
	rm -f "$T/export.raw"
	qemu-img convert -U -O raw "$top" "$T/export.raw"
	theirs=$(xxhsum -H2 "$T/export.raw" | cut -d' ' -f1)
	ours=$("$VDELTA" digest "$top" | cut -d' ' -f1)
	[ -n "$ours" ] && [ "$ours" = "$theirs" ] && pass "depth $d: digest equals qemu's export" ||
		fail "depth $d: vdelta digest $ours, qemu export $theirs"
	if [ "$d" -gt 1 ]; then
		parent=$T/s/synth-0$((d - 2)).vmdk
		qemu-img compare -q -U "$parent" "$top" &&
			fail "depth $d: the top delta changed nothing" || pass "depth $d: the top delta changes the content"
	fi
done
# the same parameters reuse the chain: nothing is rewritten
sum_before=$(cat "$T"/s/*.vmdk | sha256sum)
run "$VDELTA" bench -q --synthetic --size 8M --depths 1,3,6 --fill 50 --churn 10 \
	--dir "$T/s" --ops 100 --seq-bytes 1M --csv || fail "bench --synthetic reuse: $(cat "$T/last.err")"
[ "$(cat "$T"/s/*.vmdk | sha256sum)" = "$sum_before" ] && pass "a second run reuses the synthetic chain unchanged" ||
	fail "the second synthetic run changed the chain"
[ "$(wc -l <"$T/last.out")" = $((1 + 3 * 3)) ] && pass "--csv: a header and one row per result" ||
	fail "--csv rows: $(wc -l <"$T/last.out")"
run "$VDELTA" bench -q --synthetic --size 8M --depths 1,3,6 --fill 40 --churn 10 --dir "$T/s"
[ $? = 1 ] && grep -q 'other parameters' "$T/last.err" && pass "other parameters over an existing chain: refused" ||
	fail "other parameters over an existing chain: $(cat "$T/last.err")"

# ---- the disk is left unchanged ----------------------------------------------------
printf '%s\n' '# offset length op' '0 4096 r' '1048576 65536 w' '0x200000 512 R' '2097152 8192 write' \
	>"$T/trace.txt"
mkdir -p "$T/scratch"
(cd "$T/q" && sha256sum ./*) >"$T/before.sha"
if run "$VDELTA" bench -q --write --write-ops 40 --ops 200 --trace "$T/trace.txt" \
	--tmpdir "$T/scratch" --json "$TOP"; then
	pass "bench --write --trace ran"
	grep -q '"rand-write-4K-fsync"' "$T/last.out" && grep -q '"trace"' "$T/last.out" &&
		pass "the write and trace workloads are reported" || fail "write/trace results missing"
else
	fail "bench --write --trace: $(cat "$T/last.err")"
fi
(cd "$T/q" && sha256sum -c --quiet "$T/before.sha") && pass "every file of the disk is unchanged (sha256)" ||
	fail "bench changed the disk's files"
[ -z "$(ls -A "$T/scratch")" ] && pass "no scratch files left behind" || fail "left: $(ls -A "$T/scratch")"
printf '0 4096 r\n16777216 4096 r\n' >"$T/bad-trace.txt"
run "$VDELTA" bench -q --trace "$T/bad-trace.txt" "$TOP"
[ $? = 1 ] && grep -q 'bad-trace.txt:2:' "$T/last.err" && pass "a trace past the end: error naming the line" ||
	fail "bad trace: $(cat "$T/last.err")"
run "$VDELTA" bench --json --csv "$TOP"
[ $? = 2 ] && pass "--json with --csv: usage error" || fail "--json --csv exit status"

# ---- --peers: what could not run, and vdelta through FUSE beside the peers ------------
# The Debian package that installed a program here (empty when none did).
pkg_of()
{
	local p=$1 f pkg
	command -v dpkg >/dev/null || return 0
	for f in "$(command -v "$p" 2>/dev/null)" "/usr/bin/$p" "/bin/$p" "/usr/sbin/$p"; do
		[ -n "$f" ] && [ -e "$f" ] || continue
		pkg=$( (dpkg -S "$f" || dpkg -S "$(readlink -f "$f")") 2>/dev/null | head -n1)
		[ -n "$pkg" ] && { echo "${pkg%%:*}"; return 0; }
	done
}
# each missing server: named on stderr and in not_run, with the package
# that brings its program where dpkg knows it (NAME=PROGRAM pairs)
check_missing()
{
	local what=$1 pair sys prog pkg
	shift
	for pair in "$@"; do
		sys=${pair%%=*} prog=${pair#*=}
		pkg=$(pkg_of "$prog")
		if grep -q "$sys not run: $prog is not installed" "$T/last.err" &&
			"$PYTHON" - "$T/last.out" "$sys" "$prog" "$pkg" <<'PY'; then
import json, sys
d = json.load(open(sys.argv[1]))
want = {"system": sys.argv[2], "program": sys.argv[3]}
got = [m for m in d["not_run"] if m["system"] == want["system"]]
ok = len(got) == 1 and got[0]["program"] == want["program"]
ok = ok and (not sys.argv[4] or got[0].get("package") == sys.argv[4])
ok = ok and not [r for r in d["results"] if r["system"] == want["system"]]
sys.exit(0 if ok else 1)
PY
			pass "$what: $sys not run, $prog missing${pkg:+ (package $pkg, as dpkg says)}"
		else
			fail "$what: $sys / $prog not reported: $(cat "$T/last.err")"
		fi
	done
}
PEER_ARGS=(-q --peers --ops 300 --seq-bytes 1M --threads 1 --json "$TOP")
mkdir -p "$T/bin"
if run env PATH="$T/bin" "$VDELTA" bench "${PEER_ARGS[@]}"; then
	check_missing "no fusermount3" vdelta-fuse=fusermount3 qemu-fuse=fusermount3 \
		vmdkmount=fusermount3
else
	fail "bench --peers without the peers: $(cat "$T/last.err")"
fi
if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null; then
	ln -s "$(command -v fusermount3)" "$T/bin/fusermount3"
	if run env PATH="$T/bin" "$VDELTA" bench "${PEER_ARGS[@]}"; then
		check_missing "only fusermount3" qemu-fuse=qemu-storage-daemon vmdkmount=vmdkmount
		grep -q '"system": "vdelta-fuse"' "$T/last.out" &&
			pass "--peers runs vdelta-fuse even with no peer installed" ||
			fail "--peers without peers: no vdelta-fuse result"
	else
		fail "bench --peers with fusermount3 alone: $(cat "$T/last.err")"
	fi
	if run "$VDELTA" bench "${PEER_ARGS[@]}"; then
		cp "$T/last.out" "$T/peers.json"
		"$PYTHON" - "$T/peers.json" <<'PY' && pass "--peers: vdelta-fuse beside every FUSE peer, each set against it" || fail "--peers: systems and ratios"
import json, sys
d = json.load(open(sys.argv[1]))
res = d["results"]
key = lambda r: (r["disk"], r["pattern"], r["threads"])
by = {(r["system"],) + key(r): r for r in res}
ok = True
fuse = [r for r in res if r["access"] == "fuse"]
if not [r for r in fuse if r["system"] != "vdelta-fuse"] and d["not_run"] == []:
    print("no FUSE peer ran and none reported missing"); ok = False
for r in res:
    if r["system"] == "vdelta":
        want = None if r["access"] == "in-process" else "?"
    else:
        want = "vdelta" if r["system"] == "vdelta-fuse" else "vdelta-fuse"
    if r.get("vs_system") != want or (want and (want,) + key(r) not in by):
        print("result", r["system"], r["pattern"], "vs", r.get("vs_system"), "want", want); ok = False
        continue
    ratio = r["iops"] / by[(want,) + key(r)]["iops"] if want else 1.0
    if abs(r["vs_vdelta"] - ratio) > 1e-3 * max(ratio, 1e-3):
        print("vs_vdelta", r["vs_vdelta"], "recomputed", ratio); ok = False
sys.exit(0 if ok else 1)
PY
	else
		fail "bench --peers: $(cat "$T/last.err")"
	fi
	if run "$VDELTA" bench -q --fuse --ops 300 --seq-bytes 1M --threads 1 "$TOP"; then
		grep -q '^  vdelta (in process) ' "$T/last.out" && grep -q '^  vdelta-fuse ' "$T/last.out" &&
			pass "the table labels the in-process row beside vdelta-fuse" ||
			fail "table labels: $(head -n 8 "$T/last.out")"
	else
		fail "bench --fuse: $(cat "$T/last.err")"
	fi
else
	echo "no /dev/fuse or fusermount3: vdelta-fuse beside the peers not checked"
fi

# ---- every script under bench/ runs as named (docs/benchmarks.md) ---------------------
noexec=$(find "$SOURCE_DIR/bench" -name '*.sh' ! -perm -u+x)
[ -z "$noexec" ] && pass "every bench/*.sh is executable" || fail "not executable: $noexec"

# ---- JSON schema and plot --------------------------------------------------------------
if command -v gnuplot >/dev/null &&
	run "$VDELTA" bench -q --synthetic --size 8M --depths 1,3,6 --fill 50 --churn 10 \
		--dir "$T/s" --ops 300 --seq-bytes 2M --json --plot "$T/plot.svg"; then
	cp "$T/last.out" "$T/plot.json"
	[ -s "$T/plot.svg" ] && pass "--plot wrote a non-empty SVG" || fail "--plot: empty SVG"
	"$PYTHON" - "$T/plot.json" "$T/plot.svg" <<'PY' && pass "the plot's series, points and log axes match the JSON" || fail "plot vs JSON"
import json, math, re, sys
d = json.load(open(sys.argv[1]))
svg = open(sys.argv[2]).read()
# the in-process row is labelled as such, the others by their system
label = lambda r: "vdelta (in process)" if r["access"] == "in-process" else r["system"]
systems = sorted({label(r) for r in d["results"]})
# gnuplot names plot k of panel p "gnuplot_plot_<k><p>"
groups = re.split(r'<g id="gnuplot_plot_', svg)[1:]
titles = {}
for g in groups:
    m = re.match(r'(\d+)([a-z])" ><title>([^<]*)</title>', g)
    pts = re.findall(r"href='#gpPt\d+' transform='translate\(([\d.]+),([\d.]+)\)", g)
    titles.setdefault(m.group(2), []).append((m.group(3), pts[:-1]))  # last: the key sample
ok = True
for panel, series in titles.items():
    if sorted(t for t, _ in series) != systems:
        print("panel", panel, "series", [t for t, _ in series], "JSON", systems); ok = False
    for t, pts in series:
        if len(pts) != len(d["disks"]):
            print("panel", panel, t, len(pts), "points for", len(d["disks"]), "disks"); ok = False
# panel a: random 4 KiB IOPS of vdelta, 1 thread; a higher rate is drawn higher (smaller y)
rand = {r["depth"]: r["iops"] for r in d["results"] if r["pattern"] == "rand-read-4K" and r["threads"] == 1}
ys = [float(y) for _, y in dict(titles["a"])["vdelta (in process)"]]
xs = [float(x) for x, _ in dict(titles["a"])["vdelta (in process)"]]
depths = sorted(rand)
for i in range(len(depths)):
    for j in range(len(depths)):
        if rand[depths[i]] > rand[depths[j]] * 1.001 and not ys[i] < ys[j]:
            print("IOPS order differs from the drawn order", rand, ys); ok = False
if xs != sorted(xs):
    print("x positions are not in depth order", xs); ok = False
# y tick labels (right-aligned), by panel (400 px each): the throughput
# panels a and b have a log axis (every tick a power of ten, "1x10^N" from
# 10^6 on), the amplification panel c a linear one from 0
ticks = {}
for x, body in re.findall(r'<g transform="translate\(([\d.]+),[\d.]+\)"[^>]*text-anchor="end">\s*<text>(.*?)</text>', svg):
    parts = re.findall(r'<tspan[^>]*>([^<]*)</tspan>', body)
    text = "".join(parts[:1]).strip()
    try:
        v = 10.0 ** float(parts[1]) if text == "1x10" else float(text)
    except (ValueError, IndexError):
        continue
    ticks.setdefault("abc"[min(int(float(x) // 400), 2)], []).append(v)
for p in "ab":
    t = ticks.get(p, [])
    if len(t) < 2 or not all(v > 0 and abs(math.log10(v) - round(math.log10(v))) < 1e-9 for v in t):
        print("panel", p, "y ticks", t, "are not powers of ten"); ok = False
if 0.0 not in ticks.get("c", []):
    print("panel c y ticks", ticks.get("c")); ok = False
sys.exit(0 if ok else 1)
PY
	"$PYTHON" - "$SCHEMA" "$T/plot.json" "$T/count.json" "$T/peers.json" <<'PY' && pass "--json validates against docs/bench.schema.json" || fail "--json vs schema"
import json, os, sys
# The subset of JSON Schema the schema uses: type, required, properties,
# items, enum, minimum, maximum.
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
def check(s, v, path):
    errs = []
    t = s.get("type")
    if t == "integer":
        good = isinstance(v, int) and not isinstance(v, bool)
    elif t == "number":
        good = isinstance(v, (int, float)) and not isinstance(v, bool)
    elif t:
        good = isinstance(v, TYPES[t])
    else:
        good = True
    if not good:
        return [f"{path}: {v!r} is not {t}"]
    if "enum" in s and v not in s["enum"]:
        errs.append(f"{path}: {v!r} not in {s['enum']}")
    if "minimum" in s and v < s["minimum"]:
        errs.append(f"{path}: {v} < {s['minimum']}")
    if "maximum" in s and v > s["maximum"]:
        errs.append(f"{path}: {v} > {s['maximum']}")
    for k in s.get("required", []):
        if k not in v:
            errs.append(f"{path}: missing {k}")
    for k, sub in s.get("properties", {}).items():
        if isinstance(v, dict) and k in v:
            errs += check(sub, v[k], f"{path}.{k}")
    if "items" in s:
        for i, item in enumerate(v):
            errs += check(s["items"], item, f"{path}[{i}]")
    return errs
schema = json.load(open(sys.argv[1]))
bad = False
for f in filter(os.path.exists, sys.argv[2:]):
    errs = check(schema, json.load(open(f)), "$")
    for e in errs[:10]:
        print(f, e)
    bad |= bool(errs)
# the validator itself rejects a broken document
if not check(schema, {"disks": [], "results": [{"system": "x"}]}, "$"):
    print("validator accepted a broken document"); bad = True
sys.exit(1 if bad else 0)
PY
else
	fail "bench --json --plot: $(cat "$T/last.err" 2>/dev/null)"
fi

finish
