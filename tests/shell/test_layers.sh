#!/usr/bin/env bash
# test_layers.sh — the layer rule (docs/architecture.md): layers point one
# way, common -> vmdk -> chain -> group -> {fuse, nbd, rbd, bench, tools},
# tools over fuse, bench, nbd and rbd too.  A folder
#  - includes only its own headers and the public headers of the folders it
#    uses (a private *_int.h never leaves its folder), and
#  - uses (calls, or takes the address of) no function that only a folder
#    it may not use defines: a lower folder never reaches into a higher one,
#    nor a folder into its sibling.
# Functions are the non-static top-level definitions of each folder's .c
# files (house style: return type and name at column 0, as
# `int chain_open(`); uses are the identifiers of a folder's .c and .h
# files with comments and strings removed.  Reads the sources; needs no
# build.  Before the real tree, the checker runs over a small tree with
# one bad include and one upward call, and must find both.
set -u
export LC_ALL=C # one collation for sort and comm
src=${SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}

# One row per folder: the folder, its public header, the folders it uses.
# A folder that does not exist (yet) is skipped; a new layer is one row.
LAYERS=(
	"common  common.h"
	"vmdk    vmdk.h        common"
	"chain   chain.h       common vmdk"
	"group   group.h       common vmdk chain"
	"fuse    fuse_front.h  common vmdk chain group"
	"bench   bench.h       common vmdk chain group"
	"nbd     -             common vmdk chain group"
	"rbd     rbd.h         common vmdk chain group"
	"tools   -             common vmdk chain group fuse bench nbd rbd"
)

# Headers the build generates in a folder's build folder: its own.
declare -A generated=(
	[tools]="tools_pages.h"
)

declare -A header uses
for row in "${LAYERS[@]}"; do
	read -r dir hdr deps <<<"$row"
	header[$dir]=$hdr
	uses[$dir]=$deps
done

# Non-static functions a folder's .c files define, one a line.
defined_in()
{
	cat "$1"/*.c 2>/dev/null | grep -E '^[a-z]' | grep -vE '^(static|typedef|extern)\b' |
		grep -vE ';[[:space:]]*$' | sed -nE 's/^[^(]*\b([a-z_][a-z0-9_]*)\(.*/\1/p' |
		grep -vx main | sort -u
}

# Identifiers of a folder's sources, comments and string literals removed.
used_in()
{
	perl -0777 -pe 's{/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|'\''(?:\\.|[^'\''\\\n])*'\''}{ }gs' \
		"$1"/*.[ch] 2>/dev/null | grep -oE '\b[a-z_][a-z0-9_]*\b' | sort -u
}

# Check the tree at $1; prints one line per violation, sets nr_checked and
# nr_bad.
check_tree()
{
	local root=$1 dir f inc other name
	declare -A defs
	nr_checked=0 nr_bad=0
	for dir in "${!header[@]}"; do
		[ -d "$root/$dir" ] && defs[$dir]=$(defined_in "$root/$dir")
	done
	for dir in "${!defs[@]}"; do
		local allowed=" " mine forbidden
		for other in ${uses[$dir]}; do
			[ "${header[$other]:--}" = - ] || allowed+="${header[$other]} "
		done
		for f in "$root/$dir"/*.[ch]; do
			[ -e "$f" ] || continue
			while read -r inc; do
				nr_checked=$((nr_checked + 1))
				[ -e "$root/$dir/$inc" ] && continue # its own header
				case " ${generated[$dir]:-} " in *" $inc "*) continue ;; esac
				case $allowed in
				*" $inc "*) ;;
				*) echo "FAIL: $dir/$(basename "$f") includes \"$inc\" (allowed:$allowed and $dir/*.h)"
				   nr_bad=$((nr_bad + 1)) ;;
				esac
			done < <(sed -n 's/^#include "\(.*\)".*/\1/p' "$f")
		done
		# names defined where this folder may look: its own and its uses'
		mine=$(for other in "$dir" ${uses[$dir]}; do
			[ -n "${defs[$other]+x}" ] && echo "${defs[$other]}"; done | sort -u)
		for other in "${!defs[@]}"; do
			case " $dir ${uses[$dir]} " in *" $other "*) continue ;; esac
			forbidden=$(comm -23 <(echo "${defs[$other]}") <(echo "$mine"))
			[ -n "$forbidden" ] || continue
			while read -r name; do
				nr_checked=$((nr_checked + 1))
				f=$(grep -lw "$name" "$root/$dir"/*.[ch] | xargs -n1 basename | tr '\n' ' ')
				echo "FAIL: $dir/${f% } uses $name(), defined in $other/ ($dir may use: ${uses[$dir]:-nothing})"
				nr_bad=$((nr_bad + 1))
			done < <(comm -12 <(echo "$forbidden") <(used_in "$root/$dir"))
		done
		nr_checked=$((nr_checked + $(echo "$mine" | grep -c .)))
	done
}

# ---- the checker finds what it must ---------------------------------------------
fake=$(mktemp -d "${TMPDIR:-/tmp}/vdelta-layers.XXXXXX") || exit 1
trap 'rm -rf "$fake"' EXIT
mkdir -p "$fake/common" "$fake/chain" "$fake/tools"
printf '#include "common.h"\nint common_log(int x)\n{\n\treturn x;\n}\n' >"$fake/common/common.c"
printf '/* tools_fail() in a comment is no use */\nint tools_fail(int rc)\n{\n\treturn rc;\n}\n' \
	>"$fake/tools/tools.c"
: >"$fake/common/common.h"
: >"$fake/tools/tools.h"
printf '#include "tools.h"\nint chain_open(void)\n{\n\t/* tools_nr_errors() */\n\treturn common_log(tools_fail(1));\n}\n' \
	>"$fake/chain/chain.c"
check_tree "$fake" >"$fake/out"
out=$(cat "$fake/out")
if [ "$nr_bad" -ne 2 ] || ! grep -q 'chain/chain.c includes "tools.h"' <<<"$out" ||
	! grep -q 'chain/chain.c uses tools_fail(), defined in tools/' <<<"$out"; then
	echo "FAIL: the checker did not find exactly the bad include and the upward call:"
	echo "$out"
	exit 1
fi

# ---- the tree ------------------------------------------------------------------------
check_tree "$src"
[ "$nr_checked" -gt 0 ] || { echo "FAIL: nothing found to check under $src"; exit 1; }
echo "$nr_checked includes and names checked, $nr_bad violations"
[ "$nr_bad" -eq 0 ]
