#!/usr/bin/env bash
# nsegress as a chained CNI plugin, driven exactly as a runtime drives it (CNI_* variables, the
# netconf on stdin, prevResult threaded from Debian's real bridge + host-local plugins), from
# inside the lab's gw namespace playing the node: after ADD the pod reaches only the allow-list
# (real packets), CHECK passes and then catches drift, DEL restores the pod and is idempotent
# (twice, on a deleted netns, without CNI_NETNS), VERSION and the error JSON are right, and the
# shipped examples (share/cni/nsegress.conflist, share/kubernetes/nsegress-daemonset.yaml, with
# its install script) are executed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/cni.sh
source "$REPO/testenv/cni.sh"

require_tools nsenter timeout install
cni_require_plugins bridge host-local || exit 1
PYTHON=${CNI_TEST_PYTHON:-/usr/bin/python3}
"$PYTHON" -c 'import yaml' 2>/dev/null || {
	echo "FAIL: $PYTHON cannot import yaml (install python3-yaml)"
	exit 1
}

cni_test_setup

NODE=$(lab_netns "$P" gw)
BIN=$(cni_plugin_dir "$TMPD/cni-bin" "$NSEGRESS")
CNIP=$BIN:$CNI_SYSTEM_PLUGINS

# Pods made here, torn down on exit: the chain's DEL first (best effort), then the namespace.
_pods=()
_teardowns=()
new_pod() {
	local name=${P}_$1
	cni_pod_add "$name" >/dev/null || {
		fail "could not create namespace $name"
		finish
	}
	_pods+=("$name")
}
cleanup_cni() {
	local t
	for t in "${_teardowns[@]}"; do eval "$t" >/dev/null 2>&1 || true; done
	for t in "${_pods[@]}"; do cni_pod_del "$t"; done
	cni_state_done
}
on_exit cleanup_cni

in_pod() {
	local ns=$1
	shift
	ip netns exec "${P}_$ns" "$@"
}
pod_ping_ok() { in_pod "$1" ping -n -c1 -W1 -q "$2" >/dev/null 2>&1; }
pod_tcp_ok() { in_pod "$1" nc -z -w2 "$2" "$LAB_TCP_PORT" >/dev/null 2>&1; }
pod_rules() { ip -n "${P}_$1" "-$2" rule show | grep -Ev '^(0|32766|32767):'; }
pod_snapshot() {
	{
		echo "== ip -4 rule"
		ip -n "${P}_$1" -4 rule show
		echo "== ip -6 rule"
		ip -n "${P}_$1" -6 rule show
		echo "== ip -4 route show table all"
		ip -n "${P}_$1" -4 route show table all
		echo "== ip -6 route show table all"
		ip -n "${P}_$1" -6 route show table all
		echo "== nft list ruleset"
		in_pod "$1" nft -s list ruleset
	} 2>&1
}

# plugin TYPE VAR=VALUE...: one plugin call from the node, netconf on stdin; $OUT, $RC (no assert).
plugin() {
	local type=$1
	shift
	OUT=$(cni_invoke "$NODE" "$type" "$@" 2>"$TMPD/plugin.err")
	RC=$?
	ERR=$(<"$TMPD/plugin.err")
}

# expect_cni_error CODE MSG_REGEX DESCRIPTION [details]: the last plugin call failed with that CNI
# error. CODE may list alternatives ("4|100"); MSG_REGEX must match msg, or with "details" msg and
# details together (for failures whose specifics belong in details).
expect_cni_error() {
	local code=$1 re=$2 desc=$3 where=${4:-msg}
	if ((RC == 0)); then
		fail "$desc: exit status 0, a failure was expected (stdout: $OUT)"
		return
	fi
	pass "$desc: non-zero exit ($RC)"
	# One jq call (they are not cheap on a loaded machine): code, cniVersion ok, details ok, text.
	local fields code_got ver_ok det_ok text
	if ! fields=$(jq -r --arg where "$where" 'if type != "object" then error("not an object") else
		[(.code | tostring), (.cniVersion | type == "string" and length > 0 | tostring),
		 ((.details // "") | type == "string" | tostring),
		 (if $where == "details" then .msg + " | " + (.details // "") else .msg end | tostring)] | join("\t")
		end' <<<"$OUT" 2>/dev/null); then
		fail "$desc: stdout is not a JSON object: $OUT ${ERR:+(stderr: $ERR)}"
		return
	fi
	IFS=$'\t' read -r code_got ver_ok det_ok text <<<"$fields"
	assert_match "$code_got" "^($code)\$" "$desc: code $code"
	assert_eq "true" "$ver_ok" "$desc: cniVersion present"
	# The spec makes details optional (libcni: omitempty); when present it is a string.
	assert_eq "true" "$det_ok" "$desc: details absent or a string"
	assert_match "$text" "$re" "$desc: says what is wrong ($text)"
}

# The chain under test: a bridge in the node with host-local IPAM, then nsegress.
CONF=$TMPD/test.conflist
jq -n --arg ipam "$TMPD/ipam" '{
	cniVersion: "1.0.0",
	name: "nsgcnitest",
	plugins: [
		{type: "bridge", bridge: "nsgbr0", isGateway: true, ipMasq: false,
		 ipam: {type: "host-local", dataDir: $ipam,
		        ranges: [[{subnet: "10.88.7.0/24", gateway: "10.88.7.1"}]],
		        routes: [{dst: "0.0.0.0/0"}]}},
		{type: "nsegress", allow: ["192.168.1.0/24"],
		 probeReach: ["192.168.1.10"], probeBlock: ["198.51.100.10"]}
	]
}' >"$CONF"
CID=nsgcni-$$-a
ENV_ADD=(CNI_COMMAND=ADD CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP")

section "VERSION"
plugin nsegress CNI_COMMAND=VERSION CNI_PATH="$CNIP" </dev/null
assert_eq 0 "$RC" "VERSION exits 0"
assert_eq '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' \
	"$(jq -cS '{cniVersion, supportedVersions: (.supportedVersions | sort)}' <<<"$OUT" 2>/dev/null)" \
	"VERSION: cniVersion 1.0.0, supports 0.4.0 and 1.0.0"

section "bridge + host-local ADD (the interface nsegress is chained after)"
new_pod a
POD_A=/run/netns/${P}_a
_teardowns+=("CNI_DRIVER_PATH='$CNIP' cni_chain DEL '$CONF' '$NODE' '$POD_A' '$CID' '$TMPD/a.cache'")
plugin bridge "${ENV_ADD[@]}" CNI_NETNS="$POD_A" < <(cni_netconf "$CONF" 0)
assert_eq 0 "$RC" "bridge ADD exits 0 ${ERR:+(stderr: $ERR)}"
printf '%s\n' "$OUT" >"$TMPD/bridge.json"
pod_ip=$(jq -r '.ips[0].address' "$TMPD/bridge.json")
assert_match "$pod_ip" '^10\.88\.7\.[0-9]+/24$' "the pod got an address from host-local ($pod_ip)"
assert_true "ping lan 192.168.1.10 from the pod before nsegress" pod_ping_ok a 192.168.1.10
assert_true "ping wan 198.51.100.10 from the pod before nsegress" pod_ping_ok a 198.51.100.10
assert_true "TCP to the wan listener before nsegress" pod_tcp_ok a 198.51.100.10
pod_snapshot a >"$TMPD/a.before"
gw_nft_before=$(ip netns exec "${P}_gw" nft -s list ruleset)

section "nsegress ADD with prevResult"
cni_netconf "$CONF" 1 "$TMPD/bridge.json" >"$TMPD/nsegress-add.json"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "nsegress ADD exits 0 ${OUT:+(stdout: $(head -c 600 <<<"$OUT"))}"
assert_eq "$(jq -S . "$TMPD/bridge.json")" "$(jq -S . <<<"$OUT" 2>&1)" "ADD prints prevResult unchanged"
cp "$TMPD/bridge.json" "$TMPD/a.cache" # what libcni caches: the chain's final result

table=$(in_pod a nft list table inet nsegress 2>&1)
assert_contains "$table" "192.168.1.0/24" "pod: nft table inet nsegress holds 192.168.1.0/24"
assert_match "$table" 'hook output .*policy drop;' "pod: an output chain with policy drop"
assert_not_contains "$table" "198.51.100" "pod: nothing about the forbidden network is allowed"
assert_match "$(pod_rules a 4)" '^100:.*lookup 28275' "pod: route set rule 100 looks up table 28275"
assert_not_contains "$(pod_rules a 4)" "unreachable" "pod: no catch-all rule (the table refuses by itself)"
assert_match "$(ip -n "${P}_a" -4 route show table 28275)" 'unreachable default' "pod: table 28275 refuses the rest"
assert_eq "$gw_nft_before" "$(ip netns exec "${P}_gw" nft -s list ruleset)" "node: nft ruleset untouched"
assert_eq "" "$(ip -n "${P}_gw" -4 rule show | grep -Ev '^(0|32766|32767):')" "node: no extra ip rules"

section "real packets from the pod"
assert_true "ping 192.168.1.10 answers" pod_ping_ok a 192.168.1.10
msg=$(in_pod a ping -n -c1 -W2 198.51.100.10 2>&1)
assert_false "ping 198.51.100.10 is refused" pod_ping_ok a 198.51.100.10
assert_match "$msg" 'Operation not permitted|[Uu]nreachable|Prohibited|No route to host' "ping 198.51.100.10 says why: $(why "$msg")"
assert_true "TCP to the lan listener connects" pod_tcp_ok a 192.168.1.10
assert_false "TCP to the wan listener is refused" pod_tcp_ok a 198.51.100.10

section "CHECK"
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "CHECK passes on the installed policy ${OUT:+(stdout: $OUT)}"
assert_eq "" "$OUT" "CHECK prints nothing on success"
assert_eq "0" "$(CNI_DRIVER_PATH=$CNIP cni_chain CHECK "$CONF" "$NODE" "$POD_A" "$CID" "$TMPD/a.cache" >/dev/null 2>&1; echo $?)" \
	"CHECK of the whole chain (bridge, then nsegress) passes"

jq '.allow = ["192.168.2.0/24"]' "$TMPD/nsegress-add.json" >"$TMPD/nsegress-other.json"
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-other.json"
expect_cni_error 102 '.' "CHECK with a netconf whose allow-list differs"

in_pod a nft delete table inet nsegress
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
expect_cni_error 102 '.' "CHECK after 'nft delete table inet nsegress' by hand"

# ADD again restores it (a replace); then the route set is damaged by hand.
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "ADD again restores the policy"
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "CHECK passes again ${OUT:+(stdout: $OUT)}"
ip -n "${P}_a" -4 route del unreachable default table 28275
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
expect_cni_error 102 'missing route unreachable default' "CHECK after the route set's unreachable route was deleted by hand" details
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "ADD again restores it"
ip -n "${P}_a" -4 rule del priority 100
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
expect_cni_error 102 'rule .*100.*missing' "CHECK after the route set's rule 100 was deleted by hand" details

section "a probe that does not hold fails ADD with code 101"
jq '.probeReach = ["198.51.100.10"] | .probeBlock = []' "$TMPD/nsegress-add.json" >"$TMPD/probe-bad.json"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_A" <"$TMPD/probe-bad.json"
expect_cni_error 101 '198\.51\.100\.10' "ADD whose probeReach target is forbidden" details

section "DEL"
plugin nsegress CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "DEL exits 0 ${OUT:+(stdout: $OUT)}"
assert_eq "" "$OUT" "DEL prints nothing on success"
pod_snapshot a >"$TMPD/a.after"
assert_same "$TMPD/a.before" "$TMPD/a.after" "DEL: rules, routes and ruleset of the pod as the bridge left them"
assert_eq "" "$(in_pod a nft list table inet nsegress 2>/dev/null)" "DEL: no table inet nsegress"
assert_true "ping 198.51.100.10 answers again" pod_ping_ok a 198.51.100.10
plugin nsegress CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "DEL twice exits 0 ${OUT:+(stdout: $OUT)}"
plugin nsegress CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	<"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "DEL without CNI_NETNS exits 0 ${OUT:+(stdout: $OUT)}"
plugin nsegress CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS= <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "DEL with an empty CNI_NETNS exits 0 ${OUT:+(stdout: $OUT)}"

section "routeSet: false"
jq '.routeSet = false' "$TMPD/nsegress-add.json" >"$TMPD/nsegress-noroutes.json"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_A" <"$TMPD/nsegress-noroutes.json"
assert_eq 0 "$RC" "ADD with routeSet false exits 0 ${OUT:+(stdout: $(head -c 300 <<<"$OUT"))}"
assert_eq "" "$(pod_rules a 4)" "routeSet false: no ip rules"
assert_contains "$(in_pod a nft list table inet nsegress 2>&1)" "192.168.1.0/24" "routeSet false: the nft allow-list alone"
assert_false "routeSet false: ping 198.51.100.10 is refused" pod_ping_ok a 198.51.100.10
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-noroutes.json"
assert_eq 0 "$RC" "CHECK with routeSet false passes ${OUT:+(stdout: $OUT)}"
plugin nsegress CNI_COMMAND=CHECK CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
expect_cni_error 102 '.' "CHECK with routeSet true when no route set is installed"
plugin nsegress CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-noroutes.json"
assert_eq "0" "$RC" "DEL exits 0 ${OUT:+(stdout: $OUT)}"
assert_same "$TMPD/a.before" <(pod_snapshot a) "DEL: the pod as the bridge left it"

section "CNI_NETNS naming the node's own namespace is refused"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$NODE" <"$TMPD/nsegress-add.json"
expect_cni_error '4|100' 'refusing.*(itself|host|own)' "ADD with CNI_NETNS = the namespace the plugin runs in" details
assert_eq "" "$(ip netns exec "${P}_gw" nft list table inet nsegress 2>/dev/null)" "node: no table inet nsegress"
assert_eq "" "$(ip -n "${P}_gw" -4 rule show | grep -Ev '^(0|32766|32767):')" "node: no ip rules added"
node_ping() { ip netns exec "${P}_gw" ping -n -c1 -W1 -q "$1" >/dev/null 2>&1; }
assert_true "node: ping 198.51.100.10 from the node still answers" node_ping 198.51.100.10

section "DEL after the pod's namespace is gone"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "ADD once more"
cni_pod_del "${P}_a"
assert_false "the pod's namespace is deleted" test -e "$POD_A"
plugin nsegress CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" <"$TMPD/nsegress-add.json"
assert_eq 0 "$RC" "nsegress DEL on a deleted netns exits 0 ${OUT:+(stdout: $OUT)}"
plugin bridge CNI_COMMAND=DEL CNI_CONTAINERID="$CID" CNI_IFNAME=eth0 CNI_PATH="$CNIP" \
	CNI_NETNS="$POD_A" < <(cni_netconf "$CONF" 0 "$TMPD/a.cache")
assert_eq 0 "$RC" "bridge DEL on a deleted netns exits 0 ${OUT:+(stdout: $OUT)}"
assert_eq "" "$(find "$TMPD/ipam" -name '10.88.7.*')" "host-local released the pod's address"
no_pod_veth() { [[ -z $(ip -n "${P}_gw" -o link show type veth master nsgbr0) ]]; }
assert_true "node: no veth left on the bridge" eventually no_pod_veth

section "bad netconf and environment: CNI error JSON, nothing installed"
new_pod e
POD_E=/run/netns/${P}_e
good=$(cni_netconf "$CONF" 1 "$TMPD/bridge.json")
plugin nsegress CNI_COMMAND=ADD CNI_CONTAINERID="$CID-e" CNI_IFNAME=eth0 CNI_PATH="$CNIP" <<<"$good"
expect_cni_error 4 'CNI_NETNS' "ADD without CNI_NETNS"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<'{"cniVersion": "1.0.0", "name": "x", "type": "nsegress", '
expect_cni_error 6 '.' "netconf that is not JSON"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c 'del(.allow)' <<<"$good")"
expect_cni_error 7 'allow' "netconf without allow"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c '.allow = "x"' <<<"$good")"
expect_cni_error 7 'allow.*(array|list)|(array|list).*allow' "allow: \"x\" (a string, not a list)"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c '.allow = ["300.1.1.1/24"]' <<<"$good")"
expect_cni_error 7 '300\.1\.1\.1/24' "allow: [\"300.1.1.1/24\"] (invalid CIDR)"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c 'del(.prevResult)' <<<"$good")"
expect_cni_error 7 'prevResult' "ADD without prevResult (nsegress is a chained plugin)"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c '.routeSet = "yes"' <<<"$good")"
expect_cni_error 7 'routeSet' "routeSet: \"yes\" (not a boolean)"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c '.probeReach = ["not-an-ip"]' <<<"$good")"
expect_cni_error 7 'not-an-ip' "probeReach: [\"not-an-ip\"]"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$POD_E" <<<"$(jq -c '.cniVersion = "0.3.1"' <<<"$good")"
expect_cni_error 1 '0\.3\.1' "cniVersion 0.3.1 (not supported)"
plugin nsegress "${ENV_ADD[@]}" CNI_NETNS="$TMPD/no-such-netns" <<<"$good"
expect_cni_error '4|100' 'no-such-netns' "ADD with CNI_NETNS naming no namespace" details
assert_eq "" "$(in_pod e nft list ruleset)" "the pod of the failed ADDs has no nft ruleset"
assert_eq "" "$(pod_rules e 4)" "the pod of the failed ADDs has no extra ip rules"
cni_pod_del "${P}_e"

section "the shipped share/cni/nsegress.conflist, run by a cnitool-like driver"
SHIPPED=$REPO/share/cni/nsegress.conflist
assert_true "share/cni/nsegress.conflist is valid JSON" jq -e . "$SHIPPED" >/dev/null
assert_eq "bridge host-local nsegress" \
	"$(jq -r '[.plugins[0].type, .plugins[0].ipam.type, .plugins[-1].type] | join(" ")' "$SHIPPED")" \
	"conflist: bridge + host-local, then nsegress last"
cni_conflist_localize "$SHIPPED" "$TMPD/shipped.conflist" "$TMPD/ipam-shipped"

# run_conflist LABEL CONFLIST POD CNI_PATH: ADD, packets, CHECK, DEL, DEL again, through the driver.
run_conflist() {
	local label=$1 conflist=$2 pod=$3 cnipath=$4 cid=nsgcni-$$-$3
	local netns=/run/netns/${P}_$pod cache=$TMPD/$pod.cache keep=$TMPD/$pod.steps
	new_pod "$pod"
	_teardowns+=("CNI_DRIVER_PATH='$cnipath' cni_chain DEL '$conflist' '$NODE' '$netns' '$cid' '$cache'")
	mkdir -p "$keep"
	local before
	before=$(pod_snapshot "$pod")
	OUT=$(CNI_DRIVER_PATH=$cnipath CNI_DRIVER_KEEP=$keep cni_chain ADD "$conflist" "$NODE" "$netns" "$cid" "$cache" 2>"$TMPD/chain.err")
	RC=$?
	assert_eq 0 "$RC" "$label: ADD of the whole chain exits 0 ($(head -c 600 <<<"$OUT") $(<"$TMPD/chain.err"))"
	local last
	last=$(($(jq '.plugins | length' "$conflist") - 1))
	assert_eq "$(jq -S . "$keep/ADD.$((last - 1)).json" 2>&1)" "$(jq -S . "$keep/ADD.$last.json" 2>&1)" \
		"$label: nsegress passed its prevResult through unchanged"
	assert_eq "$(jq -r .cniVersion "$conflist")" "$(jq -r .cniVersion <<<"$OUT" 2>&1)" \
		"$label: the result speaks the conflist's cniVersion"
	assert_true "$label: ping 192.168.1.10 answers" pod_ping_ok "$pod" 192.168.1.10
	assert_false "$label: ping 198.51.100.10 is refused" pod_ping_ok "$pod" 198.51.100.10
	assert_true "$label: TCP to the lan listener connects" pod_tcp_ok "$pod" 192.168.1.10
	assert_false "$label: TCP to the wan listener is refused" pod_tcp_ok "$pod" 198.51.100.10
	assert_contains "$(in_pod "$pod" nft list table inet nsegress 2>&1)" "192.168.1.0/24" "$label: pod's nft allow-list"
	assert_eq 0 "$(CNI_DRIVER_PATH=$cnipath cni_chain CHECK "$conflist" "$NODE" "$netns" "$cid" "$cache" >/dev/null 2>&1; echo $?)" \
		"$label: CHECK of the chain passes"
	in_pod "$pod" nft delete table inet nsegress
	OUT=$(CNI_DRIVER_PATH=$cnipath cni_chain CHECK "$conflist" "$NODE" "$netns" "$cid" "$cache" 2>/dev/null)
	RC=$?
	expect_cni_error 102 '.' "$label: CHECK of the chain after the table was deleted by hand"
	OUT=$(CNI_DRIVER_PATH=$cnipath cni_chain DEL "$conflist" "$NODE" "$netns" "$cid" "$cache" 2>&1)
	assert_eq 0 "$?" "$label: DEL of the chain (reverse order) exits 0 $OUT"
	assert_eq "" "$(ip -n "${P}_$pod" -o link show type veth)" "$label: DEL removed the pod's interface"
	assert_eq "$before" "$(pod_snapshot "$pod")" "$label: the pod is as it was before ADD"
	assert_eq "" "$(find "$TMPD" -path "*ipam*" -name '10.22.*')" "$label: host-local released the address"
	assert_not_contains "$(ip netns exec "${P}_gw" iptables-save 2>/dev/null)" "$cid" "$label: no masquerade rule left in the node"
	OUT=$(CNI_DRIVER_PATH=$cnipath cni_chain DEL "$conflist" "$NODE" "$netns" "$cid" "$cache" 2>&1)
	assert_eq 0 "$?" "$label: DEL of the chain twice exits 0 $OUT"
	cni_pod_del "${P}_$pod"
}
run_conflist "shipped conflist" "$TMPD/shipped.conflist" s "$CNIP"

section "share/kubernetes/nsegress-daemonset.yaml: parsed, installed into a scratch root, executed"
K8S=$REPO/share/kubernetes/nsegress-daemonset.yaml
mkdir -p "$TMPD/k8s"
"$PYTHON" - "$K8S" "$TMPD/k8s" "$SHIPPED" >"$TMPD/k8s/report" 2>&1 <<'EOF'
import json, sys, yaml
path, out, shipped = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
kinds = sorted(d["kind"] for d in docs)
print("kinds", " ".join(kinds))
cm = next(d for d in docs if d["kind"] == "ConfigMap")
ds = next(d for d in docs if d["kind"] == "DaemonSet")
conflists = [k for k in cm["data"] if k.endswith(".conflist")]
print("conflists", " ".join(conflists))
conf = json.loads(cm["data"][conflists[0]])  # raises when not JSON
ref = json.load(open(shipped))
chain = lambda c: [c["plugins"][0]["type"], c["plugins"][0]["ipam"]["type"]] + [p["type"] for p in c["plugins"][1:]]
print("chain", " ".join(chain(conf)), "same" if chain(conf) == chain(ref) else "differs")
open(out + "/conflist", "w").write(json.dumps(conf))
open(out + "/install.sh", "w").write(cm["data"]["install.sh"])
spec = ds["spec"]["template"]["spec"]
vols = {v["name"]: v for v in spec["volumes"]}
print("configmap", "ok" if any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in vols.values()) else "missing")
print("hostpaths", " ".join(sorted(v["hostPath"]["path"] for v in vols.values() if "hostPath" in v)))
init = spec["initContainers"][0]
print("init", " ".join(init["command"]))
mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
print("mounts", " ".join(f"{p}={mounts[p]}" for p in sorted(mounts)))
print("selector", "ok" if ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items() else "mismatch")
EOF
rc=$?
report=$(<"$TMPD/k8s/report")
assert_eq 0 "$rc" "python3-yaml loads every document and the ConfigMap's conflist is JSON ($report)"
assert_contains "$report" "kinds ConfigMap DaemonSet" "YAML: a ConfigMap and a DaemonSet"
assert_contains "$report" "chain bridge host-local nsegress same" "YAML: the ConfigMap's conflist is the same chain as share/cni"
assert_contains "$report" "configmap ok" "YAML: the DaemonSet mounts the ConfigMap"
assert_contains "$report" "hostpaths /etc/cni/net.d /opt/cni/bin" "YAML: hostPath /opt/cni/bin and /etc/cni/net.d"
assert_contains "$report" "mounts /config=config /host/etc/cni/net.d=cni-net /host/opt/cni/bin=cni-bin" \
	"YAML: the install container mounts what install.sh expects"
assert_contains "$report" "init /bin/sh /config/install.sh" "YAML: the install container runs the ConfigMap's install.sh"
assert_contains "$report" "selector ok" "YAML: the selector matches the pod template"

# install.sh with POSIX sh into a scratch node root, as the init container would on a node.
HOSTROOT=$TMPD/k8s/node
NSEGRESS_BIN=$NSEGRESS CNI_BIN_DIR=$HOSTROOT/opt/cni/bin CNI_NET_DIR=$HOSTROOT/etc/cni/net.d \
	CONFLIST=$TMPD/k8s/conflist sh "$TMPD/k8s/install.sh" >"$TMPD/k8s/install.out" 2>&1
assert_eq 0 "$?" "install.sh (POSIX sh) installs into a scratch node root: $(<"$TMPD/k8s/install.out")"
assert_true "install.sh: /opt/cni/bin/nsegress is executable" test -x "$HOSTROOT/opt/cni/bin/nsegress"
assert_true "install.sh: the conflist is in /etc/cni/net.d" cmp -s "$TMPD/k8s/conflist" "$HOSTROOT/etc/cni/net.d/10-nsegress.conflist"
NSEGRESS_BIN=$NSEGRESS CNI_BIN_DIR=$HOSTROOT/opt/cni/bin CNI_NET_DIR=$HOSTROOT/etc/cni/net.d \
	CONFLIST=$TMPD/k8s/conflist sh "$TMPD/k8s/install.sh" >/dev/null 2>&1
assert_eq 0 "$?" "install.sh runs twice (a DaemonSet pod restart)"
assert_eq "" "$(find "$HOSTROOT" -name '.*tmp*')" "install.sh leaves no temporary files"
plugin nsegress CNI_COMMAND=VERSION CNI_PATH="$HOSTROOT/opt/cni/bin" </dev/null
assert_eq "0 1.0.0" "$RC $(jq -r .cniVersion <<<"$OUT" 2>&1)" "the installed wrapper answers VERSION"
cni_conflist_localize "$HOSTROOT/etc/cni/net.d/10-nsegress.conflist" "$TMPD/k8s.conflist" "$TMPD/ipam-k8s"
run_conflist "Kubernetes conflist" "$TMPD/k8s.conflist" k "$HOSTROOT/opt/cni/bin:$CNI_SYSTEM_PLUGINS"

finish
