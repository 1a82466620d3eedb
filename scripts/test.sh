#!/usr/bin/env bash
# test.sh — build vdelta (scripts/setup.sh) and run the whole test suite.
#
# Prints meson's log of failures, then as its last line a plain summary
# "N passed, N failed" (from meson-logs/testlog.json), and exits non-zero
# when any test failed.  Skipped tests (a missing oracle or ../shared) are
# counted on the line before it.
#
# Environment: BUILD_DIR, MESON_ARGS as for setup.sh.  Extra arguments go to
# `meson test` (e.g. a test name, or --suite shell).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$src/$build ;; esac
export BUILD_DIR=$build

if ! "$src/scripts/setup.sh"; then
	echo "test: setup or build failed; no test ran" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

log=$build/meson-logs/testlog.json
rm -f "$log" # never count a previous run's results
rc=0
meson test -C "$build" --print-errorlogs "$@" || rc=$?

if [ ! -f "$log" ]; then
	echo "test: no $log; meson test did not run" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
# One JSON object per line, one per test; "result" is OK, FAIL, SKIP,
# TIMEOUT, ERROR, EXPECTEDFAIL or UNEXPECTEDPASS.
read -r passed failed skipped < <(python3 - "$log" <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r == "SKIP":
        skip += 1
    else:
        bad += 1
print(ok, bad, skip)
PY
)
echo "$skipped skipped"
echo "$passed passed, $failed failed"
if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
	exit 1
fi
