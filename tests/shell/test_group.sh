#!/bin/bash
# test_group.sh — group operations (commit, delete, revert) on a linked-clone
# group built once with vdelta and once with qemu-img (tests layer).
#
# The group, in one folder per VM under a datastore folder:
#   base/base.vmdk <- base/base-000001.vmdk (s1) <- vm2/vm2.vmdk <- vm2-000001 <- vm2-000002
#   base/base.vmdk <- vm1/vm1.vmdk            s1 <- vm3/vm3.vmdk
# Oracles: qemu-img convert + xxhsum -H2 for every disk's content, qemu-img
# compare with the export taken before, qemu-img check, sha256sum of every
# shared layer (and of every file when a command is refused), and qemu-img
# commit on a copy for the content of a commit.  A kill -9 loop checks that
# the next command recovers an interrupted commit; check --repair is run on
# a layer whose writer was killed and that has leaked grains.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need qemu-img qemu-io xxhsum sha256sum
need_vdelta
need_vdio

SIZE=$((32 << 20))

# qdigest DISK: xxhsum -H2 of qemu's raw export
qdigest()
{
	rm -f "$T/q.raw"
	qemu-img convert -U -O raw "$1" "$T/q.raw" && xxhsum -H2 "$T/q.raw" 2>/dev/null | cut -d' ' -f1
}

# digests_same WHAT DISK...: vdelta digest of each disk equals the oracle and
# the value recorded in $T/dig.DISKNAME before
digests_same()
{
	local what=$1 d ours theirs want
	shift
	for d in "$@"; do
		theirs=$(qdigest "$d")
		ours=$("$VDELTA" digest "$d" 2>"$T/last.err" | cut -d' ' -f1)
		want=$(cat "$T/dig.$(basename "$d")")
		if [ -n "$ours" ] && [ "$ours" = "$theirs" ] && [ "$ours" = "$want" ]; then
			pass "$what: $d reads as before ($ours, = xxhsum of qemu's export)"
		else
			fail "$what: $d: vdelta $ours, qemu $theirs, before $want"
		fi
	done
}

record_digest()
{
	qdigest "$1" >"$T/dig.$(basename "$1")"
}

# build MODE: the group under $DS, made by vdelta or by qemu-img
child()
{
	local parent=$1 new=$2
	if [ "$MODE" = vdelta ]; then
		"$VDELTA" create --parent "$parent" "$new" >/dev/null
	else
		local rel
		rel=$(realpath --relative-to="$(dirname "$new")" "$parent")
		(cd "$(dirname "$new")" &&
			qemu-img create -q -f vmdk -b "$rel" -F vmdk "$(basename "$new")")
	fi
}

w()
{
	qemu-io -f vmdk "$1" "${@:2}" >/dev/null
}

build()
{
	rm -rf "$DS" && mkdir -p "$DS"/base "$DS"/vm1 "$DS"/vm2 "$DS"/vm3 && cd "$DS" || die "mkdir"
	if [ "$MODE" = vdelta ]; then
		"$VDELTA" create -s $SIZE base/base.vmdk >/dev/null
	else
		qemu-img create -q -f vmdk base/base.vmdk $SIZE
	fi
	w base/base.vmdk -c 'write -P 0x11 0 4M' -c 'write -P 0x12 20M 1M'
	child base/base.vmdk base/base-000001.vmdk
	w base/base-000001.vmdk -c 'write -P 0x21 1M 2M' -c 'write -z 20M 64k'
	child base/base.vmdk vm1/vm1.vmdk
	w vm1/vm1.vmdk -c 'write -P 0x31 3M 1M'
	child base/base-000001.vmdk vm2/vm2.vmdk
	w vm2/vm2.vmdk -c 'write -P 0x41 5M 3M' -c 'write -P 0x42 12345 777'
	child vm2/vm2.vmdk vm2/vm2-000001.vmdk
	w vm2/vm2-000001.vmdk -c 'write -P 0x51 6M 128k' -c 'write -z 0 64k'
	child vm2/vm2-000001.vmdk vm2/vm2-000002.vmdk
	w vm2/vm2-000002.vmdk -c 'write -P 0x61 7M 4k' -c 'write -P 0x62 30M 2M'
	child base/base-000001.vmdk vm3/vm3.vmdk
	w vm3/vm3.vmdk -c 'write -P 0x71 8M 1M'
	for d in vm1/vm1.vmdk vm2/vm2-000002.vmdk vm3/vm3.vmdk; do
		record_digest "$d"
	done
}

shared_sums()
{
	sha256sum base/base.vmdk base/base-000001.vmdk >"$T/shared.sha"
}

shared_ok()
{
	if sha256sum --quiet -c "$T/shared.sha" >/dev/null 2>&1; then
		pass "$1: every shared layer file is byte-identical"
	else
		fail "$1: a shared layer changed"
	fi
}

all_sums()
{
	find . -type f | sort | xargs sha256sum >"$T/all.sha"
}

# refused WHAT CMD...: exit 1, every file of the datastore unchanged
refused()
{
	local what=$1
	shift
	all_sums
	run "$VDELTA" "$@"
	local rc=$?
	if [ $rc -eq 1 ] && sha256sum --quiet -c "$T/all.sha" >/dev/null 2>&1 &&
		[ "$(find . -type f | wc -l)" = "$(wc -l <"$T/all.sha")" ]; then
		pass "$what: refused (exit 1), no file changed"
	else
		fail "$what: exit $rc or files changed"
	fi
}

qcheck()
{
	if qemu-img check -q "$2" >/dev/null 2>&1; then
		pass "$1: qemu-img check $2 clean"
	else
		fail "$1: qemu-img check $2"
	fi
}

# adopt_qemu: a group qemu-img made has no records: its layers' children
# are unknown until `vdelta adopt` records what a scan finds
adopt_qemu()
{
	[ "$MODE" = qemu ] || return 0
	refused "qemu: commit before adopt" commit $S "$1"
	grep -q "children unknown" "$T/last.err" && grep -q "vdelta adopt" "$T/last.err" &&
		pass "qemu: refused as children unknown, naming adopt" ||
		fail "qemu: refusal before adopt: $(cat "$T/last.err")"
	expect_ok "qemu: adopt" "$VDELTA" adopt "$2"
	grep -q "record" "$T/last.out" && pass "qemu: adopt recorded children" ||
		fail "qemu: adopt: $(cat "$T/last.out")"
	expect_ok "qemu: adopt again" "$VDELTA" adopt --dry-run "$2"
	grep -q "nothing to do" "$T/last.out" && pass "qemu: a second adopt has nothing to record" ||
		fail "qemu: adopt again: $(cat "$T/last.out")"
}

for MODE in vdelta qemu; do
	DS=$T/$MODE
	build
	shared_sums
	S="--scan $DS"
	adopt_qemu vm2/vm2-000001.vmdk "$DS"
	all_sums

	# ---- refusals ----
	refused "$MODE: commit into a shared parent" commit $S vm2/vm2.vmdk
	grep -q "vm3.vmdk" "$T/last.err" && pass "$MODE: the refusal names the other disks" ||
		fail "$MODE: refusal message: $(cat "$T/last.err")"
	refused "$MODE: commit a shared snapshot" commit $S base/base-000001.vmdk
	refused "$MODE: delete a layer with children" delete $S base/base-000001.vmdk
	refused "$MODE: revert a snapshot" revert $S base/base.vmdk
	all_sums
	expect_ok "$MODE: commit --dry-run" "$VDELTA" commit --dry-run --json $S vm2/vm2-000001.vmdk
	sha256sum --quiet -c "$T/all.sha" >/dev/null 2>&1 && pass "$MODE: dry run changed nothing" ||
		fail "$MODE: dry run changed a file"
	grep -q '"action": "repoint"' "$T/last.out" && pass "$MODE: plan lists the re-pointed child" ||
		fail "$MODE: plan: $(cat "$T/last.out")"

	# ---- commit of a private snapshot (children re-pointed) ----
	qemu-img convert -O raw vm2/vm2-000002.vmdk "$T/vm2.raw"
	expect_ok "$MODE: commit vm2-000001" "$VDELTA" commit $S vm2/vm2-000001.vmdk
	[ ! -e vm2/vm2-000001.vmdk ] && pass "$MODE: committed layer removed" ||
		fail "$MODE: vm2-000001 still there"
	digests_same "$MODE: after commit" vm1/vm1.vmdk vm2/vm2-000002.vmdk vm3/vm3.vmdk
	qemu-img compare -q "$T/vm2.raw" vm2/vm2-000002.vmdk && pass "$MODE: qemu-img compare" ||
		fail "$MODE: qemu-img compare after commit"
	qcheck "$MODE: commit" vm2/vm2-000002.vmdk
	shared_ok "$MODE: commit"

	# ---- commit of a top == qemu-img commit on a copy ----
	mkdir qc && cp vm2/vm2.vmdk vm2/vm2-000002.vmdk qc/
	qemu-img commit -q qc/vm2-000002.vmdk && qemu-img convert -O raw qc/vm2.vmdk "$T/qc.raw"
	rm -rf qc
	expect_ok "$MODE: commit a top" "$VDELTA" commit $S vm2/vm2-000002.vmdk
	qemu-img compare -q "$T/qc.raw" vm2/vm2.vmdk && pass "$MODE: same content as qemu-img commit" ||
		fail "$MODE: differs from qemu-img commit"
	cp "$T/dig.vm2-000002.vmdk" "$T/dig.vm2.vmdk"
	digests_same "$MODE: after commit of a top" vm1/vm1.vmdk vm2/vm2.vmdk vm3/vm3.vmdk
	qcheck "$MODE: commit of a top" vm2/vm2.vmdk
	shared_ok "$MODE: commit of a top"

	# ---- revert ----
	expect_ok "$MODE: revert vm3" "$VDELTA" revert $S vm3/vm3.vmdk
	qemu-img compare -q base/base-000001.vmdk vm3/vm3.vmdk && pass "$MODE: vm3 reads as its snapshot" ||
		fail "$MODE: vm3 after revert"
	qcheck "$MODE: revert" vm3/vm3.vmdk
	digests_same "$MODE: after revert" vm1/vm1.vmdk vm2/vm2.vmdk
	shared_ok "$MODE: revert"

	# ---- delete ----
	expect_ok "$MODE: delete vm1" "$VDELTA" delete $S vm1/vm1.vmdk
	[ ! -e vm1/vm1.vmdk ] && [ -e base/base.vmdk ] && pass "$MODE: vm1 gone, base kept" ||
		fail "$MODE: delete vm1"
	expect_ok "$MODE: delete vm3" "$VDELTA" delete --json $S vm3/vm3.vmdk
	grep -q '"action": "keep"' "$T/last.out" && [ -e base/base-000001.vmdk ] &&
		pass "$MODE: delete keeps the shared snapshot" || fail "$MODE: delete vm3: $(cat "$T/last.out")"
	digests_same "$MODE: after delete" vm2/vm2.vmdk
	shared_ok "$MODE: delete"

	# ---- promote --unlink and consolidate, on a fresh group ----
	build
	[ "$MODE" = qemu ] && { "$VDELTA" adopt "$DS" >/dev/null || fail "qemu: adopt"; }
	shared_sums
	refused "$MODE: promote a shared layer without --unlink" promote $S base/base-000001.vmdk
	refused "$MODE: promote --unlink a shared layer" promote --unlink $S base/base-000001.vmdk
	expect_ok "$MODE: consolidate" "$VDELTA" consolidate --json $S vm2/vm2-000002.vmdk
	[ ! -e vm2/vm2-000001.vmdk ] && [ ! -e vm2/vm2.vmdk ] && [ -e vm2/vm2-000002.vmdk ] &&
		pass "$MODE: consolidate merged vm2's unshared layers into its top" ||
		fail "$MODE: consolidate: $(ls vm2 | tr '\n' ' ')"
	digests_same "$MODE: after consolidate" vm1/vm1.vmdk vm2/vm2-000002.vmdk vm3/vm3.vmdk
	qcheck "$MODE: consolidate" vm2/vm2-000002.vmdk
	shared_ok "$MODE: consolidate"
	expect_ok "$MODE: promote --unlink vm3" "$VDELTA" promote --unlink -p $S vm3/vm3.vmdk
	grep -q "100.00/100%" "$T/last.err" && pass "$MODE: promote --unlink -p shows progress" ||
		fail "$MODE: promote --unlink -p: $(cat "$T/last.err")"
	qemu-img info --backing-chain vm3/vm3.vmdk | grep -q "backing file" &&
		fail "$MODE: vm3 still has a backing file" || pass "$MODE: vm3 reaches no shared layer"
	shared_ok "$MODE: promote --unlink vm3"
	# s1 now serves vm2 alone: it is vm2's to rewrite; base is still shared
	sha256sum base/base.vmdk >"$T/shared.sha"
	expect_ok "$MODE: promote --unlink vm2" "$VDELTA" promote --unlink $S vm2/vm2-000002.vmdk
	[ "$(qemu-img info --backing-chain vm2/vm2-000002.vmdk | grep -c '^image:')" = 2 ] &&
		pass "$MODE: vm2's chain is its top over its own flattened s1" || fail "$MODE: vm2 chain after unlink"
	digests_same "$MODE: after promote --unlink" vm1/vm1.vmdk vm2/vm2-000002.vmdk vm3/vm3.vmdk
	qcheck "$MODE: promote --unlink" vm3/vm3.vmdk
	qcheck "$MODE: promote --unlink" vm2/vm2-000002.vmdk
	shared_ok "$MODE: promote --unlink"
	expect_ok "$MODE: consolidate --all" "$VDELTA" consolidate --all "$DS"
	grep -q "space .* before, .* after" "$T/last.out" && pass "$MODE: consolidate --all prints the space" ||
		fail "$MODE: consolidate --all: $(cat "$T/last.out")"
	digests_same "$MODE: after consolidate --all" vm1/vm1.vmdk vm2/vm2-000002.vmdk vm3/vm3.vmdk
	cd "$T" || die cd
done

# ---- consolidate: the top takes its unshared layers in, in one pull ----
# P: shared <- small <- big <- top, "shared" also reached by another disk:
# the top takes big and small in one pull (each byte once: big's 64k inside
# small's 1M is counted once) and hangs from shared.  Then a disk alone:
# tiny base <- big snapshot <- top: the top takes both and becomes a base.
# The top keeps its name.
for MODE in vdelta qemu; do
	P=$T/pull-$MODE
	rm -rf "$P" && mkdir -p "$P" && cd "$P" || die mkdir
	if [ "$MODE" = vdelta ]; then
		"$VDELTA" create -s $SIZE shared.vmdk >/dev/null
	else
		qemu-img create -q -f vmdk shared.vmdk $SIZE
	fi
	w shared.vmdk -c 'write -P 0x11 0 6M'
	child shared.vmdk other.vmdk
	child shared.vmdk small.vmdk
	w small.vmdk -c 'write -P 0x21 1M 1M'
	child small.vmdk big.vmdk
	w big.vmdk -c 'write -P 0x31 4M 8M' -c 'write -P 0x32 1536k 64k'
	child big.vmdk top.vmdk
	w top.vmdk -c 'write -P 0x41 20M 1M'
	S=
	adopt_qemu top.vmdk "$P"
	qemu-img convert -O raw top.vmdk "$T/pull.raw"
	record_digest top.vmdk
	record_digest other.vmdk
	sha256sum shared.vmdk >"$T/shared.sha"
	expect_ok "$MODE: consolidate --dry-run" "$VDELTA" consolidate --dry-run --json top.vmdk
	# small's 1M at 1M (big's 64k at 1536k inside it) and big's 8M at 4M
	grep -q '"action": "pull"' "$T/last.out" && grep -q "\"bytes\": $(( (1 + 8) << 20 ))" "$T/last.out" &&
		[ "$(grep -c '"action": "pull"' "$T/last.out")" = 1 ] &&
		pass "$MODE: the plan pulls big and small into the top at once (9M)" ||
		fail "$MODE: plan: $(cat "$T/last.out")"
	expect_ok "$MODE: consolidate (pull)" "$VDELTA" consolidate top.vmdk
	[ ! -s "$T/last.err" ] && pass "$MODE: no progress when stderr is not a terminal" ||
		fail "$MODE: consolidate printed: $(cat "$T/last.err")"
	[ ! -e small.vmdk ] && [ ! -e big.vmdk ] && [ -e top.vmdk ] &&
		pass "$MODE: small and big merged into the top, which kept its name" ||
		fail "$MODE: pull: $(ls | tr '\n' ' ')"
	[ "$(qemu-img info --backing-chain top.vmdk | grep -c '^image:')" = 2 ] &&
		qemu-img info top.vmdk | grep -q 'backing file: shared.vmdk' &&
		pass "$MODE: the top hangs from shared now" || fail "$MODE: chain after pull"
	qemu-img compare -q "$T/pull.raw" top.vmdk && pass "$MODE: pull: qemu-img compare" ||
		fail "$MODE: pull changed the content"
	digests_same "$MODE: after pull" top.vmdk other.vmdk
	qcheck "$MODE: pull" top.vmdk
	shared_ok "$MODE: pull"

	rm -f ./*
	if [ "$MODE" = vdelta ]; then
		"$VDELTA" create -s $SIZE base.vmdk >/dev/null
	else
		qemu-img create -q -f vmdk base.vmdk $SIZE
	fi
	w base.vmdk -c 'write -P 0x11 0 1M'
	child base.vmdk snap.vmdk
	w snap.vmdk -c 'write -P 0x21 2M 8M'
	child snap.vmdk top.vmdk
	w top.vmdk -c 'write -P 0x31 20M 1M'
	adopt_qemu top.vmdk "$P"
	qemu-img convert -O raw top.vmdk "$T/pull.raw"
	record_digest top.vmdk
	expect_ok "$MODE: consolidate (pull a base)" "$VDELTA" consolidate -p --json top.vmdk
	grep -q "100.00/100%" "$T/last.err" && pass "$MODE: consolidate -p shows progress" ||
		fail "$MODE: consolidate -p: $(cat "$T/last.err")"
	grep -q '"action": "pull"' "$T/last.out" && [ ! -e base.vmdk ] && [ ! -e snap.vmdk ] &&
		[ "$(grep -c '"action": "pull"' "$T/last.out")" = 1 ] &&
		pass "$MODE: the top took the snapshot and the base in one pull" ||
		fail "$MODE: $(cat "$T/last.out")"
	qemu-img info top.vmdk | grep -q 'backing file' && fail "$MODE: the top still has a parent" ||
		pass "$MODE: the top is a base now, one file under the disk's name"
	qemu-img compare -q "$T/pull.raw" top.vmdk && pass "$MODE: pull a base: qemu-img compare" ||
		fail "$MODE: pull of a base changed the content"
	digests_same "$MODE: after pull of a base" top.vmdk
	qcheck "$MODE: pull of a base" top.vmdk
	cd "$T" || die cd
done

# ---- check --repair: a writer killed mid-way, leaked grains ----
R=$T/repair
mkdir -p "$R" && cd "$R" || die mkdir
"$VDELTA" create -s 1G base.vmdk >/dev/null
w base.vmdk -c 'write -P 0x11 0 8M'
"$VDELTA" snapshot base.vmdk >/dev/null
w base-000001.vmdk -c 'write -P 0x22 4M 2M'
args=()
for i in $(seq 0 250); do # vdio takes 256 commands at most
	args+=(-c "write -P 0x$(printf %02x $((i % 200 + 1))) $((i * 4194304 + 4096)) 2M")
done
"$VDIO" -w base-000001.vmdk "${args[@]}" >/dev/null 2>&1 &
pid=$!
sleep 0.3
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
# the grains a writer appends before it dies, no table pointing to them
head -c 196608 /dev/urandom >>base-000001.vmdk
qemu-img convert -U -O raw base-000001.vmdk "$T/repair.raw"
sha256sum base.vmdk >"$T/shared.sha"
if run "$VDELTA" check base-000001.vmdk; then
	fail "check did not see the leaked grains"
else
	grep -q "[1-9][0-9]* bytes leaked" "$T/last.out" && pass "check reports leaked grains" ||
		fail "check: $(cat "$T/last.out")"
fi
grep -q "[1-9][0-9]* warnings" "$T/last.out" && pass "the killed writer left its layer unclean" ||
	echo "note: the writer finished before it was killed"
expect_ok "check --repair of the killed writer's layer" "$VDELTA" check --repair base-000001.vmdk
expect_ok "vdelta check clean after the repair" "$VDELTA" check base-000001.vmdk
qcheck "repair" base-000001.vmdk
qemu-img compare -q "$T/repair.raw" base-000001.vmdk && pass "repair: content unchanged (qemu-img compare)" ||
	fail "repair changed the content"
shared_ok "repair"
head -c 65536 /dev/urandom >>base.vmdk
refused "check --repair of a frozen layer with leaked grains" check --repair base.vmdk
cd "$T" || die cd

# ---- kill -9 in the middle of a commit; the next command finishes it ----
K=$T/kill
for delay in 0.05 0.2 0.4; do
	rm -rf "$K" && mkdir -p "$K" && cd "$K" || die mkdir
	"$VDELTA" create -s 256M base.vmdk >/dev/null
	w base.vmdk -c 'write -P 0x11 0 16M'
	"$VDELTA" snapshot base.vmdk >/dev/null
	w base-000001.vmdk -c 'write -P 0x22 16M 64M' -c 'write -z 200M 1M'
	"$VDELTA" snapshot base-000001.vmdk >/dev/null
	w base-000002.vmdk -c 'write -P 0x33 100M 1M'
	want=$(qdigest base-000002.vmdk)
	"$VDELTA" commit base-000001.vmdk >/dev/null 2>&1 &
	pid=$!
	sleep $delay
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	recs=$(ls ./*.vdelta-intent 2>/dev/null)
	run "$VDELTA" commit --dry-run base-000002.vmdk # reports, changes nothing
	[ "$(ls ./*.vdelta-intent 2>/dev/null)" = "$recs" ] ||
		fail "kill -9 after ${delay}s: a dry run acted on the interrupted commit"
	run "$VDELTA" adopt "$K" # any group command recovers first
	got=$(qdigest base-000002.vmdk)
	# killed before the intent record was published: nothing happened
	if [ "$got" = "$want" ] && [ ! -e base-000001.vmdk.vdelta-intent ] &&
		qemu-img check -q base-000002.vmdk >/dev/null 2>&1; then
		pass "kill -9 after ${delay}s: recovered, content unchanged, qemu-img check clean"
	else
		fail "kill -9 after ${delay}s: digest $got (want $want) or leftovers: $(ls)"
	fi
	cd "$T" || die cd
done

# ---- kill -9 in the middle of a consolidate (a pull, then a commit); a
# command that only reads (info) reports it and changes nothing, `vdelta
# recover` finishes it ----
for delay in 0.05 0.2 0.4 0.8; do
	rm -rf "$K" && mkdir -p "$K" && cd "$K" || die mkdir
	"$VDELTA" create -s 256M base.vmdk >/dev/null
	w base.vmdk -c 'write -P 0x11 0 8M'
	"$VDELTA" snapshot base.vmdk >/dev/null
	w base-000001.vmdk -c 'write -P 0x22 16M 96M' -c 'write -z 200M 1M'
	"$VDELTA" snapshot base-000001.vmdk >/dev/null
	w base-000002.vmdk -c 'write -P 0x33 100M 1M'
	"$VDELTA" snapshot base-000002.vmdk >/dev/null
	w base-000003.vmdk -c 'write -P 0x44 120M 1M'
	want=$(qdigest base-000003.vmdk)
	"$VDELTA" consolidate base-000003.vmdk >/dev/null 2>&1 &
	pid=$!
	sleep $delay
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	left=$(ls ./*.vdelta-intent 2>/dev/null | wc -l)
	ls -l --time-style=+%s.%N . | sha256sum >"$T/listing.before"
	run "$VDELTA" info base-000003.vmdk # reads: reports, changes nothing
	ls -l --time-style=+%s.%N . | sha256sum >"$T/listing.after"
	if ! cmp -s "$T/listing.before" "$T/listing.after" ||
		{ [ "$left" -gt 0 ] && ! grep -q "vdelta recover" "$T/last.err"; }; then
		fail "consolidate killed after ${delay}s: info changed the folder or did not report the record"
	fi
	run "$VDELTA" recover base-000003.vmdk
	ours=$("$VDELTA" digest base-000003.vmdk 2>"$T/last.err" | cut -d' ' -f1)
	got=$(qdigest base-000003.vmdk)
	if [ "$got" = "$want" ] && [ "$ours" = "$want" ] &&
		[ -z "$(ls ./*.vdelta-intent 2>/dev/null)" ] &&
		qemu-img check -q base-000003.vmdk >/dev/null 2>&1; then
		pass "consolidate killed after ${delay}s ($left intent records left): info reported it, recover finished it, digest as before (= qemu's export), qemu-img check clean"
	else
		fail "consolidate killed after ${delay}s: digest $ours / qemu $got (want $want) or leftovers: $(ls)"
	fi
	cd "$T" || die cd
done

finish
