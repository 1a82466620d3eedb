#!/usr/bin/env bash
# test_pages.sh — the page sources (tools/pages) against the binary and the
# man pages the build made from them: every command has its page and every
# page its command; each page renders with no groff warning; `vdelta help
# CMD` says what the man page says (summary, synopsis, options); each option
# a page names is one the binary takes, with a value exactly when the page
# gives one (getopt's own messages are the oracle); every long option in the
# sources is on a page; pages.py refuses what it cannot render.
source "$(dirname "$0")/lib.sh"
need_vdelta
need groff
pages=$SOURCE_DIR/tools/pages
built=$BUILD_DIR/tools/pages
[ -f "$built/vdelta.1" ] || skip "no man pages built (scdoc missing: -Dman=auto)"

# The commands `vdelta help` lists.
run "$VDELTA" help || fail "vdelta help"
mapfile -t cmds < <(awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}' "$T/last.out")
[ ${#cmds[@]} -ge 18 ] || fail "vdelta help lists ${#cmds[@]} commands"

# man page text, plain ASCII (no hyphen glyphs, no overstrikes)
render()
{
	MANWIDTH=200 groff -man -Tascii -P-cbou "$1" 2>/dev/null
}

# section NAME of rendered text on stdin, one line, spaces squeezed
section()
{
	awk -v s="$1" '/^[A-Z]/ {on = ($0 == s); next} on' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'
}

test_every_command_has_a_page()
{
	local c p n=0
	for c in "${cmds[@]}"; do
		[ -f "$pages/vdelta-$c.1.scd" ] || fail "$c: no tools/pages/vdelta-$c.1.scd"
		[ -f "$built/vdelta-$c.1" ] || fail "$c: vdelta-$c.1 not built"
		render "$built/vdelta.1" | section COMMANDS | grep -q "vdelta $c " ||
			fail "vdelta(1) does not list $c"
		n=$((n + 1))
	done
	for p in "$pages"/vdelta-*.1.scd; do
		c=$(basename "$p" .1.scd)
		c=${c#vdelta-}
		printf '%s\n' "${cmds[@]}" | grep -qx "$c" || fail "page $p: no command '$c'"
	done
	pass "$n commands, each with its page, listed in vdelta(1)"
}

test_pages_render_clean()
{
	local f n=0 warn
	for f in "$built"/*.[0-9]; do
		warn=$(groff -man -ww -z "$f" 2>&1)
		[ -z "$warn" ] || fail "$(basename "$f"): groff: $warn"
		if command -v man >/dev/null; then
			warn=$(MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null)
			[ -z "$warn" ] || fail "$(basename "$f"): man: $warn"
		fi
		n=$((n + 1))
	done
	[ "$n" -ge 21 ] || fail "only $n pages built"
	pass "$n pages render with no groff warning"
}

# The term lines of section NAME of a rendered page on stdin (indented 7).
terms()
{
	awk -v s="$1" '/^[A-Z]/ {on = ($0 == s); next} on && /^       [^ ]/' | sed 's/^ *//'
}

# The option words (-x, --long) of text on stdin.
option_words()
{
	grep -oE '(^|[ ,|[(])--?[a-zA-Z][a-zA-Z-]*' | sed 's/^[ ,|[(]//' | sort -u
}

# The help's option lines (two spaces, then an option) and the terms of the
# man page's OPTIONS section name the same options; the summary and the
# synopsis are the same words.
test_help_matches_page()
{
	local c man help msum hsum msyn hsyn
	for c in "${cmds[@]}"; do
		man=$(render "$built/vdelta-$c.1")
		run "$VDELTA" help "$c" || fail "help $c"
		help=$(cat "$T/last.out")
		msum=$(section NAME <<<"$man" | sed "s/^vdelta-$c - //")
		hsum=$(head -1 <<<"$help" | sed "s/^vdelta $c: //")
		[ "$msum" = "$hsum" ] || fail "$c: summary: page '$msum', help '$hsum'"
		msyn=$(section SYNOPSIS <<<"$man")
		hsyn=$(awk '/^Usage:/ {on = 1} on && /^$/ {exit} on' <<<"$help" |
			sed 's/^Usage: //' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
		[ "$msyn" = "$hsyn" ] || fail "$c: synopsis: page '$msyn', help '$hsyn'"
		diff <(terms OPTIONS <<<"$man" | option_words) \
		     <(grep -E '^  --?[a-zA-Z]' <<<"$help" | sed 's/^  //; s/  .*//' |
			option_words) >"$T/diff" ||
			fail "$c: options differ between page and help: $(tr '\n' ' ' <"$T/diff")"
		"$VDELTA" "$c" --help | cmp -s - "$T/last.out" || fail "$c --help differs from help $c"
	done
	pass "help and page agree for ${#cmds[@]} commands (summary, synopsis, options)"
}

# getopt's messages say whether the binary knows an option and whether it
# takes a value; the page must say the same.
probe_option()
{
	local c=$1 opt=$2 takes=$3 err
	if [ "$takes" = 1 ]; then
		err=$("$VDELTA" "$c" "$opt" 2>&1 </dev/null)
		grep -q "requires an argument" <<<"$err" ||
			fail "$c $opt: the page gives it a value, the binary: ${err%%$'\n'*}"
	elif [[ $opt == --* ]]; then
		err=$("$VDELTA" "$c" "$opt=x" 2>&1 </dev/null)
		grep -q "doesn't allow an argument" <<<"$err" ||
			fail "$c $opt: a flag on the page, the binary: ${err%%$'\n'*}"
	else
		err=$("$VDELTA" "$c" "$opt" 2>&1 </dev/null)
		! grep -qE "invalid option|unrecognized option" <<<"$err" ||
			fail "$c $opt: unknown to the binary: ${err%%$'\n'*}"
	fi
}

test_page_options_are_real()
{
	local n=0 c opt takes
	while read -r c opt takes; do
		probe_option "$c" "$opt" "$takes"
		n=$((n + 1))
	done < <("$PYTHON" "$SOURCE_DIR/scripts/pages.py" json "$pages"/vdelta-*.1.scd |
		"$PYTHON" -c '
import json, sys
for c in json.load(sys.stdin):
    for o in c["options"]:
        for n in o["names"]:
            print(c["name"], n, 0 if o["value"] is None else 1)')
	[ "$n" -gt 80 ] || fail "only $n options on the pages"
	pass "$n options on the pages, each taken by the binary as the page says"
}

# Every long option of the sources' getopt tables is on some page.
test_source_options_documented()
{
	local all name n=0
	all=$(cat "$pages"/vdelta-*.1.scd)
	while read -r name; do
		grep -qF -- "*--$name*" <<<"$all" || fail "--$name (tools/*.c) is on no page"
		n=$((n + 1))
	done < <(grep -ohE '\{"[a-z][a-z-]*", (no|required|optional)_argument' \
		"$SOURCE_DIR"/tools/*.c | sed 's/{"\([^"]*\)".*/\1/' | sort -u)
	[ "$n" -gt 40 ] || fail "only $n long options found in tools/*.c"
	pass "$n long options of the sources, each on a page"
}

# The generator stops the build, naming file and line, on what it would
# render wrongly.
test_generator_refuses()
{
	local bad=$T/vdelta-bad.1.scd
	printf 'vdelta-bad(1)\n\n# NAME\n\nvdelta-bad - x\n\n# SYNOPSIS\n\n*vdelta bad*\n\n# DESCRIPTION\n\n*unclosed\n' >"$bad"
	run "$PYTHON" "$SOURCE_DIR/scripts/pages.py" help "$T/o.c" "$T/o.h" "$bad" &&
		fail "pages.py accepted an unclosed '*'"
	grep -q "vdelta-bad.1.scd:13" "$T/last.err" || fail "no file:line for an unclosed '*'"
	printf 'vdelta-bad(1)\n\n# NAME\n\nvdelta-bad - x\n\n# SYNOPSIS\n\n*vdelta bad*\n\n# DESCRIPTION\n\n[[ *a*\n' >"$bad"
	run "$PYTHON" "$SOURCE_DIR/scripts/pages.py" help "$T/o.c" "$T/o.h" "$bad" &&
		fail "pages.py accepted a table"
	printf 'vdelta-bad(1)\n\n# NAME\n\nvdelta-other - x\n\n# SYNOPSIS\n\n*vdelta bad*\n\n# DESCRIPTION\n\nx\n' >"$bad"
	run "$PYTHON" "$SOURCE_DIR/scripts/pages.py" help "$T/o.c" "$T/o.h" "$bad" &&
		fail "pages.py accepted a NAME that is not the page's"
	pass "pages.py refuses an unclosed mark, a table, a wrong NAME"
}

test_every_command_has_a_page
test_pages_render_clean
test_help_matches_page
test_page_options_are_real
test_source_options_documented
test_generator_refuses
finish
