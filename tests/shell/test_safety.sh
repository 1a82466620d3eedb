#!/usr/bin/env bash
# test_safety.sh — what a group command may change (tests layer): every
# layer an operation removes, moves or writes is locked first, so a layer a
# running VM reads (qemu-storage-daemon, qemu-io, a vdelta mount) is never
# removed or changed; children vdelta never recorded are unknown until
# `vdelta adopt`; clones in sibling VM folders are found; records are input
# (a refusal leaves none, a planted one is never acted on); a layer is
# known by inode (copied descriptors, hard links); writers keep to the
# disk's folder; compaction of disks holding zero grains.
#
# Oracles: sha256sum of every file and the folder listings before and
# after each refusal, qemu-img convert + xxhsum -H2 of every disk (with -U:
# the holders keep their locks), qemu-img compare and check, the holders'
# own view (qemu-io reads through the running daemon's file).
set -u
t_name=test_safety
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io qemu-storage-daemon xxhsum sha256sum chattr
need_vdelta
export VDELTA_DATASTORES= # the machine's configured roots are not this test's
SIZE=64M

# qd DISK: xxhsum -H2 of qemu's raw export (force-share: holders keep locks)
qd()
{
	local sum=
	rm -f "$T/qd.raw"
	qemu-img convert -U -O raw "$1" "$T/qd.raw" 2>/dev/null &&
		sum=$(xxhsum -H2 "$T/qd.raw" | cut -d' ' -f1)
	rm -f "$T/qd.raw"
	echo "${sum:-unreadable-$RANDOM$RANDOM}" # two failures never compare equal
}

# snap_all: sha256 of every file under $T/ds and $T/other, and their listing
snap_all()
{
	(cd "$T" && find ds other -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum
	 find ds other 2>/dev/null | sort) >"$T/snap"
}

same_all()
{
	(cd "$T" && find ds other -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum
	 find ds other 2>/dev/null | sort) | cmp -s - "$T/snap"
}

# refused WHAT WANT CMD...: exit 1, every file and listing unchanged, and
# the message holds WANT (a regular expression)
refused()
{
	local what=$1 want=$2
	shift 2
	snap_all
	run "$VDELTA" "$@"
	local rc=$?
	if [ $rc -eq 1 ] && same_all && grep -Eq "$want" "$T/last.err"; then
		pass "$what: refused, nothing changed, message names $want"
	else
		fail "$what: exit $rc, changed: $(same_all && echo no || echo yes), message: $(head -c 400 "$T/last.err")"
	fi
}

w()
{
	qemu-io -f vmdk "$1" "${@:2}" >/dev/null
}

# ---- holders --------------------------------------------------------------------
# nbdkit (not built with sanitizers) loading a plugin that is: the runtimes
# preloaded into it alone (as lib_nbd.sh does)
NBD_OK=false
if command -v nbdkit >/dev/null && [ -f "$BUILD_DIR/nbd/nbdkit-vdelta-plugin.so" ]; then
	NBD_OK=true
	pre=
	case ${SANITIZE:-none} in *address*) pre=$(gcc -print-file-name=libasan.so) ;; esac
	case ${SANITIZE:-none} in *undefined*) pre="$pre $(gcc -print-file-name=libubsan.so)" ;; esac
	mkdir -p "$T/bin"
	{
		echo '#!/bin/sh'
		[ -z "$pre" ] || echo "LD_PRELOAD='${pre# }'; export LD_PRELOAD"
		echo "exec $(command -v nbdkit) \"\$@\""
	} >"$T/bin/nbdkit"
	chmod +x "$T/bin/nbdkit"
	PATH=$T/bin:$PATH
fi
HOLDER_PID=
HOLDER_MNT=
HOLDER_NBD=
hold_stop()
{
	if [ -n "$HOLDER_NBD" ]; then
		"$VDELTA" serve --stop --pid-file "$T/nbd.pid" >/dev/null 2>&1
		HOLDER_NBD=
	fi
	if [ -n "$HOLDER_MNT" ]; then
		"$VDELTA" umount "$HOLDER_MNT" >/dev/null 2>&1 || fusermount3 -u -z "$HOLDER_MNT"
		HOLDER_MNT=
	fi
	if [ -n "$HOLDER_PID" ]; then
		kill "$HOLDER_PID" 2>/dev/null
		wait "$HOLDER_PID" 2>/dev/null
		HOLDER_PID=
	fi
	[ -n "${FIFO_PID:-}" ] && { kill "$FIFO_PID" 2>/dev/null; wait "$FIFO_PID" 2>/dev/null; FIFO_PID=; }
}
trap 'hold_stop; t_cleanup' EXIT

# wait until process $1 holds an OFD lock (its image is open and locked)
wait_locked()
{
	local i
	for i in $(seq 100); do
		grep -qs '^lock:' /proc/"$1"/fdinfo/* && return 0
		sleep 0.05
	done
	return 1
}

# hold KIND DISK: a running user of DISK's chain, named as the issue names them
hold()
{
	local kind=$1 disk=$2 ro=on
	case $kind in
	qsd-rw) ro=off ;&
	qsd-ro)
		qemu-storage-daemon \
			--blockdev driver=file,node-name=f,filename="$disk",read-only=$ro \
			--blockdev driver=vmdk,node-name=n,file=f,read-only=$ro >/dev/null 2>&1 &
		HOLDER_PID=$! ;;
	qemu-io)
		rm -f "$T/fifo" && mkfifo "$T/fifo"
		sleep 600 >"$T/fifo" &
		FIFO_PID=$!
		qemu-io -f vmdk "$disk" <"$T/fifo" >/dev/null 2>&1 &
		HOLDER_PID=$! ;;
	nbd-ro | nbd-rw)
		$NBD_OK || return 1
		HOLDER_NBD=1
		"$VDELTA" serve -U "$T/nbd.sock" --pid-file "$T/nbd.pid" \
			$([ $kind = nbd-ro ] && echo --ro) "$disk=far" >/dev/null || return 1
		HOLDER_PID_MNT=$(cat "$T/nbd.pid") ;;
	mount-ro | mount-rw)
		[ -c /dev/fuse ] || return 1
		HOLDER_MNT=$T/mnt && mkdir -p "$HOLDER_MNT"
		"$VDELTA" mount $([ $kind = mount-ro ] && echo --ro) "$disk=far" "$HOLDER_MNT" >/dev/null ||
			return 1
		HOLDER_PID=$(sed -n 's/^mount\t.*pid=\([0-9]*\).*/\1/p' "$HOLDER_MNT/.vdelta-status")
		HOLDER_PID_MNT=$HOLDER_PID
		HOLDER_PID= ;;
	esac
	wait_locked "${HOLDER_PID:-$HOLDER_PID_MNT}"
}

holder_name()
{
	case $1 in
	qsd-*) echo qemu-storage ;; # comm is truncated to 15 characters
	qemu-io) echo qemu-io ;;
	mount-*) echo vdelta ;;
	nbd-*) echo nbdkit ;;
	esac
}

# ---- groups ---------------------------------------------------------------------

# qemu_group: base <- mid <- a in ds/A, far over mid (absolute hint) in
# other/F, outside the datastore: made by qemu-img, no records
qemu_group()
{
	rm -rf "$T/ds" "$T/other" "$T/dst" && mkdir -p "$T/ds/A" "$T/other/F" "$T/dst" || die mkdir
	cd "$T/ds/A" || die cd
	qemu-img create -q -f vmdk base.vmdk $SIZE
	w base.vmdk -c 'write -P 0x11 0 8M'
	qemu-img create -q -f vmdk -b base.vmdk -F vmdk mid.vmdk
	w mid.vmdk -c 'write -P 0x22 4M 4M'
	qemu-img create -q -f vmdk -b mid.vmdk -F vmdk a.vmdk
	w a.vmdk -c 'write -P 0x33 1M 1M'
	qemu-img create -q -f vmdk -b "$T/ds/A/mid.vmdk" -F vmdk "$T/other/F/far.vmdk"
	w "$T/other/F/far.vmdk" -c 'write -P 0x44 9M 1M'
	FAR=$(qd "$T/other/F/far.vmdk")
	cd "$T" || die cd
}

far_same()
{
	local got
	got=$(qd "$T/other/F/far.vmdk")
	[ "$got" = "$FAR" ] && pass "$1: the far clone reads as before (qemu's export)" ||
		fail "$1: the far clone changed: $got, was $FAR"
}

# ---- 1. a running VM on the far clone: every layer an operation touches is locked ----
qemu_group
# vdelta knows nothing of other/: once the datastore is adopted, mid and base
# look like a's alone, so only the locks stand between them and removal
run "$VDELTA" adopt "$T/ds" || fail "adopt ds"
printf 'junk%.0s' $(seq 4000) >>"$T/ds/A/mid.vmdk" # a leak for check --repair
A=$T/ds/A/a.vmdk
for kind in qsd-ro qsd-rw qemu-io mount-ro mount-rw nbd-ro nbd-rw; do
	if ! hold $kind "$T/other/F/far.vmdk"; then
		hold_stop
		[ "${kind%-*}" = mount ] && [ ! -c /dev/fuse ] && { echo "no FUSE: $kind skipped"; continue; }
		[ "${kind%-*}" = nbd ] && ! $NBD_OK && { echo "no nbdkit: $kind skipped"; continue; }
		fail "$kind: holder did not start"
		continue
	fi
	who=$(holder_name $kind)
	refused "$kind: delete a" "mid.vmdk.*$who|$who.*mid.vmdk" delete "$A"
	refused "$kind: commit a" "mid.vmdk.*$who" commit "$A"
	refused "$kind: consolidate a" "mid.vmdk.*$who" consolidate "$A"
	refused "$kind: relocate no-share a" "(mid|base).vmdk.*$who" relocate --mode no-share "$A" "$T/dst"
	refused "$kind: check --repair mid" "mid.vmdk.*$who" check --repair "$T/ds/A/mid.vmdk"
	snap_all
	run "$VDELTA" promote --unlink "$A"
	[ $? -le 1 ] && same_all && pass "$kind: promote --unlink a changes nothing of a held layer" ||
		fail "$kind: promote --unlink a"
	hold_stop
	far_same "$kind"
done

# ---- 2. no holder: children never recorded are unknown ----
qemu_group
refused "unknown: commit a into mid" "mid.vmdk: children unknown.*vdelta adopt" commit "$A"
refused "unknown: consolidate a" "children unknown" consolidate "$A"
refused "unknown: commit mid" "children unknown" commit "$T/ds/A/mid.vmdk"
expect_ok "unknown: delete --dry-run a" "$VDELTA" delete --dry-run "$A"
grep -q "keep .*mid.vmdk  (children unknown)" "$T/last.out" && ! grep -q "remove .*mid.vmdk" "$T/last.out" &&
	pass "unknown: delete would keep mid (children unknown)" ||
	fail "unknown: delete plan: $(cat "$T/last.out")"
grep -q "scanned:.*$T/ds/A" "$T/last.out" && pass "unknown: the plan lists the folders scanned" ||
	fail "unknown: plan lists no folders: $(cat "$T/last.out")"
expect_ok "unknown: relocate no-share --dry-run" "$VDELTA" relocate --mode no-share --dry-run --json "$A" "$T/dst"
moved=$("$PYTHON" -c 'import json,sys; print(" ".join(s["path"] for s in json.load(open(sys.argv[1]))["steps"] if s["action"] == "remove"))' "$T/last.out")
case " $moved " in
*mid.vmdk* | *base.vmdk*) fail "unknown: relocate would move a layer of unknown children: $moved" ;;
*a.vmdk*) pass "unknown: relocate moves a, copies mid and base (never moves them)" ;;
*) fail "unknown: relocate plan: $(cat "$T/last.out")" ;;
esac
expect_ok "unknown: tree shows it" "$VDELTA" tree "$T/ds"
grep -q "children unknown" "$T/last.out" && pass "unknown: tree marks children unknown" ||
	fail "unknown: tree: $(cat "$T/last.out")"
# a record vdelta writes for mid later (a clone from a's current state hangs
# from mid) lists that clone only: a and far stay unknown
expect_ok "unknown: clone --from-current a" "$VDELTA" clone --from-current "$A" "$T/ds/A/c.vmdk"
grep -q "c.vmdk" "$T/ds/A/mid.vmdk.vdelta-children" 2>/dev/null &&
	pass "unknown: mid recorded the clone" || fail "unknown: mid has no record of the clone"
grep -qx "unknown=1" "$T/ds/A/mid.vmdk.vdelta-children" 2>/dev/null &&
	pass "unknown: mid's new record says it had children never recorded" ||
	fail "unknown: mid's record: $(cat "$T/ds/A/mid.vmdk.vdelta-children")"
expect_ok "unknown: delete a (qemu's clone)" "$VDELTA" delete "$A"
refused "unknown: commit c into mid once a is gone" "children unknown" commit "$T/ds/A/c.vmdk"
expect_ok "unknown: delete --orphans --dry-run c" "$VDELTA" delete --orphans --dry-run "$T/ds/A/c.vmdk"
! grep -q "remove .*mid.vmdk" "$T/last.out" && pass "unknown: delete --orphans of the clone keeps mid" ||
	fail "unknown: delete --orphans plan: $(cat "$T/last.out")"
far_same "unknown: after the clone and the deletes"
qemu_group
# the places named and recorded: normal rules, the far clone protects mid
export VDELTA_DATASTORES=$T/other
expect_ok "named: adopt" "$VDELTA" adopt "$T/ds"
grep -q "scanned:.*$T/other" "$T/last.out" && pass "named: adopt scanned the configured root" ||
	fail "named: adopt: $(cat "$T/last.out")"
refused "named: commit a into mid (far shares it)" "shared by 2 disks.*far.vmdk" commit "$A"
expect_ok "named: delete a" "$VDELTA" delete "$A"
[ ! -e "$A" ] && [ -e "$T/ds/A/mid.vmdk" ] && pass "named: delete removed a, kept mid" ||
	fail "named: delete: $(ls "$T/ds/A")"
far_same "named: delete"
export VDELTA_DATASTORES=

# ---- 3. vdelta's group, a qemu-made clone in a sibling VM folder ----
vdelta_group()
{
	rm -rf "$T/ds" "$T/other" "$T/elsewhere" "$T/dst" && mkdir -p "$T/ds/D" "$T/ds/S" "$T/dst" ||
		die mkdir
	cd "$T/ds/D" || die cd
	"$VDELTA" create -s $SIZE base.vmdk >/dev/null
	w base.vmdk -c 'write -P 0x11 0 8M'
	"$VDELTA" snapshot base.vmdk >/dev/null
	w base-000001.vmdk -c 'write -P 0x22 4M 4M'
	"$VDELTA" snapshot base-000001.vmdk >/dev/null
	w base-000002.vmdk -c 'write -P 0x33 1M 1M'
	cd "$T" || die cd
}

# sibling PLACEMENT: the far clone of base-000001 (vdelta never hears of it)
sibling()
{
	local dir=$T/ds/S hint=../D/base-000001.vmdk
	case $1 in
	absolute) hint=$T/ds/D/base-000001.vmdk ;;
	hardlink) ln "$T/ds/D/base-000001.vmdk" "$T/ds/D/link.vmdk"; hint=../D/link.vmdk ;;
	subfolder) dir=$T/ds/S/sub; mkdir -p "$dir"; hint=../../D/base-000001.vmdk ;;
	symlinked) mkdir -p "$T/elsewhere"; rmdir "$dir"; ln -s "$T/elsewhere" "$dir"
		hint=$T/ds/D/base-000001.vmdk ;;
	esac
	(cd "$dir" && qemu-img create -q -f vmdk -b "$hint" -F vmdk far.vmdk) || die "far"
	FARP=$dir/far.vmdk
	w "$FARP" -c 'write -P 0x55 9M 1M'
	FAR=$(qd "$FARP")
}

TOP=$T/ds/D/base-000002.vmdk
for placement in relative absolute hardlink subfolder symlinked; do
	for op in commit consolidate delete promote relocate; do
		vdelta_group
		sibling $placement
		case $op in
		commit) args=(commit "$TOP") ;;
		consolidate) args=(consolidate "$TOP") ;;
		delete) args=(delete --orphans "$TOP") ;;
		promote) args=(promote "$TOP") ;;
		relocate) args=(relocate --mode no-share "$TOP" "$T/dst") ;;
		esac
		run "$VDELTA" "${args[@]}"
		got=$(qd "$FARP")
		[ "$got" = "$FAR" ] && qemu-img check -q "$FARP" 2>/dev/null &&
			pass "$placement: $op of the other disk: the sibling clone reads as before" ||
			fail "$placement: $op broke the sibling clone ($got, was $FAR): $(cat "$T/last.err")"
	done
done

# an orphan with another name (a hard link outside every datastore) stays
vdelta_group
mkdir -p "$T/away" && ln "$T/ds/D/base-000001.vmdk" "$T/away/keep.vmdk" || die "link"
KEEP=$(qd "$T/ds/D/base-000001.vmdk") # the linked name's parent hint leads nowhere
expect_ok "alias: delete --orphans" "$VDELTA" delete --orphans "$TOP"
[ ! -e "$TOP" ] && [ "$(qd "$T/ds/D/base-000001.vmdk")" = "$KEEP" ] &&
	[ "$(stat -c %i "$T/away/keep.vmdk")" = "$(stat -c %i "$T/ds/D/base-000001.vmdk")" ] &&
	pass "alias: delete --orphans kept the hard-linked layer" ||
	fail "alias: delete --orphans: $(ls "$T/ds/D"), $(cat "$T/last.out")"
rm -rf "$T/away"

# ---- 4. check --repair of disks holding zero grains ----
rm -rf "$T/ds" && mkdir -p "$T/ds/Z" && cd "$T/ds/Z" || die mkdir
qemu-img create -q -f vmdk base.vmdk $SIZE
w base.vmdk -c 'write -P 0x11 0 16M' -c 'write -z 0 1M' -c 'write -z 8M 1M' -c 'write -z 63M 1M'
qemu-img create -q -f vmdk -b base.vmdk -F vmdk d.vmdk
w d.vmdk -c 'write -z 0 2M' -c 'write -z 10M 1M' -c 'write -P 0x22 20M 1M' -c 'write -z 62M 2M'
"$VDELTA" adopt . >/dev/null
for f in base.vmdk d.vmdk; do
	qemu-img convert -O raw "$f" "$T/$f.raw"
	head -c 131072 /dev/urandom >>"$f" # leaked bytes past the last grain
	before=$(stat -c %s "$f")
	expect_ok "zero grains: check --repair $f" "$VDELTA" check --repair "$f"
	qemu-img compare -q "$T/$f.raw" "$f" && pass "zero grains: $f reads as before" ||
		fail "zero grains: $f changed"
	[ "$(stat -c %s "$f")" -le "$before" ] && pass "zero grains: $f not larger" ||
		fail "zero grains: $f grew"
	qemu-img check -q "$f" && pass "zero grains: qemu-img check $f" || fail "zero grains: check $f"
	"$VDELTA" check "$f" | grep -q " 0 bytes leaked" && pass "zero grains: $f has no leak left" ||
		fail "zero grains: $f: $("$VDELTA" check "$f")"
done
qemu-img compare -q "$T/d.vmdk.raw" d.vmdk && pass "zero grains: d still masks base's data" ||
	fail "zero grains: d uncovers base"
cd "$T" || die cd

# ---- 5. a refusal leaves no intent record; no reader carries one out ----
vdelta_group
if hold mount-ro "$TOP"; then
	refused "refusal: commit of a mounted top" "by vdelta \(pid" commit "$TOP"
	[ -z "$(find "$T/ds" -name '*.vdelta-intent*')" ] && pass "refusal: no intent record left" ||
		fail "refusal: a record was left"
	hold_stop
fi
hold qemu-io "$TOP" || fail "qemu-io holder"
refused "refusal: commit of a top qemu-io holds" "by qemu-io \(pid" commit "$TOP"
refused "refusal: consolidate of a top qemu-io holds" "by qemu-io \(pid" consolidate "$TOP"
hold_stop
[ -z "$(find "$T/ds" -name '*.vdelta-intent*')" ] && pass "refusal: no record after qemu's refusals" ||
	fail "refusal: record left"
chattr +i "$T/ds/D/base-000001.vmdk"
refused "immutable: commit into an immutable parent" "base-000001.vmdk" commit "$TOP"
chattr -i "$T/ds/D/base-000001.vmdk"
snap_all
run "$VDELTA" info "$T/ds/D/base.vmdk"
same_all && pass "immutable: a later info changes nothing" || fail "immutable: info changed files"
# cycles: a delta naming itself, two deltas naming each other
mkdir -p "$T/ds/C" && cd "$T/ds/C" || die cd
qemu-img create -q -f vmdk -b "$T/ds/D/base.vmdk" -F vmdk self.vmdk
sed -i 's|parentFileNameHint=".*"|parentFileNameHint="self.vmdk"|' self.vmdk 2>/dev/null
qemu-img create -q -f vmdk x.vmdk $SIZE
qemu-img create -q -f vmdk -b "$T/ds/D/base.vmdk" -F vmdk c1.vmdk
qemu-img create -q -f vmdk -b c1.vmdk -F vmdk c2.vmdk
sed -i 's|parentFileNameHint=".*"|parentFileNameHint="c2.vmdk"|' c1.vmdk
cd "$T" || die cd
refused "cycle: commit of a delta naming itself" "self.vmdk" commit "$T/ds/C/self.vmdk"
refused "cycle: commit of one of two deltas naming each other" "c[12].vmdk" commit "$T/ds/C/c2.vmdk"
refused "cycle: delete of one of two deltas naming each other" "c[12].vmdk" delete "$T/ds/C/c2.vmdk"
[ -z "$(find "$T/ds" -name '*.vdelta-intent*')" ] && pass "cycle: no record" || fail "cycle: record left"
expect_ok "cycle: a later command in the folder" "$VDELTA" info "$T/ds/C/x.vmdk"

# ---- 6. planted records are never acted on ----
echo "precious" >"$T/victim.txt"
mkdir -p "$T/ds/P/sub" && echo "precious" >"$T/ds/P/victim2.txt"
ln -sf "$T/victim.txt" "$T/ds/P/link.txt"
"$VDELTA" create -s $SIZE "$T/ds/P/disk.vmdk" >/dev/null
plant()
{
	printf '%s\n' "op=delete" "target=$T/ds/P/disk.vmdk" "$@" >"$T/ds/P/disk.vmdk.vdelta-intent"
}
for file in "$T/victim.txt" "$T/ds/P/../../victim.txt" "$T/ds/P/link.txt" "$T/ds/P/victim2.txt"; do
	plant "file=$file"
	for cmd in info digest check; do
		run "$VDELTA" $cmd "$T/ds/P/disk.vmdk"
	done
	run "$VDELTA" recover "$T/ds/P/disk.vmdk"
	[ -f "$T/victim.txt" ] && [ -f "$T/ds/P/victim2.txt" ] && [ -L "$T/ds/P/link.txt" ] &&
		[ -e "$T/ds/P/disk.vmdk" ] &&
		pass "planted file=$file: info, digest, check and recover remove nothing" ||
		fail "planted file=$file: a file went"
done
# a record of the release before versions (no version, ids or checksum)
# beside disk.vmdk naming another group's disk in the same folder: its top
# as the child and its files, or its base by a name of disk's own
(cd "$T/ds/P" && qemu-img create -q -f vmdk disk-2.vmdk $SIZE &&
	qemu-img create -q -f vmdk -b disk-2.vmdk -F vmdk b-top.vmdk) || die "other group"
w "$T/ds/P/disk-2.vmdk" -c 'write -P 0x2b 0 1M'
w "$T/ds/P/b-top.vmdk" -c 'write -P 0x3c 2M 1M'
other_sum()
{
	qemu-img convert -U -O raw "$T/ds/P/b-top.vmdk" "$T/other.raw" && sha256sum <"$T/other.raw"
	sha256sum "$T/ds/P/disk-2.vmdk" "$T/ds/P/b-top.vmdk"
	rm -f "$T/other.raw"
}
other_before=$(other_sum)
for lines in "child=$T/ds/P/b-top.vmdk file=$T/ds/P/b-top.vmdk file=$T/ds/P/disk-2.vmdk" \
	"parent=$T/ds/P/disk-2.vmdk child=$T/ds/P/b-top.vmdk file=$T/ds/P/b-top.vmdk" \
	"file=$T/ds/P/disk-2.vmdk"; do
	# shellcheck disable=SC2086 # one record line a word
	plant $lines
	for cmd in digest check info; do
		run "$VDELTA" $cmd "$T/ds/P/disk.vmdk"
	done
	once=$(grep -c "(T7).*/ds/P/\(b-top\|disk-2\)\.vmdk" "$T/last.err")
	run "$VDELTA" recover "$T/ds/P/disk.vmdk"
	rc=$?
	[ $rc -eq 1 ] && [ "$once" -eq 1 ] && grep -q "(T7)" "$T/last.err" &&
		[ "$(other_sum)" = "$other_before" ] && [ -e "$T/ds/P/disk.vmdk.vdelta-intent" ] &&
		pass "planted legacy record naming another group's disk ($lines): refused, reported (once by info), the disk reads the same" ||
		fail "planted legacy record ($lines): exit $rc, info's reports $once, $(head -c 400 "$T/last.err")"
done
rm -f "$T/ds/P/disk-2.vmdk" "$T/ds/P/b-top.vmdk"
plant "file=$T/ds/P/disk.vmdk"
chown nobody "$T/ds/P/disk.vmdk.vdelta-intent"
run "$VDELTA" recover "$T/ds/P/disk.vmdk"
[ -e "$T/ds/P/disk.vmdk" ] && grep -q "owned by uid" "$T/last.err" &&
	pass "planted: another user's record is refused" || fail "planted: another user's record: $(cat "$T/last.err")"
# a refused record names nothing of another disk whose base lies beside it:
# that disk still opens (the record blocks only the chains it names)
"$VDELTA" create -s $SIZE "$T/ds/P/base.vmdk" >/dev/null
mkdir -p "$T/ds/Q" && "$VDELTA" snapshot "$T/ds/P/base.vmdk" >/dev/null &&
	"$VDELTA" clone --linked "$T/ds/P/base.vmdk" "$T/ds/Q/c.vmdk" >/dev/null || die "clone"
if $NBD_OK; then
	run "$VDELTA" serve -U "$T/nbd.sock" --pid-file "$T/nbd.pid" "$T/ds/Q/c.vmdk=c"
	rc=$?
	[ -e "$T/nbd.pid" ] && "$VDELTA" serve --stop --pid-file "$T/nbd.pid" >/dev/null
	[ $rc -eq 0 ] && grep -q "names no layer of" "$T/last.err" &&
		pass "planted: a refused record beside a base does not stop the clone's export" ||
		fail "planted: the clone's export: $(cat "$T/last.err")"
fi
run "$VDELTA" snapshot "$T/ds/Q/c.vmdk"
[ $? -eq 0 ] && [ -e "$T/ds/P/disk.vmdk" ] && [ -e "$T/ds/P/disk.vmdk.vdelta-intent" ] &&
	pass "planted: a refused record beside a base: the clone's snapshot runs, the record is left" ||
	fail "planted: snapshot of the clone: $(cat "$T/last.err")"
rm -f "$T/ds/P/disk.vmdk.vdelta-intent"

# ---- 7. one layer reached twice: copied descriptors, hard links ----
rm -rf "$T/ds" && mkdir -p "$T/ds/H" && cd "$T/ds/H" || die mkdir
"$VDELTA" create -s $SIZE -t monolithicFlat base.vmdk >/dev/null
w base.vmdk -c 'write -P 0x11 0 1M'
"$VDELTA" snapshot base.vmdk >/dev/null
"$VDELTA" create -s $SIZE -t twoGbMaxExtentSparse two.vmdk >/dev/null
w two.vmdk -c 'write -P 0x66 0 1M'
cp two.vmdk copy.vmdk # a second descriptor of the same extent files
cd "$T" || die cd
refused "copied descriptor: delete one" "other name" delete "$T/ds/H/copy.vmdk"
refused "copied descriptor: relocate one" "other name" relocate --mode child-most "$T/ds/H/two.vmdk" "$T/dst"
ln "$T/ds/H/base.vmdk" "$T/ds/H/base-link.vmdk" # the base used as a disk of its own
refused "hard link: commit into a hard-linked base" "other name" commit "$T/ds/H/base-000001.vmdk"

# ---- 8. writers keep to the disk's folder ----
rm -rf "$T/ds" && mkdir -p "$T/ds/X" || die mkdir
printf '12345678901234567890' >"$T/ds/victim.txt"
cat >"$T/ds/X/out.vmdk" <<EOF
# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicFlat"

RW 131072 FLAT "../victim.txt" 0

ddb.virtualHWVersion = "4"
EOF
refused "outside extent: snapshot" "outside the descriptor's folder" snapshot "$T/ds/X/out.vmdk"
[ "$(cat "$T/ds/victim.txt")" = 12345678901234567890 ] && pass "outside extent: the file outside is untouched" ||
	fail "outside extent: written"
refused "outside extent: delete" "outside the descriptor's folder" delete "$T/ds/X/out.vmdk"
[ -e "$T/ds/X/out.vmdk" ] && [ "$(cat "$T/ds/victim.txt")" = 12345678901234567890 ] &&
	pass "outside extent: delete removed nothing" || fail "outside extent: delete removed files"
if [ -c /dev/fuse ]; then
	mkdir -p "$T/mx"
	refused "outside extent: a read-write mount" "outside the descriptor's folder" mount "$T/ds/X/out.vmdk" "$T/mx"
	if run "$VDELTA" mount --outside-extents "$T/ds/X/out.vmdk" "$T/mx"; then
		pass "outside extent: mount --outside-extents serves it"
		"$VDELTA" umount "$T/mx" >/dev/null || fusermount3 -u -z "$T/mx"
	else
		fail "outside extent: mount --outside-extents refused"
	fi
fi
sed -i 's|"../victim.txt"|"short-flat.vmdk"|' "$T/ds/X/out.vmdk"
printf '12345678901234567890' >"$T/ds/X/short-flat.vmdk"
refused "short flat extent: snapshot" "refused for writing" snapshot "$T/ds/X/out.vmdk"

# ---- 9. leftovers and half-made disks ----
vdelta_group
: >"$T/ds/D/base.vmdk.vdelta-children.tmp"
: >"$T/ds/D/base-000002.vmdk.vdelta-intent.tmp"
expect_ok "leftovers: recover" "$VDELTA" recover "$TOP"
[ ! -e "$T/ds/D/base.vmdk.vdelta-children.tmp" ] && [ ! -e "$T/ds/D/base-000002.vmdk.vdelta-intent.tmp" ] &&
	pass "leftovers: stale record temporaries removed" || fail "leftovers: $(ls "$T/ds/D")"
w "$TOP" -c 'write -P 0x77 0 48M'
for how in --from-current --full; do
	for delay in 0.02 0.1 0.3; do
		rm -f "$T/ds/D/new.vmdk"
		"$VDELTA" clone $how "$TOP" "$T/ds/D/new.vmdk" >/dev/null 2>&1 &
		pid=$!
		sleep $delay
		kill -9 $pid 2>/dev/null
		wait $pid 2>/dev/null
		run "$VDELTA" recover "$T/ds/D"
		if [ ! -e "$T/ds/D/new.vmdk" ] || [ "$(qd "$T/ds/D/new.vmdk")" = "$(qd "$TOP")" ]; then
			pass "clone $how killed after ${delay}s: the new disk is whole or absent"
		else
			fail "clone $how killed after ${delay}s: a half-made disk"
		fi
		[ -z "$(find "$T/ds/D" -name '.*vdelta-clone*')" ] &&
			pass "clone $how killed: no staging left after recover" ||
			fail "clone $how killed: staging left"
	done
done
long=$(printf 'n%.0s' $(seq 240))
cp "$TOP" "$T/ds/D/$long.vmdk"
snap_all
run "$VDELTA" snapshot "$T/ds/D/$long.vmdk"
[ $? -eq 1 ] && same_all && pass "long name: snapshot refused, nothing written" ||
	fail "long name: snapshot: $(cat "$T/last.err")"

# ---- a folder the user may not read: listed as not scanned, adopt refused ----
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	U=$(mktemp -d /tmp/vdelta-unscanned.XXXXXX) && chmod 755 "$U" || die mktemp
	mkdir -p "$U/ds/A" "$U/ds/locked"
	qemu-img create -q -f vmdk "$U/ds/A/base.vmdk" $SIZE
	qemu-img create -q -f vmdk -b base.vmdk -F vmdk "$U/ds/A/a.vmdk"
	qemu-img create -q -f vmdk -b ../A/base.vmdk -F vmdk "$U/ds/locked/l.vmdk"
	chown -R nobody "$U/ds/A" "$U/ds" && chown root "$U/ds/locked" && chmod 700 "$U/ds/locked"
	as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
	run as_nobody "$VDELTA" tree "$U/ds"
	grep -q "not scanned.*$U/ds/locked: Permission denied" "$T/last.out" &&
		pass "unreadable: tree lists the folder it could not read" ||
		fail "unreadable: tree: $(cat "$T/last.out" "$T/last.err")"
	run as_nobody "$VDELTA" adopt "$U/ds"
	[ $? -eq 1 ] && grep -q "locked.*adopt refused" "$T/last.err" && [ ! -e "$U/ds/A/base.vmdk.vdelta-children" ] &&
		pass "unreadable: adopt refused, nothing written" ||
		fail "unreadable: adopt: $(cat "$T/last.out" "$T/last.err")"
	run as_nobody "$VDELTA" delete --dry-run "$U/ds/A/a.vmdk"
	grep -q "not scanned.*locked" "$T/last.out" && pass "unreadable: a plan lists it" ||
		fail "unreadable: plan: $(cat "$T/last.out" "$T/last.err")"
	# a folder the user may not write: an operation removing files there is
	# refused before it writes anything (never stuck halfway)
	rm -rf "$U/ds" && mkdir -p "$U/ds/A" "$U/ds/B" || die mkdir
	"$VDELTA" create -s $SIZE "$U/ds/B/base.vmdk" >/dev/null
	"$VDELTA" snapshot "$U/ds/B/base.vmdk" >/dev/null
	"$VDELTA" clone --linked "$U/ds/B/base.vmdk" "$U/ds/A/a.vmdk" >/dev/null || die clone
	rm -f "$U/ds/B/base-000001.vmdk" "$U/ds/B/base-000001.vmdk"*
	"$VDELTA" adopt "$U/ds" >/dev/null
	chown -R nobody "$U/ds/A" "$U/ds/B/"* # B itself stays root's
	before=$(cd "$U" && find . -type f | sort | xargs sha256sum)
	run as_nobody "$VDELTA" delete --orphans "$U/ds/A/a.vmdk"
	[ $? -eq 1 ] && grep -q "ds/B: folder of .*base.vmdk: Permission denied: delete refused" "$T/last.err" &&
		[ "$(cd "$U" && find . -type f | sort | xargs sha256sum)" = "$before" ] &&
		pass "unwritable: delete --orphans refused before any change" ||
		fail "unwritable: delete --orphans: $(cat "$T/last.out" "$T/last.err"; ls "$U/ds/A")"
	rm -rf "$U"
fi

finish
