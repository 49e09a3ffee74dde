#!/usr/bin/env bash
# A class of students: hand-written nft/iptables solutions of the lab exercise in ctr, each
# graded by `nsegress verify` as a careful teacher would. The "container" is a process in its
# own user namespace (uid 0 inside = uid 100000 outside, as with Docker's --userns-remap), so
# that a rule keyed on the socket owner sees the workload and the grader alike.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

V=(--allow 192.168.1.0/24 --allow 2001:db8:1::/64 --reach 192.168.1.10 --block 198.51.100.10 --block 2001:db8:2::10)

# The user namespace: a holder process, its maps written from outside (no newuidmap needed).
unshare --user sleep 100000 &
HOLDER=$!
on_exit "kill $HOLDER 2>/dev/null"
own_userns() { [[ $(readlink "/proc/$HOLDER/ns/user") != "$(readlink /proc/self/ns/user)" && $(cat "/proc/$HOLDER/comm") == sleep ]]; }
eventually own_userns || {
	echo "FAIL: the user namespace holder did not start"
	exit 1
}
echo "0 100000 65536" >"/proc/$HOLDER/uid_map"
echo "0 100000 65536" >"/proc/$HOLDER/gid_map"
# The workload: container root, in ctr and in that user namespace (nsenter sets uid/gid 0 there).
bg_in_ctr nsenter --user="/proc/$HOLDER/ns/user" -S 0 -G 0 sleep 100001
W=$!
on_exit "kill $W 2>/dev/null"
eventually grep -q '^Uid:[[:space:]]*100000' "/proc/$W/status"
assert_match "$(cat "/proc/$W/uid_map")" '^ *0 +100000 +65536' "the workload's uid 0 is uid 100000 on the host"
as_workload() { in_ctr nsenter --user="/proc/$HOLDER/ns/user" -S 0 -G 0 "$@"; }

# Between students: no policy, the lab's routes.
reset_ctr() {
	in_ctr nft flush ruleset
	ip -n "${P}_ctr" route replace default via "$LAB_GW4"
	ip -n "${P}_ctr" -6 route replace default via "$LAB_GW6"
	ip -n "${P}_ctr" route del 192.168.1.0/24 2>/dev/null
	ip -n "${P}_ctr" -6 route del 2001:db8:1::/64 2>/dev/null
	true
}

# The careful solution (nft), with optional extra lines before and after the allow-list.
model() {
	local lo=${3-oif lo accept} allow4=${4:-192.168.1.0/24}
	in_ctr nft -f - <<EOF
table inet model {
	chain out {
		type filter hook output priority 0; policy drop;
		$1
		$lo
		ip daddr $allow4 accept
		ip6 daddr 2001:db8:1::/64 accept
		ip6 daddr { fe80::/10, ff02::/16 } icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
		$2
		reject
	}
}
EOF
}

status_of() { jq -r --arg n "$1" '.checks[] | select(.name==$n) | .status' <<<"$OUT"; }
detail_of() { jq -r --arg n "$1" '.checks[] | select(.name==$n) | .detail' <<<"$OUT"; }
# grade NAME EXIT: verify the workload as the teacher does; the report is kept in $TMPD/NAME.xml.
grade() {
	DESC="grade $1" expect_exit "$2" nsg verify --pid "$W" "${V[@]}" --json --junit "$TMPD/$1.xml"
	assert_contains "$(cat "$TMPD/$1.xml" 2>/dev/null)" "<testsuite name=\"pid $W\"" "$1: a JUnit report was written"
}
udp6_noports_wan() { ip netns exec "${P}_wan" awk '$1=="Udp6NoPorts" {print $2}' /proc/net/snmp6; }

section "model solution (nft): passes, and the probes went as the container"
reset_ctr
model "" ""
grade model 0
assert_eq pass "$(status_of probe-identity)" "probe-identity passes"
assert_match "$(detail_of probe-identity)" "pid $W's: uid 0 gid 0 in user namespace" "probes took the workload's uid 0 in its user namespace"
for c in "reach 192.168.1.10" "block 198.51.100.10" "block 2001:db8:2::10" ipv4-outside-refused ipv6-outside-refused forged-reply loopback; do
	assert_eq pass "$(status_of "$c")" "model: $c passes"
done
assert_match "$(detail_of "block 198.51.100.10")" 'icmp: .*tcp/80: .*udp/53: ' "every protocol was tried"
assert_false "real packets agree: the workload cannot reach the forbidden host" as_workload nc -z -w2 "$LAB_WAN4" "$LAB_TCP_PORT"

section "cheat: 'meta skuid 100000 accept' (the container's root) before the allow-list"
reset_ctr
model "meta skuid 100000 accept" ""
assert_true "the cheat is real: the workload reaches the forbidden host" as_workload nc -z -w2 "$LAB_WAN4" "$LAB_TCP_PORT"
assert_false "... while host root does not" tcp_ok "$LAB_WAN4"
grade cheat 3
assert_eq fail "$(status_of "block 198.51.100.10")" "cheat: block 198.51.100.10 fails"
assert_match "$(detail_of "block 198.51.100.10")" 'tcp/80: NOT REFUSED' "cheat: TCP is named as not refused"
assert_eq fail "$(status_of ipv4-outside-refused)" "cheat: ipv4-outside-refused fails"
assert_contains "$(cat "$TMPD/cheat.xml")" '<testcase classname="nsegress.verify.block" name="block 198.51.100.10">' "cheat: JUnit groups the block check"

section "ICMP only refused: TCP and UDP to the forbidden host leave"
reset_ctr
in_ctr nft -f - <<'EOF'
table inet icmponly {
	chain out {
		type filter hook output priority 0; policy accept;
		oif lo accept
		ip daddr 192.168.1.0/24 accept
		ip6 daddr 2001:db8:1::/64 accept
		meta l4proto { icmp, ipv6-icmp } ip daddr != 192.168.1.0/24 reject
		meta l4proto ipv6-icmp icmpv6 type echo-request reject
	}
}
EOF
grade icmponly 3
assert_eq fail "$(status_of "block 198.51.100.10")" "icmp-only: block fails"
assert_match "$(detail_of "block 198.51.100.10")" '^icmp: refused' "icmp-only: ICMP itself was refused"
assert_match "$(detail_of "block 198.51.100.10")" 'tcp/80: NOT REFUSED.*udp/53: NOT REFUSED' "icmp-only: TCP and UDP are named"
assert_true "real packets agree: TCP to the forbidden host connects" tcp_ok "$LAB_WAN4"

section "routes only: no default route, a route to the LAN; the gateway stays reachable"
reset_ctr
ip -n "${P}_ctr" route del default
ip -n "${P}_ctr" -6 route del default
ip -n "${P}_ctr" route add 192.168.1.0/24 via "$LAB_GW4"
ip -n "${P}_ctr" -6 route add 2001:db8:1::/64 via "$LAB_GW6"
grade routes 3
assert_eq pass "$(status_of "block 198.51.100.10")" "routes-only: the forbidden host itself has no route"
assert_eq fail "$(status_of ipv4-outside-refused)" "routes-only: ipv4-outside-refused fails"
assert_contains "$(detail_of ipv4-outside-refused)" "172.31.0.1 (on-link 172.31.0.0/24)" "routes-only: the on-link gateway is named"
assert_true "real packets agree: the gateway answers" ping_ok "$LAB_GW4"

section "wide mask: 192.168.0.0/16 allowed instead of 192.168.1.0/24"
reset_ctr
model "" "" "oif lo accept" 192.168.0.0/16
grade widemask 3
assert_eq pass "$(status_of "block 198.51.100.10")" "wide mask: the forbidden host is refused"
assert_eq fail "$(status_of ipv4-outside-refused)" "wide mask: ipv4-outside-refused fails"
assert_contains "$(detail_of ipv4-outside-refused)" "192.168.2.0 (just above 192.168.1.0/24)" "wide mask: the address just above the allowed /24 is named"

section "own subnet allowed (the other containers on the bridge), gateway refused"
reset_ctr
model "ip daddr 172.31.0.1 reject" "ip daddr 172.31.0.0/24 accept"
grade subnet 3
assert_eq fail "$(status_of ipv4-outside-refused)" "own subnet: ipv4-outside-refused fails"
assert_match "$(detail_of ipv4-outside-refused)" '172\.31\.0\.3 \(on-link 172\.31\.0\.0/24\) -- .*asked for its link-layer address' \
	"own subnet: an absent on-link host is caught by the ARP request its packets caused"
assert_false "172.31.0.1 (the gateway) is not among the leaks" grep -q '172\.31\.0\.1 (' <<<"$(detail_of ipv4-outside-refused)"

section "no loopback: passes with a warning that says why"
reset_ctr
model "" "" "oif lo reject"
grade noloop 0
assert_eq warn "$(status_of loopback)" "no loopback: WARN loopback"
assert_contains "$(detail_of loopback)" "127.0.0.1" "no loopback: 127.0.0.1 named"

section "naive conntrack: 'ct state established,related accept' lets forged replies out"
reset_ctr
model "ct state established,related accept" ""
before=$(udp6_noports_wan)
grade naive 3
after=$(udp6_noports_wan)
assert_eq fail "$(status_of forged-reply)" "naive conntrack: forged-reply fails"
assert_contains "$(detail_of forged-reply)" "IPV6_FREEBIND (no capability)" "naive conntrack: the capability-less technique is named"
assert_eq pass "$(status_of "block 2001:db8:2::10")" "naive conntrack: plain probes to the forbidden host are refused"
assert_true "the forbidden host really received the forged 'reply' (Udp6NoPorts $before -> $after)" test "$after" -gt "$before"
reset_ctr
model "" ""
before=$(udp6_noports_wan)
grade model2 0
assert_eq "$before" "$(udp6_noports_wan)" "control: under the model solution nothing reached the forbidden host"

section "forged replies as a CAP_NET_RAW holder: 'ct direction reply accept' fails, nsegress's own policy passes"
bg_in_ctr setpriv --inh-caps=-all --bounding-set=-all,+net_raw --ambient-caps=+net_raw sleep 100003
RAW=$!
on_exit "kill $RAW 2>/dev/null"
assert_match "$(grep CapEff "/proc/$RAW/status")" '0000000000002000$' "the raw holder has CAP_NET_RAW and nothing else"
VR=(--allow 192.168.1.0/24 --allow 2001:db8:1::/64 --reach 192.168.1.10 --reach 2001:db8:1::10 --block 198.51.100.10 --block 2001:db8:2::10)
forged() { jq -r --arg t "$1" '.forged_replies[] | select(.technique==$t) | .leaked' <<<"$OUT"; }
reset_ctr
model "ct direction reply accept" ""
expect_exit 3 nsg verify --pid "$RAW" "${VR[@]}" --json
assert_eq fail "$(status_of forged-reply)" "ct direction reply accept: forged-reply fails"
assert_eq true "$(forged "IPv6 IPV6_FREEBIND (no capability)")" "leaked: IPv6 IPV6_FREEBIND"
assert_eq true "$(forged "IPv4 raw IP_HDRINCL (CAP_NET_RAW)")" "leaked: IPv4 raw forgery, plain reply"
assert_eq true "$(forged "IPv4 raw IP_HDRINCL (CAP_NET_RAW), reply routed via 192.168.1.10")" "leaked: IPv4 raw forgery, raw reply routed via an allowed host"
assert_eq true "$(forged "IPv6 raw IP_HDRINCL (CAP_NET_RAW), reply routed via 2001:db8:1::10")" "leaked: IPv6 raw forgery, raw reply routed via an allowed host"
for rs in "" --no-route-set; do
	reset_ctr
	expect_exit 0 nsg restrict --pid "$RAW" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 $rs --no-probe
	before=$(udp6_noports_wan)
	expect_exit 0 nsg verify --pid "$RAW" "${VR[@]}" --json
	assert_eq pass "$(status_of forged-reply)" "nsegress restrict ${rs:-(default)}: forged-reply passes"
	assert_eq "0" "$(jq '[.forged_replies[] | select(.applicable)] | length > 0 and all(.leaked | not) | if . then 0 else 1 end' <<<"$OUT")" \
		"nsegress restrict ${rs:-(default)}: every technique was tried, none leaked"
	assert_eq "$before" "$(udp6_noports_wan)" "nsegress restrict ${rs:-(default)}: nothing reached the forbidden host"
	expect_exit 0 nsg release --pid "$RAW"
done
kill "$RAW"

section "iptables: IPv4 only fails on IPv6; both halves pass"
reset_ctr
in_ctr iptables -A OUTPUT -o lo -j ACCEPT
in_ctr iptables -A OUTPUT -d 192.168.1.0/24 -j ACCEPT
in_ctr iptables -A OUTPUT -j REJECT
grade ipv4only 3
assert_eq fail "$(status_of "block 2001:db8:2::10")" "IPv4 only: IPv6 block fails"
assert_eq fail "$(status_of ipv6-outside-refused)" "IPv4 only: ipv6-outside-refused fails"
assert_eq pass "$(status_of ipv4-outside-refused)" "IPv4 only: IPv4 outside refused"
in_ctr ip6tables -A OUTPUT -o lo -j ACCEPT
in_ctr ip6tables -A OUTPUT -d 2001:db8:1::/64 -j ACCEPT
in_ctr ip6tables -A OUTPUT -d ff02::/16 -p icmpv6 -j ACCEPT
in_ctr ip6tables -A OUTPUT -j REJECT
grade iptables 0
in_ctr iptables -F OUTPUT
in_ctr ip6tables -F OUTPUT

section "the teacher's own mistakes are caught before anything runs"
reset_ctr
snapshot >"$TMPD/before"
expect_exit 1 nsg verify --pid "$W" --allow 192.168.1.0/24 --reach 192.168.1.10 --block 192.168.1.20 --junit "$TMPD/mistake.xml"
assert_contains "$ERR" "--block 192.168.1.20 is inside the allow-list" "a block target inside the allow-list"
assert_contains "$(cat "$TMPD/mistake.xml" 2>/dev/null)" "<error message=" "the JUnit report is written, with an error"
expect_exit 1 nsg verify --pid "$W" --allow 192.168.1.0/24 --reach 198.51.100.10
assert_contains "$ERR" "--reach 198.51.100.10 is outside every allowed CIDR" "a reach target outside the allow-list"
expect_exit 1 nsg restrict --pid "$W" --allow 192.168.1.0/24 --probe-block 192.168.1.10
assert_contains "$ERR" "--probe-block 192.168.1.10 is inside the allow-list" "restrict: the same validation"
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "nothing was committed"
expect_exit 3 nsg verify --pid "$W" --allow 192.168.1.0/24 --json
assert_eq warn "$(status_of reach-targets)" "no --reach: WARN (a namespace refusing everything would pass)"

section "host network: an engine daemon in the namespace, or the engine's NetworkMode"
cp "$(command -v sleep)" "$TMPD/dockerd"
bg_in_ctr "$TMPD/dockerd" 100002
D=$!
on_exit "kill $D 2>/dev/null"
model "" ""
expect_exit 3 nsg verify --pid "$W" "${V[@]}" --json
assert_eq fail "$(status_of netns-not-host)" "a dockerd lives in the namespace: netns-not-host fails"
assert_contains "$(detail_of netns-not-host)" "process $D (dockerd)" "the daemon is named"
kill "$D"
wait "$D" 2>/dev/null

section "status and release see a policy that is not nsegress's"
reset_ctr
model "" ""
in_ctr iptables -A OUTPUT -d 198.51.100.0/24 -j REJECT
expect_exit 0 nsg status --netns "$CTR_NS"
assert_contains "$OUT" "restricted: not by nsegress" "status: not 'restricted: no'"
assert_contains "$OUT" "table inet model, chain out: hook output priority 0, policy drop (not nsegress's)" "status names the nft chain"
assert_contains "$OUT" "table ip filter, chain OUTPUT: hook output" "status names the iptables chain"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "model" "$(jq -r '.foreign.chains[] | select(.hook=="output" and .family=="inet") | .table' <<<"$OUT")" "status --json: foreign.chains"
snapshot >"$TMPD/before"
expect_exit 0 nsg release --netns "$CTR_NS"
assert_contains "$OUT" "nothing of nsegress's was installed: nothing removed" "release says it removed nothing"
assert_contains "$OUT" "table inet model" "release names what it left in place"
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "release left the other policies untouched"
in_ctr iptables -F OUTPUT
reset_ctr
model "" ""

section "a whole class in one run: one report, errors as testcases, exit = the worst"
mkdir -p "$TMPD/bin"
cat >"$TMPD/bin/docker" <<EOF
#!/bin/sh
# A stand-in for the docker CLI: inspect --type container --format FMT -- NAME
fmt=\$5 name=\$7
case \$name in alice | hosty) ;; *) echo "Error: No such container: \$name" >&2; exit 1 ;; esac
case \$fmt in
*NetworkMode*) if [ "\$name" = hosty ]; then echo host; else echo bridge; fi ;;
*) echo "$W true" ;;
esac
EOF
chmod +x "$TMPD/bin/docker"
printf '# the class\nalice\n\nghost\nhosty\n' >"$TMPD/class.txt"
DESC="verify --containers-file" expect_exit 2 env PATH="$TMPD/bin:$PATH" ip netns exec "${P}_gw" "$NSEGRESS" verify \
	--engine docker --containers-file "$TMPD/class.txt" "${V[@]}" --junit "$TMPD/class.xml"
xml=$(cat "$TMPD/class.xml" 2>/dev/null)
assert_match "$xml" '<testsuite name="alice" tests="[0-9]+" failures="0"' "alice: a suite named after the container, passing"
assert_match "$xml" '<testsuite name="ghost" tests="1" failures="0" errors="1"' "ghost: an error suite"
assert_match "$xml" '<testsuite name="hosty" tests="[0-9]+" failures="[1-9]' "hosty: failing"
assert_true "the order of the file is kept" bash -c '[[ $(grep -o "testsuite name=\"[a-z]*\"" "$1" | tr "\n" " ") == "testsuite name=\"alice\" testsuite name=\"ghost\" testsuite name=\"hosty\" " ]]' _ "$TMPD/class.xml"
assert_contains "$OUT" "NetworkMode is 'host'" "hosty: the engine's NetworkMode host is reported"
assert_contains "$OUT" "class: 3 target(s), 1 passed, 1 failed, 1 could not be graded" "a class summary"
DESC="verify two passing containers" expect_exit 0 env PATH="$TMPD/bin:$PATH" ip netns exec "${P}_gw" "$NSEGRESS" verify \
	--engine docker --container alice --container alice "${V[@]}" --json
assert_eq "2" "$(jq '.targets | length' <<<"$OUT")" "two documents in one"

finish
