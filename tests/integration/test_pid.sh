#!/usr/bin/env bash
# --pid targets the network namespace of a running process (pidfd, no PID-reuse race): restrict,
# status, probe and release by pid act on ctr and nothing else; a dead pid is an error.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

bg_in_ctr sleep 1000
spid=$!
on_exit "kill $spid 2>/dev/null"
if [[ $(stat -L -c %i "/proc/$spid/ns/net") != "$(stat -L -c %i "$CTR_NS")" ]]; then
	fail "the sleep ($spid) does not run in ctr; stopping before pointing nsegress at it"
	finish
fi
pass "the sleep ($spid) runs in ctr"

section "the harness's own guard (a test bug must never point nsegress outside the lab)"
assert_false "guard refuses --pid of the test runner (root namespace)" _guard_target --pid $$
assert_false "guard refuses --pid 1" _guard_target restrict --pid 1
assert_false "guard refuses --netns of the runner's namespace" _guard_target --netns "/proc/$$/ns/net"
assert_true "guard passes --pid of the sleep in ctr" _guard_target --pid "$spid"
assert_true "guard passes --netns of ctr" _guard_target --netns "$CTR_NS"

section "restrict --pid"
expect_exit 0 nsg restrict --pid "$spid" --allow 192.168.1.0/24 --probe-reach 192.168.1.10 --probe-block 198.51.100.10 --json
assert_eq "$spid" "$(jq -r '.target.pid // empty' <<<"$OUT")" "--json names the pid"
assert_contains "$(nft_table)" "192.168.1.0/24" "ctr got the policy"
assert_true "ping 192.168.1.10 from ctr answers" ping_ok 192.168.1.10
assert_false "ping 198.51.100.10 from ctr refused" ping_ok 198.51.100.10
for other in gw lan wan; do
	assert_eq "" "$(ip netns exec "${P}_$other" nft list ruleset)" "$other: untouched (no ruleset)"
done

section "status, probe and release --pid"
assert_eq "true" "$(nsg status --pid "$spid" --json | jq -r .restricted)" "status --pid: restricted"
assert_eq "$(stat -L -c %i "$CTR_NS")" "$(nsg status --pid "$spid" --json | jq -r .target.netns_inode)" \
	"status --pid: the netns inode is ctr's"
expect_exit 3 nsg probe --pid "$spid" --target 198.51.100.10 --expect reach
expect_exit 0 nsg probe --pid "$spid" --target 198.51.100.10 --expect block
expect_exit 0 nsg release --pid "$spid"
assert_eq "" "$(nft_table)" "release --pid removed the table"
assert_true "ping 198.51.100.10 answers after release" ping_ok 198.51.100.10

section "a pid whose process exited"
kill "$spid"
wait "$spid" 2>/dev/null
expect_exit 2 nsg restrict --pid "$spid" --allow 192.168.1.0/24
assert_contains "$ERR" "$spid" "the error names the pid"
expect_exit 2 nsg status --pid "$spid"
expect_exit 2 nsg release --pid "$spid"
assert_eq "" "$(nft_table)" "ctr still has no policy"

finish
