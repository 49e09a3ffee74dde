#!/usr/bin/env bash
# Incremental re-restrict (issue 17): a re-run with the same list sends no set element and no
# route; a re-run with a few entries changed sends only those; a change somebody else made to the
# sets (or to any other table: the generation moves) or to the route set's table is noticed and
# repaired; a missing or tampered state file only costs the full update.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

ALLOW=$TMPD/allow.txt
{
	echo "192.168.1.0/24"
	echo "2001:db8:1::/64"
	# Never adjacent, so nothing merges: 10.A.B.0/24 with B even.
	for i in $(seq 0 299); do echo "10.$((i / 100)).$((2 * (i % 100))).0/24"; done
} >"$ALLOW"
CHANGED=$TMPD/changed.txt
# Three entries out, three others in.
grep -v -E '^10\.0\.(10|12|14)\.0/24$' "$ALLOW" >"$CHANGED"
printf '10.7.5.0/24\n10.7.7.0/24\n10.7.9.0/24\n' >>"$CHANGED"

ino=$(stat -L -c %i "$CTR_NS")
state_file() { compgen -G "/run/nsegress/netns-*-$ino.sets" | head -1; }
restrict_json() { expect_exit 0 nsg restrict --netns "$CTR_NS" --allow-file "$1" --no-probe --json; }
j() { jq -r "$1" <<<"$OUT"; }
elements4() { nft_elements ipv4_addr | sort; }
routes4() { ip -n "${P}_ctr" -4 route show table 28275 | sed 's/[[:space:]]*$//' | sort; }

section "first restrict: the sets and routes are written whole, a state file is left"
restrict_json "$ALLOW"
assert_eq "new" "$(j .policy.update)" "policy.update: new"
assert_true "set element messages were sent" test "$(j .policy.set_element_messages)" -gt 0
assert_true "a state file beside the lock" test -n "$(state_file)"
assert_eq "301" "$(elements4 | wc -l)" "allow4: 301 elements"
first_elements=$(elements4)
first_routes=$(routes4)

section "the same list again: no set element message, no route"
restrict_json "$ALLOW"
assert_eq "incremental" "$(j .policy.update)" "policy.update: incremental"
assert_eq "0" "$(j .policy.set_element_messages)" "no set element message in the batch"
assert_eq "0" "$(j .route_set.routes_added)" "no route added"
assert_eq "0" "$(j .route_set.routes_deleted)" "no route deleted"
assert_eq "304" "$(j .route_set.route_count)" "the plan still has every route (300 + lan, unreachable: both families)"
assert_eq "$first_elements" "$(elements4)" "allow4 unchanged"
assert_eq "$first_routes" "$(routes4)" "table 28275 unchanged"
assert_true "lan answers" ping_ok "$LAB_LAN4"
assert_false "wan refused" ping_ok "$LAB_WAN4"

section "three entries changed: only those are sent"
restrict_json "$CHANGED"
assert_eq "incremental" "$(j .policy.update)" "policy.update: incremental"
assert_eq "2" "$(j .policy.set_element_messages)" "one delete and one add message"
assert_eq "3" "$(j .route_set.routes_added)" "three routes added"
assert_eq "3" "$(j .route_set.routes_deleted)" "three routes deleted"
el=$(elements4)
assert_not_contains "$el" "10.0.12.0/24" "a removed entry is gone from allow4"
assert_contains "$el" "10.7.7.0/24" "an added entry is in allow4"
assert_eq "301" "$(wc -l <<<"$el")" "allow4: still 301 elements"
rt=$(routes4)
assert_not_contains "$rt" "throw 10.0.12.0/24" "its throw route is gone"
assert_contains "$rt" "throw 10.7.7.0/24 proto 245" "the added entry has a throw route"
# What an independent tool sees equals a fresh restrict of the same list in a fresh table.
expect_exit 0 nsg release --netns "$CTR_NS"
assert_false "release removes the state file" test -n "$(state_file)"
restrict_json "$CHANGED"
assert_eq "new" "$(j .policy.update)" "after release: a new table"
assert_eq "$el" "$(elements4)" "the incremental result equals a fresh restrict of the list"
assert_eq "$rt" "$(routes4)" "and so does the route set"

section "an element deleted and one added by hand are noticed (the generation moved) and repaired"
in_ctr nft delete element inet nsegress allow4 '{ 10.0.20.0/24 }'
in_ctr nft add element inet nsegress allow4 '{ 203.0.113.0/24 }'
assert_not_contains "$(elements4)" "10.0.20.0/24" "(the hand edit took effect)"
restrict_json "$CHANGED"
assert_eq "full" "$(j .policy.update)" "policy.update: full (the stamp's generation is not the kernel's)"
assert_eq "$el" "$(elements4)" "allow4 repaired: the deleted element is back, the added one gone"
restrict_json "$CHANGED"
assert_eq "incremental" "$(j .policy.update)" "the next run is incremental again"

section "a commit to another table moves the generation too: full update, still correct"
in_ctr nft add table inet othertool
restrict_json "$CHANGED"
assert_eq "full" "$(j .policy.update)" "policy.update: full"
assert_eq "$el" "$(elements4)" "allow4 as it should be"
in_ctr nft delete table inet othertool

section "a missing or tampered state file costs the full update, never a wrong one"
restrict_json "$CHANGED"  # (the table deleted above moved the generation once more)
restrict_json "$CHANGED"
assert_eq "incremental" "$(j .policy.update)" "(incremental with its state file)"
rm -f "$(state_file)"
restrict_json "$ALLOW"
assert_eq "full" "$(j .policy.update)" "no state file: full"
assert_eq "$first_elements" "$(elements4)" "allow4 is the first list again"
f=$(state_file)
# A state file of another list (the changed one), under this namespace's name: its digest is
# not the stamp's.
nsg restrict --netns "$CTR_NS" --allow-file "$CHANGED" --no-probe >/dev/null 2>&1
cp "$(state_file)" "$TMPD/changed.sets"
nsg restrict --netns "$CTR_NS" --allow-file "$ALLOW" --no-probe >/dev/null 2>&1
cp "$TMPD/changed.sets" "$f"
restrict_json "$CHANGED"
assert_eq "full" "$(j .policy.update)" "a state file that is not the stamp's: full"
assert_eq "$el" "$(elements4)" "allow4 is the changed list"
printf 'garbage' >"$(state_file)"
restrict_json "$ALLOW"
assert_eq "full" "$(j .policy.update)" "a garbled state file: full"
assert_eq "$first_elements" "$(elements4)" "allow4 is the first list"

section "routes changed by hand in table 28275 are noticed and repaired"
restrict_json "$ALLOW"
ip -n "${P}_ctr" -4 route del 10.0.20.0/24 table 28275
ip -n "${P}_ctr" -4 route add throw 203.0.113.0/24 table 28275 proto 245
restrict_json "$ALLOW"
assert_eq "1" "$(j .route_set.routes_added)" "the deleted throw route is added again"
assert_eq "1" "$(j .route_set.routes_deleted)" "the foreign throw route is deleted"
assert_eq "$first_routes" "$(routes4)" "table 28275 is as the first restrict left it"

section "small lists keep no state file; files of namespaces that are gone are pruned"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --no-probe --json
assert_false "a 1-CIDR policy leaves no state file (and removes the larger one's)" test -n "$(state_file)"
assert_eq "1" "$(elements4 | wc -l)" "allow4 holds the one CIDR (the change from the large list was incremental)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow "$LAB_LAN_NET4" --no-probe --json
assert_eq "full" "$(j .policy.update)" "without a state file the next small restrict writes its sets whole"
# A namespace inode no process and no /run/netns mount has: 1 is never a namespace's.
gone=/run/nsegress/netns-4-1.sets
printf 'stale' >"$gone"
restrict_json "$ALLOW"
assert_true "the large policy's state file is back" test -n "$(state_file)"
assert_false "the state file of a namespace that is gone was pruned" test -e "$gone"
rm -f "$gone"

section "audit, then enforce with the same list (in place, incrementally)"
expect_exit 0 nsg restrict --netns "$CTR_NS" --allow-file "$ALLOW" --no-probe --audit --json
assert_eq "audit" "$(j .policy.mode)" "audit mode"
assert_true "wan passes in audit mode" ping_ok "$LAB_WAN4"
restrict_json "$ALLOW"
assert_eq "enforce" "$(j .policy.mode)" "enforce again"
assert_eq "$first_elements" "$(elements4)" "allow4 unchanged"
assert_false "wan refused" ping_ok "$LAB_WAN4"
assert_true "lan answers" ping_ok "$LAB_LAN4"

finish
