#!/usr/bin/env bash
# Concurrency: writers of one namespace take turns (a per-netns flock under /run/nsegress, taken
# by restrict and release and therefore by the OCI hook and CNI ADD/DEL too) and leave exactly
# one complete policy with no duplicated ip rules; 50 namespaces restricted in parallel all
# succeed; concurrent nft writers of other tables neither break nsegress nor get clobbered, and
# the ruleset generation id (NFNL_BATCH_GENID, retried on ERESTART) is really checked.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

A4=192.168.1.0/24 A6=2001:db8:1::/64
B4=192.168.1.10 B6=2001:db8:1::10 B4b=198.51.100.0/25

# What a finished restrict leaves behind, as independent tools see it.
routeset_state() {
	{
		ip -n "${P}_ctr" -4 route show table 28275
		ip -n "${P}_ctr" -6 route show table 28275
		extra_rules 4
		extra_rules 6
	} 2>&1
}

section "a writer waits for the namespace's lock"
mkdir -p /run/nsegress
read -r dev ino < <(stat -L -c '%d %i' "$CTR_NS")
lock=/run/nsegress/netns-$dev-$ino.lock
/usr/bin/python3 -c 'import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").write("locked\n")
time.sleep(60)' "$lock" "$TMPD/locked" &
holder=$!
on_exit "kill $holder 2>/dev/null"
assert_true "the test holds $lock" wait_for_text "$TMPD/locked" locked 5
nsg restrict --netns "$CTR_NS" --allow "$A4" --no-probe >"$TMPD/waiter.out" 2>&1 &
waiter=$!
sleep 0.5
assert_true "restrict is still waiting for the lock" kill -0 "$waiter"
assert_eq "" "$(nft_table)" "nothing was installed while another writer held the lock"
kill "$holder"
wait "$holder" 2>/dev/null
wait "$waiter"
assert_eq 0 $? "restrict completes once the lock is free"
assert_contains "$(nft_table)" "$A4" "and installs its policy"
expect_exit 0 nsg release --netns "$CTR_NS"
assert_false "the lock file is removed by the writer that held it last" test -e "$lock"

section "reference states of two allow-lists, applied one after the other"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$A4" --allow "$A6" --no-probe
ref_a=$(routeset_state)
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$B4" --allow "$B4b" --allow "$B6" --no-probe
ref_b=$(routeset_state)
expect_exit 0 nsg release --netns "$CTR_NS"
pristine=$(snapshot)

section "parallel writers on one namespace: restrict, release, the OCI hook, CNI ADD"
bg_in_ctr sleep 600
ctr_pid=$!
cni_conf() {
	printf '{"cniVersion":"1.0.0","name":"t","type":"nsegress","allow":["%s","%s"],"routeSet":true,' "$A4" "$A6"
	printf '"prevResult":{"cniVersion":"1.0.0","interfaces":[],"ips":[]}}\n'
}
hook_state() {
	printf '{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":%d,"bundle":"/nonexistent",' "$ctr_pid"
	printf '"annotations":{"io.nsegress.allow":"%s,%s,%s"}}\n' "$B4" "$B4b" "$B6"
}
for round in 1 2 3; do
	pids=()
	for i in 1 2 3; do
		nsg restrict --netns "$CTR_NS" --allow "$A4" --allow "$A6" --no-probe >"$TMPD/par.$round.a$i" 2>&1 &
		pids+=($!)
		nsg restrict --netns "$CTR_NS" --allow "$B4" --allow "$B4b" --allow "$B6" --no-probe >"$TMPD/par.$round.b$i" 2>&1 &
		pids+=($!)
	done
	hook_state | ip netns exec "${P}_gw" "$NSEGRESS" hook >"$TMPD/par.$round.hook" 2>&1 &
	pids+=($!)
	cni_conf | ip netns exec "${P}_gw" env CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS="$CTR_NS" \
		CNI_IFNAME=eth0 CNI_PATH=/nonexistent "$NSEGRESS" >"$TMPD/par.$round.cni" 2>&1 &
	pids+=($!)
	wait_all "${pids[@]}"
	assert_eq 0 "$WAIT_FAILED" "round $round: all ${#pids[@]} parallel writers succeed"
	[[ $WAIT_FAILED -eq 0 ]] || cat "$TMPD"/par."$round".* | head -20 | sed 's/^/#   /'
	tables=$(in_ctr nft list tables | grep -c 'table inet nsegress')
	assert_eq 1 "$tables" "round $round: exactly one table inet nsegress"
	assert_eq true "$(nsg status --netns "$CTR_NS" --json | jq -r .policy.complete)" "round $round: the policy is complete"
	v4=$(nft_elements ipv4_addr | tr '\n' ' ')
	state=$(routeset_state)
	case $v4 in
	"$A4 ")
		assert_eq "$ref_a" "$state" "round $round: the route set is exactly the one of the last writer (list A)"
		;;
	*)
		assert_eq "$(printf '%s ' "$B4b" "$B4" | tr ' ' '\n' | sort | tr '\n' ' ')" "$(tr ' ' '\n' <<<"$v4" | grep . | sort | tr '\n' ' ')" \
			"round $round: the allow-list is one writer's whole list (list B)"
		assert_eq "$ref_b" "$state" "round $round: the route set is exactly the one of the last writer (list B)"
		;;
	esac
	for f in 4 6; do
		r=$(extra_rules $f)
		assert_eq 1 "$(grep -c . <<<"$r")" "round $round: one nsegress ip -$f rule, no duplicate"
	done
done
pids=()
for i in 1 2 3 4; do
	nsg release --netns "$CTR_NS" >/dev/null 2>&1 &
	pids+=($!)
done
wait_all "${pids[@]}"
assert_eq 0 "$WAIT_FAILED" "four parallel releases all succeed"
assert_eq "$pristine" "$(snapshot)" "and leave the namespace exactly as it was"
assert_false "no lock file left behind by $((3 * 8 + 4)) writers (one per namespace would accumulate)" test -e "$lock"
kill "$ctr_pid" 2>/dev/null

section "50 namespaces restricted in parallel"
N=50
made=0
for i in $(seq 1 $N); do
	ns=${P}_n$i
	if lab_extra_ns "$P" "n$i" &&
		ip -n "$ns" link add d0 type veth peer name d1 &&
		ip -n "$ns" addr add "10.77.$i.2/24" dev d0 &&
		ip -n "$ns" addr add "fd77:$i::2/64" dev d0 nodad &&
		ip -n "$ns" link set d1 up &&
		ip -n "$ns" link set d0 up &&
		ip -n "$ns" route add default via "10.77.$i.1" &&
		ip -n "$ns" -6 route add default via "fd77:$i::1"; then
		made=$((made + 1))
	fi
done
assert_eq $N "$made" "$N namespaces, each with a veth pair of its own and default routes"
pids=()
for i in $(seq 1 $N); do
	nsg restrict --netns "/run/netns/${P}_n$i" --allow 10.77.0.0/16 --allow fd77::/16 --allow 192.0.2.$i \
		--no-probe >"$TMPD/many.$i" 2>&1 &
	pids+=($!)
done
wait_all "${pids[@]}"
assert_eq 0 "$WAIT_FAILED" "all $N parallel restricts exit 0"
good=0
for i in $(seq 1 $N); do
	ns=${P}_n$i
	t=$(ip netns exec "$ns" nft list table inet nsegress 2>/dev/null)
	r4=$(ip -n "$ns" -4 rule show | grep -c 'proto 245')
	r6=$(ip -n "$ns" -6 rule show | grep -c 'proto 245')
	rt=$(ip -n "$ns" -4 route show table 28275)
	if [[ $t == *"192.0.2.$i"* && $t == *"10.77.0.0/16"* && $r4 == 1 && $r6 == 1 && $rt == *"10.77.0.0/16"* ]]; then
		good=$((good + 1))
	else
		echo "# $ns: rules v4=$r4 v6=$r6, table 28275: $rt"
	fi
done
assert_eq $N "$good" "each namespace holds its own complete policy and route set"
pids=()
for i in $(seq 1 $N); do
	nsg release --netns "/run/netns/${P}_n$i" >/dev/null 2>&1 &
	pids+=($!)
done
wait_all "${pids[@]}"
assert_eq 0 "$WAIT_FAILED" "all $N parallel releases exit 0"
left=0
for i in $(seq 1 $N); do
	ns=${P}_n$i
	[[ -z $(ip netns exec "$ns" nft list ruleset) && -z $(ip -n "$ns" rule show | grep 'proto 245') ]] || left=$((left + 1))
	ip netns del "$ns" 2>/dev/null
done
assert_eq 0 "$left" "and every namespace is clean again"

section "a concurrent nft writer of other tables"
in_ctr nft -f - <<'EOF'
table inet keep {
	chain out {
		type filter hook output priority 10; policy accept;
		ip daddr 203.0.113.7 counter
	}
}
EOF
keep_before=$(in_ctr nft -s list table inet keep)
bg_in_ctr bash -c 'n=0; f=0
	while [[ ! -e $1 ]]; do
		nft add table inet other || f=$((f + 1))
		nft delete table inet other || f=$((f + 1))
		n=$((n + 1))
	done
	echo "$n $f" >"$2"' loop "$TMPD/stop" "$TMPD/loop.result"
loop=$!
ok=0 attempts=0 status_ok=0
for i in $(seq 1 20); do
	list=$A4
	((i % 2)) && list=$B4 # the last one (20) is A4
	# restrict reads what it replaces, status reads the whole table: several dumps each, which a
	# commit of the loop can interrupt (NLM_F_DUMP_INTR) or come in between. Both read again.
	if out=$(nsg restrict --netns "$CTR_NS" --allow "$list" --allow "$A6" --no-probe --json); then
		ok=$((ok + 1))
		attempts=$((attempts + $(jq -r .policy.commit_attempts <<<"$out")))
	else
		printf '%s\n' "$out" | jq -r .error | sed 's/^/#   /'
	fi
	for _ in 1 2 3 4 5; do
		if out=$(nsg status --netns "$CTR_NS" --json) && [[ $(jq -r .policy.complete <<<"$out") == true ]]; then
			status_ok=$((status_ok + 1))
		else
			printf '%s\n' "$out" | jq -r .error | sed 's/^/#   /'
		fi
	done
done
touch "$TMPD/stop"
wait "$loop"
read -r iterations loop_failures <"$TMPD/loop.result"
assert_eq 20 "$ok" "20 restricts during the nft loop all succeed ($attempts commit attempts in all)"
assert_eq 100 "$status_ok" "100 status reads during the nft loop all succeed and see a complete policy"
assert_true "the nft loop ran meanwhile ($iterations iterations)" test "${iterations:-0}" -gt 0
assert_eq 0 "${loop_failures:-x}" "no nft command of the loop failed"
assert_eq "$keep_before" "$(in_ctr nft -s list table inet keep)" "table inet keep is untouched"
assert_eq 1 "$(in_ctr nft list tables | grep -c 'table inet nsegress')" "one table inet nsegress"
assert_eq "$A4" "$(nft_elements ipv4_addr | tr -d '\n')" "holding the last allow-list"
in_ctr nft delete table inet other 2>/dev/null

section "the generation id is checked by the kernel, and a stale one is retried (test build)"
if [[ -z ${NSEGRESS_TESTHOOKS:-} || ! -x ${NSEGRESS_TESTHOOKS:-} ]]; then
	fail "NSEGRESS_TESTHOOKS is not set to the nsegress_testhooks binary (build with -DNSEGRESS_TEST_HOOKS=ON)"
else
	th() { ip netns exec "${P}_gw" env "$@"; }
	expect_exit 0 th NSEGRESS_TEST_STALE_GENID=3 "$NSEGRESS_TESTHOOKS" restrict --netns "$CTR_NS" --allow "$A4" --no-probe --json
	assert_eq 4 "$(jq -r .policy.commit_attempts <<<"$OUT")" "three stale generations refused (ERESTART), the fourth attempt commits"
	assert_eq "$A4" "$(nft_elements ipv4_addr | tr -d '\n')" "and the policy is the new one"
	before=$(snapshot)
	expect_exit 2 th NSEGRESS_TEST_STALE_GENID=100 "$NSEGRESS_TESTHOOKS" restrict --netns "$CTR_NS" --allow "$B4" --no-probe
	assert_contains "$ERR" "ruleset changed under us 10 times" "a generation that never matches gives up after 10 attempts"
	assert_contains "$ERR" "nothing was changed" "and says that nothing was changed"
	assert_eq "$before" "$(snapshot)" "nothing was changed"
	expect_exit 0 th NSEGRESS_TEST_STALE_GENID=100 "$NSEGRESS" restrict --netns "$CTR_NS" --allow "$B4" --no-probe
	assert_eq "$B4" "$(nft_elements ipv4_addr | tr -d '\n')" "the production binary ignores NSEGRESS_TEST_* variables"

	# A reading of the ruleset that a commit interrupted is read again, a bounded number of times.
	expect_exit 0 th NSEGRESS_TEST_CHANGED_READS=3 "$NSEGRESS_TESTHOOKS" status --netns "$CTR_NS" --json
	assert_eq "true" "$(jq -r .policy.complete <<<"$OUT")" "status reads again after three changed readings"
	expect_exit 0 th NSEGRESS_TEST_CHANGED_READS=3 "$NSEGRESS_TESTHOOKS" restrict --netns "$CTR_NS" --allow "$A4" --no-probe
	assert_eq "$A4" "$(nft_elements ipv4_addr | tr -d '\n')" "restrict reads what it replaces again, and commits"
	expect_exit 2 th NSEGRESS_TEST_CHANGED_READS=100 "$NSEGRESS_TESTHOOKS" status --netns "$CTR_NS"
	assert_contains "$ERR" "changed during each of 10 reads" "a ruleset that never holds still is an error, not a loop"
fi

expect_exit 0 nsg release --netns "$CTR_NS"
finish
