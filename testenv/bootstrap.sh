#!/usr/bin/env bash
# testenv/bootstrap.sh: install what nsegress needs to build and test, on Debian 12, as root.
# Idempotent: asks dpkg first and touches apt only when something is missing.
set -euo pipefail

packages=(
	# build
	build-essential cmake pkg-config
	libnl-3-dev libnl-route-3-dev libmnl-dev libnftnl-dev
	libboost-program-options-dev doctest-dev nlohmann-json3-dev libfmt-dev
	# fuzzing (testenv/fuzz.sh): clang with libFuzzer and the sanitizer runtimes
	clang libclang-rt-14-dev
	# tests, demo and man page check
	nftables iproute2 iputils-ping conntrack netcat-openbsd socat jq
	groff-base man-db iptables procps util-linux
	# the Debian package (testenv/package.sh, tests/integration/test_package.sh): dpkg-shlibdeps
	dpkg-dev
	# test helpers in tests/integration/helpers (UDP streams, router advertisements, AF_PACKET
	# frames) and descriptor hygiene (tests/integration/test_env_fds.sh: strace as the observer)
	strace python3
	# CNI plugin mode tests (tests/integration/test_cni*.sh): real bridge + host-local plugins,
	# the Kubernetes example parsed with PyYAML, podman's CNI backend with a busybox image
	containernetworking-plugins python3-yaml podman runc conmon busybox-static
	# real engines (tests/integration/test_engine_*.sh, testenv/engines.sh): dockerd with its own
	# containerd, podman and runc, all in a sealed lab namespace
	docker.io containerd
	# the benchmark (bench/run.sh): list generator and report (it also uses gcc, iptables,
	# runc, busybox-static and jq from above)
	python3
)

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "bootstrap: all ${#packages[@]} packages already installed"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "bootstrap: missing packages: ${missing[*]}; run this script as root to install them" >&2
	exit 1
fi

echo "bootstrap: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
