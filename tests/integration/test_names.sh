#!/usr/bin/env bash
# Names in the allow-list ("api.example.test tcp/8080", "*.cdn.example.test tcp/8080"), with a real
# DNS server in the lab (tests/integration/helpers/dns_server.py, python3-dnslib) on lan (the
# container's resolver) and on wan (another resolver the container may try):
#   - an allowed name resolves, over UDP and TCP, A and AAAA, also through a CNAME; its addresses
#     are reachable on the allowed port only, and not before the name was resolved;
#   - every other name is answered REFUSED inside the namespace: random labels under a forbidden
#     domain (exfiltration), asked of either resolver, UDP and TCP, v4 and v6, never reach them
#     (their query logs prove it); the names proxy's log records the names asked;
#   - rotating answers with TTL 1 under a resolve-then-connect loop: zero first connections
#     refused (IPv4 and IPv6);
#   - an established connection survives its address's expiry (the element removed), while a
#     new connection to the expired address is refused;
#   - the names proxy killed: nothing resolves, nothing new opens; restarted: names resolve again;
#   - release stops it and removes everything; a namespace that dies takes its proxy with it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools jq nft ss
PY=/usr/bin/python3 # Debian's, with python3-dnslib
if ! $PY -c 'import dnslib' 2>/dev/null; then
	echo "FAIL: python3-dnslib is missing (run testenv/bootstrap.sh)"
	exit 1
fi
setup_lab

HELPERS=$REPO/tests/integration/helpers
STATE=$(lab_state_dir "$P")
LAN4=$LAB_LAN4 LAN6=$LAB_LAN6 WAN4=$LAB_WAN4 WAN6=$LAB_WAN6
PORT=$LAB_TCP_PORT
LAN_DNS_LOG=$STATE/lan.dns.log WAN_DNS_LOG=$STATE/wan.dns.log
: >"$LAN_DNS_LOG"
: >"$WAN_DNS_LOG"

# The rotating addresses: ten more on lan (its listeners bind every address).
for i in $(seq 20 29); do
	ip -n "${P}_lan" addr add "192.168.1.$i/24" dev eth0
	ip -n "${P}_lan" addr add "2001:db8:1::$i/64" dev eth0 nodad
done

ZONE=(
	"api.example.test=4:$LAN4,6:$LAN6"
	"alias.example.test=cname:api.example.test"
	"a.cdn.example.test=4:192.168.1.21"
	"a.b.cdn.example.test=4:192.168.1.22"
	"cdn.example.test=4:192.168.1.23"
	"rot.example.test=rot4:192.168.1.20-29,rot6:2001:db8:1::20-29"
	"short.example.test=4:192.168.1.24"
	"forbidden.example.test=4:$WAN4"
)
start_dns() { # NODE LOG ADDR...
	local node=$1 log=$2
	shift 2
	local binds=()
	for a in "$@"; do binds+=(--bind "$a"); done
	bg_in_ns "${P}_$node" "$PY" "$HELPERS/dns_server.py" --log "$log" --ttl 5 "${binds[@]}" "${ZONE[@]}"
	local pid=$!
	on_exit "kill $pid 2>/dev/null"
}
start_dns lan "$LAN_DNS_LOG" "$LAN4" "$LAN6"
start_dns wan "$WAN_DNS_LOG" "$WAN4" "$WAN6"
dns_listening() { [[ -n $(lab_exec "$P" "$1" ss -Hln "sport = :53") ]]; }
assert_true "the lan DNS server listens" eventually dns_listening lan
assert_true "the wan DNS server listens" eventually dns_listening wan

# q SERVER NAME TYPE [--tcp]: from ctr; "NOERROR addr..." / "REFUSED" / "NXDOMAIN" / "TIMEOUT" ...
q() { in_ctr "$PY" "$HELPERS/dns_client.py" query "$@"; }
# conn HOST PORT: TCP connect from ctr; "ok" or the errno name.
conn() {
	in_ctr "$PY" - "$@" <<'EOF'
import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect((host, port)); print("ok")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}
udp() { # HOST PORT: one datagram; "sent" or the errno name
	in_ctr "$PY" -c 'import errno,socket,sys
h,p=sys.argv[1],int(sys.argv[2]); s=socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x\n",(h,p)); print("sent")
except OSError as e:
    print(errno.errorcode.get(e.errno,str(e.errno)))' "$@"
}
REFUSED='^(EPERM|EACCES|EHOSTUNREACH|ENETUNREACH)$'
NAMES=(--allow "api.example.test tcp/$PORT" --allow "alias.example.test tcp/$PORT"
	--allow "*.cdn.example.test tcp/$PORT" --allow "rot.example.test tcp/$PORT"
	--allow "short.example.test tcp/$PORT")
proxy_pid() { nsg status --netns "$CTR_NS" --json | jq -r '.names.proxy_pid // empty'; }

section "control: without a policy the resolvers answer every name, and log it"
assert_eq NXDOMAIN "$(q "$LAN4" "control-$$.exfil.test" A)" "lan resolver answers a made-up name"
assert_true "lan resolver logged it" wait_for_text "$LAN_DNS_LOG" "control-$$.exfil.test"
assert_eq NXDOMAIN "$(q "$WAN6" "control6-$$.exfil.test" A --tcp)" "wan resolver answers over TCP/IPv6"
assert_true "wan resolver logged it" wait_for_text "$WAN_DNS_LOG" "control6-$$.exfil.test"
assert_eq "NOERROR 192.168.1.24" "$(q "$LAN4" short.example.test A)" "a name resolves"

section "bad name entries are refused with one line"
for bad in "*.com tcp/80" "a.*.example.test" "exa_mple..test" "api.example.test icmp" "-bad.example.test" \
	"1.2.3" "single"; do
	expect_exit 1 nsg restrict --netns "$CTR_NS" --allow "$bad" --no-probe
	assert_eq 1 "$(wc -l <<<"$ERR")" "'$bad': one line of error"
done

section "restrict with names"
expect_exit 0 nsg restrict --netns "$CTR_NS" "${NAMES[@]}" --no-probe --json
assert_eq true "$(jq -r .names.enabled <<<"$OUT")" "restrict reports names enabled"
assert_eq names "$(jq -r .route_set.disabled_by <<<"$OUT")" "the route set is left out with names (documented)"
PID1=$(jq -r .names.proxy_pid <<<"$OUT")
assert_true "the names proxy runs (pid $PID1)" test -d "/proc/$PID1"
assert_eq "$(stat -L -c %i "$CTR_NS")" "$(stat -L -c %i "/proc/$PID1/ns/net")" "the proxy lives in the container's namespace"
assert_match "$(conn "$LAN4" "$PORT")" "$REFUSED" "before any answer, the name's address is refused"

section "an allowed name resolves and opens its addresses on its ports only"
assert_eq "NOERROR $LAN4" "$(q "$LAN4" api.example.test A)" "A over UDP/IPv4"
assert_eq ok "$(conn "$LAN4" "$PORT")" "then TCP $LAN4:$PORT connects"
assert_match "$(conn "$LAN4" $((PORT + 1)))" "$REFUSED" "another TCP port of the address is refused"
assert_match "$(udp "$LAN4" "$LAB_UDP_PORT")" "$REFUSED" "UDP to the address is refused"
assert_eq "NOERROR $LAN6" "$(q "$LAN6" api.example.test AAAA --tcp)" "AAAA over TCP/IPv6"
assert_eq ok "$(conn "$LAN6" "$PORT")" "then TCP [$LAN6]:$PORT connects"
assert_eq "NOERROR $LAN4" "$(q "$LAN4" alias.example.test A)" "a CNAME chain resolves to its end"
assert_eq "NOERROR 192.168.1.21" "$(q "$WAN4" a.cdn.example.test A)" "the wildcard's one label, asked of the wan resolver"
assert_eq ok "$(conn 192.168.1.21 "$PORT")" "then its address connects"
assert_match "$(conn "$WAN4" "$PORT")" "$REFUSED" "the resolver's own address stays refused"
elements=$(in_ctr nft list set inet nsegress names4)
assert_contains "$elements" "192.168.1.21 . tcp . $PORT" "names4 holds the wildcard's address for tcp/$PORT"
assert_match "$elements" "timeout 1m(3[0-9]|[0-2][0-9])s|timeout 1m30s" "with the documented lifetime (TTL 5 s: floor 30 s + grace 60 s)"

section "every other name: REFUSED in the namespace, never seen by a resolver"
for name in a.b.cdn.example.test cdn.example.test forbidden.example.test example.test; do
	assert_eq REFUSED "$(q "$LAN4" "$name" A)" "$name: REFUSED"
done
assert_eq REFUSED "$(q "$LAN6" forbidden.example.test AAAA --tcp)" "forbidden name over TCP/IPv6: REFUSED"
: >"$TMPD/labels"
for i in $(seq 1 40); do
	label=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
	echo "$label" >>"$TMPD/labels"
	for server in "$LAN4" "$WAN4" "$LAN6" "$WAN6"; do
		tcp=()
		((i % 2)) && tcp=(--tcp)
		r=$(q "$server" "$label.exfil.test" TXT "${tcp[@]}")
		[[ $r == REFUSED ]] || echo "exfil $label via $server ${tcp[*]}: $r" >>"$TMPD/exfil.bad"
	done
done
assert_false "160 exfiltration queries (random labels, both resolvers, UDP and TCP, v4 and v6) all REFUSED" \
	test -s "$TMPD/exfil.bad"
[[ -s $TMPD/exfil.bad ]] && head -5 "$TMPD/exfil.bad" | sed 's/^/#   /'
assert_false "no random label reached the lan resolver" grep -qFf "$TMPD/labels" "$LAN_DNS_LOG"
assert_false "no random label reached the wan resolver" grep -qFf "$TMPD/labels" "$WAN_DNS_LOG"
assert_false "forbidden.example.test never reached a resolver" grep -q "forbidden.example.test" "$LAN_DNS_LOG" "$WAN_DNS_LOG"
LOG=$(nsg status --netns "$CTR_NS" --json | jq -r '.names.log // empty')
assert_true "the proxy's log records a refused exfiltration name" grep -qF "$(head -1 "$TMPD/labels").exfil.test" "$LOG"
assert_true "the proxy's log says refused" grep -q '"verdict":"refused"' "$LOG"
assert_match "$(q "$LAN4" short.example.test A)" "^NOERROR 192.168.1.24$" "an allowed name still resolves after the attack"

section "watch shows the names asked"
nsg watch --netns "$CTR_NS" --json --duration 3 >"$TMPD/watch.json" 2>/dev/null &
W=$!
while [[ -d /proc/$W ]]; do
	q "$LAN4" "watched-$$.example.test" A >/dev/null
	sleep 0.2
done
wait "$W"
assert_true "watch --json has a refused name event for the asked name" \
	grep -q "\"event\":\"name\".*\"name\":\"watched-$$.example.test\".*\"verdict\":\"refused\"" "$TMPD/watch.json"

section "verify resolves a name entry as the container would, and probes the answer"
OUT=$(nsg verify --netns "$CTR_NS" --allow "api.example.test tcp/$PORT" --resolver "$LAN4" --json 2>"$TMPD/verify.err")
[[ -s $TMPD/verify.err ]] && sed "s/^/#   verify: /" "$TMPD/verify.err"
assert_eq pass "$(jq -r '.checks[] | select(.name == "name api.example.test") | .status' <<<"$OUT")" \
	"verify: name api.example.test resolves, its addresses connect, another name is REFUSED"
assert_contains "$(jq -r '.checks[] | select(.name == "name api.example.test") | .detail' <<<"$OUT")" "REFUSED" "verify says a name outside the policy is REFUSED"

section "watch --summary suggests names, not bare addresses"
nsg watch --netns "$CTR_NS" --summary --duration 3 >"$TMPD/summary" 2>/dev/null &
W=$!
while [[ -d /proc/$W ]]; do
	conn "$LAN4" $((PORT + 1)) >/dev/null # refused: an address api.example.test's answer gave, another port
	sleep 0.2
done
wait "$W"
summary=$(<"$TMPD/summary")
assert_contains "$summary" "api.example.test tcp/$PORT" "the policy's name entries are kept"
assert_match "$summary" "#- api\.example\.test tcp/$((PORT + 1)) " "the refused address is suggested as its name"
assert_match "$summary" "#- forbidden\.example\.test +# asked [0-9]+ time" "a refused name is suggested, commented out"

section "rotating answers, TTL 1: resolve then connect, zero first connections refused"
CYCLES4=${NAMES_CYCLES:-2000} CYCLES6=${NAMES_CYCLES:-1000}
out=$(in_ctr "$PY" "$HELPERS/dns_client.py" loop "$LAN4" rot.example.test A "$PORT" "$CYCLES4")
summary=$(tail -1 <<<"$out")
echo "# IPv4: $summary"
assert_match "$summary" "^cycles=$CYCLES4 first_failures=0 unresolved=0 addresses=10$" "IPv4: $CYCLES4 cycles over 10 rotating addresses"
[[ $summary == *first_failures=0\ unresolved=0* ]] || head -5 <<<"$out" | sed 's/^/#   /'
out=$(in_ctr "$PY" "$HELPERS/dns_client.py" loop "$LAN6" rot.example.test AAAA "$PORT" "$CYCLES6")
summary=$(tail -1 <<<"$out")
echo "# IPv6: $summary"
assert_match "$summary" "^cycles=$CYCLES6 first_failures=0 unresolved=0 addresses=10$" "IPv6: $CYCLES6 cycles over 10 rotating addresses"
[[ $summary == *first_failures=0\ unresolved=0* ]] || head -5 <<<"$out" | sed 's/^/#   /' 

section "an established connection outlives its address's expiry"
assert_eq "NOERROR 192.168.1.24" "$(q "$LAN4" short.example.test A)" "short.example.test resolves"
TCP_LOG=$(lab_log "$P" lan tcp)
mark="established-$$"
rm -f "$TMPD/go"
in_ctr "$PY" - 192.168.1.24 "$PORT" "$mark" "$TMPD/go" >"$TMPD/held.out" 2>&1 <<'EOF' &
import os, socket, sys, time
host, port, mark, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=5)
s.sendall(f"{mark}-before\n".encode())
print("connected", flush=True)
for _ in range(500):
    if os.path.exists(go):
        break
    time.sleep(0.02)
s.sendall(f"{mark}-after\n".encode())
time.sleep(0.2)
s.close()
print("sent", flush=True)
EOF
HELD=$!
assert_true "the connection is open" wait_for_text "$TCP_LOG" "$mark-before" 5
# Expiry: the element goes, exactly as the kernel removes it when its timeout runs out.
in_ctr nft flush set inet nsegress names4
assert_false "names4 is empty (expired)" grep -q "192.168.1.24" <<<"$(in_ctr nft list set inet nsegress names4)"
assert_match "$(conn 192.168.1.24 "$PORT")" "$REFUSED" "a new connection to the expired address is refused"
touch "$TMPD/go"
wait "$HELD"
assert_true "the established connection still delivers after expiry" wait_for_text "$TCP_LOG" "$mark-after" 5

section "the names proxy killed: fail closed; restarted: names resolve again"
PID=$(proxy_pid)
assert_match "$PID" '^[0-9]+$' "status names the proxy's pid"
kill -KILL "$PID"
assert_true "the proxy is gone" eventually test ! -d "/proc/$PID"
before=$(wc -l <"$LAN_DNS_LOG")
r=$(q "$LAN4" api.example.test A)
assert_match "$r" '^(ECONNREFUSED|TIMEOUT)$' "an allowed name does not resolve while the proxy is down ($r)"
r=$(q "$LAN4" api.example.test A --tcp)
assert_match "$r" '^(ECONNREFUSED|TIMEOUT|CLOSED|ECONNRESET)$' "nor over TCP ($r)"
assert_eq "$before" "$(wc -l <"$LAN_DNS_LOG")" "nothing reached the resolver meanwhile"
assert_match "$(conn "$WAN4" "$PORT")" "$REFUSED" "the forbidden host stays refused"
assert_match "$(conn 192.168.1.25 "$PORT")" "$REFUSED" "an address never answered stays refused"
STATE_FILE=$(ls /run/nsegress/names-*-"$(stat -L -c %i "$CTR_NS")".json 2>/dev/null | head -1)
assert_true "the state file survived the kill" test -f "$STATE_FILE"
# What a supervisor (share/systemd/nsegress-names.service) does: start it again from its state.
ip netns exec "${P}_gw" "$NSEGRESS" names-proxy --state "$STATE_FILE" >/dev/null 2>"$TMPD/proxy.err" &
RESTARTED=$!
on_exit "kill $RESTARTED 2>/dev/null"
restarted() { [[ $(q "$LAN4" api.example.test A) == "NOERROR $LAN4" ]]; }
assert_true "after the restart the allowed name resolves" eventually restarted
assert_eq REFUSED "$(q "$LAN4" forbidden.example.test A)" "and other names are REFUSED"

section "a supervisor (nsegress names-supervise) restarts a proxy that died"
ip netns exec "${P}_gw" "$NSEGRESS" names-supervise --state "$STATE_FILE" >/dev/null 2>"$TMPD/supervise.err" &
SUPERVISOR=$!
on_exit "kill $SUPERVISOR 2>/dev/null"
kill -KILL "$RESTARTED"
wait "$RESTARTED" 2>/dev/null
new_proxy() { local p; p=$(proxy_pid); [[ -n $p && $p != "$RESTARTED" ]]; }
assert_true "a new proxy runs" eventually new_proxy
assert_true "the allowed name resolves again" eventually restarted
assert_eq REFUSED "$(q "$LAN4" forbidden.example.test A)" "other names are still REFUSED"
LAST=$(proxy_pid)

section "release stops the proxy and removes everything"
expect_exit 0 nsg release --netns "$CTR_NS" --json
assert_eq true "$(jq -r .removed_names_proxy <<<"$OUT")" "release reports the proxy stopped"
assert_true "the proxy is gone" eventually test ! -d "/proc/$LAST"
sleep 1.5 # the supervisor's next round: it must not start one again (the state is gone)
assert_eq "" "$(proxy_pid)" "the supervisor did not restart it after release"
assert_eq "" "$(nft_table)" "no table left"
assert_false "no state file left" test -e "$STATE_FILE"
assert_eq NXDOMAIN "$(q "$LAN4" "after-release-$$.exfil.test" A)" "DNS goes straight to the resolver again"

section "a namespace that dies takes its proxy with it"
lab_extra_ns "$P" gone
expect_exit 0 nsg restrict --netns "/run/netns/${P}_gone" --allow "api.example.test tcp/$PORT" --no-probe --json
GPID=$(jq -r .names.proxy_pid <<<"$OUT")
assert_true "its proxy runs" test -d "/proc/$GPID"
ip netns del "${P}_gone"
assert_true "the proxy exits once the namespace is gone" eventually test ! -d "/proc/$GPID"

finish
