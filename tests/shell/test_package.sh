#!/usr/bin/env bash
# test_package.sh — the Debian package, from a clean copy of the tree
# without .git (as from a tarball: the build must not need git, and
# --version then names no commit):
#  - dpkg-buildpackage -us -uc -b makes vdelta_VERSION_ARCH.deb, VERSION
#    being both debian/changelog's and meson's;
#  - its Depends name the package of every library the binary links
#    (readelf's NEEDED, dpkg -S: the oracle for ${shlibs:Depends}), and
#    its Recommends the package of librbd.so.1, which `vdelta rbd` loads;
#  - lintian finds no error;
#  - installed into a private root (dpkg --instdir), vdelta --version runs,
#    each page renders, `man vdelta` finds it there; dpkg -r and -P leave
#    no file;
#  - with CI=true or VDELTA_PACKAGE_INSTALL=1, and as root, the same with
#    the system's dpkg: dpkg -i (dependencies checked), vdelta --version,
#    man vdelta, dpkg -r leaves no file of it.  Not by default: on a shared
#    machine another run's dpkg, or an installed vdelta, would be disturbed.
# Slow for the suite's standards (a whole build: about 25 s here), so it is
# registered in the plain build only.
source "$(dirname "$0")/lib.sh"
need dpkg-buildpackage dh dpkg-deb readelf
[ -f "$SOURCE_DIR/debian/control" ] || die "no debian/ in $SOURCE_DIR"

src=$T/vdelta
mkdir -p "$src"
# the tree as committed plus what is not ignored; no build folders, no .git
if git -C "$SOURCE_DIR" rev-parse --show-toplevel >/dev/null 2>&1; then
	(cd "$SOURCE_DIR" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) |
		tar -xf - -C "$src"
else
	tar -C "$SOURCE_DIR" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -xf - -C "$src"
fi
[ ! -e "$src/.git" ] || die "the copy has .git"

version=$(cd "$src" && dpkg-parsechangelog -S Version)
meson_version=$(sed -n "s/^  version : '\(.*\)',$/\1/p" "$src/meson.build")
[ "$version" = "$meson_version" ] ||
	fail "debian/changelog says $version, meson.build $meson_version"
arch=$(dpkg --print-architecture)
deb=$T/vdelta_${version}_$arch.deb

test_build()
{
	if ! (cd "$src" && run dpkg-buildpackage -us -uc -b); then
		fail "dpkg-buildpackage -us -uc -b"
		return 1
	fi
	[ -f "$deb" ] || { fail "no $(basename "$deb"): $(ls "$T")"; return 1; }
	pass "dpkg-buildpackage -us -uc -b: $(basename "$deb")"
}

test_depends()
{
	local depends lib path pkg n=0 bin
	depends=$(dpkg-deb -f "$deb" Depends)
	dpkg-deb -x "$deb" "$T/x"
	bin=$T/x/usr/bin/vdelta
	while read -r lib; do
		path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
		pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
		[ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
		[ -n "$pkg" ] || { fail "$lib ($path): no package owns it"; continue; }
		grep -qE "(^|, )$pkg( |,|$)" <<<"$depends" || fail "Depends lacks $pkg ($lib): $depends"
		n=$((n + 1))
	done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
	[ "$n" -ge 3 ] || fail "only $n libraries linked"
	grep -qE '(^|, )fuse3( |,|$)' <<<"$depends" || fail "Depends lacks fuse3 (fusermount3, mount.fuse3)"
	pass "Depends ($depends) names the package of each of the $n libraries linked"
	# librados and librbd are loaded by `vdelta rbd` (dlopen): recommended;
	# the package that holds them is the oracle
	pkg=$(dpkg -S "$(readlink -f "$(ldconfig -p | awk '$1 == "librbd.so.1" {print $NF; exit}')")" |
		head -1 | cut -d: -f1)
	grep -qE "(^|, )$pkg( |,|$)" <<<"$(dpkg-deb -f "$deb" Recommends)" &&
		pass "Recommends names $pkg, which vdelta rbd loads" ||
		fail "Recommends lacks $pkg (librbd.so.1): $(dpkg-deb -f "$deb" Recommends)"
}

test_lintian()
{
	command -v lintian >/dev/null || { fail "lintian not installed (scripts/setup.sh)"; return; }
	if ! run lintian --fail-on error "$T/vdelta_${version}_$arch.changes"; then
		fail "lintian: $(grep -E '^E:' "$T/last.out" | head -5)"
		return
	fi
	pass "lintian: no error ($(grep -cE '^[WI]:' "$T/last.out") warnings and notes)"
}

# The files of the package (not its folders), from the .deb itself.
deb_files()
{
	dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {sub(/^\./, "", $6); print $6}'
}

# check_installed ROOT BIN: the installed binary runs, each page renders,
# man finds vdelta(1) by name under ROOT.
check_installed()
{
	local root=$1 bin=$2 f warn n=0
	run "$bin" --version && grep -qx "vdelta $version" "$T/last.out" ||
		fail "$bin --version: $(cat "$T/last.out") (a tree without git names no commit)"
	for f in "$root"/usr/share/man/man*/*vdelta*; do
		warn=$(MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null)
		[ -z "$warn" ] || fail "$f: $warn"
		n=$((n + 1))
	done
	[ "$n" -ge 21 ] || fail "$n pages installed"
	MANPATH=$root/usr/share/man man vdelta 2>&1 | grep -q "^NAME" || fail "man vdelta under $root"
}

test_private_root()
{
	local r=$T/r f left
	mkdir -p "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/info"
	: >"$r/var/lib/dpkg/status"
	local dpkg=(dpkg --instdir="$r" --admindir="$r/var/lib/dpkg" --force-depends
		    --force-not-root --force-script-chrootless --log=/dev/null)
	run "${dpkg[@]}" -i "$deb" || { fail "dpkg --instdir -i"; return; }
	for f in $(deb_files); do
		[ -e "$r$f" ] || [ -L "$r$f" ] || fail "not installed: $f"
	done
	check_installed "$r" "$r/usr/bin/vdelta"
	run "${dpkg[@]}" -r vdelta || fail "dpkg -r"
	run "${dpkg[@]}" -P vdelta || fail "dpkg -P"
	left=$(find "$r" \( -type f -o -type l \) ! -path "$r/var/lib/dpkg/*")
	[ -z "$left" ] || fail "left after dpkg -r/-P: $left"
	pass "private root: installed, runs, pages render, man finds it; removed, nothing left"
}

test_system()
{
	local f left=
	if [ "${CI:-}" != true ] && [ "${VDELTA_PACKAGE_INSTALL:-0}" != 1 ]; then
		echo "system install not tried (CI=true or VDELTA_PACKAGE_INSTALL=1 does)"
		return
	fi
	[ "$(id -u)" = 0 ] || { echo "system install needs root: not tried"; return; }
	if dpkg-query -W -f='${Status}' vdelta 2>/dev/null | grep -q installed ||
		[ -e /usr/bin/vdelta ]; then
		echo "vdelta is installed on this system already: system install not tried"
		return
	fi
	run dpkg -i "$deb" || { fail "dpkg -i: $(tail -3 "$T/last.err")"; return; }
	check_installed / /usr/bin/vdelta
	run vdelta --version || fail "vdelta on PATH"
	man -w vdelta >/dev/null 2>&1 || fail "man -w vdelta"
	run dpkg -r vdelta || fail "dpkg -r"
	for f in $(deb_files); do
		[ ! -e "$f" ] && [ ! -L "$f" ] || left="$left $f"
	done
	[ -z "$left" ] || fail "left after dpkg -r:$left"
	run dpkg -P vdelta || fail "dpkg -P"
	dpkg-query -W -f='${Status}' vdelta 2>/dev/null | grep -q installed && fail "still installed"
	pass "dpkg -i (dependencies met), vdelta and man vdelta work, dpkg -r leaves no file"
}

if test_build; then
	test_depends
	test_lintian
	test_private_root
	test_system
fi
finish
