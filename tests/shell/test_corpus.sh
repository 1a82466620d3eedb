#!/usr/bin/env bash
# test_corpus.sh — vdelta reads every real-world VMDK in the shared corpus
# to its known content, and refuses every bad one cleanly (tests layer:
# integration; oracles: ../shared/corpus/INDEX.md hashes from qemu-img,
# libvmdk and VMware's VDDK, and the content facts INDEX.md states).
#
# Positive rows: `vdelta convert -O raw` gives the listed size, sha256 and,
# where given, the VDDK sha1.  Negative rows: refused within 20 s with a
# non-zero exit below 128 (no crash), a message naming the file, and no
# file written.  synthetic/descriptors: expected content built with dd from
# the extent lines and a.bin/b.bin; synthetic/cowd and sesparse: qemu's
# hashes from INDEX.md's notes.  INDEX.md is parsed here, not copied.
# Everything runs on a private copy of the corpus, which must not change.
. "$(dirname "$0")/lib.sh"

need_shared
need "$PYTHON" dd cmp timeout
need_vdelta
need_vdio

C=$T/corpus
cp -a "$SHARED_DIR/corpus" "$C"
chmod -R u+w "$C"

# "sha256 sha1" of a file (sha1 "-" unless asked for with a 2nd arg).
# Holes are hashed as zeros without being read (SEEK_HOLE): reading the
# 16 GiB of holes in a converted disk costs over a minute here.
hashes()
{
	"$PYTHON" - "$@" <<'PY'
import errno, hashlib, os, sys
hs = [hashlib.sha256()] + ([hashlib.sha1()] if len(sys.argv) > 2 else [])
zeros = bytes(1 << 20)
fd = os.open(sys.argv[1], os.O_RDONLY)
size, off = os.fstat(fd).st_size, 0
def feed(buf):
    for h in hs:
        h.update(buf)
while off < size:
    try:
        data = os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        data = size if e.errno == errno.ENXIO else off
    while off < data:  # a hole: zeros
        n = min(data - off, len(zeros))
        feed(zeros[:n] if n < len(zeros) else zeros)
        off += n
    end = min(os.lseek(fd, off, os.SEEK_HOLE), size) if off < size else size
    while off < end:
        buf = os.pread(fd, min(end - off, 1 << 20), off)
        feed(buf)
        off += len(buf)
print(hs[0].hexdigest(), hs[1].hexdigest() if len(hs) > 1 else "-")
PY
}

# manifest DIR: every file and its sha256, to prove nothing was written.
manifest()
{
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

# The INDEX table and notes as tab-separated rows:
#   pos ID FILE RAW_SIZE SHA256 SHA1|-      neg ID FILE
#   syn NAME SHA256                         (synthetic/NAME: qemu's hash)
parse_index()
{
	"$PYTHON" - "$C/INDEX.md" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != 8 or not line.startswith("|") or cells[0] in ("id", "---"):
        continue
    ident, files, _, kind, size, sha256, sha1, _ = cells
    first = re.findall(r"`([^`]+)`", files)
    if not first:
        continue
    if "**negative**" in kind:
        print("neg", ident, first[0], sep="\t")
    else:
        sha256 = sha256.strip("`")
        sha1 = sha1.strip("`") or "-"
        print("pos", ident, first[0], size, sha256, sha1, sep="\t")
for name, digest in re.findall(
        r"^- `(\w+)/`:(?:(?!\n- ).)*?qemu's\s+raw\s+sha256:\s*`([0-9a-f]{64})`",
        text, re.M | re.S):
    print("syn", name, digest, sep="\t")
PY
}

check_positive()
{
	local id=$1 file=$2 size=$3 sha256=$4 sha1=$5 out=$T/pos.raw got
	if ! run timeout 600 "$VDELTA" convert -f vmdk -O raw "$C/$file" "$out"; then
		fail "$id: vdelta convert -O raw $file failed"
		return
	fi
	got=$(stat -c %s "$out")
	[ "$got" = "$size" ] || fail "$id: raw size $got, INDEX says $size"
	if [ "$sha1" = - ]; then
		read -r g256 g1 < <(hashes "$out")
	else
		read -r g256 g1 < <(hashes "$out" sha1)
	fi
	if [ "$g256" = "$sha256" ]; then
		pass "$id: sha256 matches"
	else
		fail "$id: sha256 $g256, INDEX says $sha256"
	fi
	if [ "$sha1" != - ]; then
		[ "$g1" = "$sha1" ] && pass "$id: VDDK sha1 matches" ||
			fail "$id: sha1 $g1, VMware's VDDK says $sha1"
	fi
	rm -f "$out"
}

# The names a refusal may cite: the file and the extents its descriptor
# lists (a missing extent is named by its own name).
names_of()
{
	basename "$1"
	head -c 65536 "$1" | tr -d '\0' | tr '\r' '\n' |
		sed -n 's/^[A-Z]* [0-9]* [A-Z]* "\([^"]*\)".*/\1/p' | xargs -r -n1 basename
}

check_negative()
{
	local id=$1 file=$2 out=$T/neg/out.raw rc before after
	mkdir -p "$T/neg"
	before=$(manifest "$(dirname "$C/$file")")
	echo "+ timeout 20 vdelta convert -f vmdk -O raw $file" >&2
	timeout 20 "$VDELTA" convert -f vmdk -O raw "$C/$file" "$out" </dev/null >"$T/last.out" 2>"$T/last.err"
	rc=$?
	sed 's/^/  | /' "$T/last.err" >&2
	sanitizer_clean "$VDELTA"
	after=$(manifest "$(dirname "$C/$file")")
	if [ $rc -eq 0 ]; then
		fail "$id: accepted ($file must be refused)"
	elif [ $rc -eq 124 ]; then
		fail "$id: still running after 20 s"
	elif [ $rc -ge 128 ]; then
		fail "$id: killed by signal $((rc - 128))"
	else
		pass "$id: refused (exit $rc)"
	fi
	if names_of "$C/$file" | grep -qxF -f - <(tr -c 'A-Za-z0-9._-' '\n' <"$T/last.err"); then
		pass "$id: the message names the file"
	else
		fail "$id: no message naming $(basename "$file") or its extents"
	fi
	[ -z "$(ls -A "$T/neg")" ] || fail "$id: wrote $(ls "$T/neg")"
	[ "$before" = "$after" ] || fail "$id: changed files beside $file"
	rm -rf "$T/neg"
}

# Expected content of a text descriptor over flat files, from its extent
# lines: FLAT extents are dd'd from their file at their sector offset,
# ZERO extents are zeros; access mode does not change what is read.
descriptor_content()
{
	local desc=$1 out=$2 dir access sectors type name offset
	dir=$(dirname "$desc")
	: >"$out"
	tr -d '\r' <"$desc" | while read -r access sectors type name offset; do
		case $access in RW|RDONLY|NOACCESS) ;; *) continue ;; esac
		name=${name//\"/}
		case $type in
		FLAT) dd if="$dir/$name" bs=512 skip="${offset:-0}" count="$sectors" \
				status=none iflag=fullblock ;;
		ZERO) dd if=/dev/zero bs=512 count="$sectors" status=none ;;
		*) echo "descriptor_content: $desc: extent type $type" >&2; return 1 ;;
		esac >>"$out"
	done
}

check_descriptors()
{
	local d=$C/synthetic/descriptors f
	for f in "$d"/*.vmdk; do
		local id=synthetic/descriptors/$(basename "$f")
		descriptor_content "$f" "$T/want.raw" || die "$id: cannot derive content"
		if ! vd_to_raw "$f" "$T/got.raw"; then
			fail "$id: vdelta convert -O raw failed"
		elif cmp "$T/want.raw" "$T/got.raw"; then
			pass "$id: reads as its extent lines say"
		else
			fail "$id: content differs from its extent lines"
		fi
		rm -f "$T/want.raw" "$T/got.raw"
	done
}

check_synthetic()
{
	local name=$1 sha256=$2 desc
	desc=$(grep -l createType "$C/synthetic/$name"/*.vmdk | head -n 1)
	[ -n "$desc" ] || die "synthetic/$name: no descriptor"
	check_positive "synthetic/$name" "${desc#"$C"/}" \
		"$(qemu_size "$desc")" "$sha256" -
}

# Virtual size from the descriptor's extent lines (sectors summed).
qemu_size()
{
	tr -d '\r' <"$1" | awk '$1 ~ /^(RW|RDONLY|NOACCESS)$/ { s += $2 } END { print s * 512 }'
}

# Facts INDEX.md states about particular files, read through vdio.
check_facts()
{
	local args=() i
	for ((i = 0; i < 100; i++)); do
		args+=(-c "read -P $((0x30 + i % 10)) $((i * 655360 + i * 512)) 512")
	done
	expect_ok "qemu/iotest-version3: bytes i*655360+i*512 are 0x30+i%10" \
		"$VDIO" "$C/qemu-iotests-sample_images/iotest-version3.vmdk" "${args[@]}"
	expect_ok "dissect/sesparse: first 16 MiB are 'a'" \
		"$VDIO" "$C/dissect.hypervisor/sesparse-wrapper.vmdk" -c 'read -P 0x61 0 16M'
	expect_ok "synthetic/cowd: sector 3 'C', sector 4095 'D', others zero" \
		"$VDIO" "$C/synthetic/cowd/test.vmdk" -c 'read -P 0 0 1536' \
		-c 'read -P 0x43 1536 512' -c 'read -P 0 2048 2094592' \
		-c 'read -P 0x44 2096640 512' -c 'read -P 0 2097152 6291456'
	expect_ok "synthetic/sesparse: grain 0 'S', 1 zeroed, 2 unmapped, 4101 'T'" \
		"$VDIO" "$C/synthetic/sesparse/disk.vmdk" -c 'read -P 0x53 0 4096' \
		-c 'read -P 0 4096 8192' -c 'read -P 0x54 16797696 4096'
}

before_all=$(manifest "$C")
nr_pos=0
nr_neg=0
nr_syn=0
while IFS=$'\t' read -r kind a b c d e; do
	case $kind in
	pos) check_positive "$a" "$b" "$c" "$d" "$e"; nr_pos=$((nr_pos + 1)) ;;
	neg) check_negative "$a" "$b"; nr_neg=$((nr_neg + 1)) ;;
	syn) check_synthetic "$a" "$b"; nr_syn=$((nr_syn + 1)) ;;
	esac
done < <(parse_index)
# a parser that finds nothing must not pass
[ $nr_pos -ge 10 ] && [ $nr_neg -ge 3 ] && [ $nr_syn -ge 2 ] ||
	die "parsed only $nr_pos positive, $nr_neg negative, $nr_syn synthetic rows from INDEX.md"
echo "INDEX.md: $nr_pos positive, $nr_neg negative, $nr_syn synthetic rows"

check_descriptors
check_facts
[ "$before_all" = "$(manifest "$C")" ] && pass "the corpus copy is unchanged" ||
	fail "reading the corpus changed files in it"
finish
