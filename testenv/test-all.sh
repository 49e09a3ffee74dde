#!/usr/bin/env bash
# testenv/test-all.sh: install what is missing, build, and run every test (unit and integration).
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
exit "$status"
