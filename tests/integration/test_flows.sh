#!/usr/bin/env bash
# A TCP connection to a forbidden host opened before restrict stops carrying data after it (no
# "ct state established accept" loophole), and its conntrack entry is gone; a connection to an
# allowed host keeps working.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

wanlog=$(lab_log "$P" wan tcp)
lanlog=$(lab_log "$P" lan tcp)

# open_flow NAME HOST: a long-lived TCP connection from ctr to HOST's listener, fed line by line
# through a fifo whose write end stays open in this shell as fd ${FLOW_FD[NAME]}.
declare -A FLOW_FD
open_flow() {
	local name=$1 host=$2 fd
	mkfifo "$TMPD/$name"
	exec {fd}<>"$TMPD/$name"
	FLOW_FD[$name]=$fd
	bg_in_ctr socat -u "OPEN:$TMPD/$name" "TCP:$host:$LAB_TCP_PORT" 2>>"$TMPD/socat.err"
	FLOW_PIDS+=($!)
}
FLOW_PIDS=()
close_flows() {
	local pid
	for pid in "${FLOW_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	FLOW_PIDS=()
}
on_exit close_flows
send_flow() { printf '%s\n' "$2" >&"${FLOW_FD[$1]}"; }

conntrack_wan() { in_ctr conntrack -L -p tcp -d 198.51.100.10 --dport "$LAB_TCP_PORT" 2>/dev/null; }

for phase in plain tracked; do
	if [[ $phase == tracked ]]; then
		section "phase 'tracked': conntrack already tracks flows before restrict (a foreign ct rule)"
		in_ctr nft -f - <<'EOF'
table inet ctwatch {
	chain out {
		type filter hook output priority 50; policy accept;
		ct state established counter
	}
}
EOF
	else
		section "phase 'plain': a namespace without any ruleset"
	fi

	open_flow "wan-$phase" 198.51.100.10
	open_flow "lan-$phase" 192.168.1.10
	send_flow "wan-$phase" "wan-$phase-before-$$"
	send_flow "lan-$phase" "lan-$phase-before-$$"
	assert_true "wan receives a line sent before restrict" wait_for_text "$wanlog" "wan-$phase-before-$$"
	assert_true "lan receives a line sent before restrict" wait_for_text "$lanlog" "lan-$phase-before-$$"
	if [[ $phase == tracked ]]; then
		assert_contains "$(conntrack_wan)" "ESTABLISHED" "conntrack lists the wan flow before restrict"
	fi

	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe --json
	if [[ $phase == tracked ]]; then
		n=$(jq -r '.conntrack_dropped // empty' <<<"$OUT")
		if [[ -n $n ]]; then
			assert_true "restrict --json reports dropped conntrack entries ($n)" test "$n" -ge 1
		fi
		assert_not_contains "$(conntrack_wan)" "ESTABLISHED" "conntrack no longer lists the wan flow as established"
	fi

	send_flow "wan-$phase" "wan-$phase-after-$$"
	send_flow "lan-$phase" "lan-$phase-after-$$"
	assert_true "the allowed lan flow still carries data" wait_for_text "$lanlog" "lan-$phase-after-$$"
	sleep 0.5 # the wan line, sent first, would have arrived with the lan one; allow a retransmit
	send_flow "wan-$phase" "wan-$phase-later-$$"
	sleep 0.3
	assert_not_contains "$(<"$wanlog")" "wan-$phase-after-$$" "a line sent on the old wan flow after restrict never arrives"
	assert_not_contains "$(<"$wanlog")" "wan-$phase-later-$$" "nor does a later one"
	assert_false "a new TCP connection to wan is refused" tcp_ok 198.51.100.10
	if [[ $phase == tracked ]]; then
		assert_not_contains "$(conntrack_wan)" "ESTABLISHED" "conntrack still lists no established wan flow"
	fi

	expect_exit 0 nsg release --netns "$CTR_NS"
	close_flows
done

section "inbound connections keep working: replies to connections initiated from outside pass"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow 192.168.1.0/24 --no-probe --no-route-set
bg_in_ctr socat -u TCP-LISTEN:7070,reuseaddr OPEN:"$TMPD/inbound.log",creat,append
for i in $(seq 1 100); do [[ -n $(in_ctr ss -Htln 'sport = :7070') ]] && break; sleep 0.02; done
printf 'inbound-%s\n' "$$" | ip netns exec "${P}_wan" socat -u - TCP:172.31.0.2:7070 2>/dev/null
assert_true "wan's connection into ctr completes and delivers data" wait_for_text "$TMPD/inbound.log" "inbound-$$"

finish
