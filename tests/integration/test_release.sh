#!/usr/bin/env bash
# release restores ip rules, every routing table and the nft ruleset exactly; it is idempotent and
# copes with parts removed by hand; foreign nft tables are never touched.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

section "foreign nft tables exist before restrict"
in_ctr nft -f - <<'EOF'
table inet foreign {
	set watched {
		type ipv4_addr
		elements = { 192.168.1.99 }
	}
	chain out {
		type filter hook output priority 10; policy accept;
		ip daddr @watched drop
		tcp dport 4444 drop comment "foreign rule"
	}
}
table ip other {
	chain nothing {
		ip daddr 192.168.1.98 drop
	}
}
EOF
foreign_before=$(in_ctr nft -s list table inet foreign)
other_before=$(in_ctr nft -s list table ip other)
assert_contains "$foreign_before" "foreign rule" "table inet foreign created"

snapshot >"$TMPD/before"

section "restrict changes kernel state (so the comparison below can fail)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64
snapshot >"$TMPD/restricted"
assert_false "state after restrict differs from before" cmp -s "$TMPD/before" "$TMPD/restricted"
assert_eq "$foreign_before" "$(in_ctr nft -s list table inet foreign)" "table inet foreign untouched by restrict"
assert_eq "$other_before" "$(in_ctr nft -s list table ip other)" "table ip other untouched by restrict"
assert_false "ping 198.51.100.10 refused while restricted" ping_ok 198.51.100.10

section "release restores exactly"
expect_exit 0 nsg release --netns "$CTR_NS" --json
assert_eq "true" "$(jq -r .ok <<<"$OUT")" "release --json: ok"
assert_eq "release" "$(jq -r .command <<<"$OUT")" "release --json: command"
assert_eq "true" "$(jq -r '.removed | type == "object"' <<<"$OUT")" "release --json: removed is an object"
snapshot >"$TMPD/released"
assert_same "$TMPD/before" "$TMPD/released" "rules, routes (all tables, v4 and v6) and ruleset identical to before"
assert_eq "$foreign_before" "$(in_ctr nft -s list table inet foreign)" "table inet foreign untouched by release"
assert_eq "$other_before" "$(in_ctr nft -s list table ip other)" "table ip other untouched by release"
assert_true "ping 198.51.100.10 answers again" ping_ok 198.51.100.10
assert_true "TCP to wan connects again" tcp_ok 198.51.100.10

section "release twice is fine"
expect_exit 0 nsg release --netns "$CTR_NS"
snapshot >"$TMPD/released2"
assert_same "$TMPD/before" "$TMPD/released2" "still identical after a second release"

section "release after the table was deleted by hand"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe
in_ctr nft delete table inet nsegress
expect_exit 0 nsg release --netns "$CTR_NS"
snapshot >"$TMPD/released3"
assert_same "$TMPD/before" "$TMPD/released3" "the route set is removed too"

section "release after the ip rules were deleted by hand"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe
ip -n "${P}_ctr" -4 rule del priority 100
expect_exit 0 nsg release --netns "$CTR_NS"
snapshot >"$TMPD/released4"
assert_same "$TMPD/before" "$TMPD/released4" "table and the remaining rules and routes are removed"

section "release of a namespace never restricted"
expect_exit 0 nsg release --netns "$(lab_netns "$P" lan)"
assert_eq "" "$(ip netns exec "${P}_lan" nft list ruleset)" "lan: still no ruleset"

finish
