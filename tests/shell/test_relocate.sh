#!/bin/bash
# test_relocate.sh — `vdelta relocate` in each mode on a linked-clone group
# built once with vdelta and once with qemu-img (tests layer).
#
# The group, one folder per VM under a datastore folder:
#   base/base.vmdk <- base/base-000001.vmdk (s1) <- vm2/vm2.vmdk <- vm2/vm2-000001.vmdk
#   base/base.vmdk <- vm1/vm1.vmdk            s1 <- vm3/vm3.vmdk
# (qemu-img's group: base is monolithicFlat and s1 twoGbMaxExtentSparse, so
# layers of several files move too.)
# Oracles: qemu-img convert + xxhsum -H2 for every disk's content (before
# and after, and = vdelta digest), qemu-img compare with the export taken
# before, qemu-img check, qemu-img info --backing-chain for where the layers
# are, sha256sum of every shared layer file (and of every file when a
# command is refused or a dry run).  A kill -9 loop interrupts a relocation
# and checks that the next command finishes or rolls it back.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io xxhsum sha256sum
need_vdelta

SIZE=$((32 << 20))

# qsum DISK: xxhsum -H2 of qemu's raw export
qsum()
{
	rm -f "$T/q.raw"
	qemu-img convert -U -O raw "$1" "$T/q.raw" && xxhsum -H2 "$T/q.raw" 2>/dev/null | cut -d' ' -f1
}

# reads_as WHAT DISK NAME: vdelta digest = qemu's = the value before
reads_as()
{
	local ours theirs want
	theirs=$(qsum "$2")
	ours=$("$VDELTA" digest "$2" 2>"$T/last.err" | cut -d' ' -f1)
	want=$(cat "$T/sum.$3")
	if [ -n "$ours" ] && [ "$ours" = "$theirs" ] && [ "$ours" = "$want" ]; then
		pass "$1: $2 reads as before ($ours = xxhsum of qemu's export)"
	else
		fail "$1: $2: vdelta $ours, qemu $theirs, before $want"
	fi
}

mk()
{
	local parent=$1 new=$2 fmt=${3:-}
	if [ "$MODE" = vdelta ]; then
		"$VDELTA" create --parent "$parent" "$new" >/dev/null
	else
		(cd "$(dirname "$new")" && qemu-img create -q -f vmdk ${fmt:+-o subformat=$fmt} \
			-b "$(realpath --relative-to=. "$DS/$parent")" -F vmdk "$(basename "$new")")
	fi
}

qw()
{
	qemu-io -f vmdk "$1" "${@:2}" >/dev/null
}

build()
{
	rm -rf "$DS" && mkdir -p "$DS"/{base,vm1,vm2,vm3,dst} && cd "$DS" || die "mkdir"
	if [ "$MODE" = vdelta ]; then
		"$VDELTA" create -s $SIZE base/base.vmdk >/dev/null
	else
		qemu-img create -q -f vmdk -o subformat=monolithicFlat base/base.vmdk $SIZE
	fi
	qw base/base.vmdk -c 'write -P 0x11 0 4M' -c 'write -P 0x12 20M 1M'
	mk base/base.vmdk base/base-000001.vmdk twoGbMaxExtentSparse
	qw base/base-000001.vmdk -c 'write -P 0x21 1M 2M' -c 'write -z 20M 64k'
	mk base/base.vmdk vm1/vm1.vmdk
	qw vm1/vm1.vmdk -c 'write -P 0x31 3M 1M'
	mk base/base-000001.vmdk vm2/vm2.vmdk
	qw vm2/vm2.vmdk -c 'write -P 0x41 5M 3M' -c 'write -P 0x42 12345 777'
	mk vm2/vm2.vmdk vm2/vm2-000001.vmdk
	qw vm2/vm2-000001.vmdk -c 'write -P 0x51 6M 128k' -c 'write -z 0 64k' -c 'write -P 0x52 30M 2M'
	mk base/base-000001.vmdk vm3/vm3.vmdk
	qw vm3/vm3.vmdk -c 'write -P 0x71 8M 1M'
	# qemu-img records no children: make them known, as a user would
	[ "$MODE" = vdelta ] || "$VDELTA" adopt "$DS" >/dev/null || die "adopt"
	for d in vm1/vm1.vmdk vm2/vm2-000001.vmdk vm3/vm3.vmdk; do
		qsum "$d" >"$T/sum.$(basename "$d")"
	done
	qemu-img convert -O raw vm2/vm2-000001.vmdk "$T/vm2.raw"
	qemu-img convert -O raw vm3/vm3.vmdk "$T/vm3.raw"
	find base -name '*.vmdk' | sort | xargs sha256sum >"$T/shared.sha"
	ls base | grep -c '^base.*vmdk$' >"$T/nbase"
}

shared_same()
{
	if sha256sum --quiet -c "$T/shared.sha" >/dev/null 2>&1; then
		pass "$1: every shared layer file is byte-identical"
	else
		fail "$1: a shared layer file changed"
	fi
}

# unchanged WHAT CMD...: the command's effect on files: none
snapshot_files() { find . -type f | sort | xargs sha256sum >"$T/all.sha"; }
files_same()
{
	sha256sum --quiet -c "$T/all.sha" >/dev/null 2>&1 &&
		[ "$(find . -type f | wc -l)" = "$(wc -l <"$T/all.sha")" ]
}
refused()
{
	local what=$1
	shift
	snapshot_files
	run "$VDELTA" "$@"
	local rc=$?
	if [ $rc -eq 1 ] && files_same; then
		pass "$what: refused (exit 1), no file changed"
	else
		fail "$what: exit $rc or files changed"
	fi
}

# chain_in WHAT DISK DIR yes|no: does every layer of DISK's backing chain lie in DIR?
chain_in()
{
	local out n_in n_all
	out=$(qemu-img info -U --backing-chain "$2" | sed -n 's/^image: //p')
	n_all=$(printf '%s\n' "$out" | wc -l)
	n_in=$(printf '%s\n' "$out" | while read -r i; do
		[ "$(dirname "$(realpath "$(dirname "$2")/$i" 2>/dev/null || realpath "$i")")" = "$(realpath "$3")" ] && echo x
	done | wc -l)
	if { [ "$4" = yes ] && [ "$n_in" = "$n_all" ]; } || { [ "$4" = no ] && [ "$n_in" -lt "$n_all" ]; }; then
		pass "$1: $n_in of $n_all layers of $2 in $3 (qemu-img info --backing-chain)"
	else
		fail "$1: $n_in of $n_all layers of $2 in $3: $out"
	fi
}

after()
{
	local what=$1 disk=$2
	[ ! -e vm2/vm2-000001.vmdk ] && pass "$what: the old top is gone" || fail "$what: vm2-000001 still in vm2/"
	reads_as "$what" "$disk" vm2-000001.vmdk
	qemu-img compare -q "$T/vm2.raw" "$disk" && pass "$what: qemu-img compare with the export before" ||
		fail "$what: qemu-img compare"
	qemu-img check -q "$disk" >/dev/null 2>&1 && pass "$what: qemu-img check clean" ||
		fail "$what: qemu-img check $disk"
	reads_as "$what" vm1/vm1.vmdk vm1.vmdk
	reads_as "$what" vm3/vm3.vmdk vm3.vmdk
	shared_same "$what"
	[ -z "$(find . -name '*.vdelta-intent*' -o -name '*.vdelta-relocate*')" ] &&
		pass "$what: no intent record or temporary left" || fail "$what: leftovers: $(find . -name '*.vdelta-*')"
}

for MODE in vdelta qemu; do
	DS=$T/$MODE
	S="--scan $DS"

	for RM in child-most no-share share; do
		build
		snapshot_files
		expect_ok "$MODE $RM: dry run" "$VDELTA" relocate --mode $RM --dry-run --json $S vm2/vm2-000001.vmdk dst
		files_same && pass "$MODE $RM: the dry run changed nothing" || fail "$MODE $RM: dry run wrote"
		grep -q '"space_available"' "$T/last.out" && grep -q '"action": "create"' "$T/last.out" &&
			pass "$MODE $RM: the plan lists creations and space" || fail "$MODE $RM: plan: $(cat "$T/last.out")"
		expect_ok "$MODE $RM: relocate vm2" "$VDELTA" relocate --mode $RM $S vm2/vm2-000001.vmdk dst
		after "$MODE $RM" dst/vm2-000001.vmdk
		if [ $RM = child-most ]; then
			chain_in "$MODE $RM" dst/vm2-000001.vmdk dst no
			[ -e vm2/vm2.vmdk ] && pass "$MODE $RM: the parent stays" || fail "$MODE $RM: vm2.vmdk moved"
		else
			chain_in "$MODE $RM" dst/vm2-000001.vmdk dst yes
			[ ! -e vm2/vm2.vmdk ] && [ -e base/base-000001.vmdk ] &&
				pass "$MODE $RM: unshared layers moved, shared ones copied" ||
				fail "$MODE $RM: $(ls vm2 base)"
		fi
		if [ $RM = share ]; then # vm3 joins the base copies already in dst
			expect_ok "$MODE share: relocate vm3" "$VDELTA" relocate --mode share --json $S vm3/vm3.vmdk dst
			[ "$(grep -c '"action": "create"' "$T/last.out")" = 1 ] &&
				[ "$(grep -c '"action": "keep"' "$T/last.out")" = 2 ] &&
				pass "$MODE share: vm3's base layers reattached, not copied" ||
				fail "$MODE share: plan $(cat "$T/last.out")"
			reads_as "$MODE share" dst/vm3.vmdk vm3.vmdk
			qemu-img compare -q "$T/vm3.raw" dst/vm3.vmdk && pass "$MODE share: vm3 qemu-img compare" ||
				fail "$MODE share: vm3 compare"
			chain_in "$MODE share vm3" dst/vm3.vmdk dst yes
			reads_as "$MODE share: after vm3" dst/vm2-000001.vmdk vm2-000001.vmdk
			[ "$(ls dst | grep -c '^base.*vmdk$')" = "$(cat "$T/nbase")" ] &&
				pass "$MODE share: one copy of the base layers in dst" || fail "$MODE share: dst: $(ls dst)"
			# s1 served vm2 and vm3 only: it moved with the last; base stays for vm1
			[ ! -e base/base-000001.vmdk ] && [ -e base/base.vmdk ] &&
				pass "$MODE share: the snapshot no disk left behind uses moved, the base stayed" ||
				fail "$MODE share: base/: $(ls base)"
			reads_as "$MODE share: after vm3" vm1/vm1.vmdk vm1.vmdk
		elif [ $RM = no-share ]; then
			refused "$MODE no-share: a second disk onto the copies" relocate --mode no-share $S vm3/vm3.vmdk dst
		fi
	done

	# ---- refusals ----
	build
	refused "$MODE: a snapshot layer" relocate --mode no-share $S vm2/vm2.vmdk dst
	refused "$MODE: no such folder" relocate --mode share $S vm2/vm2-000001.vmdk nowhere
	cp vm1/vm1.vmdk dst/vm2.vmdk
	refused "$MODE: a name taken in dst" relocate --mode share $S vm2/vm2-000001.vmdk dst
	grep -q "dst/vm2.vmdk" "$T/last.err" && pass "$MODE: the refusal names the file" ||
		fail "$MODE: message: $(cat "$T/last.err")"
	rm dst/vm2.vmdk
	run "$VDELTA" relocate --mode sideways vm2/vm2-000001.vmdk dst
	[ $? = 2 ] && pass "$MODE: an unknown mode is a usage error" || fail "$MODE: unknown mode"
	if [ "$MODE" = vdelta ]; then
		# vm3 is not scanned, but base-000001 recorded it: copied, never moved
		expect_ok "$MODE: relocate without --scan" "$VDELTA" relocate --mode no-share vm2/vm2-000001.vmdk dst
		[ -e base/base-000001.vmdk ] && pass "$MODE: the recorded shared layer was copied, not moved" ||
			fail "$MODE: base-000001 moved"
		after "$MODE: without --scan" dst/vm2-000001.vmdk
	fi
	cd "$T" || die cd
done

# ---- kill -9 in the middle of a relocation; the next command finishes or rolls back ----
K=$T/kill
hits=0
for RM in no-share child-most; do
	for delay in 0.05 0.2 0.5; do
		rm -rf "$K" && mkdir -p "$K"/{base,vm,vmb,dst} && cd "$K" || die mkdir
		"$VDELTA" create -s 256M base/base.vmdk >/dev/null
		qw base/base.vmdk -c 'write -P 0x11 0 32M'
		"$VDELTA" create --parent base/base.vmdk vm/vm.vmdk >/dev/null
		"$VDELTA" create --parent base/base.vmdk vmb/vmb.vmdk >/dev/null
		qw vm/vm.vmdk -c 'write -P 0x22 64M 96M' -c 'write -z 200M 1M'
		qw vmb/vmb.vmdk -c 'write -P 0x33 1M 1M'
		want=$(qsum vm/vm.vmdk)
		wantb=$(qsum vmb/vmb.vmdk)
		sha256sum base/base.vmdk >"$T/shared.sha"
		"$VDELTA" relocate --mode $RM --scan "$K" vm/vm.vmdk dst >/dev/null 2>&1 &
		pid=$!
		sleep $delay
		kill -9 $pid 2>/dev/null
		wait $pid 2>/dev/null
		[ -n "$(find . -name '*.vdelta-intent')" ] && hits=$((hits + 1))
		top=vm/vm.vmdk
		[ -e "$top" ] || top=dst/vm.vmdk
		recs=$(find . -name '*.vdelta-intent' | sort)
		run "$VDELTA" relocate --dry-run --mode $RM --scan "$K" "$top" dst
		[ "$(find . -name '*.vdelta-intent' | sort)" = "$recs" ] ||
			fail "$RM kill -9 after ${delay}s: a dry run acted on the interrupted relocation"
		run "$VDELTA" recover "$K"
		where=$(ls vm/vm.vmdk dst/vm.vmdk 2>/dev/null)
		got=$([ "$(echo "$where" | wc -w)" = 1 ] && qsum "$where")
		if [ "$got" = "$want" ] && [ "$(qsum vmb/vmb.vmdk)" = "$wantb" ] &&
			sha256sum --quiet -c "$T/shared.sha" >/dev/null 2>&1 &&
			[ -z "$(find . -name '*.vdelta-intent*' -o -name '*.vdelta-relocate*')" ] &&
			{ [ "$where" = dst/vm.vmdk ] || [ -z "$(ls dst)" ]; } &&
			qemu-img check -q "$where" >/dev/null 2>&1; then
			pass "$RM kill -9 after ${delay}s: the disk is at $where, same content, base unchanged, nothing left over"
		else
			fail "$RM kill -9 after ${delay}s: at '$where', digest $got (want $want): $(ls -a vm dst)"
		fi
		cd "$T" || die cd
	done
done
[ $hits -gt 0 ] && pass "$hits of the kills interrupted a relocation in progress" ||
	fail "no kill -9 landed while a relocation was in progress"

# share: an identical layer in DIR that is nobody's parent (unfrozen, no
# children: a disk of its own someone may still write) is not hung from
R=$T/reattach
rm -rf "$R" && mkdir -p "$R/vm" "$R/dst" && cd "$R" || die mkdir
qemu-img create -q -f vmdk vm/base.vmdk 64M
qw vm/base.vmdk -c 'write -P 0x11 0 4M'
qemu-img create -q -f vmdk -b base.vmdk -F vmdk vm/top.vmdk
qw vm/top.vmdk -c 'write -P 0x22 1M 1M'
"$VDELTA" adopt "$R" >/dev/null
cp --sparse=always vm/base.vmdk dst/base.vmdk
refused "share: an identical disk in dst that is no parent" relocate --mode share --scan "$R" vm/top.vmdk dst
cd "$T" || die cd

finish
