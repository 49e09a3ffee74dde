#!/usr/bin/env bash
# testenv/package.sh [OUTDIR]: build nsegress, nsegress-runtime and nsegress-names-proxy (into
# build-package/, tests not built)
# and make the Debian package from it with CPack: OUTDIR/nsegress_VERSION_ARCH.deb (default
# OUTDIR: build-package/out). Needs the build dependencies (testenv/bootstrap.sh --demo; CPack's
# dpkg-shlibdeps comes with build-essential's dpkg-dev); root is not needed.
# Install with `sudo dpkg -i OUTDIR/nsegress_*.deb`, remove with `sudo dpkg -r nsegress`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-build-package/out}
cmake -S . -B build-package -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF
# Everything the package installs (without tests, that is nsegress, nsegress-runtime and, when
# the static archives are there, nsegress-names-proxy; CMakeLists.txt).
cmake --build build-package -j2
mkdir -p "$out"
cpack --config build-package/CPackConfig.cmake -B "$out"
rm -rf -- "$out/_CPack_Packages"
ls "$out"/nsegress_*.deb
