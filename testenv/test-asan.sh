#!/usr/bin/env bash
# testenv/test-asan.sh: build everything with AddressSanitizer + UndefinedBehaviorSanitizer (and
# LeakSanitizer) into build-asan/, and run the whole suite against it: the unit tests, the fuzz
# corpus replay, and every integration test (they take the binary from $NSEGRESS, which ctest
# points at build-asan/nsegress).
#
# Any sanitizer report fails the run, twice over: the process exits 86 (a compiled-in default,
# see src/base/sanitizer_defaults.cpp, so it holds under `env -i` and in runc/podman hooks too), and
# the report is written to build-asan/sanitizer-logs/report.PID, which must be empty at the end.
# The second catches reports from commands whose status or stderr a test discards (cleanup).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmake -S . -B build-asan -DNSEGRESS_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j2

logs=$PWD/build-asan/sanitizer-logs
rm -rf "$logs"
mkdir -p "$logs"
chmod 1777 "$logs" # tests also run nsegress as nobody
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# First, that the machinery works: a heap overflow, undefined behaviour and a leak, each under
# `env -i`, must exit 86 and leave a report.
for kind in heap ub leak; do
	rc=0
	env -i build-asan/tests/nsegress_sanitizer_selftest "$kind" 2>/dev/null || rc=$?
	found=("$logs"/*)
	if [[ $rc -ne 86 || ! -s ${found[0]} ]]; then
		echo "asan: self-test '$kind' did not fail as it must (exit $rc, report: ${found[0]})" >&2
		exit 1
	fi
	rm -f "$logs"/*
done
echo "asan: self-test: heap overflow, undefined behaviour and a leak each exit 86 with a report"

status=0
# doc.* checks the man page, not code: the normal suite runs it.
ctest --test-dir build-asan --output-on-failure --no-tests=error -j2 -E '^doc\.' "$@" || status=$?

if [[ $(id -u) -eq 0 ]]; then
	# shellcheck source=testenv/lab.sh
	source testenv/lab.sh
	lab_reap_stale
fi

reports=("$logs"/*)
if [[ -e ${reports[0]} ]]; then
	echo "asan: ${#reports[@]} sanitizer report(s):"
	for r in "${reports[@]}"; do
		echo "== $r"
		head -60 "$r"
	done
	status=1
else
	echo "asan: no sanitizer report"
fi
exit "$status"
