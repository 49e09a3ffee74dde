#!/usr/bin/env bash
# testenv/demo.sh: show nsegress at work in a sealed lab: a "container" namespace behind a
# router, an allowed LAN and a forbidden network. Run as root on Debian 12.
#
# What it changes on this machine, and nothing else:
#   - installs the Debian packages missing from `testenv/bootstrap.sh --demo` (the compiler and
#     libraries to build nsegress, and ip/nft/ping/nc/socat for the lab); it lists them first.
#     No container engine, no clang: those are for the test suite (testenv/test-all.sh);
#   - builds the nsegress binary into build-demo/ (tests not built);
#   - creates network namespaces of its own (nsgdemoPID_*), and removes them on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

if [[ $(id -u) -ne 0 ]]; then
	echo "demo: run me as root (network namespaces need it)" >&2
	exit 1
fi

echo "demo: checking for the Debian packages the demo needs (testenv/bootstrap.sh --demo)"
testenv/bootstrap.sh --demo
echo "demo: building nsegress into build-demo/ (log: /tmp/nsegress-demo-build.log)"
{
	cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF &&
		cmake --build build-demo -j2 --target nsegress
} >/tmp/nsegress-demo-build.log 2>&1 || {
	cat /tmp/nsegress-demo-build.log >&2
	exit 1
}
NSEGRESS=$REPO/build-demo/nsegress

# shellcheck source=testenv/lab.sh
source testenv/lab.sh
LAB_AUTOREAP=1
P=nsgdemo$$
CTR=$(lab_netns "$P" ctr)
lab_trap "$P"

if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B='' G='' R='' N=''; fi
heading() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }
show() { printf '%s$ %s%s\n' "$B" "$*" "$N"; }
good() { printf '%s-> %s%s\n' "$G" "$*" "$N"; }
bad() { printf '%s-> %s%s\n' "$R" "$*" "$N"; }
failures=0

# nsegress runs on the lab's "host" (the gw namespace), as a container host would run it.
nsegress() { ip netns exec "${P}_gw" "$NSEGRESS" "$@"; }

# ping_from_ctr ADDR EXPECT(reach|refused)
ping_from_ctr() {
	local addr=$1 expect=$2 out rc
	show "ip netns exec ${P}_ctr ping -c1 -W1 $addr"
	set +e
	out=$(ip netns exec "${P}_ctr" ping -n -c1 -W1 "$addr" 2>&1)
	rc=$?
	set -e
	printf '%s\n' "$out" | grep -E 'bytes from|not permitted|nreachable|No route to host|rohibited|packet loss' | sed 's/^/   /'
	if [[ $rc -eq 0 && $expect == reach ]]; then
		good "$addr answers"
	elif [[ $rc -ne 0 && $expect == refused ]]; then
		good "$addr is refused"
	else
		bad "$addr: expected $expect, ping exited $rc"
		failures=$((failures + 1))
	fi
}

heading "1. Build the sealed lab (namespaces ${P}_ctr, _gw, _lan, _wan)"
cat <<EOF
   ctr  172.31.0.2  fd00:31::2          the "container"
    |
   gw   172.31.0.1 / 192.168.1.1 / 198.51.100.1   router (the container's host)
    |-- lan  192.168.1.10   2001:db8:1::10   allowed network
    \`-- wan  198.51.100.10  2001:db8:2::10   forbidden network (it answers: pings, TCP, UDP)
EOF
lab_up "$P"
good "lab is up; nothing here touches this machine's own network"

heading "2. Before: the container reaches both networks"
ping_from_ctr 192.168.1.10 reach
ping_from_ctr 198.51.100.10 reach

heading "3. Restrict the container to 192.168.1.0/24"
say "nsegress runs on the container's host (here the gw namespace, via ip netns exec ${P}_gw)"
say "and enters the container's network namespace by its path."
show "nsegress restrict --netns $CTR --allow 192.168.1.0/24 --probe-reach 192.168.1.10 --probe-block 198.51.100.10"
set +e
nsegress restrict --netns "$CTR" --allow 192.168.1.0/24 --probe-reach 192.168.1.10 --probe-block 198.51.100.10
rc=$?
set -e
if [[ $rc -eq 0 ]]; then good "exit 0: policy installed and both probes held"; else
	bad "restrict exited $rc"
	failures=$((failures + 1))
fi

heading "4. After: from inside the container"
ping_from_ctr 192.168.1.10 reach
ping_from_ctr 198.51.100.10 refused
ping_from_ctr 2001:db8:2::10 refused
show "ip netns exec ${P}_ctr nc -z -w2 198.51.100.10 $LAB_TCP_PORT"
if ip netns exec "${P}_ctr" nc -z -w2 198.51.100.10 "$LAB_TCP_PORT" 2>/dev/null; then
	bad "TCP to the forbidden network connected"
	failures=$((failures + 1))
else
	good "TCP to the forbidden network is refused"
fi

heading "5. What the kernel now holds inside the container (read with nft and ip)"
show "ip netns exec ${P}_ctr nft list table inet nsegress"
ip netns exec "${P}_ctr" nft list table inet nsegress | sed 's/^/   /'
show "ip -n ${P}_ctr rule"
ip -n "${P}_ctr" rule | sed 's/^/   /'

heading "6. nsegress status"
show "nsegress status --netns $CTR"
nsegress status --netns "$CTR" || failures=$((failures + 1))

heading "7. Release"
show "nsegress release --netns $CTR"
nsegress release --netns "$CTR" || failures=$((failures + 1))
ping_from_ctr 198.51.100.10 reach
show "ip netns exec ${P}_ctr nft list ruleset"
ruleset=$(ip netns exec "${P}_ctr" nft list ruleset)
if [[ -z $ruleset ]]; then good "(empty: nothing left behind)"; else
	printf '%s\n' "$ruleset"
	failures=$((failures + 1))
fi

heading "8. Tear down the lab"
lab_down "$P"
good "namespaces removed"

if [[ $failures -ne 0 ]]; then
	printf '\n%sdemo: %d step(s) did not behave as expected%s\n' "$R" "$failures" "$N"
	exit 1
fi
printf '\n%sdemo: done. 192.168.1.10 reachable, the forbidden network refused, released cleanly.%s\n' "$G" "$N"
