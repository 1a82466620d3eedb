#!/bin/sh
# version.sh SRC — the commit SRC was built from, for `vdelta --version`
# (meson's vcs_tag in tools/meson.build): the abbreviated hash, "-dirty"
# when tracked files differ from it.  Fails (and the build says no commit)
# when SRC is not the top of a git work tree: a tarball, or a tree copied
# into another project's repository.
cd "$1" 2>/dev/null || exit 1
top=$(git rev-parse --show-toplevel 2>/dev/null) || exit 1
[ "$top" -ef . ] || exit 1
exec git describe --always --dirty --abbrev=12 --exclude='*' 2>/dev/null
