#!/usr/bin/env bash
# testenv/build.sh: configure and build nsegress (and its tests) into build/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2
