#!/usr/bin/env bash
# restrict --allow 192.168.1.0/24: the LAN stays reachable, the forbidden network is refused for
# ICMP, TCP and UDP (real packets from inside ctr), and nft shows the allow-list and a drop policy.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

section "before: every lab host answers (so a refusal later is the policy's doing)"
assert_true "ping lan 192.168.1.10 before restrict" ping_ok 192.168.1.10
assert_true "ping wan 198.51.100.10 before restrict" ping_ok 198.51.100.10
assert_true "TCP to wan listener before restrict" tcp_ok 198.51.100.10
udp_send 198.51.100.10 "udp-before-$$"
assert_true "UDP to wan arrives before restrict" wait_for_text "$(lab_log "$P" wan udp)" "udp-before-$$"

section "restrict"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 \
	--probe-reach 192.168.1.10 --probe-block 198.51.100.10 --json
assert_eq "true" "$(jq -r .ok <<<"$OUT")" "restrict --json: ok"
assert_eq "restrict" "$(jq -r .command <<<"$OUT")" "restrict --json: command"
assert_eq "0" "$(jq -r .exit_code <<<"$OUT")" "restrict --json: exit_code"
assert_eq "null" "$(jq -r .error <<<"$OUT")" "restrict --json: error is null"
assert_eq '["192.168.1.0/24"]' "$(jq -c .allow.ipv4 <<<"$OUT")" "restrict --json: allow.ipv4 normalized"
assert_eq '[]' "$(jq -c .allow.ipv6 <<<"$OUT")" "restrict --json: allow.ipv6 empty"
assert_eq "reachable" "$(jq -r '.probes[] | select(.target=="192.168.1.10") | .outcome' <<<"$OUT")" \
	"probe 192.168.1.10: reachable"
assert_match "$(jq -r '.probes[] | select(.target=="198.51.100.10") | .outcome' <<<"$OUT")" \
	'^refused-(policy|route)$' "probe 198.51.100.10: refused locally"
assert_eq "true" "$(jq -r '[.probes[].ok] | all' <<<"$OUT")" "every probe held"

section "kernel state read back with nft"
table=$(nft_table)
assert_contains "$table" "192.168.1.0/24" "nft: allow-list holds 192.168.1.0/24"
assert_match "$table" 'hook output .*policy drop;' "nft: an output chain with policy drop"
assert_eq "192.168.1.0/24" "$(nft_elements ipv4_addr | tr '\n' ' ' | sed 's/ $//')" "nft: the IPv4 set holds exactly the allowed network"
assert_eq "" "$(nft_elements ipv6_addr)" "nft: the IPv6 set is empty"
assert_not_contains "$table" "198.51.100" "nft: nothing about the forbidden network is allowed"

section "ICMP from inside ctr"
assert_true "ping 192.168.1.10 answers" ping_ok 192.168.1.10
start=$EPOCHREALTIME
msg=$(in_ctr ping -n -c1 -W2 198.51.100.10 2>&1)
rc=$?
elapsed_ms=$(((${EPOCHREALTIME/./} - ${start/./}) / 1000))
assert_false "ping 198.51.100.10 is refused" test "$rc" -eq 0
assert_match "$msg" 'Operation not permitted|[Uu]nreachable|Prohibited|No route to host' "ping 198.51.100.10 says why: $(why "$msg")"
if ((elapsed_ms < 1500)); then pass "refusal is immediate (${elapsed_ms} ms, no timeout wait)"; else fail "refusal took ${elapsed_ms} ms"; fi
assert_false "ping the forbidden network's gateway side 198.51.100.1 is refused" ping_ok 198.51.100.1

section "TCP from inside ctr"
assert_true "TCP to lan listener 192.168.1.10 connects" tcp_ok 192.168.1.10
assert_false "TCP to wan listener 198.51.100.10 is refused" tcp_ok 198.51.100.10

section "UDP from inside ctr"
wanlog=$(lab_log "$P" wan udp)
lanlog=$(lab_log "$P" lan udp)
udp_send 198.51.100.10 "udp-wan-after-$$"
udp_send 192.168.1.10 "udp-lan-after-$$"
assert_true "UDP to lan arrives" wait_for_text "$lanlog" "udp-lan-after-$$"
sleep 0.3 # the wan datagram, sent first on an equally long path, would have landed by now
assert_not_contains "$(<"$wanlog")" "udp-wan-after-$$" "UDP to wan never arrives"

section "the policy also holds without the route set (nft layer alone)"
expect_exit 0 nsg release --netns "$CTR_NS"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-route-set --no-probe
assert_eq "" "$(extra_rules 4)" "--no-route-set: no extra IPv4 rules"
msg=$(in_ctr ping -n -c1 -W2 198.51.100.10 2>&1)
assert_match "$msg" 'Operation not permitted|Prohibited' "ping 198.51.100.10 refused by the policy: $(why "$msg")"
assert_true "ping 192.168.1.10 answers" ping_ok 192.168.1.10
assert_false "TCP to wan refused by the policy" tcp_ok 198.51.100.10
assert_true "TCP to lan connects" tcp_ok 192.168.1.10
udp_send 198.51.100.10 "udp-wan-nft-$$"
udp_send 192.168.1.10 "udp-lan-nft-$$"
assert_true "UDP to lan arrives" wait_for_text "$lanlog" "udp-lan-nft-$$"
sleep 0.3
assert_not_contains "$(<"$wanlog")" "udp-wan-nft-$$" "UDP to wan never arrives"

section "the gw namespace (where nsegress ran) was not touched"
assert_eq "" "$(ip netns exec "${P}_gw" nft list ruleset)" "gw: no nft ruleset"
assert_eq "" "$(ip -n "${P}_gw" -4 rule show | grep -Ev '^(0|32766|32767):')" "gw: no extra ip rules"

finish
