#!/usr/bin/env bash
# runc (Debian runc) for real, as an OCI hook host: a busybox bundle whose createRuntime hooks are
# (1) testenv/fixtures/veth-hook.sh, which plumbs a veth from the lab's gw namespace into the new
# container namespace, and (2) `nsegress hook`. The container's first action pings the allowed and
# the forbidden host: the policy is in place before any container code runs. An invalid policy or
# a probe that does not hold makes `runc run` fail, with no container left. runc runs with a
# private --root inside the sealed gw namespace (so do its hooks).
# shellcheck disable=SC2016 # jq filters and the container's script are single-quoted on purpose
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/engines.sh
source "$REPO/testenv/engines.sh"

engines_test_setup

LAN=$LAB_LAN4 WAN=$LAB_WAN4 LANNET=$LAB_LAN_NET4
VETH_HOOK=$REPO/testenv/fixtures/veth-hook.sh
GW_NS=$(lab_netns "$P" gw)
# The container's side of the veth: 172.31.5.2/24, default via gw's 172.31.5.1 (routed to lan and
# wan by gw, which both answer to 172.31.5.0/24 through gw).
CTR_ADDR=172.31.5.2/24 GW_ADDR=172.31.5.1/24 GW_IP=172.31.5.1
BUNDLES=$(engines_dir "$P")/bundles

# The container's process: ping each target once, print one line per target. Nothing runs before.
PINGS='for t in "$@"; do if out=$(ping -c1 -W1 "$t" 2>&1); then echo "REACH $t"; else echo "REFUSED $t: $(echo "$out" | tail -1)"; fi; done'

# bundle NAME [nsegress hook args...|-]: a bundle with the veth hook, then `nsegress hook ARGS`
# (no nsegress hook at all with "-"); the process pings lan, wan and the gateway.
bundle() {
	local name=$1 dir
	shift
	dir=$BUNDLES/$name
	if [[ ! -x $BUNDLES/rootfs/bin/sh ]]; then engine_rootfs "$BUNDLES/rootfs" || return 1; fi
	runc_bundle "$dir" "$P" "$BUNDLES/rootfs" || return 1
	runc_add_hook "$dir" createRuntime "$VETH_HOOK" "$GW_NS" rc0 "$CTR_ADDR" "$GW_ADDR" || return 1
	if [[ ${1-} != - ]]; then
		runc_add_hook "$dir" createRuntime "$NSEGRESS" hook "$@" || return 1
	fi
	runc_set "$dir" '.process.args = ["sh", "-c", $s, "pings", $lan, $wan, $gw]' \
		--arg s "$PINGS" --arg lan "$LAN" --arg wan "$WAN" --arg gw "$GW_IP"
}

# run NAME: `runc run` in the foreground, as runc_cmd does it (private --root, in gw), bounded.
run() {
	mkdir -p "$(_eng_runc_root "$P")"
	timeout 60 nsenter --net="$GW_NS" runc --root "$(_eng_runc_root "$P")" \
		run --bundle "$BUNDLES/$1" "$1" </dev/null
}

no_container_left() {
	local ids
	ids=$(runc_cmd "$P" list -q 2>&1)
	[[ -z $ids ]] || { echo "runc list: $ids" >&2; return 1; }
}
no_process_left() {
	local d pids=''
	for d in $(_eng_cgroup_dirs "$(_eng_cgroup "$P")"); do
		pids+=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
	done
	[[ -z $pids ]] || { echo "processes left: $pids" >&2; return 1; }
}
# A dead namespace's veth goes asynchronously (lib.sh: eventually).
no_veth_left() { eventually eval '! ip -n "${P}_gw" link show rc0 >/dev/null 2>&1'; }

step "runc itself, before any policy (hook 1 only): the lab answers"
assert_true "bundle 'open' built" bundle open -
expect_exit 0 run open
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "open: $LAN answers"
assert_contains "$OUT" "REACH $WAN" "open: $WAN answers (the forbidden host is really there)"
assert_true "open: no container left" no_container_left

step "createRuntime: veth hook, then nsegress hook --allow $LANNET"
assert_true "bundle 'args' built" bundle args --allow "$LANNET"
expect_exit 0 run args
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "first action: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: .*(not permitted|nreachable|No route to host)" "first action: $WAN refused, locally"
assert_match "$OUT" "^REFUSED $GW_IP: " "first action: the gateway $GW_IP refused"
assert_true "args: no container left after it exited" no_container_left
assert_true "args: its veth went with its namespace" no_veth_left

step "policy from annotations (nsegress hook without arguments)"
assert_true "bundle 'annot' built" bundle annot
runc_set "$BUNDLES/annot" '.annotations = {"io.nsegress.allow": $a, "io.nsegress.probe-reach": $r, "io.nsegress.probe-block": $b}' \
	--arg a "$LANNET,2001:db8:1::/64" --arg r "$LAN" --arg b "$WAN"
expect_exit 0 run annot
assert_contains "$OUT" "REACH $LAN" "annotations: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: " "annotations: $WAN refused"

step "no policy at all: the hook does nothing and succeeds"
assert_true "bundle 'nopolicy' built" bundle nopolicy
expect_exit 0 run nopolicy
assert_contains "$OUT" "REACH $WAN" "no policy: $WAN answers (hook left the namespace alone)"

step "an invalid policy: runc run fails, nothing is left"
assert_true "bundle 'invalid' built" bundle invalid --allow 300.1.1.1
runc_set "$BUNDLES/invalid" '.process.args = ["sh", "-c", "echo CONTAINER-RAN"]'
expect_exit 1 run invalid
assert_not_contains "$OUT" "CONTAINER-RAN" "the container's process never ran"
assert_match "$ERR" 'nsegress.*300\.1\.1\.1' "runc reports nsegress's one-line error"
assert_true "invalid: runc list is empty" no_container_left
assert_true "invalid: no process left in the container's cgroup" no_process_left
assert_true "invalid: no veth left in gw" no_veth_left

step "a probe that does not hold: runc run fails (fail closed)"
assert_true "bundle 'probe' built" bundle probe --allow "$LANNET" --probe-reach "$WAN"
runc_set "$BUNDLES/probe" '.process.args = ["sh", "-c", "echo CONTAINER-RAN"]'
expect_exit 1 run probe
assert_not_contains "$OUT" "CONTAINER-RAN" "the container's process never ran"
assert_true "probe: runc list is empty" no_container_left
assert_true "probe: no process left" no_process_left

step "teardown: nothing left behind, root namespace untouched"
engines_down "$P"
assert_eq "" "$(engines_leftovers "$P")" "engines_down left nothing"
engines_root_snapshot >"$TMPD/root.after"
assert_same "$TMPD/root.before" "$TMPD/root.after" "root namespace links and nft tables unchanged"
echo "# elapsed: ${SECONDS}s"

finish
