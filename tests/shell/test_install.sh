#!/usr/bin/env bash
# test_install.sh — `meson install` into a DESTDIR, and every installed
# piece run from there: the binary (its version and each command's help),
# each man page rendered with no warning and found by man(1) by name, the
# bash completion found by bash-completion's loader and asked for
# `vdelta mo` and `vdelta mount --` in a non-interactive bash, the zsh
# completion loaded by compinit, the systemd unit verified by
# systemd-analyze, the mount.fuse.vdelta link to mount.fuse3.
source "$(dirname "$0")/lib.sh"
need_vdelta
need meson groff
D=$T/root

run meson install -C "$BUILD_DIR" --no-rebuild --destdir "$D" ||
	die "meson install --destdir failed"
prefix=$(meson introspect "$BUILD_DIR" --buildoptions |
	"$PYTHON" -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
P=$D$prefix
bin=$P/bin/vdelta

test_binary()
{
	local c n=0
	[ -x "$bin" ] || { fail "no $bin"; return; }
	run "$bin" --version && grep -Eq '^vdelta [0-9]+\.[0-9]+\.[0-9]+' "$T/last.out" ||
		fail "installed --version"
	cmp -s "$bin" "$VDELTA" || fail "installed binary differs from the build's"
	run "$bin" help || fail "installed help"
	for c in $(awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}' "$T/last.out"); do
		run "$bin" help "$c" && grep -q "^Usage: vdelta $c" "$T/last.out" ||
			fail "installed help $c"
		n=$((n + 1))
	done
	[ "$n" -ge 18 ] || fail "installed help lists $n commands"
	pass "installed binary: --version, help of $n commands"
}

test_pages()
{
	local f n=0 warn
	while IFS= read -r f; do
		warn=$(groff -man -ww -z "$f" 2>&1)
		[ -z "$warn" ] || fail "$f: groff: $warn"
		n=$((n + 1))
	done < <(find "$D" -path '*/man/man[0-9]/*' -type f)
	[ "$n" -ge 21 ] || fail "only $n man pages installed"
	if command -v man >/dev/null; then
		for f in vdelta vdelta-mount mount.fuse.vdelta vdelta-mount@.service; do
			MANPATH=$P/share/man MANWIDTH=80 man "$f" 2>"$T/man.err" | grep -q "^NAME" ||
				fail "man $f (MANPATH=$P/share/man): $(cat "$T/man.err")"
		done
	fi
	pass "$n man pages installed, rendered with no warning, found by name"
}

# complete WORD... : what the installed completion offers for the last word.
complete_words()
{
	bash --norc --noprofile -c '
		source "$1"; shift
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		_vdelta
		printf "%s\n" "${COMPREPLY[@]}"' complete "$bashcomp" "$@"
}

test_bash_completion()
{
	local got want
	bashcomp=$(find "$D" -path '*/bash-completion/completions/vdelta' | head -1)
	[ -n "$bashcomp" ] || { fail "no bash completion installed"; return; }
	got=$(complete_words vdelta mo)
	[ "$got" = mount ] || fail "vdelta mo<TAB>: '$got'"
	# the long options of the installed binary's own help, as an oracle
	want=$("$bin" help mount | grep -E '^  --?[a-z]' | grep -oE -- '--[a-z][a-z-]*' | sort -u)
	got=$(complete_words vdelta mount -- | sort -u)
	[ "$got" = "$(printf '%s\n' $want --help | sort -u)" ] ||
		fail "vdelta mount --<TAB>: $(tr '\n' ' ' <<<"$got") (help: $(tr '\n' ' ' <<<"$want"))"
	got=$(complete_words vdelta mount --cache '')
	[ "$got" = "$(printf 'none\nkernel')" ] || fail "vdelta mount --cache <TAB>: '$got'"
	mkdir -p "$T/c/sub" && : >"$T/c/a.vmdk" && : >"$T/c/b.raw"
	got=$(cd "$T/c" && complete_words vdelta info '' | sort | tr '\n' ' ')
	[ "$got" = "a.vmdk sub " ] || fail "vdelta info <TAB> (a .vmdk, a folder): '$got'"
	got=$(cd "$T/c" && complete_words vdelta tree '' | tr '\n' ' ')
	[ "$got" = "sub " ] || fail "vdelta tree <TAB> (folders): '$got'"
	pass "bash completion: vdelta mo, vdelta mount --, --cache, disks, folders"
	# bash-completion's loader finds it where it was installed
	local loader=/usr/share/bash-completion/bash_completion
	if [ -f "$loader" ]; then
		got=$(XDG_DATA_DIRS=$P/share bash --norc --noprofile -c \
			"source $loader; __load_completion vdelta && complete -p vdelta" 2>&1)
		grep -q -- "-F _vdelta vdelta" <<<"$got" ||
			fail "bash-completion does not load it from $P/share: $got"
		pass "bash-completion's loader finds the installed completion"
	fi
}

test_zsh_completion()
{
	local f
	f=$(find "$D" -name _vdelta | head -1)
	[ -n "$f" ] || { fail "no zsh completion installed"; return; }
	command -v zsh >/dev/null || { echo "zsh not installed: the zsh completion is not loaded"; return; }
	zsh -n "$f" || fail "zsh -n $f"
	zsh -f -c "fpath=($(dirname "$f") \$fpath); autoload -Uz compinit; compinit -u -d $T/zcd;
		[[ \${_comps[vdelta]} == _vdelta ]]" || fail "compinit does not take _vdelta"
	pass "zsh completion parses and compinit binds it to vdelta"
}

test_unit()
{
	local u=$D$(meson introspect "$BUILD_DIR" --installed |
		"$PYTHON" -c 'import json,sys; print(next(v for v in json.load(sys.stdin).values() if v.endswith("vdelta-mount@.service")))')
	[ -f "$u" ] || { fail "no vdelta-mount@.service installed"; return; }
	grep -q "^ExecStart=$prefix/bin/vdelta mount --foreground " "$u" ||
		fail "ExecStart does not run the installed binary: $(grep ExecStart "$u")"
	grep -q '^Type=notify' "$u" || fail "not Type=notify"
	if command -v systemd-analyze >/dev/null; then
		# ExecStart must exist: the DESTDIR's binary; Documentation=: our pages
		sed "s|$prefix/bin/vdelta|$bin|" "$u" >"$T/vdelta-mount@.service"
		MANPATH=$P/share/man systemd-analyze verify "$T/vdelta-mount@.service" \
			>"$T/verify.out" 2>&1 || fail "systemd-analyze verify: $(cat "$T/verify.out")"
		[ ! -s "$T/verify.out" ] || fail "systemd-analyze verify says: $(cat "$T/verify.out")"
		pass "systemd-analyze verify vdelta-mount@.service: clean"
	fi
}

test_mount_helper()
{
	local l
	l=$(find "$D" -name mount.fuse.vdelta | head -1)
	[ -L "$l" ] || { fail "no mount.fuse.vdelta link"; return; }
	[ "$(readlink "$l")" = mount.fuse3 ] || fail "mount.fuse.vdelta -> $(readlink "$l")"
	local dir=${l#"$D"}
	dir=${dir%/*}
	[ -x "$dir/mount.fuse3" ] || fail "no mount.fuse3 beside it in $dir"
	pass "mount.fuse.vdelta -> mount.fuse3 in $dir"
}

test_binary
test_pages
test_bash_completion
test_zsh_completion
test_unit
test_mount_helper
finish
