#!/usr/bin/env bash
# Bypasses, and what nsegress says about them:
#   - a TCP flow opened before restrict dies: tested in test_flows.sh (not repeated here);
#   - an IPv6 router advertisement arriving after restrict (new default route, new prefix) does
#     not open a path to a forbidden destination, with and without the route set;
#   - status and verify report processes holding CAP_NET_ADMIN or CAP_NET_RAW over the namespace;
#   - a packet socket (AF_PACKET, below the IP layer) sending a crafted frame to a forbidden host
#     gets through the inet policy (so this test can fail), and is stopped by --netdev-egress,
#     also when it lies about the frame's protocol; allowed traffic still flows; interfaces
#     created later are reported as uncovered until restrict runs again.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab
HELPERS=$REPO/tests/integration/helpers
PY=/usr/bin/python3

section "an IPv6 router advertisement after restrict does not open a path"
# Make the RA's default route the only IPv6 way out: no static default, lan's /64 static.
ip -n "${P}_ctr" -6 route del default via "$LAB_GW6"
ip -n "${P}_ctr" -6 route add "$LAB_LAN_NET6" via "$LAB_GW6"
# The router serves the prefix it advertises (ctr may pick its SLAAC address as a source).
ip -n "${P}_gw" -6 route add 2001:db8:99::/64 dev c0
send_ra() { ip netns exec "${P}_gw" "$PY" "$HELPERS/send_ra.py" c0 2001:db8:99::/64 "${1:-1800}"; }
ra_default() { ip -n "${P}_ctr" -6 route show default proto ra; }
wait_ra_default() {
	local i
	for ((i = 0; i < 150; i++)); do
		[[ -n $(ra_default) ]] && return 0
		sleep 0.02
	done
	return 1
}
forget_ra() {
	# A zero router lifetime withdraws the default route; the SLAAC address and prefix route go too.
	send_ra 0
	ip -n "${P}_ctr" -6 route flush proto ra 2>/dev/null
	ip -n "${P}_ctr" -6 addr flush dev eth0 scope global dynamic 2>/dev/null
}
assert_false "control: without a default route, wan6 is unreachable" ping_ok "$LAB_WAN6"
assert_true "control: the RA is sent" send_ra
assert_true "control: ctr takes a default route from the RA" wait_ra_default
assert_true "control: through it, wan6 answers (the RA opens a path when nothing restricts)" ping_ok "$LAB_WAN6"
forget_ra

for mode in route-set no-route-set; do
	extra=()
	[[ $mode == no-route-set ]] && extra=(--no-route-set)
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" "${extra[@]}" --no-probe
	assert_true "$mode: the RA is sent after restrict" send_ra
	assert_true "$mode: ctr takes the RA's default route ($(ra_default | head -1))" wait_ra_default
	assert_match "$(ip -n "${P}_ctr" -6 addr show dev eth0)" "inet6 2001:db8:99:" "$mode: and a SLAAC address in the advertised prefix"
	: >"$(lab_log "$P" wan udp)"
	udp_send "$LAB_WAN6" "ra-$mode-$$"
	out=$(in_ctr ping -n -c1 -W1 "$LAB_WAN6" 2>&1)
	assert_false "$mode: ping wan6 is refused ($(why "$out"))" ping_ok "$LAB_WAN6"
	assert_false "$mode: ping to the advertised prefix (2001:db8:99::1) is refused" ping_ok 2001:db8:99::1
	assert_true "$mode: lan6 still answers" ping_ok "$LAB_LAN6"
	sleep 0.3
	assert_not_contains "$(<"$(lab_log "$P" wan udp)")" "ra-$mode-$$" "$mode: a UDP datagram to wan6 never arrives"
	expect_exit 0 nsg release --netns "$CTR_NS"
	forget_ra
done
ip -n "${P}_ctr" -6 route del "$LAB_LAN_NET6" via "$LAB_GW6"
ip -n "${P}_ctr" -6 route add default via "$LAB_GW6"

section "status and verify report CAP_NET_ADMIN and CAP_NET_RAW holders"
# pids_of JSON-LIST: the pids in status's bypass list
pids_of() { jq -r "$1 | map(.pid) | join(\" \")"; }
bg_in_ctr setpriv --inh-caps=-all --bounding-set=-all -- sleep 600
none=$!
bg_in_ctr setpriv --inh-caps=-all --bounding-set=-all,+net_raw -- sleep 600
raw=$!
bg_in_ctr sleep 600
admin=$!
sleep 0.3
expect_exit 0 nsg status --netns "$CTR_NS" --json
admins=" $(pids_of .bypass.net_admin <<<"$OUT") "
raws=" $(pids_of .bypass.net_raw <<<"$OUT") "
assert_contains "$admins" " $admin " "status: the full-capability process is listed under net_admin"
assert_not_contains "$admins" " $raw " "status: the CAP_NET_RAW-only process is not under net_admin"
assert_contains "$raws" " $raw " "status: the CAP_NET_RAW-only process is listed under net_raw"
assert_not_contains "$raws$admins" " $none " "status: the process without capabilities is listed nowhere"
assert_eq false "$(jq -r .bypass.net_raw_filtered <<<"$OUT")" "status: packet sockets are not filtered (no netdev egress filter)"
expect_exit 0 nsg status --netns "$CTR_NS"
assert_contains "$OUT" "WARNING: CAP_NET_ADMIN" "status (human): warns about CAP_NET_ADMIN"
assert_contains "$OUT" "WARNING: CAP_NET_RAW" "status (human): warns about CAP_NET_RAW"
expect_exit 3 nsg verify --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --json
check() { jq -r --arg n "$1" '.checks[] | select(.name == $n) | "\(.status) \(.detail)"' <<<"$OUT"; }
assert_match "$(check bypass-net-admin)" "^fail .*$admin \\(sleep\\)" "verify: bypass-net-admin fails and names the process"
assert_match "$(check bypass-net-raw)" "^warn .*no netdev egress filter on 'eth0'" "verify: bypass-net-raw warns: no netdev egress filter"
kill "$admin"
wait "$admin" 2>/dev/null
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "" "$(pids_of .bypass.net_admin <<<"$OUT")" "status: no CAP_NET_ADMIN holder once it is gone"

section "a packet socket below the IP layer: through without --netdev-egress, stopped with it"
gw_mac=$(ip netns exec "${P}_gw" cat /sys/class/net/c0/address)
ip netns exec "${P}_wan" nft -f - <<EOF
table inet count {
	chain in {
		type filter hook input priority -300; policy accept;
		ip saddr $LAB_CTR4 ip daddr $LAB_WAN4 udp dport 5002 counter comment "frame4"
		ip6 saddr $LAB_CTR6 ip6 daddr $LAB_WAN6 ip6 nexthdr 59 counter comment "frame6"
	}
}
EOF
ip netns exec "${P}_lan" nft -f - <<EOF
table inet count {
	chain in {
		type filter hook input priority -300; policy accept;
		ip saddr $LAB_CTR4 ip daddr $LAB_LAN4 udp dport 5002 counter comment "frame4"
	}
}
EOF
# frames FAMILY DST COUNT [CLAIM]: crafted frames from ctr's eth0 to gw's MAC, sent as root
# (CAP_NET_RAW) through an AF_PACKET socket.
frames() {
	local src=$LAB_CTR4
	[[ $1 == 6 ]] && src=$LAB_CTR6
	in_ctr "$PY" "$HELPERS/packet_socket_send.py" eth0 "$gw_mac" "$src" "$2" "$3" ${4:+"$4"} 2>/dev/null
}

expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" --no-probe
frames 4 "$LAB_WAN4" 5 >/dev/null
frames 6 "$LAB_WAN6" 5 >/dev/null
sleep 0.3
assert_eq 5 "$(count_packets wan frame4)" "without --netdev-egress: 5 crafted IPv4 frames reach wan (the inet policy cannot see them)"
assert_eq 5 "$(count_packets wan frame6)" "without --netdev-egress: 5 crafted IPv6 frames reach wan"

expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" --netdev-egress \
	--probe-reach "$LAB_LAN4" --probe-reach "$LAB_LAN6" --probe-block "$LAB_WAN4" --probe-block "$LAB_WAN6" --json
assert_eq '["eth0"]' "$(jq -c .netdev_egress.devices <<<"$OUT")" "--json: the netdev egress filter covers eth0"
assert_contains "$(in_ctr nft list table netdev nsegress)" 'hook egress device "eth0"' "nft: an egress chain on eth0"
frames 4 "$LAB_WAN4" 5 >/dev/null
frames 4 "$LAB_WAN4" 5 arp >/dev/null # an IPv4 frame whose socket claims it is ARP
frames 6 "$LAB_WAN6" 5 >/dev/null
frames 6 "$LAB_WAN6" 5 arp >/dev/null
frames 4 "$LAB_LAN4" 3 >/dev/null
sleep 0.3
assert_eq 5 "$(count_packets wan frame4)" "with --netdev-egress: no further IPv4 frame reaches wan (also when it claims to be ARP)"
assert_eq 5 "$(count_packets wan frame6)" "with --netdev-egress: no further IPv6 frame reaches wan"
assert_eq 3 "$(count_packets lan frame4)" "a crafted frame to an allowed host still passes (the filter reads the destination)"
expect_exit 0 nsg status --netns "$CTR_NS" --json
refused=$(jq -r '.netdev_egress.chains[] | select(.device == "eth0") | .counters.refused.packets' <<<"$OUT")
assert_true "status: the eth0 egress chain counted the refused frames ($refused >= 20)" test "${refused:-0}" -ge 20
assert_eq '[]' "$(jq -c .netdev_egress.uncovered <<<"$OUT")" "status: every interface is covered"
assert_eq true "$(jq -r .bypass.net_raw_filtered <<<"$OUT")" "status: CAP_NET_RAW holders are filtered at the netdev egress hook"
assert_true "allowed IPv4 traffic flows (TCP to lan)" tcp_ok "$LAB_LAN4"
assert_true "allowed IPv6 traffic flows (ping lan6: neighbour discovery passes)" ping_ok "$LAB_LAN6"
assert_false "forbidden traffic stays refused" ping_ok "$LAB_WAN4"
expect_exit 0 nsg verify --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" --json
assert_match "$(check bypass-net-raw)" "^warn .*$raw \\(sleep\\).*netdev egress filter catches ordinary packet sockets.*AF_XDP" \
	"verify: the CAP_NET_RAW holder is still a warning with the netdev egress filter on every interface: AF_XDP passes no hook"
assert_eq false "$(jq -r .bypass.af_xdp_filtered <<<"$(nsg status --netns "$CTR_NS" --json)")" \
	"status: AF_XDP is never called filtered"
assert_eq '["eth0"]' "$(jq -c .netdev_egress.covered <<<"$OUT")" "verify --json: netdev_egress.covered"

section "an interface created after restrict is reported until restrict runs again"
ip -n "${P}_ctr" link add x0 type veth peer name x1
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq '["x0","x1"]' "$(jq -c '.netdev_egress.uncovered | sort' <<<"$OUT")" "status: x0 and x1 are not covered"
assert_eq false "$(jq -r .bypass.net_raw_filtered <<<"$OUT")" "status: so packet sockets are not all filtered"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" --netdev-egress --no-probe
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq '[]' "$(jq -c .netdev_egress.uncovered <<<"$OUT")" "after a rerun of restrict every interface is covered"
ip -n "${P}_ctr" link del x0

section "release and a restrict without the flag remove the netdev table"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --no-probe
assert_eq "" "$(in_ctr nft list tables | grep netdev)" "restrict without --netdev-egress removes it (same batch)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --netdev-egress --no-probe
expect_exit 0 nsg release --netns "$CTR_NS" --json
assert_eq true "$(jq -r .removed.netdev_table <<<"$OUT")" "release --json: removed.netdev_table"
assert_eq "" "$(in_ctr nft list ruleset)" "release leaves no table behind"

kill "$none" "$raw" 2>/dev/null
finish
