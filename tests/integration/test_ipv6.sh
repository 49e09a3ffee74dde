#!/usr/bin/env bash
# IPv6 parity: an IPv4-only allow-list refuses all IPv6; an allowed IPv6 CIDR works (including
# neighbour discovery from a cold cache) and the forbidden IPv6 network stays refused.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

cold_v6() { ip -n "${P}_ctr" -6 neigh flush all; }

section "before: both IPv6 hosts answer"
assert_true "ping -6 2001:db8:1::10 before restrict" ping_ok 2001:db8:1::10
assert_true "ping -6 2001:db8:2::10 before restrict" ping_ok 2001:db8:2::10
assert_true "TCP over IPv6 to lan before restrict" tcp_ok 2001:db8:1::10

for mode in --no-route-set route-set; do
	extra=()
	[[ $mode == --no-route-set ]] && extra=(--no-route-set)

	section "only IPv4 allowed ($mode): IPv6 is refused"
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe "${extra[@]}"
	assert_true "ping 192.168.1.10 (IPv4, allowed) answers" ping_ok 192.168.1.10
	msg=$(in_ctr ping -n -c1 -W1 2001:db8:1::10 2>&1)
	rc=$?
	assert_false "ping -6 2001:db8:1::10 refused: $(why "$msg")" test "$rc" -eq 0
	assert_false "ping -6 2001:db8:2::10 refused" ping_ok 2001:db8:2::10
	assert_false "TCP over IPv6 to lan refused" tcp_ok 2001:db8:1::10
	udp_send 2001:db8:1::10 "udp6-v4only-$mode-$$"
	udp_send 192.168.1.10 "udp4-v4only-$mode-$$"
	assert_true "UDP over IPv4 to lan arrives" wait_for_text "$(lab_log "$P" lan udp)" "udp4-v4only-$mode-$$"
	sleep 0.3
	assert_not_contains "$(<"$(lab_log "$P" lan udp)")" "udp6-v4only-$mode-$$" "UDP over IPv6 to lan never arrives"
	assert_eq "" "$(nft_elements ipv6_addr)" "nft: IPv6 allow set is empty"

	section "IPv4 and 2001:db8:1::/64 allowed ($mode)"
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 \
		--no-probe "${extra[@]}"
	assert_eq '["2001:db8:1::/64"]' "$(nsg status --netns "$CTR_NS" --json | jq -c .policy.allow.ipv6)" \
		"status reads back the IPv6 allow-list"
	assert_eq "2001:db8:1::/64" "$(nft_elements ipv6_addr | tr '\n' ' ' | sed 's/ $//')" "nft: IPv6 set holds 2001:db8:1::/64"
	cold_v6 # neighbour discovery must pass the policy for the allowed network to work
	assert_true "ping -6 2001:db8:1::10 answers (cold neighbour cache)" ping_ok 2001:db8:1::10
	msg=$(in_ctr ping -n -c1 -W1 2001:db8:2::10 2>&1)
	rc=$?
	assert_false "ping -6 2001:db8:2::10 refused: $(why "$msg")" test "$rc" -eq 0
	assert_true "TCP over IPv6 to lan connects" tcp_ok 2001:db8:1::10
	assert_false "TCP over IPv6 to wan refused" tcp_ok 2001:db8:2::10
	udp_send 2001:db8:2::10 "udp6-wan-$mode-$$"
	udp_send 2001:db8:1::10 "udp6-lan-$mode-$$"
	assert_true "UDP over IPv6 to lan arrives" wait_for_text "$(lab_log "$P" lan udp)" "udp6-lan-$mode-$$"
	sleep 0.3
	assert_not_contains "$(<"$(lab_log "$P" wan udp)")" "udp6-wan-$mode-$$" "UDP over IPv6 to wan never arrives"
	assert_true "ping 192.168.1.10 (IPv4) still answers" ping_ok 192.168.1.10
	assert_false "ping 198.51.100.10 (IPv4) still refused" ping_ok 198.51.100.10
	if [[ $mode == route-set ]]; then
		assert_contains "$(ip -n "${P}_ctr" -6 route show table 28275)" "2001:db8:1::/64" \
			"route set: IPv6 table holds 2001:db8:1::/64"
		assert_false "ip -6 route get 2001:db8:2::10 fails" route_get 6 2001:db8:2::10
		assert_true "ip -6 route get 2001:db8:1::10 succeeds" route_get 6 2001:db8:1::10
	fi
	expect_exit 0 nsg release --netns "$CTR_NS"
done

section "a bare IPv6 address is a /128 host"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 2001:db8:1::10 --no-probe --json
assert_eq '["2001:db8:1::10/128"]' "$(jq -c .allow.ipv6 <<<"$OUT")" "allow.ipv6 normalized to /128"
cold_v6
assert_true "ping -6 2001:db8:1::10 (the host) answers" ping_ok 2001:db8:1::10
assert_false "ping -6 2001:db8:1::1 (same /64, not allowed) refused" ping_ok 2001:db8:1::1
assert_false "ping 192.168.1.10 (no IPv4 allowed) refused" ping_ok 192.168.1.10
expect_exit 0 nsg release --netns "$CTR_NS"
assert_true "after release ping -6 2001:db8:2::10 answers again" ping_ok 2001:db8:2::10

finish
