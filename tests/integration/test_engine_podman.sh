#!/usr/bin/env bash
# podman (Debian podman, --runtime runc, CNI bridge) for real: the shipped hooks.d entry
# share/containers/oci/hooks.d/nsegress.json, copied to a private hooks dir with its path pointed
# at the built binary, restricts a container that carries --annotation io.nsegress.allow=... before
# its process runs; without the annotation the hook stays out of the way; an invalid annotation
# makes `podman run` fail with nothing left. podman runs inside the lab's sealed gw namespace with
# a private configuration (testenv/engines.sh: podman_env).
# shellcheck disable=SC2016 # the container's script is single-quoted on purpose
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/engines.sh
source "$REPO/testenv/engines.sh"

engines_test_setup

LAN=$LAB_LAN4 WAN=$LAB_WAN4 LANNET=$LAB_LAN_NET4
SUBNET=$ENGINES_PODMAN_SUBNET
PGW=${SUBNET%.*}.1
SHIPPED=$REPO/share/containers/oci/hooks.d/nsegress.json
HOOKS=$TMPD/hooks.d
PINGS='for t in "$@"; do if out=$(ping -c1 -W1 "$t" 2>&1); then echo "REACH $t"; else echo "REFUSED $t: $(echo "$out" | tail -1)"; fi; done'

pm() { podman_cmd "$P" --hooks-dir "$HOOKS" "$@"; }
# prun ARGS...: podman run --rm the pings (lan, wan, the podman gateway), bounded.
prun() {
	_eng_podman_argv "$P"
	timeout 90 "${_ENG_PODMAN[@]}" --hooks-dir "$HOOKS" run --rm --cgroup-parent "/$(_eng_cgroup "$P")" \
		"$@" "$ENGINE_IMAGE" sh -c "$PINGS" pings "$LAN" "$WAN" "$PGW" </dev/null
}
no_container_left() {
	local ids
	ids=$(pm ps -aq 2>&1)
	[[ -z $ids ]] || { echo "podman ps -a: $ids" >&2; return 1; }
}

step "the shipped hooks.d entry"
assert_true "$SHIPPED exists" test -f "$SHIPPED"
shipped=$(jq -c . "$SHIPPED" 2>&1)
assert_eq "1.0.0" "$(jq -r .version <<<"$shipped" 2>&1)" "schema version 1.0.0"
assert_eq '["createRuntime"]' "$(jq -c .stages <<<"$shipped" 2>&1)" "stage createRuntime"
assert_eq "true" "$(jq '.when.annotations | has("^io\\.nsegress\\.allow$")' <<<"$shipped" 2>&1)" \
	"runs when annotation io.nsegress.allow is set"
assert_eq "hook" "$(jq -r '.hook.args[1]' <<<"$shipped" 2>&1)" "runs 'nsegress hook'"
mkdir -p "$HOOKS"
jq --arg p "$NSEGRESS" '.hook.path = $p' "$SHIPPED" >"$HOOKS/nsegress.json"
assert_eq "$NSEGRESS" "$(jq -r .hook.path "$HOOKS/nsegress.json")" "private copy points at the built binary"

step "podman set up inside the sealed gw namespace"
t0=$SECONDS
if ! podman_env "$P"; then
	fail "podman_env: podman could not be set up in ${P}_gw"
	finish
fi
pass "podman configured and busybox image imported in $((SECONDS - t0))s"
assert_contains "$(pm images --format '{{.Repository}}:{{.Tag}}' 2>&1)" "${ENGINE_IMAGE}" "image present"

step "without the annotation: the hook is not run, the lab answers"
expect_exit 0 prun
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "$LAN answers"
assert_contains "$OUT" "REACH $WAN" "$WAN answers (the forbidden host is really there)"
has_link() { "$@" link show nsgpod0 >/dev/null 2>&1; }
assert_true "the CNI bridge is in ${P}_gw" has_link ip -n "${P}_gw"
assert_false "no CNI bridge in the root namespace (read only: ip link show)" has_link ip

step "--annotation io.nsegress.allow=$LANNET: restricted before the process runs"
expect_exit 0 prun --annotation "io.nsegress.allow=$LANNET"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "first action: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: .*(not permitted|nreachable|No route to host)" "first action: $WAN refused, locally"
assert_match "$OUT" "^REFUSED $PGW: " "first action: the podman gateway $PGW refused"
assert_true "no container left (--rm)" no_container_left

step "probe annotations"
expect_exit 0 prun --annotation "io.nsegress.allow=$LANNET" \
	--annotation "io.nsegress.probe-reach=$LAN" --annotation "io.nsegress.probe-block=$WAN"
assert_match "$OUT" "^REFUSED $WAN: " "probes held; $WAN refused"
expect_exit 126 prun --annotation "io.nsegress.allow=$LANNET" --annotation "io.nsegress.probe-reach=$WAN"
assert_not_contains "$OUT" "REACH" "a probe that does not hold: the container's process never ran"
assert_true "no container left" no_container_left

step "an invalid annotation: podman run fails, nothing left"
expect_exit 126 prun --annotation "io.nsegress.allow=300.1.1.1"
assert_not_contains "$OUT" "REACH" "the container's process never ran"
assert_match "$ERR" 'nsegress.*300\.1\.1\.1' "podman reports nsegress's one-line error"
assert_true "no container left" no_container_left

step "--container with --engine podman"
expect_exit 0 pm run -d --name pv --annotation "io.nsegress.allow=$LANNET" "$ENGINE_IMAGE" sleep 600
expect_exit 0 nse verify --container pv --engine podman --allow "$LANNET" --reach "$LAN" --block "$WAN" --block "$PGW"
printf '%s\n' "$OUT" | sed 's/^/#   /'
expect_exit 0 nse release --container pv --engine podman
pping() { pm exec "$1" ping -c1 -W1 "$2" >/dev/null 2>&1; }
assert_true "pv reaches $WAN after release" pping pv "$WAN"
pv_ns=$(pm inspect -f '{{.NetworkSettings.SandboxKey}}' pv 2>&1)
assert_match "$pv_ns" '^/run/netns/' "pv's namespace is podman's $pv_ns"
expect_exit 0 pm rm -f -t 0 pv
assert_false "podman removed $pv_ns with the container" test -e "$pv_ns"

step "teardown: nothing left behind, root namespace untouched"
engines_down "$P"
assert_eq "" "$(engines_leftovers "$P")" "engines_down left nothing (processes, mounts, state, cgroups)"
engines_root_snapshot >"$TMPD/root.after"
assert_same "$TMPD/root.before" "$TMPD/root.after" "root namespace links and nft tables unchanged"
echo "# elapsed: ${SECONDS}s"

finish
