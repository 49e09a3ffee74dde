#!/usr/bin/env bash
# nsegress refuses to restrict the network namespace it runs in, and PID 1's (the host's).
# Safety: both are staged so that a broken refusal would only hit a sealed test namespace:
#   - "own namespace": nsegress runs *inside* ctr and is pointed at ctr;
#   - "PID 1": a new PID namespace whose PID 1 sits in a new, empty network namespace, with
#     nsegress in yet another new network namespace.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

A=(--allow 192.168.1.0/24)
snapshot >"$TMPD/baseline"

check_unchanged() {
	snapshot >"$TMPD/now"
	assert_same "$TMPD/baseline" "$TMPD/now" "$1: ctr unchanged"
	cmp -s "$TMPD/baseline" "$TMPD/now" || in_ctr "$NSEGRESS" release --netns "$CTR_NS" >/dev/null 2>&1
}

section "own namespace, by path /proc/self/ns/net"
expect_exit 2 in_ctr "$NSEGRESS" restrict --netns /proc/self/ns/net "${A[@]}"
assert_eq "1" "$(grep -c . <<<"$ERR")" "one-line error: $ERR"
assert_match "$ERR" 'itself|own' "the error says it is nsegress's own namespace"
check_unchanged "/proc/self/ns/net"

section "own namespace, by its /run/netns name"
expect_exit 2 in_ctr "$NSEGRESS" restrict --netns "$CTR_NS" "${A[@]}"
assert_match "$ERR" 'itself|own' "the error says it is nsegress's own namespace"
check_unchanged "$CTR_NS from inside"

section "own namespace, by pid (the shell that execs nsegress)"
expect_exit 2 in_ctr sh -c 'exec "$0" restrict --pid $$ --allow 192.168.1.0/24' "$NSEGRESS"
assert_match "$ERR" 'itself|own' "the error says it is nsegress's own namespace"
check_unchanged "--pid \$\$"

section "own namespace with --json: the refusal is reported in the document"
expect_exit 2 in_ctr "$NSEGRESS" restrict --netns /proc/self/ns/net "${A[@]}" --json
assert_eq "false" "$(jq -r .ok <<<"$OUT")" "--json: ok is false"
assert_eq "2" "$(jq -r .exit_code <<<"$OUT")" "--json: exit_code is 2"
check_unchanged "--json"

section "PID 1's namespace (in a sealed PID + network namespace)"
# Inside: PID 1 is this bash, in a new empty netns; each nsegress runs in another new netns, so
# only the PID-1 check (not the own-namespace one) can refuse it.
# shellcheck disable=SC2016
out=$(unshare --pid --fork --mount-proc --net bash -c '
	n=$1; shift
	echo "pid=$$"
	unshare --net "$n" restrict --pid 1 "$@" 2>&1; echo "rc_pid=$?"
	unshare --net "$n" restrict --netns /proc/1/ns/net "$@" 2>&1; echo "rc_path=$?"
	echo "ruleset_bytes=$(nft list ruleset | wc -c)"
	echo "extra_rules=$(ip rule | grep -Evc "^(0|32766|32767):")"
' pid1test "$NSEGRESS" "${A[@]}" --no-probe)
echo "$out" | sed 's/^/#   /'
assert_contains "$out" "pid=1" "the staged shell is PID 1 of its PID namespace"
assert_contains "$out" "rc_pid=2" "--pid 1: exit 2"
assert_contains "$out" "rc_path=2" "--netns /proc/1/ns/net: exit 2"
assert_match "$out" '[Pp][Ii][Dd] 1' "the error names PID 1"
assert_contains "$out" "ruleset_bytes=0" "PID 1's namespace: no nft ruleset was installed"
assert_contains "$out" "extra_rules=0" "PID 1's namespace: no ip rules were added"

section "an ancestor's namespace (nsegress started from ctr, entered into gw, pointed at ctr)"
# The shell in ctr is nsegress's parent: its namespace is the operator's session, even though
# nsegress itself runs elsewhere. ctr is a lab namespace, so a broken refusal stays in the lab.
# shellcheck disable=SC2016
# ("; exit $?" keeps bash alive as the parent: a lone command would be exec'd in its place.)
expect_exit 2 in_ctr bash -c 'nsenter --net="$1" "$2" restrict --netns "$3" --allow 192.168.1.0/24 --no-probe; exit $?' \
	anc "/run/netns/${P}_gw" "$NSEGRESS" "$CTR_NS"
assert_match "$ERR" 'ancestor' "the error names the ancestor process"
check_unchanged "ancestor"

section "the machine's initial namespace, from inside a lab namespace (dry run only)"
# The test shell lives in the machine's namespace. --dry-run changes nothing even if the
# refusal were broken; the refusal happens before anything else.
expect_exit 2 ip netns exec "${P}_gw" "$NSEGRESS" restrict --pid $$ "${A[@]}" --dry-run
assert_match "$ERR" 'initial network namespace' "--pid of a host process: refused as the initial namespace"
expect_exit 2 ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns /proc/$$/ns/net "${A[@]}" --dry-run
assert_match "$ERR" 'initial network namespace' "--netns of a host process: refused as the initial namespace"

finish
