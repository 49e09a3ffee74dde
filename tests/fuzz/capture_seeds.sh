#!/usr/bin/env bash
# tests/fuzz/capture_seeds.sh: refresh the netlink seeds of the fuzz corpus (rtnl, nft, conntrack)
# from a real kernel, in a sealed lab (root). Not part of CI: the seeds are committed.
#   NSEGRESS=build/nsegress tests/fuzz/capture_seeds.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
NSEGRESS=${NSEGRESS:-$REPO/build/nsegress}
# shellcheck source=../../testenv/lab.sh
source testenv/lab.sh
P=fzseed$$
CORPUS=$REPO/tests/fuzz/corpus
TMP=$(mktemp -d)
trap 'lab_down "$P"; rm -rf "$TMP"' EXIT
lab_up "$P"
ctr=${P}_ctr

# Variety for the route and rule parsers: a multipath route, an onlink route, a blackhole, a
# rule with selectors, a bridge and a second veth, extra addresses of both families.
ip -n "$ctr" link add d0 type veth peer name d1
ip -n "$ctr" link set d1 up
ip -n "$ctr" link set d0 up
ip -n "$ctr" link add br7 type bridge
ip -n "$ctr" addr add 10.9.0.1/24 dev d0
ip -n "$ctr" addr add 10.9.1.1/24 dev d0
ip -n "$ctr" -6 addr add fd00:99::1/64 dev d0 nodad
ip -n "$ctr" route add 10.50.0.0/16 nexthop via 10.9.0.2 dev d0 nexthop via 10.9.1.2 dev d0
ip -n "$ctr" route add 10.60.0.0/16 via 10.9.9.9 dev d0 onlink metric 50
ip -n "$ctr" route add blackhole 10.70.0.0/16
ip -n "$ctr" -6 route add 2001:db8:77::/48 via fd00:99::2 dev d0
ip -n "$ctr" rule add from 10.9.0.0/24 fwmark 0x7 lookup 100 pref 500
ip -n "$ctr" -6 rule add to 2001:db8:77::/48 prohibit pref 501

ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns "/run/netns/$ctr" --allow 192.168.1.0/24 \
	--allow 2001:db8:1::/64 --allow 10.9.0.0/16 --allow 203.0.113.7 --no-probe >/dev/null
# Flows for the conntrack table: ICMP and TCP to the allowed LAN, both families.
ip netns exec "$ctr" ping -c1 -W1 -q "$LAB_LAN4" >/dev/null
ip netns exec "$ctr" ping -c1 -W1 -q "$LAB_LAN6" >/dev/null
ip netns exec "$ctr" nc -z -w2 "$LAB_LAN4" "$LAB_TCP_PORT"
ip netns exec "$ctr" nc -z -w2 "$LAB_LAN6" "$LAB_TCP_PORT"

ip netns exec "$ctr" python3 tests/fuzz/capture_netlink.py rtnl "$TMP/rtnl"
ip netns exec "$ctr" python3 tests/fuzz/capture_netlink.py nft "$TMP/nft"
ip netns exec "$ctr" python3 tests/fuzz/capture_netlink.py ct "$TMP/ct"
for f in "$TMP"/rtnl/*; do cp "$f" "$CORPUS/rtnl/lab-$(basename "$f")"; done
for f in "$TMP"/nft/*; do cp "$f" "$CORPUS/nft/lab-$(basename "$f")"; done
cp "$TMP/ct/flows" "$CORPUS/conntrack/lab-flows"
echo "seeds written to $CORPUS/{rtnl,nft,conntrack}"
