#!/usr/bin/env bash
# testenv/bootstrap.sh [--demo]: install what nsegress needs on Debian 12, as root.
#   (default)  everything the build, the whole test suite, the fuzzers and the benchmark need:
#              what testenv/test-all.sh (and so CI, .ci/run) runs with. This includes docker.io,
#              podman and containerd (the engine tests run them in sealed namespaces); note that
#              installing docker.io on a normal host starts dockerd, which rewrites the host's
#              iptables (FORWARD policy DROP).
#   --demo     only what testenv/demo.sh needs: the compiler and the libraries to build the
#              nsegress binary, and the few tools the lab and the demo run (ip, nft, ping, nc,
#              socat, sysctl). No container engine, no clang, no test-only tools.
# Idempotent: asks dpkg first and touches apt only when something is missing; says what it
# installs before installing it.
set -euo pipefail

profile=all
case ${1-} in
'') ;;
--demo) profile=demo ;;
*)
	echo "usage: $0 [--demo]" >&2
	exit 1
	;;
esac

# To build the nsegress binary (tests excluded: -DBUILD_TESTING=OFF).
build_packages=(
	build-essential cmake pkg-config
	libnl-3-dev libnl-route-3-dev libmnl-dev libnftnl-dev
	libboost-program-options-dev nlohmann-json3-dev libfmt-dev
	# the names proxy's DNS messages (src/policy/names.cpp)
	libldns-dev
)
# What the sealed lab (testenv/lab.sh) and testenv/demo.sh run: ip and ss (iproute2), nft (to
# show what nsegress installed), ping, nc, socat (the lab's listeners), sysctl (procps),
# timeout (coreutils, essential).
demo_packages=(
	"${build_packages[@]}"
	nftables iproute2 iputils-ping netcat-openbsd socat procps
)
packages=(
	"${demo_packages[@]}"
	# unit tests; the source format check (testenv/format.sh)
	doctest-dev clang-format
	# fuzzing (testenv/fuzz.sh): clang with libFuzzer and the sanitizer runtimes
	clang libclang-rt-14-dev
	# tests and man page check; bash-completion's helpers for the completion test
	conntrack jq groff-base man-db iptables util-linux bash-completion
	# the Debian package (testenv/package.sh, tests/integration/test_package.sh): dpkg-shlibdeps
	dpkg-dev
	# test helpers in tests/integration/helpers (UDP streams, router advertisements, AF_PACKET
	# frames) and descriptor hygiene (tests/integration/test_env_fds.sh: strace as the observer)
	strace python3
	# the lab's DNS servers and clients (tests/integration/helpers/dns_*.py, test_names.sh)
	python3-dnslib
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
[[ $profile == demo ]] && packages=("${demo_packages[@]}")

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	echo "bootstrap ($profile): all ${#packages[@]} packages already installed"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "bootstrap: missing packages: ${missing[*]}; run this script as root to install them" >&2
	exit 1
fi

echo "bootstrap ($profile): installing ${#missing[@]} Debian package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
