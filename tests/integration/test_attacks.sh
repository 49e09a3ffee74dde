#!/usr/bin/env bash
# Attacks on the policy from inside the restricted namespace, by a process holding exactly
# Docker's default capabilities (CAP_NET_RAW among them, CAP_NET_ADMIN not) and by one holding
# none. Each attack is a real crafted packet (tests/integration/helpers/attack.py); a sniffer on
# the forbidden host (wan, or lan for spoofed sources) counts what arrives. Every technique is run
#   1. with no policy: it reaches the sniffer (the listener answers; the technique works here);
#   2. against a naive policy of the shape nsegress had before (`ct direction reply accept`, any
#      neighbour discovery, no source or option checks): the reply-forging, ND and source-routing
#      techniques get through it, so this test can fail;
#   3. against nsegress, default flags and --no-route-set: nothing arrives.
# Classes (issue 10): forged conntrack replies (raw IP_HDRINCL/IPV6_HDRINCL, the reply also routed
# by sendto() to an allowed host; IPV6_FREEBIND with no capability; IP_TRANSPARENT TCP), old flows
# whose remote speaks first (first restrict, audit -> enforce, re-restrict with another list), ND
# with a payload to a far host, IPv4 LSRR and IPv6 segment routing through an allowed router that
# honours them (also LSRR with a pointer the kernel's option parser does not recognise), spoofed
# sources reflected off an allowed host (loopback sources too), a socket pinned to its interface;
# with --netdev-egress, packet-socket frames with a forbidden source reflected off the allowed
# host and a routing header hidden behind a fragment header; a forged flow planted in audit mode;
# ND to a far host inside a wide address prefix.
# And what must keep working: a peer outside the allow-list talking to a server in the container
# (--no-route-set), with its replies counted by status.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab
A=$REPO/tests/integration/helpers/attack.py
PY=/usr/bin/python3
DOCKER_CAPS=chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,net_raw,sys_chroot,mknod,audit_write,setfcap
docker_caps() { in_ctr setpriv --bounding-set "-all,+${DOCKER_CAPS//,/,+}" --inh-caps -all --no-new-privs "$@"; }
no_caps() {
	in_ctr setpriv --reuid 65534 --regid 65534 --clear-groups --bounding-set -all --inh-caps -all --no-new-privs "$@"
}

section "the attackers hold exactly what they should"
assert_match "$(docker_caps grep CapEff /proc/self/status)" "CapEff:[[:space:]]+00000000a80425fb" \
	"Docker's default set: CAP_NET_RAW yes, CAP_NET_ADMIN no"
assert_match "$(no_caps grep CapEff /proc/self/status)" "CapEff:[[:space:]]+0000000000000000" "no capability at all"

# The first hop of the source-routing attacks is the router itself: make it honour both kinds.
ip netns exec "${P}_gw" sysctl -qw net.ipv4.conf.all.accept_source_route=1 net.ipv4.conf.c0.accept_source_route=1
ip netns exec "${P}_gw" sysctl -qw net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.c0.seg6_enabled=1
ETH0_INDEX=$(ip -n "${P}_ctr" -o link show dev eth0 | cut -d: -f1)

# The allow-list: the LAN, and the router as the one allowed first hop.
ALLOW=(--allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" --allow "$LAB_GW4/32" --allow "$LAB_GW6/128")

# attack HOST[:IFACE] CMD...: run CMD (an attack inside ctr) while a sniffer on HOST's eth0 (or
# IFACE) counts frames
# holding $MARK (or TCP from $SPORT); HITS is the count, $TMPD/attack what the attacker printed.
n=0
attack() {
	local host=${1%%:*} iface=eth0
	[[ $1 == *:* ]] && iface=${1#*:}
	shift
	: >"$TMPD/sniff"
	ip netns exec "${P}_$host" "$PY" "$A" sniff "$iface" 1 "$MARK" ${SPORT:-} >"$TMPD/sniff" 2>&1 &
	local sp=$!
	wait_for_text "$TMPD/sniff" listening 5
	"$@" >"$TMPD/attack" 2>&1
	# The sniffer counts until the attack is over and one second more.
	kill -USR1 "$sp" 2>/dev/null
	wait "$sp"
	HITS=$(sed -n 's/^hits //p' "$TMPD/sniff")
	HITS=${HITS:-0}
}

# The techniques: NAME HOST [SPORT] -- CMD. Reply-forging, ND and source routing must get through
# the naive policy; all must get through no policy; none through nsegress.
techniques=(
	"forged-reply-raw4|wan||naive|docker_caps $PY $A forged-reply 4 raw $LAB_CTR4 $LAB_WAN4 $LAB_UDP_PORT @MARK $LAB_LAN4"
	"forged-reply-raw6|wan||naive|docker_caps $PY $A forged-reply 6 raw $LAB_CTR6 $LAB_WAN6 $LAB_UDP_PORT @MARK $LAB_LAN6"
	"forged-reply-freebind6-nocap|wan||naive|no_caps $PY $A forged-reply 6 freebind $LAB_CTR6 $LAB_WAN6 $LAB_UDP_PORT @MARK"
	"transparent-tcp4|wan|40001|naive|docker_caps $PY $A tcp-transparent 4 $LAB_CTR4 $LAB_WAN4 $LAB_TCP_PORT"
	"transparent-tcp6|wan|40001|naive|docker_caps $PY $A tcp-transparent 6 $LAB_CTR6 $LAB_WAN6 $LAB_TCP_PORT"
	"nd-payload6|wan||naive|docker_caps $PY $A nd-payload $LAB_WAN6 @MARK"
	"lsrr4|wan||naive|docker_caps $PY $A lsrr $LAB_GW4 $LAB_WAN4 $LAB_UDP_PORT @MARK"
	"lsrr4-pointer8|wan||naive|docker_caps $PY $A lsrr-raw $LAB_CTR4 $LAB_GW4 $LAB_WAN4 $LAB_UDP_PORT @MARK 8"
	"loopback-source4|gw:c0||-|docker_caps $PY $A spoof 4 127.0.0.1 $LAB_LAN4 $LAB_UDP_PORT @MARK"
	"loopback-source6|gw:c0||-|docker_caps $PY $A spoof 6 ::1 $LAB_LAN6 $LAB_UDP_PORT @MARK"
	"srh6-nocap|wan||naive|no_caps $PY $A srh $LAB_GW6 $LAB_WAN6 $LAB_UDP_PORT @MARK"
	"spoofed-source4|lan||-|docker_caps $PY $A spoof 4 $LAB_WAN4 $LAB_LAN4 $LAB_UDP_PORT @MARK"
	"spoofed-source6|lan||-|docker_caps $PY $A spoof 6 $LAB_WAN6 $LAB_LAN6 $LAB_UDP_PORT @MARK"
	"unicast-if4-nocap|wan||-|no_caps $PY $A unicast-if $ETH0_INDEX $LAB_WAN4 $LAB_UDP_PORT @MARK"
	"unicast-if6-nocap|wan||-|no_caps $PY $A unicast-if $ETH0_INDEX $LAB_WAN6 $LAB_UDP_PORT @MARK"
)

# run_all WHERE: WHERE is none, naive or nsegress.
run_all() {
	local where=$1 t name host sport naive cmd
	for t in "${techniques[@]}"; do
		IFS='|' read -r name host sport naive cmd <<<"$t"
		n=$((n + 1))
		MARK="NSGLEAK-$n-$$"
		SPORT=$sport
		# shellcheck disable=SC2086  # cmd is a word list on purpose
		attack "$host" ${cmd//@MARK/$MARK}
		local said
		said=$(tr '\n' ' ' <"$TMPD/attack")
		case $where in
		none) assert_true "no policy: $name reaches $host ($HITS frame(s); $said)" test "$HITS" -gt 0 ;;
		naive)
			if [[ $naive == naive ]]; then
				assert_true "naive policy: $name gets through it ($HITS frame(s); $said)" test "$HITS" -gt 0
			fi
			;;
		*) assert_eq 0 "$HITS" "$where: $name: nothing arrives at $host ($said)" ;;
		esac
	done
}

section "control: no policy"
run_all none

section "control: a naive policy (replies by conntrack direction alone, ND anywhere, no source checks)"
cat >"$TMPD/naive.nft" <<EOF
table inet naive {
	chain output {
		type filter hook output priority filter; policy drop;
		oif "lo" accept
		ct direction reply accept
		ip daddr { $LAB_LAN_NET4, $LAB_GW4 } accept
		ip6 daddr { $LAB_LAN_NET6, $LAB_GW6 } accept
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
		reject with icmpx admin-prohibited
	}
}
EOF
in_ctr nft -f "$TMPD/naive.nft"
run_all naive
in_ctr nft delete table inet naive
in_ctr conntrack -F >/dev/null 2>&1

for mode in default no-route-set; do
	section "nsegress ($mode)"
	extra=()
	[[ $mode == no-route-set ]] && extra=(--no-route-set)
	expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" "${extra[@]}" --no-probe
	run_all "nsegress $mode"
	expect_exit 0 nsg status --netns "$CTR_NS" --json
	assert_true "status ($mode): forged sources were counted ($(jq -c .policy.counters.forged_source <<<"$OUT"))" \
		test "$(jq .policy.counters.forged_source.packets <<<"$OUT")" -gt 0
	if [[ $mode == no-route-set ]]; then
		assert_true "status ($mode): source routing was counted" \
			test "$(jq .policy.counters.source_route.packets <<<"$OUT")" -gt 0
	fi
	assert_true "status ($mode): allowed traffic still flows (ping lan)" ping_ok "$LAB_LAN4"
	assert_true "status ($mode): allowed IPv6 traffic still flows (ping lan6, neighbour discovery)" ping_ok "$LAB_LAN6"
	expect_exit 0 nsg release --netns "$CTR_NS"
done

section "packet sockets (CAP_NET_RAW) against --netdev-egress"
# The router's MAC, for frames written by hand.
ping_ok "$LAB_GW4" >/dev/null
GWMAC=$(ip -n "${P}_ctr" neigh show "$LAB_GW4" dev eth0 | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}')
assert_match "$GWMAC" "^[0-9a-f:]{17}$" "the router's MAC is known ($GWMAC)"
pkt_techniques=(
	"pkt-reflect4|wan|docker_caps $PY $A pkt-reflect 4 $GWMAC $LAB_WAN4 $LAB_LAN4 @MARK"
	"pkt-reflect6|wan|docker_caps $PY $A pkt-reflect 6 $GWMAC $LAB_WAN6 $LAB_LAN6 @MARK"
	"pkt-fragment-hides-routing-header|wan|docker_caps $PY $A pkt-frag-srh $GWMAC $LAB_CTR6 $LAB_GW6 $LAB_WAN6 @MARK"
)
run_pkt() {
	local where=$1 t name host cmd said
	for t in "${pkt_techniques[@]}"; do
		IFS='|' read -r name host cmd <<<"$t"
		n=$((n + 1))
		MARK="NSGLEAK-$n-$$"
		SPORT=
		# shellcheck disable=SC2086
		attack "$host" ${cmd//@MARK/$MARK}
		said=$(tr '\n' ' ' <"$TMPD/attack")
		if [[ $where == none ]]; then
			assert_true "no policy: $name reaches $host ($HITS frame(s); $said)" test "$HITS" -gt 0
		else
			assert_eq 0 "$HITS" "$where: $name: nothing arrives at $host ($said)"
		fi
	done
}
run_pkt none
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --netdev-egress --no-probe
run_pkt "nsegress --netdev-egress"
expect_exit 0 nsg status --netns "$CTR_NS" --json
refused=$(jq '[.netdev_egress.chains[].counters.refused.packets] | add' <<<"$OUT")
assert_true "status: the netdev chain counted what it dropped ($refused)" test "${refused:-0}" -gt 0
assert_true "allowed traffic still flows with --netdev-egress (TCP to lan6)" tcp_ok "$LAB_LAN6"
expect_exit 0 nsg release --netns "$CTR_NS"

section "a flow planted in audit mode does not become an inbound connection"
# Bounced off the router, a forged datagram would come back in on eth0 and look inbound; audit
# mode must not let the forgery out, or its label would outlive the switch to enforce.
in_ctr conntrack -F >/dev/null 2>&1
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --audit --no-probe
n=$((n + 1))
MARK="NSGLEAK-$n-$$"
SPORT=
attack wan docker_caps "$PY" "$A" plant "$LAB_LAN4" "$LAB_CTR4" "$LAB_WAN4" "$LAB_UDP_PORT"
assert_contains "$(<"$TMPD/attack")" "refused" "audit mode: the forged datagram does not leave"
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --no-route-set --no-probe
attack wan no_caps "$PY" "$A" speak "$LAB_CTR4" "$LAB_WAN4" "$LAB_UDP_PORT" "$MARK"
assert_eq 0 "$HITS" "enforce: nothing reaches wan over the would-be planted flow ($(tr '\n' ' ' <"$TMPD/attack"))"
expect_exit 0 nsg release --netns "$CTR_NS"

section "neighbour discovery stays on the link when the address prefix is wider than a /64"
# An address whose prefix (/47) holds the forbidden network: were it counted as "on-link", an ND
# message carrying data could go to any host in it (a router forwards it).
ip -n "${P}_ctr" addr add 2001:db8:3::31:2/47 dev eth0 nodad
expect_exit 0 nsg restrict --netns "$CTR_NS" "${ALLOW[@]}" --no-route-set --no-probe
assert_not_contains "$(nft_elements ipv6_addr nd6)" "2001:db8:2::/47" "nd6 does not hold the /47"
assert_contains "$(nft_elements ipv6_addr nd6)" "fd00:31::/64" "nd6 holds the /64 on-link prefix (the gateway's)"
n=$((n + 1))
MARK="NSGLEAK-$n-$$"
attack wan docker_caps "$PY" "$A" nd-payload "$LAB_WAN6" "$MARK"
assert_contains "$(<"$TMPD/attack")" "refused: EPERM" "an ND message with a payload to wan6 is refused locally"
assert_eq 0 "$HITS" "... and nothing arrives at wan"
# (from the lab address: the /47 one would be picked as the source, and lan cannot answer it)
assert_true "IPv6 to the allowed host still works" in_ctr ping -n -c1 -W1 -q -I "$LAB_CTR6" "$LAB_LAN6"
expect_exit 0 nsg release --netns "$CTR_NS"
ip -n "${P}_ctr" addr del 2001:db8:3::31:2/47 dev eth0

section "old flows whose remote speaks first never become replies"
# old_flow LABEL BEFORE AFTER: a TCP connection from ctr to wan:7070, policy BEFORE (a restrict
# argument list, or "none") applied before connecting and AFTER once connected; then the remote
# speaks first and ctr answers with a marker. GOT is what the remote received, OLD_CLIENT what
# the client said.
old_flow() {
	local before=$1 after=$2 trig=$TMPD/trigger log=$TMPD/peer.log
	rm -f "$trig" "$log" "$TMPD/peer.out" "$TMPD/client.out"
	MARK="NSGOLD-$((++n))-$$"
	[[ $before != none ]] && { nsg restrict --netns "$CTR_NS" $before --no-probe >/dev/null || fail "restrict $before"; }
	ip netns exec "${P}_wan" "$PY" "$A" peer-serve 7070 "$trig" "$log" >"$TMPD/peer.out" 2>&1 &
	local sp=$!
	wait_for_text "$TMPD/peer.out" listening 5
	in_ctr "$PY" "$A" peer-client "$LAB_WAN4" 7070 "$MARK" >"$TMPD/client.out" 2>&1 &
	local cp=$!
	if ! wait_for_text "$TMPD/client.out" connected 5; then
		fail "the client did not connect: $(<"$TMPD/client.out")"
		kill "$sp" 2>/dev/null
	fi
	[[ $after != none ]] && { nsg restrict --netns "$CTR_NS" $after --no-probe >/dev/null || fail "restrict $after"; }
	touch "$trig"
	wait "$cp" "$sp"
	OLD_CLIENT=$(tr '\n' ' ' <"$TMPD/client.out")
	GOT=$(cat "$log" 2>/dev/null)
}
old_flow none none
assert_contains "$GOT" "$MARK" "control: with no policy the answer reaches the remote ($OLD_CLIENT)"
nsg release --netns "$CTR_NS" >/dev/null
in_ctr conntrack -F >/dev/null 2>&1
old_flow none "--allow $LAB_LAN_NET4 --no-route-set"
assert_contains "$OLD_CLIENT" "the remote spoke" "the remote spoke first after restrict"
assert_not_contains "$GOT" "NSGOLD" "first restrict after the connection opened: the answer never arrives ($OLD_CLIENT)"
nsg release --netns "$CTR_NS" >/dev/null
old_flow "--allow $LAB_LAN_NET4 --audit" "--allow $LAB_LAN_NET4 --no-route-set"
assert_not_contains "$GOT" "NSGOLD" "audit -> enforce: the answer never arrives ($OLD_CLIENT)"
nsg release --netns "$CTR_NS" >/dev/null
old_flow "--allow $LAB_LAN_NET4 --allow $LAB_WAN_NET4 --no-route-set" "--allow $LAB_LAN_NET4 --no-route-set"
assert_not_contains "$GOT" "NSGOLD" "re-restrict without the remote's network: the answer never arrives ($OLD_CLIENT)"
nsg release --netns "$CTR_NS" >/dev/null

section "a peer outside the allow-list may still use a server in the container (--no-route-set)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --allow "$LAB_LAN_NET6" --no-route-set --no-probe
bg_in_ctr socat TCP-LISTEN:7100,reuseaddr,fork SYSTEM:"echo served-v4"
s1=$!
bg_in_ctr socat TCP6-LISTEN:7101,reuseaddr,fork SYSTEM:"echo served-v6"
s2=$!
bg_in_ctr socat UDP-RECVFROM:7102,fork SYSTEM:"echo served-udp"
s3=$!
on_exit "kill $s1 $s2 $s3 2>/dev/null"
ready() { in_ctr ss -Htuln | grep -q ":$1 "; }
eventually ready 7100
eventually ready 7101
eventually ready 7102
assert_eq "served-v4" "$(ip netns exec "${P}_wan" timeout 5 socat -u TCP:"$LAB_CTR4":7100 - 2>&1)" "TCP over IPv4 from wan is answered"
assert_eq "served-v6" "$(ip netns exec "${P}_wan" timeout 5 socat -u TCP6:"[$LAB_CTR6]":7101 - 2>&1)" "TCP over IPv6 from wan is answered"
# -t 4: after its input ends, socat waits 0.5 s by default for the answer -- less than a forked
# server takes to answer on a loaded machine.
assert_eq "served-udp" "$(echo x | ip netns exec "${P}_wan" timeout 5 socat -t 4 - UDP:"$LAB_CTR4":7102 2>&1)" "UDP from wan is answered"
assert_true "wan's ping of the container is answered" ip netns exec "${P}_wan" ping -n -c1 -W1 -q "$LAB_CTR4"
expect_exit 0 nsg status --netns "$CTR_NS" --json
assert_true "status counts those replies ($(jq -c .policy.counters.replies <<<"$OUT"))" \
	test "$(jq .policy.counters.replies.packets <<<"$OUT")" -ge 4
assert_true "status counts the connections opened from outside" \
	test "$(jq .policy.counters.inbound_connections.packets <<<"$OUT")" -ge 4
assert_eq true "$(jq .policy.reply_marking <<<"$OUT")" "status: replies are honoured only for connections from outside"
kill "$s1" "$s2" "$s3" 2>/dev/null
expect_exit 0 nsg release --netns "$CTR_NS"

finish
