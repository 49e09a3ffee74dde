#!/usr/bin/env bash
# Overlapping CIDRs are merged (the kernel refuses overlapping interval elements), and a second
# restrict replaces the first: one table, one set of rules, the new allow-list only.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

count_lines() { grep -c -- "$2" <<<"$1" || true; }

section "overlapping CIDRs are accepted and merged"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 192.168.1.128/25 \
	--allow 192.168.1.10 --no-probe --json
assert_eq '["192.168.1.0/24"]' "$(jq -c .allow.ipv4 <<<"$OUT")" "--json: allow.ipv4 merged to one CIDR"
assert_eq "192.168.1.0/24" "$(nft_elements ipv4_addr | tr '\n' ' ' | sed 's/ $//')" "nft: one element, 192.168.1.0/24"
assert_true "ping 192.168.1.10 answers" ping_ok 192.168.1.10
assert_false "ping 198.51.100.10 refused" ping_ok 198.51.100.10

section "adjacent and duplicate CIDRs, both families"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/25 --allow 192.168.1.128/25 \
	--allow 192.168.1.0/25 --allow 2001:db8:1::/65 --allow 2001:db8:1:0:8000::/65 --allow 2001:db8:1::10 \
	--no-probe --json
assert_eq '["192.168.1.0/24"]' "$(jq -c .allow.ipv4 <<<"$OUT")" "two adjacent /25 and a duplicate become one /24"
assert_eq '["2001:db8:1::/64"]' "$(jq -c .allow.ipv6 <<<"$OUT")" "two adjacent /65 and a host inside become one /64"
assert_eq "192.168.1.0/24" "$(nft_elements ipv4_addr | tr '\n' ' ' | sed 's/ $//')" "nft: IPv4 set holds one /24"
assert_eq "2001:db8:1::/64" "$(nft_elements ipv6_addr | tr '\n' ' ' | sed 's/ $//')" "nft: IPv6 set holds one /64"

section "a merged range that is no prefix"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 192.168.2.0/25 --no-probe --json
assert_eq '["192.168.1.0-192.168.2.127"]' "$(jq -c .allow.ipv4 <<<"$OUT")" "--json: one range a-b"
assert_eq "192.168.1.0-192.168.2.127" "$(nft_elements ipv4_addr | tr '\n' ' ' | sed 's/ $//')" "nft: one range element"
assert_true "ping 192.168.1.10 answers" ping_ok 192.168.1.10

section "re-restrict replaces: first the lan, then the wan only"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe
assert_true "lan answers under the first policy" ping_ok 192.168.1.10
assert_false "wan refused under the first policy" ping_ok 198.51.100.10
rules_first4=$(extra_rules 4)
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 198.51.100.0/24 \
	--probe-reach 198.51.100.10 --probe-block 192.168.1.10
assert_true "wan answers under the second policy" ping_ok 198.51.100.10
assert_false "lan refused under the second policy" ping_ok 192.168.1.10
assert_true "TCP to wan connects" tcp_ok 198.51.100.10
assert_false "TCP to lan refused" tcp_ok 192.168.1.10
tables=$(in_ctr nft list tables)
assert_eq "1" "$(count_lines "$tables" 'table inet nsegress')" "nft: exactly one table inet nsegress"
assert_eq "198.51.100.0/24" "$(nft_elements ipv4_addr | tr '\n' ' ' | sed 's/ $//')" "nft: the set holds only the new network"
assert_eq "$rules_first4" "$(extra_rules 4)" "ip -4 rule: the same rules as after the first restrict (no duplicates)"
r4=$(extra_rules 4)
r6=$(extra_rules 6)
assert_eq "$(sort -u <<<"$r4" | wc -l)" "$(wc -l <<<"$r4")" "ip -4 rule: no duplicated rule"
assert_eq "$(sort -u <<<"$r6" | wc -l)" "$(wc -l <<<"$r6")" "ip -6 rule: no duplicated rule"
assert_eq "1" "$(grep -c . <<<"$r4")" "ip -4 rule: one nsegress rule"
assert_eq "1" "$(grep -c . <<<"$r6")" "ip -6 rule: one nsegress rule"
t=$(ip -n "${P}_ctr" -4 route show table 28275)
assert_contains "$t" "198.51.100.0/24" "route set now holds the wan"
assert_not_contains "$t" "192.168.1.0/24" "route set no longer holds the lan"

section "restrict a third time with the same list changes nothing"
before=$(snapshot)
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 198.51.100.0/24 --no-probe
assert_eq "$before" "$(snapshot)" "kernel state identical after an identical restrict"

expect_exit 0 nsg release --netns "$CTR_NS"
finish
