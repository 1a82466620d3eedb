#!/bin/sh
# install-link.sh DIR NAME TARGET — at `meson install`: the symlink
# DIR/NAME -> TARGET under $DESTDIR.  meson's install_symlink refuses a
# target that is not installed with the project (mount.fuse3 is fuse3's).
set -eu
dir="${DESTDIR:-}$1"
mkdir -p "$dir"
ln -sfn "$3" "$dir/$2"
echo "Installing symlink $1/$2 -> $3"
