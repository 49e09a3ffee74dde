#!/usr/bin/env bash
# Faults: the target process exits mid-operation; the namespace is deleted mid-operation; the
# kernel refuses the batch; the route set fails after the policy was committed; nsegress is
# killed with SIGKILL at every step of restrict and release. Each ends in a clear error and no
# half-applied state, or in the documented fail-closed state, and a rerun converges.
#
# The steps are reached with nsegress_testhooks, a test-only build of nsegress that raises
# SIGSTOP at a named step (NSEGRESS_TEST_PAUSE_AT) or injects an invalid set element
# (NSEGRESS_TEST_BAD_ELEMENT); tests/CMakeLists.txt passes its path as NSEGRESS_TESTHOOKS. The
# installed binary ignores those variables (checked in test_concurrency.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -z ${NSEGRESS_TESTHOOKS:-} || ! -x ${NSEGRESS_TESTHOOKS:-} ]]; then
	echo "FAIL: NSEGRESS_TESTHOOKS does not name the nsegress_testhooks binary (configure with -DNSEGRESS_TEST_HOOKS=ON)"
	exit 1
fi
setup_lab

# The namespace under test: a veth pair of its own, addresses and default routes of both
# families (no traffic is needed here, only kernel state).
F=${P}_f
FNS=/run/netns/$F
make_f() {
	lab_extra_ns "$P" f &&
		ip -n "$F" link add d0 type veth peer name d1 &&
		ip -n "$F" addr add 10.66.0.2/24 dev d0 &&
		ip -n "$F" addr add fd66::2/64 dev d0 nodad &&
		ip -n "$F" link set d1 up &&
		ip -n "$F" link set d0 up &&
		ip -n "$F" route add default via 10.66.0.1 &&
		ip -n "$F" -6 route add default via fd66::1
}
assert_true "a namespace with a veth pair and default routes" make_f

snap_f() {
	{
		echo "== rules"
		ip -n "$F" -4 rule show
		ip -n "$F" -6 rule show
		echo "== routes"
		# sorted: a link going down and up again reorders equal routes
		ip -n "$F" -4 route show table all | grep -v '^local\|^broadcast' | sort
		ip -n "$F" -6 route show table all | grep -v '^local\|^multicast\|^anycast' | sort
		echo "== nft"
		ip netns exec "$F" nft -s list ruleset
	} 2>&1
}

A=(--allow 10.66.0.0/16 --allow fd66::/16 --allow 192.0.2.0/24)
B=(--allow 10.66.0.128/25 --allow 198.51.100.0/24 --allow fd66::/64)

# th ENV=VALUE... -- ARGS...: the test-hooks binary, run like nsg (from gw, target guarded).
th() {
	local envs=()
	while [[ $1 != -- ]]; do
		envs+=("$1")
		shift
	done
	shift
	local why
	if ! why=$(_guard_target "$@"); then
		fail "$why: nsegress_testhooks $*"
		return 99
	fi
	ip netns exec "${P}_gw" env "${envs[@]}" "$NSEGRESS_TESTHOOKS" "$@"
}

# paused STEP ARGS...: start the test-hooks binary stopping at STEP, in the background; sets
# TH_PID (nsegress itself, read from its own announcement), TH_JOB (the job to wait for) and
# TH_ERR (its stderr). Fails when it does not stop there.
paused() {
	local step=$1
	shift
	: >"$TMPD/th.err"
	TH_ERR=$TMPD/th.err TH_PID=''
	th NSEGRESS_TEST_PAUSE_AT="$step" -- "$@" >"$TMPD/th.out" 2>"$TMPD/th.err" &
	TH_JOB=$!
	local i
	for ((i = 0; i < 250; i++)); do
		TH_PID=$(sed -n "s/^nsegress-test: stopping at step '$step' (pid \([0-9]*\))$/\1/p" "$TMPD/th.err")
		[[ -n $TH_PID && $(lab_proc_state "$TH_PID") == T ]] && return 0
		kill -0 "$TH_JOB" 2>/dev/null || break
		sleep 0.02
	done
	fail "nsegress_testhooks did not stop at step '$step': $(head -3 "$TMPD/th.err")"
	return 1
}
# resume: SIGCONT and wait; RC, OUT, ERR as expect_exit sets them.
resume() {
	kill -CONT "$TH_PID"
	wait "$TH_JOB"
	RC=$?
	OUT=$(<"$TMPD/th.out")
	ERR=$(grep -v '^nsegress-test: ' "$TMPD/th.err")
}
# start_victim: a process in F, returned once it really is in F; fails if it is not.
start_victim() {
	bg_in_ns "$F" sleep 600
	victim=$!
	[[ $(stat -L -c %i "/proc/$victim/ns/net" 2>/dev/null) == "$(stat -L -c %i "$FNS")" ]]
}
kill9() {
	kill -KILL "$TH_PID"
	wait "$TH_JOB" 2>/dev/null
}

pristine=$(snap_f)
expect_exit 0 nsg restrict --netns "$FNS" "${A[@]}" --no-probe
ref_a=$(snap_f)
expect_exit 0 nsg restrict --netns "$FNS" "${B[@]}" --no-probe
ref_b=$(snap_f)
expect_exit 0 nsg release --netns "$FNS"
assert_eq "$pristine" "$(snap_f)" "release restores the namespace exactly (reference states taken)"

section "the target process exits mid-operation"
start_victim
if paused inspected restrict --pid "$victim" "${A[@]}" --no-probe; then
	kill "$victim"
	wait "$victim" 2>/dev/null
	resume
	assert_eq 2 "$RC" "exit 2 when the process is gone before the commit"
	assert_contains "$ERR" "process $victim has exited" "the error says the process has exited"
	assert_contains "$ERR" "nothing was changed" "and that nothing was changed"
	assert_eq "$pristine" "$(snap_f)" "nothing was changed in its namespace"
fi
start_victim
if paused committed restrict --pid "$victim" "${A[@]}" --no-probe; then
	kill "$victim"
	wait "$victim" 2>/dev/null
	resume
	assert_eq 0 "$RC" "after the point of no return the operation completes (exit 0)"
	assert_eq "$ref_a" "$(snap_f)" "and leaves the whole policy and route set, nothing half-applied"
fi
expect_exit 0 nsg release --netns "$FNS"

section "the namespace is deleted mid-operation"
lab_extra_ns "$P" g && ip -n "${P}_g" link add d0 type veth peer name d1 && ip -n "${P}_g" link set d0 up
if paused inspected restrict --netns "/run/netns/${P}_g" "${A[@]}" --no-probe; then
	ip netns del "${P}_g"
	resume
	assert_eq 2 "$RC" "exit 2 when the namespace was deleted before the commit"
	assert_contains "$ERR" "'/run/netns/${P}_g' no longer exists" "the error names the deleted namespace"
	assert_contains "$ERR" "nothing was changed" "and says nothing was changed"
fi
ip netns del "${P}_g" 2>/dev/null

section "the kernel refuses the batch: nothing changes"
expect_exit 2 th NSEGRESS_TEST_BAD_ELEMENT=1 -- restrict --netns "$FNS" "${A[@]}" --no-probe
assert_contains "$ERR" "kernel refused test-injected element (3-byte key) of set allow4: Invalid argument" \
	"the error names the refused message and the kernel's reason"
assert_contains "$ERR" "nothing was changed" "and says nothing was changed"
assert_eq "$pristine" "$(snap_f)" "an unrestricted namespace stays unrestricted (no table, no route set)"
expect_exit 0 nsg restrict --netns "$FNS" "${B[@]}" --no-probe
expect_exit 2 th NSEGRESS_TEST_BAD_ELEMENT=1 -- restrict --netns "$FNS" "${A[@]}" --netdev-egress --no-probe
assert_eq "$ref_b" "$(snap_f)" "a restricted namespace keeps its previous policy and route set exactly (no netdev table either)"

section "the route set fails after the policy was committed: fail closed"
expect_exit 0 nsg release --netns "$FNS"
if paused committed restrict --netns "$FNS" "${A[@]}" --no-probe --json; then
	# Someone adds the very rule nsegress is about to add (its NLM_F_EXCL add then fails with
	# EEXIST): a real kernel refusal after the commit, which leaves main's routes alone.
	ip -n "$F" -4 rule add priority 100 lookup 28275 proto 245
	resume
	assert_eq 2 "$RC" "exit 2"
	assert_contains "$ERR" "route set: add rule" "the error names the rule the kernel refused"
	assert_contains "$ERR" "the nftables policy is installed and stays (fail closed)" "the message says the policy stays"
	assert_eq true "$(jq -r .policy.committed <<<"$OUT")" "--json: policy.committed"
	assert_eq false "$(jq -r .route_set.installed <<<"$OUT")" "--json: route_set.installed is false"
	t=$(ip netns exec "$F" nft list table inet nsegress)
	assert_contains "$t" "192.0.2.0/24" "the new policy is installed"
	assert_contains "$(nsg status --netns "$FNS" --json | jq -r .policy.complete)" "true" "and complete"
fi
expect_exit 0 nsg restrict --netns "$FNS" "${A[@]}" --no-probe
assert_eq "$ref_a" "$(snap_f)" "a rerun converges to the full policy and route set (no duplicated rule)"

section "SIGKILL at every step of restrict (from policy B to policy A), then a rerun"
for step in entered inspected committed conntrack route-set-obsolete-rules route-set-routes route-set-stale route-set-rules probe; do
	nsg restrict --netns "$FNS" "${B[@]}" --no-probe >/dev/null 2>&1
	if paused "$step" restrict --netns "$FNS" "${A[@]}" --no-probe; then
		kill9
		case $step in
		entered | inspected) assert_eq "$ref_b" "$(snap_f)" "killed at '$step': nothing changed yet" ;;
		esac
		expect_exit 0 nsg restrict --netns "$FNS" "${A[@]}" --no-probe
		assert_eq "$ref_a" "$(snap_f)" "killed at '$step': a rerun of restrict converges to the full policy A"
	fi
done

section "SIGKILL at every step of a first restrict (the route set streamed to the kernel), then a rerun"
for step in committed conntrack route-set-routes route-set-stale route-set-obsolete-rules route-set-rules probe; do
	nsg release --netns "$FNS" >/dev/null 2>&1
	if paused "$step" restrict --netns "$FNS" "${A[@]}" --no-probe; then
		kill9
		expect_exit 0 nsg restrict --netns "$FNS" "${A[@]}" --no-probe
		assert_eq "$ref_a" "$(snap_f)" "killed at '$step': a rerun of restrict converges to the full policy A"
	fi
done

section "SIGKILL at every step of release, then a rerun"
for step in release-entered release-committed release-rules; do
	nsg restrict --netns "$FNS" "${A[@]}" --netdev-egress --no-probe >/dev/null 2>&1
	if paused "$step" release --netns "$FNS"; then
		kill9
		expect_exit 0 nsg release --netns "$FNS"
		assert_eq "$pristine" "$(snap_f)" "killed at '$step': a rerun of release leaves the namespace clean"
	fi
done

section "a route the kernel refuses in a first restrict: named, fail closed, and a rerun converges"
expect_exit 0 nsg release --netns "$FNS"
# The route set's routes have no nexthop: nothing done to the namespace makes the kernel refuse
# them. The test build sets a host bit in the first throw route it streams, which the kernel
# refuses (EINVAL): a real refusal in the streamed route set.
expect_exit 2 th NSEGRESS_TEST_BAD_ROUTE=1 -- restrict --netns "$FNS" "${A[@]}" --no-probe --json
assert_match "$ERR" "route set: add route throw [0-9a-f.:/]+ table 28275" "the error names a route the kernel refused"
assert_contains "$ERR" "the nftables policy is installed and stays (fail closed)" "the message says the policy stays"
assert_eq false "$(jq -r .route_set.installed <<<"$OUT")" "--json: route_set.installed is false"
assert_eq "" "$(ip -n "$F" rule show | grep 'proto 245')" "no route-set rule was added: the table never went live"
assert_contains "$(ip netns exec "$F" nft list table inet nsegress)" "192.0.2.0/24" "the policy is installed"
expect_exit 0 nsg restrict --netns "$FNS" "${A[@]}" --no-probe
assert_eq "$ref_a" "$(snap_f)" "a rerun converges to the full policy and route set"
expect_exit 0 nsg release --netns "$FNS"

finish
