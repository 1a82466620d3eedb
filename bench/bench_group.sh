#!/bin/bash
# bench_group.sh — group operations against qemu-img and cp (bench layer;
# not a test).
#
#   bench/bench_group.sh [VDELTA]
#
# Environment: BENCH_DIR scratch folder (default mktemp; ~6 GiB of sparse
# files at most), ROUNDS rounds of each figure (default 3, at least 2),
# ONLY one figure (commit, promote8, promote32, consolidate, scale),
# SCALE the folder sizes of the scale part (default "100 400 1600").
#
# 1. commit of a 256 MiB delta into a 4 GiB base holding 1 GiB, vs
#    `qemu-img commit` of the same delta on a qemu-made copy, vs `cp
#    --sparse=always` of the delta (the bytes that must move);
# 2. promote --unlink of a depth-8 and a depth-32 chain (32 MiB per layer
#    over a 1 GiB base shared with a linked clone) vs `qemu-img convert -O
#    vmdk` of the top (an independent copy), vs cp of the base and of the
#    layer rewritten (what must move);
# 3. consolidate --all of a folder of 16 clones of a shared 2 GiB base
#    (256 MiB data), each base <- a (8 MiB) <- b (32 MiB) <- top (1 MiB),
#    to base <- top, vs cp of the 16 a and b layers (the data the tops
#    take in).  No qemu-img figure: the command that would leave the same
#    state, `qemu-img rebase -b base top`, copies the data and then fails
#    with "Could not change the backing file: Operation not supported"
#    (qemu's vmdk driver cannot rewrite a parent hint);
# 4. scale: folders of N = 100, 400, 1600 small clones of one 1 GiB base
#    (1 MiB data), each vmI/a (frozen, 64 KiB) <- vmI/a-000001 (64 KiB):
#    the wall time of `vdelta tree`, of `vdelta commit` of one clone's top
#    (a single-disk operation that still discovers the folder's group) and
#    of `vdelta consolidate --all` (every clone to base <- top), each with
#    the calls of its run under `strace -f -c` (pread, stat, open: the
#    scan's reads), and the slope of each against N (log-log: 1 is linear,
#    2 quadratic).  The times (wall, and CPU: user + system, which a busy
#    shared host disturbs less) are medians of ROUNDS runs without strace,
#    of the command alone: every vdelta command syncs what it wrote before
#    it exits, and a `sync` of the whole machine would time the other
#    writers of a shared host.
#
# Every figure is the wall time of the command followed by `sync`, on a
# fresh copy of the same files (made and synced before the clock starts,
# so every command starts with its input in the page cache; the templates
# are kept in BENCH_DIR/t, out of the folders a group command scans).  The systems
# of a figure run in turn, the order rotated each round; each line prints
# the median of the rounds (min-max), and the ratios are the medians of
# the ratios taken within a round.
set -eu
VDELTA=$(realpath "${1:-build/tools/vdelta}")
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
B=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$B"
B=$(realpath "$B")
mkdir -p "$B/t"
cd "$B/t"
[ "$ROUNDS" -ge 2 ] || { echo "ROUNDS must be at least 2" >&2; exit 2; }

fill() # fill DISK OFF_MIB LEN_MIB PATTERN
{
	local args=() i
	for ((i = 0; i < $3; i += 64)); do
		args+=(-c "write -P $4 $(( ($2 + i) ))M $(( $3 - i < 64 ? $3 - i : 64 ))M")
	done
	qemu-io -f vmdk "$1" "${args[@]}" >/dev/null
}

restore() # restore TEMPLATE: a fresh copy in r/run (beside it only r/out), synced; cd into it
{
	rm -rf "$B/r" && mkdir "$B/r" && cp -a --sparse=always "$1" "$B/r/run" &&
		mkdir "$B/r/out" && sync
	cd "$B/r/run"
}

secs() # secs CMD...: wall seconds of CMD + sync
{
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	sync
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }

# figure NAME TEMPLATE: runs the functions v_NAME, q_NAME, c_NAME (vdelta,
# qemu-img, cp; q_NAME may be missing: qemu-img has no such operation),
# each on a fresh copy of TEMPLATE, ROUNDS times, rotated.
figure()
{
	local name=$1 tmpl=$2 r k s sys order
	local -A t=()
	for ((r = 0; r < ROUNDS; r++)); do
		order=(v q c v q)
		for k in 0 1 2; do
			sys=${order[$((r % 3 + k))]}
			declare -F "${sys}_$name" >/dev/null || continue
			restore "$tmpl"
			s=$(secs "${sys}_$name")
			t[$sys]+="$s "
		done
	done
	cd "$B/t"
	report "$name" "${t[v]}" "${t[q]:-}" "${t[c]}"
}

stat_of() { tr ' ' '\n' <<<"$1" | grep . | "$2"; } # stat_of "X..." median|spread

report() # report NAME "V..." "Q..." "C...": Q may be empty
{
	local v=($2) q=($3) c=($4) i qv="" vc="" qs="qemu-img -" qr=""
	for ((i = 0; i < ${#v[@]}; i++)); do
		[ ${#q[@]} -eq 0 ] || qv+="$(echo "scale=4; ${q[$i]} / ${v[$i]}" | bc) "
		vc+="$(echo "scale=4; ${v[$i]} / ${c[$i]}" | bc) "
	done
	if [ ${#q[@]} -gt 0 ]; then
		qs=$(printf 'qemu-img %.2f s (%s)' "$(stat_of "$3" median)" "$(stat_of "$3" spread)")
		qr=$(printf 'qemu-img/vdelta %.2f, ' "$(stat_of "$qv" median)")
	fi
	printf '%s: vdelta %.2f s (%s), %s, cp %.2f s (%s); %svdelta/cp %.2f (%d rounds)\n' \
		"$1" "$(stat_of "$2" median)" "$(stat_of "$2" spread)" "$qs" \
		"$(stat_of "$4" median)" "$(stat_of "$4" spread)" "$qr" \
		"$(stat_of "$vc" median)" "${#v[@]}"
}

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

# ---- 1. commit ------------------------------------------------------------------
if want commit; then
	rm -rf commit && mkdir commit && cd commit
	"$VDELTA" create -s 4G base.vmdk >/dev/null
	fill base.vmdk 0 1024 0x11
	"$VDELTA" snapshot base.vmdk >/dev/null
	fill base-000001.vmdk 512 256 0x22
	cp --sparse=always base.vmdk q-base.vmdk
	qemu-img create -q -f vmdk -b q-base.vmdk -F vmdk q-top.vmdk
	fill q-top.vmdk 512 256 0x22
	cd "$B/t"
	v_commit() { "$VDELTA" commit base-000001.vmdk; }
	q_commit() { qemu-img commit -q q-top.vmdk; }
	c_commit() { cp --sparse=always base-000001.vmdk ../out/; }
	figure commit "$B/t/commit"
fi

# ---- 2. promote --unlink ------------------------------------------------------------
promote_template() # promote_template DEPTH: base 1 GiB data (shared) + DEPTH-1 layers of 32 MiB
{
	local top=base.vmdk i
	rm -rf "p$1" && mkdir "p$1" && cd "p$1"
	"$VDELTA" create -s 4G base.vmdk >/dev/null
	fill base.vmdk 0 1024 0x11
	for ((i = 1; i < $1; i++)); do
		"$VDELTA" snapshot "$top" >/dev/null
		top=$(printf 'base-%06d.vmdk' $i)
		fill "$top" $((i * 100)) 32 $((i + 20))
	done
	"$VDELTA" clone --linked base.vmdk other.vmdk >/dev/null # base is shared
	echo "$top" >TOP
	cd "$B/t"
}
v_promote() { "$VDELTA" promote --unlink "$(cat TOP)"; }
q_promote() { qemu-img convert -O vmdk "$(cat TOP)" ../out/q-flat.vmdk; }
c_promote() { cp --sparse=always base.vmdk base-000001.vmdk ../out/; }
for depth in 8 32; do
	want "promote$depth" || continue
	promote_template $depth
	eval "v_promote$depth() { v_promote; }; q_promote$depth() { q_promote; }; c_promote$depth() { c_promote; }"
	figure "promote$depth" "$B/t/p$depth"
done

# ---- 3. consolidate --all -----------------------------------------------------------
if want consolidate; then
	rm -rf cons && mkdir cons && cd cons
	"$VDELTA" create -s 2G base.vmdk >/dev/null
	fill base.vmdk 0 256 0x11
	for i in $(seq 1 16); do
		mkdir vm$i
		"$VDELTA" create --parent base.vmdk vm$i/a.vmdk >/dev/null
		fill vm$i/a.vmdk $((300 + i * 8)) 8 0x22
		"$VDELTA" create --parent vm$i/a.vmdk vm$i/b.vmdk >/dev/null
		fill vm$i/b.vmdk $((500 + i * 32)) 32 0x33
		"$VDELTA" create --parent vm$i/b.vmdk vm$i/top.vmdk >/dev/null
		fill vm$i/top.vmdk 1000 1 0x44
	done
	cd "$B/t"
	v_consolidate() { "$VDELTA" consolidate --all .; }
	c_consolidate()
	{
		for i in $(seq 1 16); do
			cp --sparse=always vm$i/a.vmdk ../out/a$i.vmdk
			cp --sparse=always vm$i/b.vmdk ../out/b$i.vmdk
		done
	}
	figure consolidate "$B/t/cons"
fi

# ---- 4. scale -----------------------------------------------------------------------
scale_template() # scale_template N
{
	local i
	rm -rf "s$1" && mkdir "s$1" && cd "s$1"
	"$VDELTA" create -s 1G base.vmdk >/dev/null
	fill base.vmdk 0 1 0x11
	for ((i = 1; i <= $1; i++)); do
		mkdir vm$i
		"$VDELTA" create --parent base.vmdk vm$i/a.vmdk >/dev/null
		qemu-io -f vmdk vm$i/a.vmdk -c "write -P 0x22 $((i % 900 + 2))M 64k" >/dev/null
		"$VDELTA" snapshot vm$i/a.vmdk >/dev/null
		qemu-io -f vmdk vm$i/a-000001.vmdk -c "write -P 0x33 $((i % 900 + 3))M 64k" >/dev/null
	done
	cd "$B/t"
}

calls() # calls OP: "pread stat open" system calls of scale_cmd OP under strace -f -c
{
	scale_cmd strace -f -c -o "$B/strace.out" "$1" >/dev/null
	awk '$NF ~ /^(pread64|read)$/ { r += $4 } $NF ~ /stat/ { s += $4 }
	     $NF ~ /^open/ { o += $4 } END { printf "%d %d %d", r, s, o }' "$B/strace.out"
	rm -f "$B/strace.out"
}

slope() # slope "N1 T1" "N2 T2"...: least-squares slope of log T against log N
{
	printf '%s\n' "$@" | awk '$2 > 0 { x = log($1); y = log($2); n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
		END { if (n < 2 || n * sxx == sx * sx) print "-"; else printf "%.2f", (n * sxy - sx * sy) / (n * sxx - sx * sx) }'
}

scale_cmd() # scale_cmd [strace ARGS...] OP: runs OP in the folder's copy
{
	local op=${*: -1}
	set -- "${@:1:$#-1}" "$VDELTA"
	case $op in
	tree) "$@" tree . ;;
	commit) "$@" commit vm1/a-000001.vmdk ;;
	consolidate) "$@" consolidate --all . ;;
	esac
}

wall_cpu() # wall_cpu OP: "WALL CPU" seconds of scale_cmd OP (CPU: user + system)
{
	local TIMEFORMAT='%R %U %S' out
	out=$( { time scale_cmd "$1" >/dev/null 2>&1; } 2>&1 )
	awk '{ printf "%s %.3f", $1, $2 + $3 }' <<<"$out"
}

if want scale; then
	command -v strace >/dev/null || { echo "scale: strace missing (package strace)" >&2; exit 1; }
	declare -A pts=()
	for n in ${SCALE:-100 400 1600}; do
		t0=$(date +%s)
		scale_template "$n"
		echo "scale N=$n: folder made in $(( $(date +%s) - t0 )) s"
		for op in tree commit consolidate; do
			ts="" cs=""
			for ((r = 0; r < ROUNDS; r++)); do
				restore "$B/t/s$n"
				read -r w c <<<"$(wall_cpu $op)"
				ts+="$w " cs+="$c "
			done
			restore "$B/t/s$n"
			read -r rd st op_ <<<"$(calls $op)"
			m=$(stat_of "$ts" median) mc=$(stat_of "$cs" median)
			printf 'scale N=%d %s: %.3f s (%s), CPU %.3f s (%s), %d preads (%.1f per disk), %d stats, %d opens\n' \
				"$n" "$op" "$m" "$(stat_of "$ts" spread)" "$mc" "$(stat_of "$cs" spread)" \
				"$rd" "$(echo "scale=2; $rd / $n" | bc)" "$st" "$op_"
			pts[t_$op]+="$n $m,"
			pts[c_$op]+="$n $mc,"
			pts[r_$op]+="$n $rd,"
		done
		cd "$B/t" && rm -rf "s$n"
	done
	for op in tree commit consolidate; do
		IFS=, read -ra tp <<<"${pts[t_$op]%,}"
		IFS=, read -ra up <<<"${pts[c_$op]%,}"
		IFS=, read -ra rp <<<"${pts[r_$op]%,}"
		echo "scale $op: slope against N of wall time $(slope "${tp[@]}"), of CPU time $(slope "${up[@]}"), of preads $(slope "${rp[@]}")"
	done
fi
rm -rf "$B/r"
