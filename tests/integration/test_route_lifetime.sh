#!/usr/bin/env bash
# The route set holds while the container's network changes after restrict (issue 13): restrict a
# namespace that has only `lo`, then wire it (veth, addresses, default routes via a gateway, both
# families): the wiring succeeds, the allowed LAN answers, the forbidden host is refused by the
# route layer. Move it to another network (old interface gone, a new one with another gateway),
# add a second interface: the same. Release restores reachability; an earlier route set layout
# (copies of main and a catch-all rule 101) is replaced by restrict and removed by release. Then
# the same through the OCI hook, with a runtime that wires the network AFTER `nsegress hook`.
# shellcheck disable=SC2016 # jq filters and the container's script are single-quoted on purpose
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/engines.sh
source "$REPO/testenv/engines.sh"

engines_test_setup # the lab, and the runc helpers' cleanup

C=${P}_ctr G=${P}_gw
WANLOG=$(lab_log "$P" wan udp) LANLOG=$(lab_log "$P" lan udp)
ALLOW=(--allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6")

# wire CTR_IF GW_IF N: a veth from ctr's CTR_IF to gw's GW_IF on 172.31.N.0/24 and fd00:3N::/64
# (ctr .2/::2, gw .1/::1), both ends up, link-local addresses present. Each command must succeed.
wire() {
	local cif=$1 gif=$2 n=$3
	ip -n "$C" link add "$cif" type veth peer name "$gif" netns "$G" &&
		ip -n "$C" addr add "172.31.$n.2/24" dev "$cif" &&
		ip -n "$C" addr add "fd00:3$n::2/64" dev "$cif" nodad &&
		ip -n "$G" addr add "172.31.$n.1/24" dev "$gif" &&
		ip -n "$G" addr add "fd00:3$n::1/64" dev "$gif" nodad &&
		ip -n "$C" link set "$cif" up && ip -n "$G" link set "$gif" up &&
		_lab_wait_ll "$C" "$cif" && _lab_wait_ll "$G" "$gif"
}

ping_ok_if() { in_ctr ping -n -c1 -W1 -q -I "$1" "$2" >/dev/null 2>&1; }

# The kernel's first answers after new wiring wait for neighbour discovery: a few tries.
reach() { eventually "$@"; }

# allowed_answers LABEL: the allowed LAN answers over both families (ping, TCP, UDP).
allowed_answers() {
	local what=$1 m
	assert_true "$what: ping $LAB_LAN4 answers" reach ping_ok "$LAB_LAN4"
	assert_true "$what: ping $LAB_LAN6 answers" reach ping_ok "$LAB_LAN6"
	assert_true "$what: TCP to $LAB_LAN4 connects" tcp_ok "$LAB_LAN4"
	assert_true "$what: TCP to $LAB_LAN6 connects" tcp_ok "$LAB_LAN6"
	m="lan-$what-$$"
	m=${m// /-}
	udp_send "$LAB_LAN4" "$m"
	assert_true "$what: UDP to $LAB_LAN4 arrives" wait_for_text "$LANLOG" "$m"
}

# forbidden_refused LABEL: wan (whose listeners answered in the control run) is refused, by the
# route layer itself ("No route to host": routing failed, before nftables sees a packet).
forbidden_refused() {
	local what=$1 msg m dst
	for dst in "$LAB_WAN4" "$LAB_WAN6"; do
		msg=$(in_ctr ping -n -c1 -W1 "$dst" 2>&1)
		assert_contains "$msg" "No route to host" "$what: ping $dst refused by the route layer: $(why "$msg")"
		assert_false "$what: TCP to $dst refused" tcp_ok "$dst"
		msg=$(in_ctr nc -v -z -w2 "$dst" "$LAB_TCP_PORT" 2>&1)
		assert_contains "$msg" "No route to host" "$what: TCP connect to $dst: EHOSTUNREACH ($msg)"
	done
	m="wan-$what-$$"
	m=${m// /-}
	udp_send "$LAB_WAN4" "$m"
	udp_send "$LAB_WAN6" "$m"
	udp_send "$LAB_LAN4" "$m-lan" # sent after: once it has arrived, wan's would have too
	assert_true "$what: UDP to lan arrives" wait_for_text "$LANLOG" "$m-lan"
	assert_false "$what: UDP to wan never arrives" grep -q "$m" "$WANLOG"
}

step "control: before any policy, wan's listeners answer"
assert_true "ping $LAB_WAN4 answers" ping_ok "$LAB_WAN4"
assert_true "TCP to $LAB_WAN4 connects" tcp_ok "$LAB_WAN4"
assert_true "TCP to $LAB_WAN6 connects" tcp_ok "$LAB_WAN6"
udp_send "$LAB_WAN4" "wan-control-$$"
assert_true "UDP to $LAB_WAN4 arrives" wait_for_text "$WANLOG" "wan-control-$$"

step "restrict a namespace that has only lo"
ip -n "$C" link del eth0
assert_eq "lo" "$(ip -n "$C" -o link show | awk -F': ' '{print $2}' | tr '\n' ' ' | xargs)" "ctr has only lo"
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --no-probe
assert_contains "$OUT" "probes: none (--no-probe)" "--no-probe says so"
assert_not_contains "$OUT" "no default gateway" "--no-probe does not claim there is no default gateway"
for fam in 4 6; do
	assert_eq "100: from all lookup 28275 proto 245" "$(extra_rules "$fam" | tr -s '\t ' ' ' | sed 's/ $//')" \
		"ip -$fam rule: one rule, lookup 28275 ahead of main, no catch-all"
done
assert_eq "unreachable default proto 245
throw 192.168.1.0/24 proto 245" "$(ip -n "$C" -4 route show table 28275 | sed 's/[[:space:]]*$//')" \
	"table 28275 (IPv4): unreachable default, one throw route, no nexthop"
assert_match "$(ip -n "$C" -6 route show table 28275)" 'throw 2001:db8:1::/64 .*proto 245' "table 28275 (IPv6): the throw route"
assert_match "$(ip -n "$C" -6 route show table 28275)" 'unreachable default .*proto 245' "table 28275 (IPv6): unreachable default"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "true refers-to-main null false" "$(jq -r '[.route_set.present, .route_set.layout, .route_set.stale, .route_refused.counted] | map(tostring) | join(" ")' <<<"$OUT")" \
	"status --json: route set present, refers to main, not stale, refusals not counted"
expect_exit 0 nsg status --netns "$CTR_NS"
assert_contains "$OUT" "not counted: refusals by the route set" "status says what it cannot count"

step "wire it after restrict: veth, addresses, default routes via a gateway"
assert_true "wire eth0 <-> gw c0 (172.31.0.0/24, fd00:30::/64)" wire eth0 c0 0
assert_true "ip route add default via 172.31.0.1 succeeds" ip -n "$C" route add default via 172.31.0.1
assert_true "ip -6 route add default via fd00:30::1 succeeds" ip -n "$C" -6 route add default via fd00:30::1
assert_contains "$(ip -n "$C" -4 route get "$LAB_LAN4" 2>&1)" "via 172.31.0.1 dev eth0" "the allowed LAN goes where main says"
allowed_answers "wired"
forbidden_refused "wired"
assert_false "the gateway itself (not allowed) is refused" route_get 4 172.31.0.1

step "move it to another network: the old interface goes, a new one with another gateway comes"
ip -n "$C" link del eth0
assert_true "wire eth1 <-> gw c7 (172.31.7.0/24, fd00:37::/64)" wire eth1 c7 7
assert_true "ip route add default via 172.31.7.1 succeeds" ip -n "$C" route add default via 172.31.7.1
assert_true "ip -6 route add default via fd00:37::1 succeeds" ip -n "$C" -6 route add default via fd00:37::1
assert_contains "$(ip -n "$C" -4 route get "$LAB_LAN4" 2>&1)" "via 172.31.7.1 dev eth1" "the allowed LAN goes through the new interface"
allowed_answers "moved"
forbidden_refused "moved"

step "a second interface: allowed destinations reachable through it"
assert_true "wire eth2 <-> gw c8 (172.31.8.0/24, fd00:38::/64)" wire eth2 c8 8
assert_true "ip route add $LAB_LAN_NET4 via 172.31.8.1 succeeds" ip -n "$C" route add "$LAB_LAN_NET4" via 172.31.8.1
assert_true "ip -6 route add $LAB_LAN_NET6 via fd00:38::1 succeeds" ip -n "$C" -6 route add "$LAB_LAN_NET6" via fd00:38::1
assert_true "ip route add $LAB_WAN_NET4 via 172.31.8.1 succeeds (the route layer still refuses it)" \
	ip -n "$C" route add "$LAB_WAN_NET4" via 172.31.8.1
assert_contains "$(ip -n "$C" -4 route get "$LAB_LAN4" 2>&1)" "dev eth2" "route get: the LAN through eth2"
assert_contains "$(ip -n "$C" -6 route get "$LAB_LAN6" 2>&1)" "dev eth2" "route get: the IPv6 LAN through eth2"
rx() { ip -n "$G" -j -s link show c8 | jq '.[0].stats64.rx.packets'; }
rx_before=$(rx)
allowed_answers "second-if"
assert_true "gw's c8 received the LAN traffic ($rx_before -> $(rx) packets)" test "$(rx)" -gt "$rx_before"
forbidden_refused "second-if"

step "what the route set does not stop: sockets with a pinned interface (the policy does)"
for dst in "$LAB_WAN4" "$LAB_WAN6"; do
	msg=$(in_ctr ping -n -c1 -W1 -I eth1 "$dst" 2>&1)
	assert_false "ping -I eth1 $dst refused with the policy in place: $(why "$msg")" ping_ok_if eth1 "$dst"
done
in_ctr nft delete table inet nsegress
assert_match "$(ip -n "$C" -4 route get "$LAB_WAN4" oif eth1 2>&1)" "^$LAB_WAN4 dev eth1 " \
	"route layer alone, IPv4 with oif: the kernel falls back to on-link (no gateway)"
assert_false "route layer alone: ping -I eth1 $LAB_WAN4 gets no answer (ARP on the link, not via the gateway)" \
	ping_ok_if eth1 "$LAB_WAN4"
assert_contains "$(ip -n "$C" -6 route get "$LAB_WAN6" oif eth1 2>&1)" "via fd00:37::1 dev eth1" \
	"route layer alone, IPv6 with oif: the table's routes are skipped, main answers (documented)"
assert_true "route layer alone: ping -6 -I eth1 $LAB_WAN6 answers (documented: only the policy stops it)" \
	reach ping_ok_if eth1 "$LAB_WAN6"
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --no-probe
msg=$(in_ctr ping -n -c1 -W1 -I eth1 "$LAB_WAN6" 2>&1)
assert_false "policy back: ping -6 -I eth1 $LAB_WAN6 refused: $(why "$msg")" ping_ok_if eth1 "$LAB_WAN6"

step "release restores reachability"
expect_exit 0 nsg release --netns "$CTR_NS"
assert_eq "" "$(extra_rules 4)$(extra_rules 6)" "no rule left"
assert_eq "" "$(ip -n "$C" -4 route show table 28275 2>/dev/null)$(ip -n "$C" -6 route show table 28275 2>/dev/null)" "table 28275 empty"
assert_true "ping $LAB_WAN4 answers again" reach ping_ok "$LAB_WAN4"
assert_true "ping $LAB_WAN6 answers again" reach ping_ok "$LAB_WAN6"
assert_true "TCP to $LAB_WAN4 connects again" tcp_ok "$LAB_WAN4"
udp_send "$LAB_WAN4" "wan-released-$$"
assert_true "UDP to $LAB_WAN4 arrives again" wait_for_text "$WANLOG" "wan-released-$$"

step "the earlier layout (copies of main, catch-all rule 101) is replaced by restrict, removed by release"
legacy() {
	ip -n "$C" -4 route add "$LAB_LAN_NET4" via 172.31.7.1 dev eth1 onlink table 28275 proto 245 &&
		ip -n "$C" -6 route add "$LAB_LAN_NET6" via fd00:37::1 dev eth1 onlink table 28275 proto 245 &&
		for fam in 4 6; do
			ip -n "$C" "-$fam" rule add priority 100 lookup 28275 proto 245 &&
				ip -n "$C" "-$fam" rule add priority 101 unreachable proto 245 || return 1
		done
}
assert_true "the earlier layout installed by hand" legacy
assert_contains "$(ip -n "$C" route add 10.99.0.0/16 via 172.31.8.1 2>&1)" "invalid gateway" \
	"control: under the earlier layout, a late gateway route fails"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "snapshot" "$(jq -r .route_set.layout <<<"$OUT")" "status: the earlier layout is a snapshot"
assert_match "$(jq -r .route_set.stale <<<"$OUT")" "restrict again" "status: and stale (run restrict again)"
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --no-probe
for fam in 4 6; do
	assert_eq "100: from all lookup 28275 proto 245" "$(extra_rules "$fam" | tr -s '\t ' ' ' | sed 's/ $//')" "ip -$fam rule: rule 101 gone"
done
assert_eq "unreachable default proto 245
throw 192.168.1.0/24 proto 245" "$(ip -n "$C" -4 route show table 28275 | sed 's/[[:space:]]*$//')" "the copy became a throw route"
assert_true "a late gateway route now succeeds" ip -n "$C" route add 10.99.0.0/16 via 172.31.8.1
allowed_answers "replaced"
forbidden_refused "replaced"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "refers-to-main" "$(jq -r .route_set.layout <<<"$OUT")" "status: refers to main now"
assert_true "the earlier layout installed by hand again (after release)" eval 'nsg release --netns "$CTR_NS" >/dev/null && legacy'
expect_exit 0 nsg release --netns "$CTR_NS"
assert_eq "" "$(extra_rules 4)$(extra_rules 6)" "release removes rule 100 and rule 101"
assert_eq "" "$(ip -n "$C" -4 route show table 28275 2>/dev/null)$(ip -n "$C" -6 route show table 28275 2>/dev/null)" \
	"release removes the copied routes"

step "the OCI hook, with a runtime that wires the network after it"
GW_NS=$(lab_netns "$P" gw)
BUNDLES=$(engines_dir "$P")/bundles
PINGS='for t in "$@"; do ok=; for i in 1 2 3; do if out=$(ping -c1 -W1 "$t" 2>&1); then ok=1; break; fi; done
if [ -n "$ok" ]; then echo "REACH $t"; else echo "REFUSED $t: $(echo "$out" | tail -1)"; fi; done'
assert_true "rootfs built" engine_rootfs "$BUNDLES/rootfs"
assert_true "bundle built" runc_bundle "$BUNDLES/late" "$P" "$BUNDLES/rootfs"
# createRuntime hooks run in order: nsegress first (the namespace has only lo), the wiring after.
assert_true "hook 1: nsegress hook" runc_add_hook "$BUNDLES/late" createRuntime "$NSEGRESS" hook "${ALLOW[@]}"
assert_true "hook 2: the wiring" runc_add_hook "$BUNDLES/late" createRuntime "$REPO/testenv/fixtures/veth-hook.sh" \
	"$GW_NS" rl0 172.31.9.2/24 172.31.9.1/24 fd00:39::2/64 fd00:39::1/64
runc_set "$BUNDLES/late" '.process.args = ["sh", "-c", $s, "pings", $l4, $w4, $l6, $w6]' \
	--arg s "$PINGS" --arg l4 "$LAB_LAN4" --arg w4 "$LAB_WAN4" --arg l6 "$LAB_LAN6" --arg w6 "$LAB_WAN6"
mkdir -p "$(_eng_runc_root "$P")"
expect_exit 0 timeout 60 nsenter --net="$GW_NS" runc --root "$(_eng_runc_root "$P")" run --bundle "$BUNDLES/late" late </dev/null
printf '%s\n' "$OUT" "$ERR" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAB_LAN4" "hook then wiring: $LAB_LAN4 answers"
assert_contains "$OUT" "REACH $LAB_LAN6" "hook then wiring: $LAB_LAN6 answers"
assert_match "$OUT" "REFUSED $LAB_WAN4: .*(nreachable|No route)" "hook then wiring: $LAB_WAN4 refused by routing"
assert_match "$OUT" "REFUSED $LAB_WAN6: .*(nreachable|No route)" "hook then wiring: $LAB_WAN6 refused by routing"
assert_eq "" "$(runc_cmd "$P" list -q 2>&1)" "no container left"

finish
