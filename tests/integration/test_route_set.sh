#!/usr/bin/env bash
# The route set: nsegress's own routing table and one ip rule per family ahead of main, sending only
# the allowed CIDRs on to main (throw routes) and refusing the rest (an unreachable route); the
# main table untouched; --no-route-set installs none of it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

main4_before=$(ip -n "${P}_ctr" -4 route show table main)
main6_before=$(ip -n "${P}_ctr" -6 route show table main)
assert_true "before: ip route get 198.51.100.10 resolves" route_get 4 198.51.100.10

section "restrict with the route set (v4 and v6 allowed)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 --no-probe

for fam in 4 6; do
	rules=$(ip -n "${P}_ctr" "-$fam" rule show)
	# nsegress's rules: everything but the kernel defaults, each ahead of main (32766).
	extra=$(extra_rules "$fam")
	assert_eq "1" "$(grep -c . <<<"$extra")" "ip -$fam rule: one rule added"
	main_prio=$(awk -F: '/lookup main/ {print $1; exit}' <<<"$rules")
	ahead=1
	while read -r prio _; do
		prio=${prio%:}
		[[ -n $prio ]] && ((prio >= main_prio)) && ahead=0
	done <<<"$extra"
	assert_eq "1" "$ahead" "ip -$fam rule: nsegress's rules come before main ($main_prio)"
	assert_match "$extra" '^100:.*lookup 28275' "ip -$fam rule: priority 100 looks up table 28275"
	assert_not_contains "$extra" "unreachable" "ip -$fam rule: no catch-all rule"
	assert_match "$(grep -c 'proto 245' <<<"$extra")" '^1$' "ip -$fam rule: it carries protocol 245"
done

assert_false "ip route get 198.51.100.10 fails (unreachable)" route_get 4 198.51.100.10
assert_true "ip route get 192.168.1.10 succeeds" route_get 4 192.168.1.10
assert_contains "$(ip -n "${P}_ctr" -4 route get 192.168.1.10 2>&1)" "via 172.31.0.1" \
	"the allowed route uses the nexthop main would use"
assert_false "ip -6 route get 2001:db8:2::10 fails" route_get 6 2001:db8:2::10
assert_true "ip -6 route get 2001:db8:1::10 succeeds" route_get 6 2001:db8:1::10
assert_contains "$(ip -n "${P}_ctr" -6 route get 2001:db8:1::10 2>&1)" "via fd00:31::1" \
	"the allowed IPv6 route uses the nexthop main would use"
for fam in 4 6; do
	t=$(ip -n "${P}_ctr" "-$fam" route show table 28275)
	assert_eq "2" "$(grep -c . <<<"$t")" "table 28275 (IPv$fam): two routes"
	assert_match "$t" '^unreachable default .*proto 245' "table 28275 (IPv$fam): unreachable default, protocol 245"
	assert_not_contains "$t" " via " "table 28275 (IPv$fam): no nexthop (nothing copied from main)"
done
assert_match "$(ip -n "${P}_ctr" -4 route show table 28275)" '^throw 192\.168\.1\.0/24 proto 245' \
	"table 28275 (IPv4): a throw route for the allowed CIDR, protocol 245"
assert_match "$(ip -n "${P}_ctr" -6 route show table 28275)" '^throw 2001:db8:1::/64 .*proto 245' \
	"table 28275 (IPv6): a throw route for the allowed CIDR, protocol 245"
assert_eq "$main4_before" "$(ip -n "${P}_ctr" -4 route show table main)" "main IPv4 table untouched"
assert_eq "$main6_before" "$(ip -n "${P}_ctr" -6 route show table main)" "main IPv6 table untouched"

section "the route layer refuses on its own (policy table removed by hand)"
in_ctr nft delete table inet nsegress
assert_eq "" "$(nft_table)" "the nft table is gone"
msg=$(in_ctr ping -n -c1 -W1 198.51.100.10 2>&1)
assert_contains "$msg" "No route to host" "ping 198.51.100.10 refused by routing: $(why "$msg")"
assert_true "ping 192.168.1.10 still answers" ping_ok 192.168.1.10
assert_false "TCP to wan refused by routing" tcp_ok 198.51.100.10
expect_exit 0 nsg release --netns "$CTR_NS"

section "--no-route-set: no rules, no table, main decides"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-route-set --no-probe
assert_eq "" "$(extra_rules 4)" "ip -4 rule: nothing added"
assert_eq "" "$(extra_rules 6)" "ip -6 rule: nothing added"
assert_eq "" "$(ip -n "${P}_ctr" -4 route show table 28275 2>/dev/null)" "no IPv4 table 28275"
assert_eq "" "$(ip -n "${P}_ctr" -6 route show table 28275 2>/dev/null)" "no IPv6 table 28275"
assert_true "ip route get 198.51.100.10 resolves (no route layer)" route_get 4 198.51.100.10
assert_false "ping 198.51.100.10 still refused (nft layer)" ping_ok 198.51.100.10
assert_true "ping 192.168.1.10 answers" ping_ok 192.168.1.10
assert_contains "$(nft_table)" "policy drop" "the nft policy is installed"
expect_exit 0 nsg release --netns "$CTR_NS"


section "a long allow-list: every route installed, the report names the first 256"
for i in $(seq 0 299); do printf '10.%d.%d.0/24\n' $((i / 128)) $(((i % 128) * 2)); done >"$TMPD/long.allow"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow-file "$TMPD/long.allow" --no-probe --json
assert_eq "300" "$(ip -n "${P}_ctr" -4 route show table 28275 | grep -c '^throw 10\.')" "ip route: 300 throw routes in table 28275"
assert_eq "302 2 true 258" "$(jq -r '.route_set | "\(.route_count) \(.rule_count) \(.routes_truncated) \(.routes | length)"' <<<"$OUT")" \
	"--json: route_count 302 (and the 2 unreachable defaults), rule_count 2, truncated to 256 routes + 2 rules"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow-file "$TMPD/long.allow" --no-probe
assert_contains "$OUT" "(302 route(s), 2 rule(s))" "human output counts the routes"
expect_exit 0 nsg release --netns "$CTR_NS"
assert_eq "" "$(ip -n "${P}_ctr" -4 route show table 28275 2>/dev/null)" "release removes all 300"

finish
