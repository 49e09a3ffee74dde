#!/usr/bin/env bash
# Atomic replacement under traffic: while ctr sends a steady UDP stream to an allowed host (lan,
# IPv4 and IPv6) and one to a forbidden host (wan), the policy is replaced 100 times: two
# allow-lists that both contain lan (one as a /24 and /64, one as host routes /32 and /128 with
# other networks around), with and without the route set. Not one allowed datagram may be
# refused (the sender sees no EPERM/EHOSTUNREACH, and lan receives exactly what was sent) and not
# one forbidden datagram may reach wan. Counted by nft counters inside lan and wan.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

PORT=5001
ROUNDS=${ATOMIC_ROUNDS:-100}

# Receivers' counters: everything arriving from ctr (any protocol), and the stream itself.
for host in lan wan; do
	ip netns exec "${P}_$host" nft -f - <<EOF
table inet count {
	chain in {
		type filter hook input priority -300; policy accept;
		ip saddr $LAB_CTR4 udp dport $PORT counter comment "stream4"
		ip6 saddr $LAB_CTR6 udp dport $PORT counter comment "stream6"
		ip saddr $LAB_CTR4 counter comment "all4"
		ip6 saddr $LAB_CTR6 counter comment "all6"
	}
}
EOF
done

list_a=(--allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6")
list_b=(--allow "$LAB_LAN4" --allow "$LAB_LAN6" --allow 203.0.113.0/24 --allow 2001:db8:99::/48 --allow 192.168.1.128/25)

expect_exit 0 nsg restrict --netns "$CTR_NS" "${list_a[@]}" --no-probe
base_wan4=$(count_packets wan all4) base_wan6=$(count_packets wan all6)

bg_in_ctr /usr/bin/python3 "$REPO/tests/integration/helpers/udp_stream.py" "$TMPD/stop" "$TMPD/stream.json" \
	"$PORT" 0.002 "$LAB_LAN4" "$LAB_LAN6" "$LAB_WAN4" "$LAB_WAN6"
client=$!
on_exit "touch '$TMPD/stop'; kill $client 2>/dev/null"
assert_true "the client streams" wait_for_text "$TMPD/stream.json.started" started 5

section "$ROUNDS replacements under traffic"
failed=0
for ((i = 1; i <= ROUNDS; i++)); do
	args=("${list_a[@]}")
	((i % 2)) && args=("${list_b[@]}")
	# Two rounds with the route set, two without: every transition (set->set with other routes,
	# set->none, none->set) happens under traffic.
	((i % 4 >= 2)) && args+=(--no-route-set)
	if ! nsg restrict --netns "$CTR_NS" "${args[@]}" --no-probe >"$TMPD/r.out" 2>&1; then
		failed=$((failed + 1))
		sed 's/^/#   /' "$TMPD/r.out" | head -5
	fi
done
assert_eq 0 "$failed" "$ROUNDS restricts all succeed"
sleep 0.3 # let the last datagrams arrive
touch "$TMPD/stop"
wait "$client"
sleep 0.3
assert_true "the client wrote its tally" test -s "$TMPD/stream.json"
stats=$(<"$TMPD/stream.json")
tally() { jq -r --arg t "$1" ".targets[\$t].$2" <<<"$stats"; }
echo "# client: $(jq -c . <<<"$stats")"

for fam in 4 6; do
	lan=LAB_LAN$fam wan=LAB_WAN$fam
	sent=$(tally "${!lan}" ok)
	assert_true "IPv$fam: the client sent a real stream to lan ($sent datagrams)" test "$sent" -gt 200
	assert_eq "{}" "$(tally "${!lan}" 'errors | tojson')" "IPv$fam: not one datagram to lan was refused (no EPERM, no ENETUNREACH)"
	assert_eq "$sent" "$(count_packets lan "stream$fam")" "IPv$fam: lan received every datagram sent to it"
	assert_eq 0 "$(tally "${!wan}" ok)" "IPv$fam: every datagram to wan was refused inside ctr"
done
assert_eq "$base_wan4" "$(count_packets wan all4)" "IPv4: wan received nothing from ctr during the replacements"
assert_eq "$base_wan6" "$(count_packets wan all6)" "IPv6: wan received nothing from ctr during the replacements"
assert_eq 0 "$(count_packets wan stream4)" "IPv4: not one stream datagram reached wan"
assert_eq 0 "$(count_packets wan stream6)" "IPv6: not one stream datagram reached wan"

section "the order of the kernel's route and rule events (ip monitor): never a moment without a route"
# Sampling traffic cannot see a window of microseconds; the kernel's own event order can.
# events_during MONITOR-COMMAND -- RESTRICT-ARGS...: what the monitor (run inside ctr) printed
# while one restrict ran.
events_during() {
	local cmd=()
	while [[ $1 != -- ]]; do
		cmd+=("$1")
		shift
	done
	shift
	ip netns exec "${P}_ctr" "${cmd[@]}" >"$TMPD/mon" 2>&1 &
	local mon=$!
	sleep 0.3
	nsg restrict --netns "$CTR_NS" "$@" --no-probe >/dev/null 2>&1
	sleep 0.3
	kill "$mon"
	wait "$mon" 2>/dev/null
	cat "$TMPD/mon"
}
# monitor_during ARGS...: the rule and route events of ctr while one restrict runs.
monitor_during() { events_during ip monitor rule route -- "$@"; }
# line_of TEXT PATTERN: the first line number matching the extended regex, or 999999
line_of() { grep -nE -- "$2" <<<"$1" | head -1 | cut -d: -f1 | grep . || echo 999999; }
expect_exit 0 nsg restrict --netns "$CTR_NS" "${list_a[@]}" --no-probe
ev=$(monitor_during "${list_b[@]}")
add=$(line_of "$ev" "^throw 192\.168\.1\.10 .*table 28275")
del=$(line_of "$ev" "^Deleted throw 192\.168\.1\.0/24 .*table 28275")
assert_true "list A -> B: the /32 to lan is added (line $add) before the /24 goes (line $del)" test "$add" -lt "$del" -a "$del" -lt 999999
add=$(line_of "$ev" "^throw 2001:db8:1::10 .*table 28275")
del=$(line_of "$ev" "^Deleted throw 2001:db8:1::/64 .*table 28275")
assert_true "list A -> B (IPv6): the /128 is added (line $add) before the /64 goes (line $del)" test "$add" -lt "$del" -a "$del" -lt 999999
ev=$(monitor_during "${list_b[@]}" --no-route-set)
l=$(line_of "$ev" "^Deleted 100:")
r=$(line_of "$ev" "^Deleted .*table 28275")
assert_true "route set -> none: the lookup rule goes (line $l) before the table's routes (line $r)" test "$l" -lt "$r" -a "$r" -lt 999999
ev=$(monitor_during "${list_b[@]}")
u=$(line_of "$ev" "^unreachable default .*table 28275")
t=$(line_of "$ev" "^throw .*table 28275")
l=$(line_of "$ev" "^100:")
assert_true "none -> route set: the unreachable route (line $u), then the throw routes (line $t), then the lookup rule (line $l)" \
	test "$u" -lt "$t" -a "$t" -lt "$l" -a "$l" -lt 999999
# The earlier layout (copies of main, a catch-all rule 101): the table refuses by itself before
# rule 101 goes, and the copies become throw routes only after it went.
expect_exit 0 nsg release --netns "$CTR_NS"
for fam in 4 6; do
	ip -n "${P}_ctr" "-$fam" rule add priority 100 lookup 28275 proto 245
	ip -n "${P}_ctr" "-$fam" rule add priority 101 unreachable proto 245
done
ip -n "${P}_ctr" -4 route add "$LAB_LAN_NET4" via "$LAB_GW4" dev eth0 onlink table 28275 proto 245
ev=$(monitor_during "${list_a[@]}")
u=$(line_of "$ev" "^unreachable default .*table 28275")
d=$(line_of "$ev" "^Deleted 101:")
t=$(line_of "$ev" "^throw 192\.168\.1\.0/24 .*table 28275")
assert_true "earlier layout -> route set: the unreachable route (line $u), then rule 101 goes (line $d), then the copy becomes a throw route (line $t)" \
	test "$u" -lt "$d" -a "$d" -lt "$t" -a "$t" -lt 999999
assert_eq "" "$(extra_rules 4 | grep 101)$(extra_rules 6 | grep 101)" "earlier layout -> route set: no rule 101 left"

section "the nft replacement keeps the base chain (nft monitor): its hook never goes away"
# Deleting and re-creating the table would leave the old chain hooked, empty and with policy
# drop, for a moment of the commit: rare refusals that sampling only sometimes catches. The
# events say which way the batch went.
nft_monitor_during() { events_during nft monitor -- "$@"; }
ev=$(nft_monitor_during "${list_a[@]}")
assert_not_contains "$ev" "delete table inet nsegress" "re-restrict: the table is not deleted"
assert_not_contains "$ev" "delete chain inet nsegress output" "re-restrict: the output chain is not deleted"
assert_match "$ev" 'delete rule inet nsegress output handle' "re-restrict: the old rules are flushed from the kept chain"
assert_match "$ev" 'add rule inet nsegress output .*comment "nsegress: allowed ipv4"' "re-restrict: the new rules go into it"
ev=$(nft_monitor_during "${list_b[@]}" --audit)
assert_not_contains "$ev" "delete chain inet nsegress output" "enforce -> audit: the chain is kept"
assert_contains "$(ip netns exec "${P}_ctr" nft list chain inet nsegress output)" "policy accept" "audit: chain policy accept"
ev=$(nft_monitor_during "${list_b[@]}")
assert_contains "$(ip netns exec "${P}_ctr" nft list chain inet nsegress output)" "policy drop" "audit -> enforce: chain policy drop again"
set4=$(ip netns exec "${P}_ctr" nft list set inet nsegress allow4)
assert_match "$set4" '192\.168\.1\.10[^0-9/]' "list B in place: allow4 holds the lan host"
assert_contains "$set4" "203.0.113.0/24" "list B in place: allow4 holds 203.0.113.0/24"
assert_not_contains "$set4" "192.168.1.0/24" "list B in place: list A's 192.168.1.0/24 was flushed"

expect_exit 0 nsg release --netns "$CTR_NS"
finish
