#!/usr/bin/env bash
# verify judges behaviour whoever configured the namespace (hand-made iptables included), and
# hook restricts the process named by an OCI state on stdin, refusing hostile states.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

V=(--allow 192.168.1.0/24 --reach 192.168.1.10 --block 198.51.100.10)

# start_in_ctr VAR CMD...: run CMD in ctr in the background; VAR gets its pid once it has exec'd.
start_in_ctr() {
	local var=$1
	shift
	bg_in_ctr "$@"
	local pid=$!
	on_exit "kill $pid 2>/dev/null"
	printf -v "$var" '%s' "$pid"
}

section "verify: an open namespace fails, and says why"
expect_exit 3 nsg verify --netns "$CTR_NS" "${V[@]}"
assert_match "$OUT" 'PASS reach 192.168.1.10' "reach target answers"
assert_match "$OUT" 'FAIL block 198.51.100.10' "block target is not refused"
assert_match "$OUT" 'FAIL ipv6-outside-refused' "IPv6 is open"

section "verify: a hand-made IPv4-only iptables policy fails on IPv6 (the classic bypass)"
in_ctr iptables -A OUTPUT -o lo -j ACCEPT
in_ctr iptables -A OUTPUT -d 192.168.1.0/24 -j ACCEPT
in_ctr iptables -A OUTPUT -j REJECT
expect_exit 3 nsg verify --netns "$CTR_NS" "${V[@]}" --json
assert_eq "pass" "$(jq -r '.checks[] | select(.name=="block 198.51.100.10") | .status' <<<"$OUT")" "IPv4 block holds"
assert_eq "pass" "$(jq -r '.checks[] | select(.name=="ipv4-outside-refused") | .status' <<<"$OUT")" "IPv4 outside refused"
assert_eq "fail" "$(jq -r '.checks[] | select(.name=="ipv6-outside-refused") | .status' <<<"$OUT")" "IPv6 outside NOT refused"
assert_true "real packets agree: IPv6 still leaves" in_ctr ping -n -c1 -W1 -q 2001:db8:2::10

section "verify: adding the ip6tables half makes it pass (with a JUnit report)"
in_ctr ip6tables -A OUTPUT -o lo -j ACCEPT
in_ctr ip6tables -A OUTPUT -d 2001:db8:1::/64 -j ACCEPT
in_ctr ip6tables -A OUTPUT -j REJECT
expect_exit 0 nsg verify --netns "$CTR_NS" "${V[@]}" --junit "$TMPD/report.xml"
assert_match "$OUT" '0 failed' "all checks pass"
assert_contains "$(cat "$TMPD/report.xml")" '<testsuites tests="10" failures="0" errors="0">' "JUnit report: 10 tests, 0 failures"
assert_false "real packets agree: IPv6 to the forbidden network is refused" in_ctr ping -n -c1 -W1 -q 2001:db8:2::10
in_ctr iptables -F OUTPUT
in_ctr ip6tables -F OUTPUT

section "verify after nsegress restrict passes"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe
expect_exit 0 nsg verify --netns "$CTR_NS" "${V[@]}"
expect_exit 0 nsg release --netns "$CTR_NS"

section "verify: bypass risks and process checks"
start_in_ctr rootpid sleep 1001
expect_exit 3 nsg verify --pid "$rootpid" --allow 192.168.1.0/24 --expect-userns-remap --expect-no-new-privs --json
assert_eq "fail" "$(jq -r '.checks[] | select(.name=="bypass-net-admin") | .status' <<<"$OUT")" "a root process in the netns: CAP_NET_ADMIN bypass fails"
assert_eq "warn" "$(jq -r '.checks[] | select(.name=="bypass-net-raw") | .status' <<<"$OUT")" "CAP_NET_RAW is a warning"
assert_eq "fail" "$(jq -r '.checks[] | select(.name=="userns-remap") | .status' <<<"$OUT")" "uid 0 maps to host uid 0: remap fails"
assert_eq "fail" "$(jq -r '.checks[] | select(.name=="no-new-privs") | .status' <<<"$OUT")" "no_new_privs unset: fails"
start_in_ctr nnppid setpriv --no-new-privs --inh-caps=-all --bounding-set=-all sleep 1002
# The root sleep is still in the namespace: verify fails on it, but no_new_privs of this pid holds.
expect_exit 3 nsg verify --pid "$nnppid" --allow 0.0.0.0/0 --allow ::/0 --expect-no-new-privs --json
assert_eq "pass" "$(jq -r '.checks[] | select(.name=="no-new-privs") | .status' <<<"$OUT")" "no_new_privs set: passes"
kill "$rootpid" 2>/dev/null
wait "$rootpid" 2>/dev/null
expect_exit 0 nsg verify --pid "$nnppid" --allow 0.0.0.0/0 --allow ::/0 --json
assert_eq "pass" "$(jq -r '.checks[] | select(.name=="bypass-net-admin") | .status' <<<"$OUT")" "a capability-less process: no CAP_NET_ADMIN bypass"

section "verify: the host's namespace fails netns-not-host and is never probed"
# The test shell runs in the machine's namespace. verify only reports it (and sends nothing).
expect_exit 3 ip netns exec "${P}_gw" "$NSEGRESS" verify --pid $$ --allow 192.168.1.0/24 --reach 192.168.1.10 --json
assert_eq "fail" "$(jq -r '.checks[] | select(.name=="netns-not-host") | .status' <<<"$OUT")" "netns-not-host fails"
assert_contains "$(jq -r '.checks[] | select(.name=="reach 192.168.1.10") | .detail' <<<"$OUT")" "not probed" "nothing is probed from the host's namespace"
assert_eq "not read in the host's namespace" "$(jq -r .netdev_egress.detail <<<"$OUT")" \
	"netdev egress: says why it is unknown (no empty detail)"
assert_eq "0" "$(jq '[.checks[].detail | select(test(": *$|unknown: *[;,)]"))] | length' <<<"$OUT")" \
	"no check detail has an empty 'unknown: ...'"

section "hook: policy from annotations, applied to the state's pid"
start_in_ctr hookpid sleep 1003
state() { printf '{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":%s,"bundle":"/nonexistent","annotations":%s}' "$1" "$2"; }
snapshot >"$TMPD/before"
DESC="hook, no policy: does nothing" expect_exit 0 sh -c 'printf "%s" "$1" | ip netns exec "$2" "$3" hook' _ "$(state "$hookpid" '{}')" "${P}_gw" "$NSEGRESS"
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "no policy: ctr unchanged"
DESC="hook with io.nsegress.allow" expect_exit 0 sh -c 'printf "%s" "$1" | ip netns exec "$2" "$3" hook' _ \
	"$(state "$hookpid" '{"io.nsegress.allow":"192.168.1.0/24, 2001:db8:1::/64","io.nsegress.probe-block":"198.51.100.10"}')" "${P}_gw" "$NSEGRESS"
assert_eq "" "$OUT" "hook prints nothing on success"
assert_true "allowed host answers" ping_ok 192.168.1.10
assert_false "forbidden host refused" ping_ok 198.51.100.10
assert_contains "$(nft_table)" "2001:db8:1::/64" "allow6 holds the annotated IPv6 CIDR"
expect_exit 0 nsg release --netns "$CTR_NS"

section "hook: an annotation only narrows the arguments' allow-list; empty environment behaves the same"
DESC="env -i hook --allow" expect_exit 0 sh -c 'printf "%s" "$1" | ip netns exec "$2" env -i "$3" hook --allow 198.51.100.0/24' _ \
	"$(state "$hookpid" '{"io.nsegress.allow":"192.168.1.0/24"}')" "${P}_gw" "$NSEGRESS"
assert_false "the annotation's network is not added to the arguments' (no widening)" ping_ok 192.168.1.10
assert_false "the arguments' network is not in the annotation: narrowed away" ping_ok 198.51.100.10
DESC="hook --allow 192.168.0.0/16 --allow 198.51.100.0/24, annotation 192.168.1.0/24 + 10.0.0.0/8" \
	expect_exit 0 sh -c 'printf "%s" "$1" | ip netns exec "$2" "$3" hook --allow 192.168.0.0/16 --allow 198.51.100.0/24' _ \
	"$(state "$hookpid" '{"io.nsegress.allow":"192.168.1.0/24, 10.0.0.0/8"}')" "${P}_gw" "$NSEGRESS"
assert_true "the intersection answers (192.168.1.10)" ping_ok 192.168.1.10
assert_false "198.51.100.10: allowed by the arguments only, refused" ping_ok 198.51.100.10
assert_contains "$(nft_table)" "192.168.1.0/24" "the table holds the intersection"
assert_not_contains "$(nft_table)" "10.0.0.0/8" "... and not the annotation's 10.0.0.0/8"
printf '# empty: refuse everything\n' >"$TMPD/empty.allow"
DESC="hook --allow-file (empty)" expect_exit 0 sh -c 'printf "%s" "$1" | ip netns exec "$2" "$3" hook --allow-file "$4"' _ \
	"$(state "$hookpid" '{}')" "${P}_gw" "$NSEGRESS" "$TMPD/empty.allow"
assert_false "an empty --allow-file refuses everything: 192.168.1.10" ping_ok 192.168.1.10
assert_contains "$(nft_table)" "table inet nsegress" "an empty --allow-file is a policy, not 'no policy'"
expect_exit 0 nsg release --netns "$CTR_NS"

section "hook: malformed or hostile states are refused with one line, nothing changed"
snapshot >"$TMPD/before"
hook_refuses() {
	local what=$1 input=$2
	DESC="hook refuses $what" expect_exit 1 sh -c 'printf "%s" "$1" | ip netns exec "$2" "$3" hook' _ "$input" "${P}_gw" "$NSEGRESS"
	assert_eq "1" "$(grep -c . <<<"$ERR")" "$what: one line on stderr ($ERR)"
}
hook_refuses "truncated JSON" '{"pid":'
hook_refuses "pid 0" '{"pid":0}'
hook_refuses "pid 1" '{"pid":1}'
hook_refuses "negative pid" '{"pid":-7}'
hook_refuses "string pid" "{\"pid\":\"$hookpid\"}"
hook_refuses "no pid" '{"id":"x"}'
hook_refuses "empty stdin" ''
hook_refuses "a bad annotation" "$(state "$hookpid" '{"io.nsegress.allow":"300.1.1.1/24"}')"
head -c 2000000 /dev/zero | tr '\0' ' ' >"$TMPD/huge"
DESC="hook refuses 2 MB of input" expect_exit 1 sh -c 'ip netns exec "$1" "$2" hook <"$3"' _ "${P}_gw" "$NSEGRESS" "$TMPD/huge"
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "after every refusal: ctr unchanged"

finish
