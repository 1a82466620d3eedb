#!/bin/sh
# version.sh SRC — the commit SRC was built from, for `vdelta --version`
# (meson's vcs_tag in tools/meson.build): the abbreviated hash, "-dirty"
# when tracked files differ from it.  Prints nothing (and vdelta names no
# commit) when SRC is not the top of a git work tree: a tarball, a tree
# copied into another project's repository, no git installed.
cd "$1" 2>/dev/null || exit 0
top=$(git rev-parse --show-toplevel 2>/dev/null) || exit 0
[ "$top" -ef . ] || exit 0
git describe --always --dirty --abbrev=12 --exclude='*' 2>/dev/null || true
