#!/usr/bin/env bash
# Ports and protocols in the allow-list ("198.51.100.10 tcp/8080 udp/9999 icmp"): an allowed port
# connects; a neighbouring port on the same host and every other protocol are refused at once
# (inside the namespace); another host is refused; over IPv4 and IPv6, with and without the route
# set. SCTP is exercised when the kernel offers SCTP sockets without loading anything.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools socat python3 jq ss nft
setup_lab

WAN4=198.51.100.10 WAN6=2001:db8:2::10 LAN4=192.168.1.10 LAN6=2001:db8:1::10
TCP_OK=$LAB_TCP_PORT UDP_OK=$LAB_UDP_PORT # the lab's listeners on lan and wan (8080, 9999)
TCP_NEXT=$((LAB_TCP_PORT + 1))            # neighbouring ports, listeners of this test on wan
UDP_NEXT=$((LAB_UDP_PORT - 1))
SCTP_OK=7000 SCTP_NEXT=7001
STATE=$(lab_state_dir "$P")
UDP_NEXT_LOG=$STATE/wan.udp-next.log

# conn PROTO HOST PORT: connect from ctr (tcp or sctp); prints "ok", "timeout" or the errno name.
conn() {
	in_ctr python3 - "$@" <<'EOF'
import errno, socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM, 132 if proto == "sctp" else 0)
s.settimeout(3)
try:
    s.connect((host, port))
    print("ok")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}
# udp HOST PORT TEXT: one datagram from ctr; prints "sent" or the errno name of sendto.
udp() {
	in_ctr python3 - "$@" <<'EOF'
import errno, socket, sys
host, port, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto((text + "\n").encode(), (host, port))
    print("sent")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}
# Refused inside the namespace: the policy (EPERM, or the ICMP admin-prohibited it answers with)
# or the route set (no route). Never a timeout: that could be loss.
REFUSED='^(EPERM|EACCES|EHOSTUNREACH|ENETUNREACH)$'

# SCTP sockets without loading a module (this test never runs modprobe).
SCTP=0
if in_ctr python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)' 2>/dev/null &&
	lab_exec "$P" wan python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)' 2>/dev/null; then
	SCTP=1
else
	echo "# SCTP: the kernel offers no SCTP sockets here (module sctp not loaded); the SCTP part is left out"
fi

section "extra listeners on wan (neighbouring ports, SCTP)"
: >"$UDP_NEXT_LOG"
bg_in_ns "${P}_wan" socat -u "TCP6-LISTEN:$TCP_NEXT,ipv6only=0,reuseaddr,fork" OPEN:/dev/null
bg_in_ns "${P}_wan" socat -u "UDP6-RECV:$UDP_NEXT,ipv6only=0" "OPEN:$UDP_NEXT_LOG,creat,append"
if ((SCTP)); then
	for port in $SCTP_OK $SCTP_NEXT; do
		bg_in_ns "${P}_wan" socat -u "SCTP6-LISTEN:$port,ipv6only=0,reuseaddr,fork" OPEN:/dev/null
	done
fi
listening() { [[ -n $(lab_exec "$P" wan ss -Hln "sport = :$1") ]]; }
assert_true "wan listens on TCP $TCP_NEXT" eventually listening "$TCP_NEXT"
assert_true "wan listens on UDP $UDP_NEXT" eventually listening "$UDP_NEXT"
((SCTP)) && assert_true "wan listens on SCTP $SCTP_OK" eventually listening "$SCTP_OK"

section "control: without a policy every listener answers"
for h in $WAN4 $WAN6; do
	assert_eq ok "$(conn tcp "$h" "$TCP_OK")" "TCP $h:$TCP_OK connects"
	assert_eq ok "$(conn tcp "$h" "$TCP_NEXT")" "TCP $h:$TCP_NEXT connects"
	assert_eq sent "$(udp "$h" "$UDP_NEXT" "control-$h-$$")" "UDP $h:$UDP_NEXT sent"
	assert_true "UDP $h:$UDP_NEXT arrives" wait_for_text "$UDP_NEXT_LOG" "control-$h-$$"
	assert_true "ping $h answers" ping_ok "$h"
	((SCTP)) && assert_eq ok "$(conn sctp "$h" "$SCTP_NEXT")" "SCTP $h:$SCTP_NEXT connects"
done
assert_eq ok "$(conn tcp "$LAN4" "$TCP_OK")" "TCP lan $LAN4:$TCP_OK connects"
ports_check() { jq -r '.checks[] | select(.name == "ports-outside-refused") | "\(.status): \(.detail)"' <<<"$OUT"; }
OUT=$(nsg verify --netns "$CTR_NS" --allow "$WAN4 tcp/$TCP_OK" --json)
assert_match "$(ports_check)" '^fail: udp 198\.51\.100\.10:9 .*sent' "verify without a policy: a port outside the entry is not refused"

section "bad entries: one line, exit 1, nothing changed"
snapshot >"$TMPD/before"
for bad in "$WAN4 tcp/0" "$WAN4 tcp/65536" "$WAN4 tcp/90-80" "$WAN4 http" "$WAN4 icmp/8" "$WAN6 icmp" \
	"$WAN4 icmpv6" "$WAN4,$LAN4"; do
	expect_exit 1 nsg restrict --netns "$CTR_NS" --allow "$bad" --no-probe
	assert_eq 1 "$(wc -l <<<"$ERR")" "'$bad': one line of error"
	assert_contains "$ERR" "$bad" "'$bad': the error names the entry"
done
printf '# ok\n%s tcp/8080\n%s udp/70000\n' "$WAN4" "$WAN4" >"$TMPD/bad.allow"
expect_exit 1 nsg restrict --netns "$CTR_NS" --allow-file "$TMPD/bad.allow" --no-probe
assert_contains "$ERR" "bad.allow:3:" "allow-file: the error names file and line"
snapshot >"$TMPD/after"
assert_same "$TMPD/before" "$TMPD/after" "nothing changed after the refused entries"

v4_entry="$WAN4 tcp/$TCP_OK udp/$UDP_OK icmp"
v6_entry="$WAN6 tcp/$TCP_OK udp/$UDP_OK icmpv6"
if ((SCTP)); then
	v4_entry+=" sctp/$SCTP_OK"
	v6_entry+=" sctp/$SCTP_OK"
fi

for mode in --no-route-set route-set; do
	extra=()
	[[ $mode == --no-route-set ]] && extra=(--no-route-set)
	section "restrict to ports of wan ($mode)"
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --no-probe "${extra[@]}"
	st=$(nsg status --netns "$CTR_NS" --json)
	entries=$(jq -r '.policy.allow.entries[]' <<<"$st")
	assert_contains "$entries" "$WAN4/32 tcp/$TCP_OK udp/$UDP_OK" "status shows the IPv4 entry in the grammar"
	assert_contains "$entries" "icmp" "status shows the echo entry"
	assert_contains "$entries" "$WAN6/128 tcp/$TCP_OK udp/$UDP_OK" "status shows the IPv6 entry in the grammar"
	assert_eq "[]" "$(jq -c .policy.allow.ipv4 <<<"$st")" "no CIDR-only IPv4 entry"
	assert_eq "true" "$(jq -r .policy.complete <<<"$st")" "the policy reads back complete"
	set4=$(in_ctr nft list set inet nsegress allowp4)
	assert_contains "$set4" "$WAN4 . tcp . $TCP_OK" "nft: allowp4 holds wan . tcp . $TCP_OK"
	assert_contains "$set4" "$WAN4 . udp . $UDP_OK" "nft: allowp4 holds wan . udp . $UDP_OK"
	assert_contains "$(in_ctr nft list set inet nsegress allowp6)" "$WAN6 . tcp . $TCP_OK" "nft: allowp6 holds wan . tcp"
	assert_contains "$(in_ctr nft list set inet nsegress icmp4)" "$WAN4" "nft: icmp4 holds wan"
	before_ports=$(jq -r .policy.counters.allowed_ports.packets <<<"$st")
	OUT=$(nsg verify --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --json)
	assert_match "$(ports_check)" '^pass: udp 198\.51\.100\.10:9 .*refused-policy' "verify: a port outside the entries is refused at once"

	for h in $WAN4 $WAN6; do
		assert_eq ok "$(conn tcp "$h" "$TCP_OK")" "TCP $h:$TCP_OK (allowed) connects"
		assert_match "$(conn tcp "$h" "$TCP_NEXT")" "$REFUSED" "TCP $h:$TCP_NEXT (neighbouring port) refused at once"
		assert_eq sent "$(udp "$h" "$UDP_OK" "allowed-$mode-$h-$$")" "UDP $h:$UDP_OK (allowed) sent"
		assert_true "UDP $h:$UDP_OK arrives" wait_for_text "$(lab_log "$P" wan udp)" "allowed-$mode-$h-$$"
		assert_match "$(udp "$h" "$UDP_NEXT" "next-$mode-$h-$$")" "$REFUSED" "UDP $h:$UDP_NEXT (neighbouring port) refused at once"
		assert_match "$(udp "$h" "$TCP_OK" "udp-on-tcp-port-$mode-$h-$$")" "$REFUSED" "UDP $h:$TCP_OK (the TCP port, another protocol) refused"
		assert_true "ping $h (icmp echo allowed) answers" ping_ok "$h"
		if ((SCTP)); then
			assert_eq ok "$(conn sctp "$h" "$SCTP_OK")" "SCTP $h:$SCTP_OK (allowed) connects"
			assert_match "$(conn sctp "$h" "$SCTP_NEXT")" "$REFUSED" "SCTP $h:$SCTP_NEXT refused at once"
		fi
	done
	sleep 0.3 # what was refused locally never arrives (give a stray datagram time to show)
	assert_not_contains "$(<"$UDP_NEXT_LOG")" "next-$mode" "no datagram to the neighbouring UDP port arrived"
	assert_not_contains "$(<"$(lab_log "$P" wan tcp)")" "udp-on-tcp-port-$mode" "nothing arrived on the TCP port"
	for h in $LAN4 $LAN6; do
		assert_match "$(conn tcp "$h" "$TCP_OK")" "$REFUSED" "TCP another host $h:$TCP_OK refused at once"
		assert_match "$(udp "$h" "$UDP_OK" "lan-$mode-$$")" "$REFUSED" "UDP another host $h:$UDP_OK refused"
		assert_false "ping another host $h refused" ping_ok "$h"
	done
	after_ports=$(nsg status --netns "$CTR_NS" --json | jq -r .policy.counters.allowed_ports.packets)
	assert_true "status: the port-scoped counter grew ($before_ports -> $after_ports)" test "$after_ports" -gt "$before_ports"

	section "without icmp, echo is refused ($mode)"
	expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$WAN4 tcp/$TCP_OK" --allow "$WAN6 tcp" --no-probe "${extra[@]}"
	msg=$(in_ctr ping -n -c1 -W1 "$WAN4" 2>&1)
	assert_match "$msg" 'not permitted|rohibited|nreachable' "ping $WAN4 refused locally: $(why "$msg")"
	assert_false "ping $WAN6 refused" ping_ok "$WAN6"
	assert_eq ok "$(conn tcp "$WAN4" "$TCP_OK")" "TCP $WAN4:$TCP_OK still connects"
	assert_eq ok "$(conn tcp "$WAN6" "$TCP_NEXT")" "'$WAN6 tcp' is any TCP port: $TCP_NEXT connects"
	assert_match "$(udp "$WAN6" "$UDP_OK" "v6-any-tcp-$$")" "$REFUSED" "but not UDP"
done

section "an entry without ports absorbs the port-scoped entries it covers"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$WAN4 tcp/$TCP_OK" --allow 198.51.100.0/24 --no-probe
st=$(nsg status --netns "$CTR_NS" --json)
assert_eq '["198.51.100.0/24"]' "$(jq -c .policy.allow.entries <<<"$st")" "one entry left"
assert_eq "" "$(in_ctr nft -j list set inet nsegress allowp4 | jq -r '.nftables[].set.elem // empty | .[]')" "allowp4 is empty"
assert_eq ok "$(conn tcp "$WAN4" "$TCP_NEXT")" "any port of the CIDR connects"

section "--dry-run prints the same ruleset restrict installs (ports and echo)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --allow 192.168.1.0/24 \
	--allow "10.9.0.0/16 tcp/8000-8100 udp/53" --allow "10.9.1.0/24 tcp/8050-8200" --dry-run
sed '/^# route set/,$d' <<<"$OUT" >"$TMPD/dry.nft"
assert_contains "$OUT" "th dport @allowp4" "the printed ruleset has the port rule"
in_ctr nft delete table inet nsegress
if in_ctr nft -f "$TMPD/dry.nft" 2>"$TMPD/nft.err"; then pass "nft -f loads the printed ruleset"; else fail "nft -f: $(<"$TMPD/nft.err")"; fi
dry_table=$(in_ctr nft -s list table inet nsegress)
in_ctr nft delete table inet nsegress
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --allow 192.168.1.0/24 \
	--allow "10.9.0.0/16 tcp/8000-8100 udp/53" --allow "10.9.1.0/24 tcp/8050-8200" --no-probe
assert_eq "$dry_table" "$(in_ctr nft -s list table inet nsegress)" "the printed ruleset equals what restrict installs"
# Replaced in place (the table has our shape now): the same again, and status agrees.
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --allow 192.168.1.0/24 \
	--allow "10.9.0.0/16 tcp/8000-8100 udp/53" --allow "10.9.1.0/24 tcp/8050-8200" --no-probe
assert_eq "$dry_table" "$(in_ctr nft -s list table inet nsegress)" "replaced in place: the same ruleset"
assert_contains "$(nsg status --netns "$CTR_NS" --json | jq -r '.policy.allow.entries[]')" \
	"10.9.0.0/16 tcp/8000-8100 udp/53" "status shows the entries in the grammar, port segments joined"
assert_contains "$(nsg status --netns "$CTR_NS" --json | jq -r '.policy.allow.entries[]')" \
	"10.9.1.0/24 tcp/8101-8200" "an overlapping entry keeps only what the larger one does not cover"

section "audit mode keeps the port-scoped sets; --netdev-egress filters ports too"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --audit --no-probe
assert_contains "$(in_ctr nft list set inet nsegress allowp4)" "$WAN4 . tcp . $TCP_OK" "audit: allowp4 holds the entry"
assert_eq ok "$(conn tcp "$WAN4" "$TCP_NEXT")" "audit: a neighbouring port gets out"
assert_eq "audit" "$(nsg status --netns "$CTR_NS" --json | jq -r .policy.mode)" "audit mode read back"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --netdev-egress --no-route-set --no-probe
# Again: the netdev table is replaced in place (its port sets deleted and created anew).
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --netdev-egress --no-route-set --no-probe
assert_contains "$(in_ctr nft list set netdev nsegress allowp4)" "$WAN4 . tcp . $TCP_OK" "netdev: allowp4 holds the entry"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$v4_entry" --allow "$v6_entry" --netdev-egress --no-route-set --dry-run
sed '/^# route set/,$d' <<<"$OUT" >"$TMPD/dry-netdev.nft"
if in_ctr nft -c -f "$TMPD/dry-netdev.nft" 2>"$TMPD/nft.err"; then pass "nft -c -f accepts the printed netdev ruleset"; else fail "nft -c -f: $(<"$TMPD/nft.err")"; fi
for h in $WAN4 $WAN6; do
	assert_eq ok "$(conn tcp "$h" "$TCP_OK")" "netdev: TCP $h:$TCP_OK connects"
	assert_true "netdev: ping $h answers" ping_ok "$h"
done
# A packet socket never meets the inet chain: only the netdev chain can refuse what it sends.
raw_send() {
	in_ctr python3 - "$1" "$GW_MAC" <<'EOF'
import errno, socket, struct, sys
port = int(sys.argv[1])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton("172.31.0.2"), socket.inet_aton("198.51.100.10")
payload = b"rawudp-%d\n" % port
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
gw = sys.argv[2]  # the gateway's MAC
try:
    s.sendto(ip + udp, ("eth0", 0x0800, 0, 0, bytes.fromhex(gw.replace(":", ""))))
    print("sent")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}
# The gateway's MAC, read in gw (c0 is its end of ctr's link).
GW_MAC=$(ip -n "${P}_gw" -br link show c0 | awk '{print $3}')
if [[ $GW_MAC =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]]; then
	assert_eq sent "$(raw_send "$UDP_OK")" "netdev: a packet socket sends to the allowed UDP port"
	# dev_queue_xmit reports the netdev chain's drop as ENOBUFS (NET_XMIT_DROP)
	assert_eq ENOBUFS "$(raw_send "$UDP_NEXT")" "netdev: a packet socket's datagram to the neighbouring port is dropped"
	assert_true "netdev: a packet socket's datagram to the allowed UDP port arrives" \
		wait_for_text "$(lab_log "$P" wan udp)" "rawudp-$UDP_OK"
	sleep 0.3
	assert_not_contains "$(<"$UDP_NEXT_LOG")" "rawudp-$UDP_NEXT" "netdev: one to the neighbouring port never arrives"
else
	fail "the gateway's MAC could not be read ('$GW_MAC'): the packet-socket check cannot run"
fi
expect_exit 0 nsg release --netns "$CTR_NS"

finish
