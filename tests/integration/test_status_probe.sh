#!/usr/bin/env bash
# status reads the policy back and counts the policy's refusals (and says it cannot count the route
# set's); probe tells reachable from
# refused; restrict fails closed when a probe does not hold; --dry-run changes nothing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

st() { nsg status --netns "$CTR_NS" --json; }

section "status of an unrestricted namespace"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "status" "$(jq -r .command <<<"$OUT")" "command is status"
assert_eq "true" "$(jq -r .ok <<<"$OUT")" "ok"
assert_eq "false" "$(jq -r .restricted <<<"$OUT")" "restricted is false"
assert_eq "false" "$(jq -r .policy.present <<<"$OUT")" "no policy present"
assert_eq "false" "$(jq -r .route_set.present <<<"$OUT")" "no route set present"
assert_contains "$(jq -r '.addresses[].address' <<<"$OUT")" "172.31.0.2/24" "addresses read from the namespace"
assert_contains "$(jq -r '.links[].name' <<<"$OUT")" "eth0" "links read from the namespace"
assert_contains "$(jq -r '.routes[] | select(.dst=="default") | .gateway' <<<"$OUT")" "172.31.0.1" "routes read from the namespace"
expect_exit 0 nsg status --netns "$CTR_NS"
assert_match "$OUT" 'restricted: *no' "human output says not restricted"

section "probe without a policy"
expect_exit 0 nsg probe --netns "$CTR_NS" --target 192.168.1.10 --expect reach
expect_exit 0 nsg probe --netns "$CTR_NS" --target 2001:db8:1::10 --expect reach --json
assert_eq "reachable" "$(jq -r '.probes[0].outcome' <<<"$OUT")" "IPv6 probe: reachable"
assert_eq "ipv6" "$(jq -r '.probes[0].family' <<<"$OUT")" "IPv6 probe: family"
assert_match "$(jq -r '.probes[0].rtt_ms' <<<"$OUT")" '^[0-9.e-]+$' "IPv6 probe: an RTT"
expect_exit 3 nsg probe --netns "$CTR_NS" --target 198.51.100.10 --expect block --json
assert_eq "reachable" "$(jq -r '.probes[0].outcome' <<<"$OUT")" "--expect block on a reachable host: exit 3, outcome reachable"
assert_eq "false" "$(jq -r .ok <<<"$OUT")" "--json: ok is false when the expectation fails"
start=$EPOCHREALTIME
expect_exit 3 nsg probe --netns "$CTR_NS" --target 192.168.1.99 --expect reach --count 1 --timeout-ms 300 --json
elapsed_ms=$(((${EPOCHREALTIME/./} - ${start/./}) / 1000))
assert_match "$(jq -r '.probes[0].outcome' <<<"$OUT")" '^(timeout|unreachable)$' "a silent lab address: timeout or unreachable"
if ((elapsed_ms < 2000)); then pass "--timeout-ms 300 is honoured (${elapsed_ms} ms)"; else fail "--timeout-ms 300 took ${elapsed_ms} ms"; fi

section "restrict, then status reads the policy back"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 --no-probe
OUT=$(st)
assert_eq "true" "$(jq -r .restricted <<<"$OUT")" "restricted is true"
assert_eq "true" "$(jq -r .policy.present <<<"$OUT")" "policy present"
assert_eq '["192.168.1.0/24"]' "$(jq -c .policy.allow.ipv4 <<<"$OUT")" "allow.ipv4 read back"
assert_eq '["2001:db8:1::/64"]' "$(jq -c .policy.allow.ipv6 <<<"$OUT")" "allow.ipv6 read back"
assert_eq "true" "$(jq -r .route_set.present <<<"$OUT")" "route set present"

section "route layer refusals: status says it cannot count them, and that is true"
assert_eq "false" "$(jq -r .route_refused.counted <<<"$OUT")" "route_refused.counted is false"
assert_match "$(jq -r .route_refused.not_counted <<<"$OUT")" 'EHOSTUNREACH' "route_refused.not_counted says what is not counted"
r4_kernel_before=$(out_no_routes 4)
r4_before=$(jq -r .route_refused.ipv4_out_no_routes <<<"$OUT")
assert_eq "$r4_kernel_before" "$r4_before" "route_refused.ipv4_out_no_routes matches the kernel's OutNoRoutes"
for i in 1 2 3; do assert_false "ping 198.51.100.10 refused ($i)" ping_ok 198.51.100.10; done
assert_false "TCP to 198.51.100.10 refused" tcp_ok 198.51.100.10
OUT=$(st)
r4_after=$(jq -r .route_refused.ipv4_out_no_routes <<<"$OUT")
assert_eq "$r4_before" "$r4_after" "the route set's refusals are not in OutNoRoutes (EHOSTUNREACH is not counted)"
assert_eq "$(out_no_routes 4)" "$r4_after" "and the reported value matches the kernel's OutNoRoutes"
r6_before=$(jq -r .route_refused.ipv6_out_no_routes <<<"$OUT")
for i in 1 2; do assert_false "ping 2001:db8:2::10 refused ($i)" ping_ok 2001:db8:2::10; done
r6_after=$(st | jq -r .route_refused.ipv6_out_no_routes)
assert_eq "$r6_before" "$r6_after" "nor in Ip6OutNoRoutes"
assert_eq "$(out_no_routes 6)" "$r6_after" "and the reported value matches the kernel's Ip6OutNoRoutes"
# What OutNoRoutes does count: an allowed destination that main has no route for (ENETUNREACH
# after the throw route sends the lookup on to main).
ip -n "${P}_ctr" -4 route del default
assert_false "ping 192.168.1.10 with no route in main fails" ping_ok 192.168.1.10
r4_none=$(st | jq -r .route_refused.ipv4_out_no_routes)
assert_true "an allowed destination with no route in main is in OutNoRoutes ($r4_after -> $r4_none)" test "$r4_none" -gt "$r4_after"
ip -n "${P}_ctr" -4 route add default via 172.31.0.1
expect_exit 0 nsg status --netns "$CTR_NS"
assert_contains "$OUT" "not counted: refusals by the route set" "human output says what it cannot count"
expect_exit 0 nsg status --netns "$CTR_NS"
assert_match "$OUT" 'restricted: *yes' "human output says restricted"

section "policy refusals are counted (--no-route-set: the nft layer decides)"
expect_exit 0 nsg release --netns "$CTR_NS"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-route-set --no-probe
OUT=$(st)
ref_before=$(jq -r .policy.counters.refused.packets <<<"$OUT")
alw_before=$(jq -r .policy.counters.allowed.packets <<<"$OUT")
for i in 1 2 3; do ping_ok 198.51.100.10; done
for i in 1 2; do ping_ok 192.168.1.10; done
OUT=$(st)
ref_after=$(jq -r .policy.counters.refused.packets <<<"$OUT")
alw_after=$(jq -r .policy.counters.allowed.packets <<<"$OUT")
assert_true "refused packets grew by at least 3 ($ref_before -> $ref_after)" test "$ref_after" -ge $((ref_before + 3))
assert_true "refused bytes > 0" test "$(jq -r .policy.counters.refused.bytes <<<"$OUT")" -gt 0
assert_true "allowed packets grew by at least 2 ($alw_before -> $alw_after)" test "$alw_after" -ge $((alw_before + 2))
# Cross-check with nft's own counters on the rules that reject, read just before and just after
# status (the kernel's own IPv6 router and neighbour solicitations may be refused meanwhile).
nft_rejected() {
	nft_table_json | jq '[.nftables[] | select(.rule) | .rule.expr as $e
		| select(any($e[]; has("reject"))) | $e[] | select(has("counter")) | .counter.packets] | add // 0'
}
lo=$(nft_rejected)
ref_now=$(st | jq -r .policy.counters.refused.packets)
hi=$(nft_rejected)
assert_true "status's refused packets ($ref_now) equal nft's reject counter (between $lo and $hi)" \
	test "$lo" -le "$ref_now" -a "$ref_now" -le "$hi"

section "probe against the policy"
expect_exit 0 nsg probe --netns "$CTR_NS" --target 192.168.1.10 --expect reach
expect_exit 3 nsg probe --netns "$CTR_NS" --target 198.51.100.10 --expect reach --json
assert_eq "refused-policy" "$(jq -r '.probes[0].outcome' <<<"$OUT")" "reach on a forbidden host: refused-policy"
start=$EPOCHREALTIME
expect_exit 0 nsg probe --netns "$CTR_NS" --target 198.51.100.10 --expect block --timeout-ms 5000 --json
elapsed_ms=$(((${EPOCHREALTIME/./} - ${start/./}) / 1000))
assert_eq "refused-policy" "$(jq -r '.probes[0].outcome' <<<"$OUT")" "block on a forbidden host: refused-policy"
if ((elapsed_ms < 2000)); then pass "the refusal is seen at once (${elapsed_ms} ms with --timeout-ms 5000)"; else fail "the refusal took ${elapsed_ms} ms"; fi
expect_exit 3 nsg probe --netns "$CTR_NS" --target 192.168.1.10 --expect block

section "probe against the route set"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe
expect_exit 0 nsg probe --netns "$CTR_NS" --target 198.51.100.10 --expect block --json
assert_eq "refused-route" "$(jq -r '.probes[0].outcome' <<<"$OUT")" "block on a forbidden host: refused-route"
expect_exit 3 nsg probe --netns "$CTR_NS" --target 2001:db8:1::10 --expect reach
expect_exit 0 nsg probe --netns "$CTR_NS" --target 192.168.1.10 --expect reach --count 3 --json
assert_eq "3" "$(jq -r '.probes[0].sent' <<<"$OUT")" "--count 3: three echoes sent"
assert_eq "3" "$(jq -r '.probes[0].received' <<<"$OUT")" "--count 3: three replies"

section "restrict fails closed when a probe does not hold"
expect_exit 0 nsg release --netns "$CTR_NS"
# (192.168.1.99 is allowed, but nobody answers there)
expect_exit 3 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --probe-reach 192.168.1.99 --timeout-ms 300 --json
assert_eq "false" "$(jq -r .ok <<<"$OUT")" "--json: ok is false"
assert_eq "3" "$(jq -r .exit_code <<<"$OUT")" "--json: exit_code 3"
assert_eq "false" "$(jq -r '.probes[] | select(.target=="192.168.1.99") | .ok' <<<"$OUT")" "the failing probe is marked"
assert_contains "$(nft_table)" "192.168.1.0/24" "the policy stays installed"
assert_false "ping 198.51.100.10 still refused" ping_ok 198.51.100.10
assert_true "ping 192.168.1.10 answers" ping_ok 192.168.1.10
expect_exit 0 nsg release --netns "$CTR_NS"
expect_exit 3 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --probe-reach 192.168.1.99 --timeout-ms 300
assert_contains "$(nft_table)" "policy drop" "a failed --probe-reach also keeps the policy"

section "probes that contradict the allow-list are refused before anything is committed"
expect_exit 0 nsg release --netns "$CTR_NS"
snapshot >"$TMPD/before"
expect_exit 1 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --probe-block 192.168.1.10
assert_contains "$ERR" "--probe-block 192.168.1.10 is inside the allow-list" "--probe-block inside the allow-list: exit 1, said"
expect_exit 1 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --probe-reach 198.51.100.10
assert_contains "$ERR" "--probe-reach 198.51.100.10 is outside every allowed CIDR" "--probe-reach outside the allow-list: exit 1, said"
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "nothing was committed"

section "default probes (no --probe-*): the gateway is outside the allow-list, so it must be refused"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --json
assert_contains "$(jq -r '.probes[] | select(.expect=="block") | .target' <<<"$OUT")" "172.31.0.1" \
	"default block probe: the original default gateway"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 172.31.0.0/24 --json
assert_contains "$(jq -r '.probes[] | select(.expect=="reach") | .target' <<<"$OUT")" "172.31.0.1" \
	"default reach probe: the gateway, when allowed"
expect_exit 0 nsg release --netns "$CTR_NS"

section "--dry-run changes nothing and prints the ruleset"
snapshot >"$TMPD/before"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 --dry-run
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "kernel state identical after --dry-run"
assert_contains "$OUT" "192.168.1.0/24" "the printed ruleset holds the IPv4 CIDR"
assert_contains "$OUT" "2001:db8:1::/64" "the printed ruleset holds the IPv6 CIDR"
assert_contains "$OUT" "table inet nsegress" "the printed ruleset names the table"
# The nft part ends where the route set part starts; nft must accept it as a script.
sed '/^# route set/,$d' <<<"$OUT" >"$TMPD/dry.nft"
if in_ctr nft -c -f "$TMPD/dry.nft" 2>"$TMPD/nft.err"; then
	pass "nft -c -f accepts the printed ruleset"
else
	fail "nft -c -f rejects the printed ruleset: $(<"$TMPD/nft.err")"
fi
# And it is the same ruleset restrict installs.
in_ctr nft -f "$TMPD/dry.nft"
dry_table=$(in_ctr nft -s list table inet nsegress)
in_ctr nft delete table inet nsegress
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 --no-probe
assert_eq "$dry_table" "$(in_ctr nft -s list table inet nsegress)" "the printed ruleset equals what restrict installs"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 198.51.100.0/24 --dry-run --json
assert_eq "true" "$(jq -r .ok <<<"$OUT")" "--dry-run --json: ok"
assert_eq '["198.51.100.0/24"]' "$(jq -c .allow.ipv4 <<<"$OUT")" "--dry-run --json: the allow-list"
assert_eq "$dry_table" "$(in_ctr nft -s list table inet nsegress)" "--dry-run left the installed policy alone"
expect_exit 0 nsg release --netns "$CTR_NS"

section "--dry-run equals what restrict installs, also in audit mode and with --netdev-egress"
# The netdev sets are printed `typeof` raw payload with hex elements (the rules read raw
# payload), nft lists the installed ones by type: compare the chains there, whole tables else.
chains_only() { awk '/^\tchain /,/^\t}/'; }
for extra in --audit --netdev-egress; do
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 "$extra" --dry-run
	sed '/^# route set/,$d' <<<"$OUT" >"$TMPD/dry.nft"
	in_ctr nft -f "$TMPD/dry.nft"
	dry=$(in_ctr nft -s list ruleset)
	in_ctr nft flush ruleset
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 "$extra" --no-probe
	real=$(in_ctr nft -s list ruleset)
	if [[ $extra == --netdev-egress ]]; then
		dry=$(chains_only <<<"$dry")
		real=$(chains_only <<<"$real")
	fi
	assert_eq "$dry" "$real" "$extra: the printed ruleset equals what restrict installs"
	expect_exit 0 nsg release --netns "$CTR_NS"
done

finish
