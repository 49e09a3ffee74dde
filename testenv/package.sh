#!/usr/bin/env bash
# testenv/package.sh [OUTDIR]: build nsegress (build/, as testenv/build.sh) and make the Debian
# package from it with CPack: OUTDIR/nsegress_VERSION_ARCH.deb (default OUTDIR: build/package).
# Needs dpkg-dev (dpkg-shlibdeps); root is not needed. Install with `sudo dpkg -i FILE.deb`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-build/package}
testenv/build.sh
mkdir -p "$out"
cpack --config build/CPackConfig.cmake -B "$out"
rm -rf -- "$out/_CPack_Packages"
ls "$out"/nsegress_*.deb
