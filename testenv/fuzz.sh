#!/usr/bin/env bash
# testenv/fuzz.sh: build the libFuzzer targets of tests/fuzz (clang; ASan + UBSan + LeakSanitizer)
# into build-fuzz/, and run each for a bounded time from its committed seeds. Fails on any
# crash, leak, sanitizer report, broken invariant, slow input (-timeout) or memory blow-up
# (-rss_limit_mb); the input that did it is kept in build-fuzz/artifacts/TARGET/ and the log in
# build-fuzz/logs/TARGET.log. Reproduce with: build-fuzz/tests/fuzz/fuzz_TARGET ARTIFACT
#
#   FUZZ_SECONDS  seconds per target (default 30)
#   FUZZ_JOBS     targets run in parallel (default 2: CI has 2 cores)
#   FUZZ_TARGETS  space-separated subset (default: every directory of tests/fuzz/corpus)
#
# New inputs the fuzzer finds go to build-fuzz/corpus/TARGET, never into the committed seeds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${FUZZ_SECONDS:-30}
jobs=${FUZZ_JOBS:-2}
read -r -a targets <<<"${FUZZ_TARGETS:-$(ls tests/fuzz/corpus | tr '\n' ' ')}"

if ! command -v clang++ >/dev/null; then
	echo "fuzz: clang++ is missing (run testenv/bootstrap.sh)" >&2
	exit 1
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DNSEGRESS_FUZZ=ON -DBUILD_TESTING=OFF \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j2 --target fuzz

rm -rf build-fuzz/logs build-fuzz/artifacts
mkdir -p build-fuzz/logs
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}

run_one() {
	local t=$1
	mkdir -p "build-fuzz/corpus/$t" "build-fuzz/artifacts/$t"
	local rc=0
	"build-fuzz/tests/fuzz/fuzz_$t" "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
		-artifact_prefix="build-fuzz/artifacts/$t/" -print_final_stats=1 \
		>"build-fuzz/logs/$t.log" 2>&1 || rc=$?
	echo "$rc" >"build-fuzz/logs/$t.rc"
}

echo "fuzz: ${#targets[@]} targets, ${secs} s each, ${jobs} at a time"
running=0
for t in "${targets[@]}"; do
	if [[ ! -x build-fuzz/tests/fuzz/fuzz_$t ]]; then
		echo "fuzz: no target fuzz_$t" >&2
		exit 1
	fi
	run_one "$t" &
	running=$((running + 1))
	if [[ $running -ge $jobs ]]; then
		wait -n || true
		running=$((running - 1))
	fi
done
wait || true

passed=0 failed=0
for t in "${targets[@]}"; do
	rc=$(cat "build-fuzz/logs/$t.rc" 2>/dev/null || echo missing)
	runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "build-fuzz/logs/$t.log" | grep -Eo '[0-9]+$' || echo '?')
	if [[ $rc == 0 ]] && ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "build-fuzz/logs/$t.log"; then
		passed=$((passed + 1))
		echo "ok - fuzz_$t: $runs inputs, no finding"
	else
		failed=$((failed + 1))
		echo "not ok - fuzz_$t: exit $rc; log build-fuzz/logs/$t.log, input in build-fuzz/artifacts/$t/"
		grep -E -A25 'ERROR:|runtime error:|fuzz invariant broken' "build-fuzz/logs/$t.log" | head -60 | sed 's/^/#   /'
	fi
done
echo "fuzz: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
