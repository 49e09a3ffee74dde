#!/usr/bin/env bash
# testenv/test-all.sh: install what is missing, build, and run every test (unit and integration),
# then the whole suite again under sanitizers (testenv/test-asan.sh) and the fuzzers
# (testenv/fuzz.sh).
# Integration tests need root; outside CI they skip without it, in CI (CI set) they fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

testenv/bootstrap.sh
testenv/build.sh

status=0
ctest --test-dir build --output-on-failure --no-tests=error -j2 "$@" || status=$?

# A test killed by its timeout cannot run its own cleanup: tear down any lab it left behind.
if [[ $(id -u) -eq 0 ]]; then
	# shellcheck source=testenv/lab.sh
	source testenv/lab.sh
	lab_reap_stale
fi

# The same suite again under ASan + UBSan + LeakSanitizer (build-asan/), then every fuzz target
# for a bounded time (build-fuzz/, clang). NSEGRESS_SANITIZERS=0 skips both for a quick local
# run; CI always runs them.
if [[ ${NSEGRESS_SANITIZERS:-1} != 0 || -n ${CI-} ]]; then
	testenv/test-asan.sh "$@" || status=1
	testenv/fuzz.sh || status=1
fi
exit "$status"
