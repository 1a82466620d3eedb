#!/usr/bin/env bash
# test_hostile.sh — hostile extent files against the format layer's region
# checks and bounded table cache (docs/formats.md "Metadata regions").
#
# hostile_gen.py (written from the format reference, not from the library)
# makes hosted sparse (KDMV v1-3, with and without a redundant directory),
# streamOptimized and COWD files whose header, descriptor area,
# directories, tables and grains overlap, and files claiming a 64 TiB (COWD:
# 2 TiB) disk whose every directory entry names one table.  For each:
#   - `vdelta check` exits 1 and names every expected region;
#   - a read-write open (vdio -w, vdelta snapshot) is refused with a message
#     naming the file and the regions; a read-only open warns and reads;
#   - nothing is written: sha256sum of every file before and after;
#   - the huge-claim files: peak RSS (/usr/bin/time %M) < 64 MiB and wall
#     time < 2 s for info and check;
#   - the valid controls: `vdelta check` and `qemu-img check` both clean,
#     a write and read-back through vdio works.
# What qemu-img check says of each hostile file is printed as a note.
. "$(dirname "$0")/lib.sh"

need_vdelta
need_vdio
need "$PYTHON" sha256sum
[ -x /usr/bin/time ] || skip "/usr/bin/time not installed"

G=$T/gen
mkdir -p "$G"
"$PYTHON" "$SOURCE_DIR/tests/shell/hostile_gen.py" "$G" >"$T/list" ||
	die "hostile_gen.py failed"

# ASan/UBSan builds: shadow memory and slower code; the bounds stay
# proportional, the constants grow.
rss_max_kb=65536 time_scale=1
if grep -q __asan_init "$VDELTA" 2>/dev/null; then
	rss_max_kb=$((4 * 65536)) time_scale=4
fi

hash_of() # NAME EXT -> sha256 of both files, one line
{
	(cd "$G" && sha256sum "$1" "$2" | sha256sum | cut -d' ' -f1)
}

has_words() # FILE WORDS(|-separated) WHAT
{
	local file=$1 words=$2 what=$3 w ok=1
	IFS='|' read -ra ws <<<"$words"
	for w in "${ws[@]}"; do
		grep -qF -- "$w" "$file" || { fail "$what: no \"$w\" in: $(head -c 600 "$file")"; ok=0; }
	done
	[ $ok = 0 ] || pass "$what names: $words"
}

check_valid() # NAME EXT
{
	local name=$1 ext=$2
	if run "$VDELTA" check "$G/$name"; then pass "$name: check clean"
	else fail "$name: check of a valid control failed"; fi
	if command -v qemu-img >/dev/null && [ "${name#c-}" = "$name" ]; then
		if run qemu-img check "$G/$name"; then pass "$name: qemu-img check clean"
		else fail "$name: qemu-img check rejects the control (generator wrong?)"; fi
	fi
	[ "${name#s-}" = "$name" ] || return 0 # a finished stream is read-only
	mkdir -p "$T/rw" && rm -f "$T/rw"/* && cp "$G/$name" "$G/$ext" "$T/rw/"
	if run "$VDIO" -w "$T/rw/$name" -c 'write -P 0x5a 4k 4k' -c 'read -P 0x5a 4k 4k'; then
		pass "$name: written and read back"
	else
		fail "$name: write to a valid control failed"
	fi
}

# A read-write open of a copy: refused, words named, the copy untouched.
check_rw_refused() # NAME EXT CLASS WORDS
{
	local name=$1 ext=$2 class=$3 words=$4 before nr_files
	mkdir -p "$T/rw" && rm -f "$T/rw"/* && cp "$G/$name" "$G/$ext" "$T/rw/"
	before=$(cd "$T/rw" && sha256sum "$name" "$ext" | sha256sum)
	nr_files=$(ls "$T/rw" | wc -l)
	if run "$VDIO" -w "$T/rw/$name" -c 'write -P 0x5a 0 4k'; then
		fail "$name: read-write open and write accepted"
	else
		grep -qF "$ext" "$T/last.err" || fail "$name: refusal does not name $ext"
		[ "$class" = overlap-ro ] || has_words "$T/last.err" "$words" "$name: rw refusal"
	fi
	if run "$VDELTA" snapshot "$T/rw/$name"; then
		fail "$name: snapshot of a hostile base succeeded"
	else
		pass "$name: snapshot refused"
	fi
	[ "$(cd "$T/rw" && sha256sum "$name" "$ext" | sha256sum)" = "$before" ] ||
		fail "$name: a refused write changed the file"
	[ "$(ls "$T/rw" | wc -l)" = "$nr_files" ] || fail "$name: refused writes left files: $(ls "$T/rw")"
}

check_hostile() # NAME EXT CLASS WORDS
{
	local name=$1 ext=$2 class=$3 words=$4 before
	before=$(hash_of "$name" "$ext")
	if run "$VDELTA" check "$G/$name"; then
		fail "$name: check passed a hostile file"
	else
		grep -qE '^[^:]+: [1-9][0-9]* errors' "$T/last.out" ||
			fail "$name: check summary counts no error: $(tail -1 "$T/last.out")"
		has_words "$T/last.out" "$words" "$name: check"
	fi
	if run "$VDIO" "$G/$name" -c 'read 0 4k'; then
		grep -qF "$ext" "$T/last.err" && grep -qF "${words%%|*}" "$T/last.err" &&
			pass "$name: read-only open warns and reads" ||
			fail "$name: read-only open gave no warning naming $ext and ${words%%|*}"
	else
		fail "$name: read-only open refused"
	fi
	check_rw_refused "$name" "$ext" "$class" "$words"
	if command -v qemu-img >/dev/null && [ "${name#c-}" = "$name" ]; then
		qemu-img check "$G/$name" >/dev/null 2>&1
		echo "note: qemu-img check $name: exit $?"
	fi
	[ "$(hash_of "$name" "$ext")" = "$before" ] || fail "$name: check/read changed the file"
}

# Peak RSS and wall time of one command on a huge-claim file.
check_bounded() # NAME CMD MAX_SECONDS
{
	local name=$1 cmd=$2 max_s=$3 kb secs
	/usr/bin/time -o "$T/time" -f '%M %e' "$VDELTA" "$cmd" "$G/$name" \
		>/dev/null 2>"$T/last.err"
	sanitizer_clean "$VDELTA"
	read -r kb secs < <(tail -n 1 "$T/time")
	echo "measured: vdelta $cmd $name: ${kb} KB peak RSS, ${secs} s"
	[ "$kb" -lt "$rss_max_kb" ] && pass "$name: $cmd RSS ${kb} KB" ||
		fail "$name: $cmd peak RSS ${kb} KB >= ${rss_max_kb} KB"
	awk -v s="$secs" -v m="$((max_s * time_scale))" 'BEGIN { exit !(s < m) }' &&
		pass "$name: $cmd ${secs} s" || fail "$name: $cmd took ${secs} s (limit ${max_s} s)"
}

while IFS=$'\t' read -r name class words ext; do
	case $class in
	ok) check_valid "$name" "$ext" ;;
	overlap | overlap-ro) check_hostile "$name" "$ext" "$class" "$words" ;;
	amplify)
		check_hostile "$name" "$ext" "$class" "$words"
		check_bounded "$name" info 2
		check_bounded "$name" check 2
		;;
	*) die "hostile_gen.py: unknown class $class" ;;
	esac
done <"$T/list"

finish
