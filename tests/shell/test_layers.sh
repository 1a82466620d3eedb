#!/usr/bin/env bash
# test_layers.sh — the layer rule (docs/architecture.md): a folder includes
# only its own headers and the public headers of the layers below it
# (common -> vmdk -> chain -> {fuse, rbd, tools}); a private *_int.h never
# leaves its folder.  Reads the sources; needs no build.
set -u
src=${SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# the public headers of the layers below each folder; a folder may also
# include any header that lives in it (its own public and private ones)
declare -A allowed=(
	[common]=""
	[vmdk]="common.h"
	[chain]="common.h vmdk.h"
	[tools]="common.h vmdk.h chain.h fuse_front.h rbd.h"
	[fuse]="common.h vmdk.h chain.h"
	[rbd]="common.h vmdk.h chain.h"
)
fail=0 checked=0
for dir in "${!allowed[@]}"; do
	[ -d "$src/$dir" ] || continue
	for f in "$src/$dir"/*.[ch]; do
		[ -e "$f" ] || continue
		while read -r inc; do
			checked=$((checked + 1))
			[ -e "$src/$dir/$inc" ] && continue # its own header
			case " ${allowed[$dir]} " in
			*" $inc "*) ;;
			*) echo "FAIL: $dir/$(basename "$f") includes \"$inc\" (allowed: ${allowed[$dir]} and $dir/*.h)"
			   fail=$((fail + 1)) ;;
			esac
		done < <(sed -n 's/^#include "\(.*\)".*/\1/p' "$f")
	done
done
[ "$checked" -gt 0 ] || { echo "FAIL: no includes found under $src"; exit 1; }
echo "$checked includes checked, $fail violations"
[ "$fail" -eq 0 ]
