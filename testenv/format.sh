#!/usr/bin/env bash
# testenv/format.sh: the C++ sources follow .clang-format (clang-format 14, Debian 12).
#   testenv/format.sh          check: list the files that differ, exit 1 if any
#   testenv/format.sh --fix    rewrite them in place
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cf=$(command -v clang-format-14 || command -v clang-format || true)
if [[ -z $cf ]]; then
	echo "format: clang-format is not installed (testenv/bootstrap.sh installs it)" >&2
	exit 1
fi
# (bench/*.c are stand-alone C tools in the kernel's style: not checked.)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	mapfile -t files < <(git ls-files -- 'src/*.cpp' 'src/*.hpp' 'include/*.hpp' 'tests/*.cpp' 'tests/*.hpp')
else # a source tree without git (an unpacked release)
	mapfile -t files < <(find src include tests -name '*.cpp' -o -name '*.hpp' | sort)
fi
if [[ ${1-} == --fix ]]; then
	"$cf" -i --style=file "${files[@]}"
	exit 0
fi
bad=()
for f in "${files[@]}"; do
	"$cf" --style=file --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [[ ${#bad[@]} -gt 0 ]]; then
	printf 'format: not formatted as .clang-format says (testenv/format.sh --fix): %s\n' "${bad[*]}" >&2
	exit 1
fi
echo "format: ${#files[@]} files follow .clang-format"
