#!/usr/bin/env bash
# testenv/package.sh [OUTDIR]: build nsegress and nsegress-runtime (into build-package/, tests not built)
# and make the Debian package from it with CPack: OUTDIR/nsegress_VERSION_ARCH.deb (default
# OUTDIR: build-package/out). Needs the build dependencies (testenv/bootstrap.sh --demo; CPack's
# dpkg-shlibdeps comes with build-essential's dpkg-dev); root is not needed.
# Install with `sudo dpkg -i OUTDIR/nsegress_*.deb`, remove with `sudo dpkg -r nsegress`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-build-package/out}
cmake -S . -B build-package -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF
cmake --build build-package -j2 --target nsegress nsegress-runtime
mkdir -p "$out"
cpack --config build-package/CPackConfig.cmake -B "$out"
rm -rf -- "$out/_CPack_Packages"
ls "$out"/nsegress_*.deb
