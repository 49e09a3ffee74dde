#!/usr/bin/env bash
# podman's CNI backend runs nsegress as a chained plugin: with the shipped conflist (bridge +
# host-local + nsegress) in a private CNI config dir and nsegress in a plugin dir, `podman run` on
# that network comes up restricted (real packets from inside the container: the LAN answers, the
# forbidden network is refused), while the same chain without nsegress reaches both; `podman rm`
# runs DEL and leaves nothing behind. podman runs under nsenter in the lab's gw namespace, so its
# bridge and veths live there; its config, storage and IPAM state live in the test's temp dir.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/cni.sh
source "$REPO/testenv/cni.sh"

require_tools podman conmon runc nsenter timeout
cni_require_plugins bridge host-local || exit 1

cni_test_setup

NODE=$(lab_netns "$P" gw)
PD=$TMPD/podman
CONFDIR=$TMPD/net.d
mkdir -p "$CONFDIR"
BIN=$(cni_plugin_dir "$TMPD/cni-bin" "$NSEGRESS")
# shellcheck disable=SC2016 # evaluated on exit
on_exit 'cni_podman_down "$PD"; cni_state_done'

# The shipped conflist, with host-local's state in the temp dir; and the same chain without
# nsegress on another bridge and subnet (the control: there the forbidden network answers).
cni_conflist_localize "$REPO/share/cni/nsegress.conflist" "$CONFDIR/nsegress.conflist" "$TMPD/ipam"
jq '.name = "plain" | .plugins |= map(select(.type != "nsegress"))
	| .plugins[0].bridge = "nsgplain0"
	| .plugins[0].ipam.ranges = [[{subnet: "10.23.0.0/24", gateway: "10.23.0.1"}]]' \
	"$CONFDIR/nsegress.conflist" >"$CONFDIR/plain.conflist"
NET_SUBNET=$(jq -r '.plugins[0].ipam.ranges[0][0].subnet' "$CONFDIR/nsegress.conflist")

section "podman with the CNI backend, inside the sealed gw namespace"
cni_podman_env "$PD" "$NODE" "$CONFDIR" "$BIN" "$CNI_SYSTEM_PLUGINS" || {
	fail "could not write the podman configuration"
	finish
}
assert_eq "cni" "$(cni_podman "$PD" info --format '{{.Host.NetworkBackend}}' 2>&1)" "podman info: network backend is cni"
nets=$(cni_podman "$PD" network ls --format '{{.Name}}' 2>&1)
assert_contains "$nets" "nsegress" "podman network ls lists the nsegress network from the CNI config dir"
tarball=$(cni_rootfs_tar "$TMPD") || {
	fail "could not build the busybox rootfs"
	finish
}
out=$(cni_podman "$PD" import --quiet --change 'CMD ["/bin/sh"]' "$tarball" "$CNI_PODMAN_IMAGE" 2>&1)
assert_eq 0 "$?" "podman import of the busybox rootfs: $out"
rm -f "$tarball"

# run_ctr NAME NETWORK: a detached container on NETWORK; prints podman's output.
run_ctr() {
	cni_podman "$PD" run -d --name "$1" --network "$2" "$CNI_PODMAN_IMAGE" sleep 120 2>&1
}
ctr_sh() {
	local name=$1
	shift
	cni_podman "$PD" exec "$name" sh -c "$*" 2>&1
}

section "control: the same chain without nsegress reaches the forbidden network"
out=$(run_ctr plain plain)
assert_eq 0 "$?" "podman run --network plain: $out"
out=$(ctr_sh plain "ping -c1 -W2 198.51.100.10 >/dev/null && echo WAN-ANSWERS")
assert_contains "$out" "WAN-ANSWERS" "without nsegress, ping 198.51.100.10 answers"
out=$(cni_podman "$PD" rm -f -t 0 plain 2>&1)
assert_eq 0 "$?" "podman rm plain: $out"

section "podman run --network nsegress comes up restricted"
out=$(run_ctr restricted nsegress)
assert_eq 0 "$?" "podman run --network nsegress: $out"
sandbox=$(cni_podman "$PD" inspect --format '{{.NetworkSettings.SandboxKey}}' restricted 2>&1)
assert_match "$sandbox" '^/' "the container has a network namespace ($sandbox)"
cni_state_note netns "$sandbox"
addr=$(ctr_sh restricted "ip -4 -o addr show dev eth0")
assert_contains "$addr" "${NET_SUBNET%.*/*}." "the container's eth0 has an address from $NET_SUBNET"
if [[ -e $sandbox ]] && [[ $(stat -L -c %i "$sandbox") != "$RUNNER_NETNS_INO" ]]; then
	table=$(nsenter --net="$sandbox" nft list table inet nsegress 2>&1)
	assert_contains "$table" "192.168.1.0/24" "the container's namespace holds table inet nsegress with the allow-list"
	assert_match "$(ip -n "${P}_gw" -4 rule show | grep -Ev '^(0|32766|32767):' || true)" '^$' \
		"the node (gw) got no route set"
else
	fail "the container's network namespace $sandbox cannot be inspected"
fi
out=$(ctr_sh restricted "ping -c1 -W2 192.168.1.10 >/dev/null && echo LAN-ANSWERS")
assert_contains "$out" "LAN-ANSWERS" "ping 192.168.1.10 answers from inside the container"
out=$(ctr_sh restricted "ping -c1 -W2 198.51.100.10 2>&1 && echo WAN-ANSWERS || echo WAN-REFUSED")
assert_contains "$out" "WAN-REFUSED" "ping 198.51.100.10 is refused from inside the container"
assert_not_contains "$out" "WAN-ANSWERS" "no answer from 198.51.100.10"
# busybox nc has no -z: connect, send a line, and exit at end of input.
out=$(ctr_sh restricted "echo tcp-lan-$$ | nc -w2 192.168.1.10 $LAB_TCP_PORT && echo LAN-TCP")
assert_contains "$out" "LAN-TCP" "TCP to the lan listener connects from inside the container"
assert_true "the lan listener logged the connection" wait_for_text "$(lab_log "$P" lan tcp)" "tcp-lan-$$"
out=$(ctr_sh restricted "echo tcp-wan-$$ | nc -w2 198.51.100.10 $LAB_TCP_PORT && echo WAN-TCP || echo WAN-TCP-REFUSED")
assert_contains "$out" "WAN-TCP-REFUSED" "TCP to the wan listener is refused from inside the container"
assert_not_contains "$(<"$(lab_log "$P" wan tcp)")" "tcp-wan-$$" "the wan listener got nothing"

section "a one-shot podman run --rm sees the same"
out=$(cni_podman "$PD" run --rm --network nsegress "$CNI_PODMAN_IMAGE" \
	sh -c "ping -c1 -W2 192.168.1.10 >/dev/null && echo LAN-ANSWERS; ping -c1 -W2 198.51.100.10 >/dev/null 2>&1 && echo WAN-ANSWERS || echo WAN-REFUSED" 2>&1)
assert_contains "$out" "LAN-ANSWERS" "podman run --rm: ping 192.168.1.10 answers"
assert_contains "$out" "WAN-REFUSED" "podman run --rm: ping 198.51.100.10 is refused"

section "podman rm runs CNI DEL: nothing left"
out=$(cni_podman "$PD" rm -f -t 0 restricted 2>&1)
assert_eq 0 "$?" "podman rm -f restricted: $out"
assert_false "the container's namespace is gone" test -e "$sandbox"
only_lab_veths() { [[ -z $(ip -n "${P}_gw" -o link show type veth | grep -Ev '^[0-9]+: (c0|l0|w0)@') ]]; }
assert_true "no veth left in the node (but the lab's own c0, l0, w0)" eventually only_lab_veths
assert_eq "" "$(find "$TMPD/ipam" -type f -name '10.*')" "host-local released every address"
assert_eq "" "$(cni_podman "$PD" ps -a --format '{{.Names}}' 2>&1)" "no container left"

finish
