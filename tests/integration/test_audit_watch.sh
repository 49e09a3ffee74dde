#!/usr/bin/env bash
# Audit mode and the live deny log (nsegress watch), with real packets from inside ctr:
#   - restrict --audit lets forbidden TCP, UDP, ICMP and IPv6 through, and watch --json reports
#     each attempt with the right destination, port or ICMP type, and the socket's uid;
#   - in enforce mode watch reports the refusals;
#   - under a flood the number of logged lines stays within the rate limit (counts, not time),
#     every flood packet is still refused, and the namespace keeps working;
#   - a log socket overrun (ENOBUFS) is counted and reported, not fatal;
#   - --summary's output, fed back to restrict --allow-file, allows exactly what was observed.
# The policy's own counters, read with nft, are the independent witness of what was logged.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

WATCH_PID=''
WATCH_RC=0
# shellcheck disable=SC2016 # expanded when the exit hook runs
on_exit '[[ -n $WATCH_PID ]] && kill -KILL "$WATCH_PID" 2>/dev/null'

# start_watch NAME [--wrap CMD...--] ARGS...: nsegress watch in the background on the lab's host,
# stdout in $TMPD/NAME.out and stderr in $TMPD/NAME.err; returns once it says the group is bound.
# $! is nsegress itself (ip netns exec and env exec it), so signals reach it directly.
start_watch() {
	local name=$1
	shift
	local wrap=()
	if [[ ${1-} == --wrap ]]; then
		shift
		while [[ $1 != -- ]]; do
			wrap+=("$1")
			shift
		done
		shift
	fi
	local why
	if ! why=$(_guard_target "$@"); then
		fail "$why"
		return 1
	fi
	ip netns exec "${P}_gw" "${wrap[@]}" "$NSEGRESS" watch "$@" >"$TMPD/$name.out" 2>"$TMPD/$name.err" &
	WATCH_PID=$!
	if wait_for_text "$TMPD/$name.err" "listening on nflog group 28275" 10; then
		pass "watch $name: bound to nflog group 28275 in ctr"
	else
		fail "watch $name did not start: $(cat "$TMPD/$name.err")"
	fi
}

# stop_watch [SIGNAL]: signal it (default TERM) and reap it; its exit status is in $WATCH_RC.
stop_watch() {
	[[ -n ${1-} ]] && kill "-$1" "$WATCH_PID" 2>/dev/null
	wait "$WATCH_PID"
	WATCH_RC=$?
	WATCH_PID=''
}

# Attempt lines of a --json watch output, optionally filtered by a jq condition.
attempts() { jq -c "select(.event == \"attempt\")${2:+ | select($2)}" "$TMPD/$1.out"; }
count_attempts() { attempts "$@" | grep -c . ; }
end_doc() { jq -c 'select(.event == "end")' "$TMPD/$1.out"; }

# Packets counted by a rule of the policy, found by its comment ("deny log", "refused", "audited").
rule_packets() {
	nft_table_json | jq -r --arg c "nsegress: $1" '
		.nftables[] | select(.rule) | .rule | select(.comment == $c) | .expr[] | select(.counter) | .counter.packets'
}

ping6_ok() { in_ctr ping -6 -n -c1 -W2 -q "$1" >/dev/null 2>&1; }
as_user() { in_ctr setpriv --reuid 1234 --regid 1234 --clear-groups "$@"; }
udp_flood() { # udp_flood HOST BATCHES: 500 datagrams per batch, each from a new socket (a new flow)
	# shellcheck disable=SC2016 # the inner script's own arguments
	in_ctr bash -c 'for ((b = 0; b < $2; b++)); do
		for ((i = 0; i < 500; i++)); do printf x >"/dev/udp/$1/9999"; done 2>/dev/null
		sleep 0.1
	done' flood "$1" "$2"
}

section "audit mode: restrict --audit installs the policy but refuses nothing"
expect_exit 0 nsg restrict --netns "$CTR_NS" --audit --allow 192.168.1.0/24 \
	--probe-reach 192.168.1.10 --probe-block 198.51.100.10 --json
assert_eq "audit" "$(jq -r .mode <<<"$OUT")" "restrict --json: mode audit"
assert_eq "false" "$(jq -r .route_set.installed <<<"$OUT")" "restrict --json: no route set in audit mode"
assert_eq "audit" "$(jq -r '.probes[] | select(.target == "198.51.100.10") | .expect' <<<"$OUT")" \
	"the block target is probed as an audit target"
assert_eq "true" "$(jq -r '[.probes[].ok] | all' <<<"$OUT")" "every probe held (the forbidden echo got out)"
table=$(nft_table)
assert_match "$table" 'hook output priority filter; policy accept;' "nft: chain policy accept"
assert_contains "$table" 'log prefix "nsegress audit" group 28275' "nft: the deny log logs to group 28275"
assert_match "$table" 'ct state new limit rate 50/second burst 100 packets' "nft: only new flows, rate-limited"
assert_not_contains "$table" "reject" "nft: nothing is rejected"
assert_eq "" "$(extra_rules 4)" "no route-set rules"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "audit" "$(jq -r .mode <<<"$OUT")" "status --json: mode audit"
assert_eq "false" "$(jq -r .restricted <<<"$OUT")" "status --json: not restricted (audit mode refuses nothing)"
assert_eq "28275" "$(jq -r .policy.deny_log.group <<<"$OUT")" "status --json: the deny log's group"
expect_exit 0 nsg status --netns "$CTR_NS"
assert_contains "$OUT" "AUDIT mode" "status says the policy is in audit mode"

section "audit mode: forbidden traffic passes, and watch --json reports each attempt"
start_watch audit --netns "$CTR_NS" --json
logged0=$(rule_packets "deny log")
assert_true "TCP to wan 198.51.100.10:8080 connects (uid 1234)" as_user nc -z -w2 198.51.100.10 8080
udp_send 198.51.100.10 "udp-audit-$$"
assert_true "UDP to wan arrives" wait_for_text "$(lab_log "$P" wan udp)" "udp-audit-$$"
assert_true "ping wan 198.51.100.10 answers" ping_ok 198.51.100.10
assert_true "TCP to [2001:db8:2::10]:8080 connects" in_ctr nc -z -w2 2001:db8:2::10 8080
assert_true "ping 2001:db8:2::10 answers" ping6_ok 2001:db8:2::10
assert_true "ping lan 192.168.1.10 (allowed) answers" ping_ok 192.168.1.10
logged1=$(rule_packets "deny log")
stop_watch TERM
assert_eq 0 "$WATCH_RC" "watch ends with status 0 on SIGTERM"
assert_eq "1" "$(count_attempts audit '.proto == "tcp" and .dst == "198.51.100.10" and .dport == 8080 and .uid == 1234')" \
	"watch: TCP 198.51.100.10:8080 from uid 1234"
assert_eq "1" "$(count_attempts audit '.proto == "udp" and .dst == "198.51.100.10" and .dport == 9999')" \
	"watch: UDP 198.51.100.10:9999"
assert_eq "1" "$(count_attempts audit '.proto == "icmp" and .dst == "198.51.100.10" and .icmp == "echo-request" and .icmp_type == 8')" \
	"watch: ICMP echo-request to 198.51.100.10"
assert_eq "1" "$(count_attempts audit '.family == "ipv6" and .proto == "tcp" and .dst == "2001:db8:2::10" and .dport == 8080')" \
	"watch: IPv6 TCP [2001:db8:2::10]:8080"
assert_eq "1" "$(count_attempts audit '.proto == "icmpv6" and .dst == "2001:db8:2::10" and .icmp == "echo-request"')" \
	"watch: ICMPv6 echo-request to 2001:db8:2::10"
assert_eq "0" "$(count_attempts audit '.dst == "192.168.1.10"')" "watch: nothing about the allowed lan"
assert_eq "0" "$(count_attempts audit '.mode != "audit" or .verdict != "would-be-refused"')" \
	"watch: every attempt is marked would-be-refused (audit)"
assert_eq "$((logged1 - logged0))" "$(count_attempts audit)" \
	"one line per packet the policy's log rule counted (nft: $((logged1 - logged0)))"
end=$(end_doc audit)
assert_eq "SIGTERM" "$(jq -r .reason <<<"$end")" "end document: reason SIGTERM"
assert_eq "0" "$(jq -r .lost <<<"$end")" "end document: nothing lost"
assert_eq "true" "$(jq -r '.ok and .exit_code == 0 and .error == null' <<<"$end")" "end document: ok"
# The counter may still move (a late retransmission): nft reads it before and after status.
audited0=$(rule_packets audited)
expect_exit 0 nsg status --netns "$CTR_NS" --json
audited1=$(rule_packets audited)
assert_eq "0" "$(jq -r .policy.counters.refused.packets <<<"$OUT")" \
	"status --json in audit mode: counters.refused is 0 (nothing was refused)"
wbr=$(jq -r .policy.counters.would_be_refused.packets <<<"$OUT")
assert_true "status --json in audit mode: counters.would_be_refused ($wbr) is the audited rule's counter (nft: $audited0..$audited1)" \
	test "$wbr" -ge "$audited0" -a "$wbr" -le "$audited1"
assert_true "would_be_refused counted the forbidden traffic" \
	test "$(jq -r .policy.counters.would_be_refused.packets <<<"$OUT")" -ge 5

section "audit mode: --summary (human output, ended with SIGINT) is an allow-file of what was seen"
start_watch summary --wrap env --default-signal=INT -- --netns "$CTR_NS" --summary
assert_true "TCP to wan 198.51.100.10:8080 connects" tcp_ok 198.51.100.10
assert_true "TCP to [2001:db8:2::10]:8080 connects" in_ctr nc -z -w2 2001:db8:2::10 8080
udp_send 2001:db8:2::10 "udp6-audit-$$"
assert_true "UDP to [2001:db8:2::10] arrives" wait_for_text "$(lab_log "$P" wan udp)" "udp6-audit-$$"
stop_watch INT
assert_eq 0 "$WATCH_RC" "watch ends with status 0 on SIGINT"
cp "$TMPD/summary.out" "$TMPD/raw.allow"
entries=$(grep -v '^#' "$TMPD/raw.allow" | sed 's/ *#.*//' | grep . | sort | tr '\n' ' ')
assert_eq "192.168.1.0/24 " "$entries" \
	"summary as printed: only the current allow-list is active (observed destinations await review)"
assert_contains "$(<"$TMPD/raw.allow")" "REVIEW" "summary: says to review the observed destinations"
# The review: accept every observed destination (what a user does after reading the list).
sed 's/^#- //' "$TMPD/raw.allow" >"$TMPD/observed.allow"
entries=$(grep -v '^#' "$TMPD/observed.allow" | sed 's/ *#.*//' | grep . | sort | tr '\n' ' ')
assert_eq "192.168.1.0/24 198.51.100.10/32 tcp/8080 2001:db8:2::10/128 tcp/8080 udp/9999 " "$entries" \
	"summary, reviewed: the current allow-list plus exactly the observed hosts, with the ports seen"
assert_match "$(<"$TMPD/raw.allow")" '^#- 198\.51\.100\.10/32 tcp/8080 +# 1 attempt\(s\): tcp/8080 x1$' \
	"summary: a commented-out line with what was seen"
assert_match "$(<"$TMPD/raw.allow")" '^#- 2001:db8:2::10/128 tcp/8080 udp/9999 +# 2 attempt\(s\): (tcp/8080 x1, udp/9999 x1|udp/9999 x1, tcp/8080 x1)$' \
	"summary: both protocols to the IPv6 host"
assert_match "$(<"$TMPD/observed.allow")" '^# .*tcp +198\.51\.100\.10:8080 .*would be refused \(audit\)' \
	"summary mode: the attempt lines are comments"
assert_contains "$(<"$TMPD/summary.err")" "ended (SIGINT)" "stderr: why it ended"
assert_contains "$(<"$TMPD/summary.err")" "the 2 observed destination(s) outside the current allow-list: review it" \
	"stderr: says the summary needs a review, and how many destinations wait for it"

section "enforce with the raw summary (not reviewed): nothing beyond the current list is allowed"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow-file "$TMPD/raw.allow" \
	--probe-reach 192.168.1.10 --probe-block 198.51.100.10 --probe-block 2001:db8:2::10
assert_false "TCP to 198.51.100.10:8080 (observed, not reviewed) is refused" tcp_ok 198.51.100.10
assert_false "ping 2001:db8:2::10 (observed, not reviewed) is refused" ping6_ok 2001:db8:2::10
assert_true "ping lan 192.168.1.10 answers" ping_ok 192.168.1.10

section "enforce with the reviewed summary: the observed destinations now reach, the others are still refused"
# Only the ports seen: a ping (an echo, never seen) to the observed hosts is refused too.
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow-file "$TMPD/observed.allow" \
	--probe-block 198.51.100.10 --probe-block 2001:db8:2::10 --probe-block 198.51.100.1 --probe-block 2001:db8:2::1
assert_eq "enforce" "$(nsg status --netns "$CTR_NS" --json | jq -r .mode)" "status: enforce mode"
assert_true "TCP to 198.51.100.10:8080 connects" tcp_ok 198.51.100.10
assert_true "TCP to [2001:db8:2::10]:8080 connects" in_ctr nc -z -w2 2001:db8:2::10 8080
assert_true "ping lan 192.168.1.10 answers" ping_ok 192.168.1.10
assert_false "ping 198.51.100.1 (not observed) is refused" ping_ok 198.51.100.1
assert_false "ping 2001:db8:2::1 (not observed) is refused" ping6_ok 2001:db8:2::1
assert_false "TCP to 198.51.100.1 (not observed) is refused" in_ctr nc -z -w1 198.51.100.1 "$LAB_TCP_PORT"

section "enforce mode: watch reports refusals (the nftables layer alone, --no-route-set)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-route-set --no-probe
start_watch enforce --netns "$CTR_NS" --json
assert_false "TCP to wan is refused (uid 1234)" as_user nc -z -w2 198.51.100.10 8080
udp_send 198.51.100.10 "udp-enforce-$$"
assert_false "ping wan is refused" ping_ok 198.51.100.10
assert_false "TCP to [2001:db8:2::10]:8080 is refused" in_ctr nc -z -w2 2001:db8:2::10 8080
assert_false "ping 2001:db8:2::10 is refused" ping6_ok 2001:db8:2::10
stop_watch TERM
assert_eq 0 "$WATCH_RC" "watch ends with status 0"
assert_true "watch: TCP 198.51.100.10:8080 from uid 1234 refused" \
	test "$(count_attempts enforce '.proto == "tcp" and .dst == "198.51.100.10" and .dport == 8080 and .uid == 1234')" -ge 1
assert_eq "1" "$(count_attempts enforce '.proto == "udp" and .dst == "198.51.100.10" and .dport == 9999')" "watch: UDP refused"
assert_eq "1" "$(count_attempts enforce '.proto == "icmp" and .icmp == "echo-request" and .dst == "198.51.100.10"')" "watch: ICMP refused"
assert_true "watch: IPv6 TCP refused" \
	test "$(count_attempts enforce '.family == "ipv6" and .proto == "tcp" and .dst == "2001:db8:2::10" and .dport == 8080')" -ge 1
assert_eq "1" "$(count_attempts enforce '.proto == "icmpv6" and .icmp == "echo-request"')" "watch: ICMPv6 refused"
assert_eq "0" "$(count_attempts enforce '.mode != "enforce" or .verdict != "refused"')" "watch: every attempt is marked refused"
sleep 0.3
assert_not_contains "$(<"$(lab_log "$P" wan udp)")" "udp-enforce-$$" "the refused UDP datagram never arrived"

section "flood: the log stays within its rate limit, every packet is still refused, ctr stays usable"
start_watch flood --netns "$CTR_NS" --json
logged0=$(rule_packets "deny log")
refused0=$(rule_packets refused)
udp_flood 198.51.100.10 20 & # 10000 new flows in about 2.5 s
flood_pid=$!
assert_true "during the flood: ping lan answers" ping_ok 192.168.1.10
assert_true "during the flood: TCP to lan connects" tcp_ok 192.168.1.10
expect_exit 0 nsg status --netns "$CTR_NS" --json
wait "$flood_pid"
logged1=$(rule_packets "deny log")
refused1=$(rule_packets refused)
stop_watch TERM
n=$(count_attempts flood '.proto == "udp" and .dst == "198.51.100.10"')
end=$(end_doc flood)
lost=$(jq -r .lost <<<"$end")
dur=$(jq -r '.duration_s | ceil' <<<"$end")
bound=$((100 + 50 * dur + 10))
assert_true "refused counter grew by at least the 10000 flood datagrams ($((refused1 - refused0)))" \
	test $((refused1 - refused0)) -ge 10000
assert_true "lines ($n) <= burst 100 + 50/s x ${dur} s + 10 = $bound" test "$n" -le "$bound"
assert_true "the burst was logged: lines + lost ($n + $lost) >= 100" test $((n + lost)) -ge 100
assert_eq "$((logged1 - logged0))" "$((n + lost))" "lines + lost = what the log rule counted (nft)"
assert_not_contains "$(<"$(lab_log "$P" wan udp)")" "x" "no flood datagram reached wan"
assert_true "after the flood: ping lan answers" ping_ok 192.168.1.10

section "overrun: a stopped reader with a tiny buffer loses messages; watch counts them and goes on"
sleep 2.1 # let the log's token bucket refill (100 at 50/s) after the flood
start_watch overrun --netns "$CTR_NS" --json --buffer 1024
logged0=$(rule_packets "deny log")
kill -STOP "$WATCH_PID"
udp_flood 198.51.100.10 1
kill -CONT "$WATCH_PID"
logged1=$(rule_packets "deny log")
udp_send 198.51.100.10 "after-overrun-$$"
stop_watch TERM
assert_eq 0 "$WATCH_RC" "watch survives the overrun and ends with status 0"
end=$(end_doc overrun)
n=$(count_attempts overrun)
lost=$(jq -r .lost <<<"$end")
assert_true "messages were lost ($lost) and reported" test "$lost" -gt 0
assert_true "the overrun was seen (ENOBUFS: $(jq -r .overruns <<<"$end"))" test "$(jq -r .overruns <<<"$end")" -ge 1
assert_true "lost events say how many" test "$(jq -s '[.[] | select(.event == "lost") | .count] | add' "$TMPD/overrun.out")" -eq "$lost"
assert_eq "$((logged1 - logged0 + 1))" "$((n + lost))" "lines + lost = what the log rule counted (flood + 1)"
# The datagram sent after the overrun comes with a sequence gap: a "lost" event, then its line.
assert_eq '["lost","attempt","end"]' "$(jq -sc '[.[].event] | .[-3:]' "$TMPD/overrun.out")" \
	"after the overrun: the gap is reported, then the next attempt, then the end"

section "watch ends by itself: --duration, and when the --pid process exits"
expect_exit 0 nsg watch --netns "$CTR_NS" --duration 0.3 --json
assert_eq "duration" "$(jq -r 'select(.event == "end") | .reason' <<<"$OUT")" "--duration 0.3: reason duration"
bg_in_ctr sleep 30
sleeper=$!
start_watch pid --pid "$sleeper" --json
kill "$sleeper"
wait "$sleeper" 2>/dev/null
stop_watch # no signal: it must end by itself
assert_eq 0 "$WATCH_RC" "watch --pid ends with status 0 when the process exits"
assert_eq "target process exited" "$(end_doc pid | jq -r .reason)" "reason: target process exited"

section "watch errors"
start_watch holder --netns "$CTR_NS" --json
expect_exit 2 nsg watch --netns "$CTR_NS" --duration 1
assert_contains "$ERR" "already bound by another listener" "a second watch on the same namespace is refused"
expect_exit 2 nsg watch --netns "$CTR_NS" --duration 1 --json
assert_eq "false" "$(jq -r .ok <<<"$OUT")" "--json error: one JSON line with ok false"
stop_watch TERM
expect_exit 1 nsg watch --netns "$CTR_NS" --duration abc
expect_exit 1 nsg watch --netns "$CTR_NS" --duration 0
expect_exit 2 nsg watch --netns "/run/netns/${P}_nonexistent" --duration 1
# Run from inside ctr, its own namespace is the "host" it must refuse (a lab namespace either way).
expect_exit 2 in_ctr "$NSEGRESS" watch --netns /proc/self/ns/net --duration 1
assert_contains "$ERR" "refusing" "watch refuses the namespace it runs in"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe
start_watch routeset --netns "$CTR_NS" --json
for _ in 1 2 3; do in_ctr ping -n -c1 -W1 198.51.100.10 >/dev/null 2>&1; done
stop_watch TERM
assert_contains "$(<"$TMPD/routeset.err")" "a route set is installed" "watch warns that route-set refusals carry no destination"
assert_contains "$(<"$TMPD/routeset.err")" "neither logged nor counted" "and that they are not counted either"
assert_eq "0" "$(count_attempts routeset)" "route set: the refused pings never reached the policy (no attempt lines)"
assert_eq "false" "$(end_doc routeset | jq -r .route_refused.counted)" "route set: the end document says route_refused is not counted"
assert_eq "0" "$(jq -s '[.[] | select(.event == "route-refused")] | length' "$TMPD/routeset.out")" \
	"route set: no route-refused event pretends to count them"

section "the audit switch of the OCI hook (annotation) and of the CNI plugin (netconf)"
bg_in_ctr sleep 30
holder=$!
on_exit "kill $holder 2>/dev/null"
state='{"ociVersion":"1.0.2","id":"auditctr","status":"creating","pid":'$holder',"annotations":{"io.nsegress.audit":"true"}}'
DESC="hook, annotation io.nsegress.audit=true and no allow-list" expect_exit 0 nsg hook --json <<<"$state"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_eq "audit" "$(jq -r .mode <<<"$OUT")" "hook: the policy is in audit mode"
assert_eq '[]' "$(jq -c .policy.allow.ipv4 <<<"$OUT")" "hook: with an empty allow-list (everything is logged)"
assert_true "hook audit: ping wan answers" ping_ok 198.51.100.10
kill "$holder" 2>/dev/null
cni() { # cni COMMAND NETCONF: the plugin as a runtime calls it, on ctr
	ip netns exec "${P}_gw" env CNI_COMMAND="$1" CNI_NETNS="$CTR_NS" CNI_CONTAINERID=audit CNI_IFNAME=eth0 \
		CNI_PATH=/nonexistent "$NSEGRESS" <<<"$2"
}
conf() { printf '{"cniVersion":"1.0.0","name":"lab","type":"nsegress","allow":["192.168.1.0/24"],"audit":%s,"prevResult":{"cniVersion":"1.0.0","ips":[]}}' "$1"; }
expect_exit 0 cni ADD "$(conf true)"
assert_eq "audit" "$(nsg status --netns "$CTR_NS" --json | jq -r .mode)" "CNI ADD with audit: audit mode"
assert_eq "" "$(extra_rules 4)" "CNI ADD with audit: no route set"
expect_exit 0 cni CHECK "$(conf true)"
expect_exit 2 cni CHECK "$(conf false)"
assert_eq "102" "$(jq -r .code <<<"$OUT")" "CNI CHECK: a mode mismatch is drift (code 102)"
assert_contains "$(jq -r .details <<<"$OUT")" "audit mode but enforce was asked for" "CNI CHECK names the mismatch"
expect_exit 0 cni DEL "$(conf true)"
assert_eq "" "$(nft_table)" "CNI DEL: no table left"

section "release removes everything"
expect_exit 0 nsg release --netns "$CTR_NS"
assert_eq "" "$(nft_table)" "no table left"
assert_true "ping wan answers again" ping_ok 198.51.100.10

finish
