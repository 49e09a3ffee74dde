#!/usr/bin/env bash
# Bad input and refused targets: each gives a one-line error naming what was wrong, the contract's
# exit code, and leaves the container namespace exactly as it was.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

snapshot >"$TMPD/baseline"

# bad CODES DESCRIPTION NEEDLE -- ARGS...: run nsegress ARGS (from gw), expect one of CODES
# ("1" or "1 2"), exactly one line on stderr containing NEEDLE (if not empty), ctr unchanged.
bad() {
	local codes=$1 desc=$2 needle=$3
	shift 4
	nsg "$@" >"$TMPD/out" 2>"$TMPD/err"
	local rc=$?
	local err
	err=$(<"$TMPD/err")
	if [[ " $codes " == *" $rc "* ]]; then
		pass "$desc: exit $rc"
	else
		fail "$desc: exit $rc, expected ${codes// / or }; stderr: $err"
	fi
	local lines
	lines=$(grep -c . <<<"$err")
	if [[ $lines -eq 1 ]]; then
		pass "$desc: one-line error: $err"
	else
		fail "$desc: expected a one-line error, got $lines lines: $err"
	fi
	[[ -n $needle ]] && assert_contains "$err" "$needle" "$desc: the error names '$needle'"
	snapshot >"$TMPD/now"
	assert_same "$TMPD/baseline" "$TMPD/now" "$desc: ctr unchanged"
	# Undo a change so that one failure does not cascade into every later case.
	cmp -s "$TMPD/baseline" "$TMPD/now" || nsg release --netns "$CTR_NS" >/dev/null 2>&1
}

A=(--allow 192.168.1.0/24)

section "invalid CIDRs"
bad 1 "--allow 300.1.1.1/24" "300.1.1.1/24" -- restrict --netns "$CTR_NS" --allow 300.1.1.1/24
bad 1 "--allow 192.168.1.0/33" "/33" -- restrict --netns "$CTR_NS" --allow 192.168.1.0/33
bad 1 "--allow 2001:db8::/129" "2001:db8::/129" -- restrict --netns "$CTR_NS" --allow 2001:db8::/129
bad 1 "--allow banana" "banana" -- restrict --netns "$CTR_NS" --allow banana
bad 1 "--allow ''" "" -- restrict --netns "$CTR_NS" --allow ''
bad 1 "--allow 192.168.1.0/" "" -- restrict --netns "$CTR_NS" --allow 192.168.1.0/
bad 1 "--allow 192.168.1.0/-1" "" -- restrict --netns "$CTR_NS" --allow 192.168.1.0/-1
bad 1 "one good and one bad --allow" "banana" -- restrict --netns "$CTR_NS" "${A[@]}" --allow banana
bad 1 "--probe-reach not-an-ip" "not-an-ip" -- restrict --netns "$CTR_NS" "${A[@]}" --probe-reach not-an-ip

section "targets"
bad 1 "no target" "" -- restrict "${A[@]}"
lanpid=$(<"$(lab_state_dir "$P")/lan.tcp.pid") # a live process inside the lab (lan's listener)
bad 1 "both --pid and --netns" "" -- restrict --pid "$lanpid" --netns "$CTR_NS" "${A[@]}"
bad 1 "--netns twice" "" -- restrict --netns "$CTR_NS" --netns "$CTR_NS" "${A[@]}"
bad 1 "--pid 0" "0" -- restrict --pid 0 "${A[@]}"
bad 1 "--pid -5" "-5" -- restrict --pid -5 "${A[@]}"
bad 1 "--pid abc" "abc" -- restrict --pid abc "${A[@]}"
bad 2 "--pid 4194304 (no such process)" "4194304" -- restrict --pid 4194304 "${A[@]}"
ip netns exec "${P}_ctr" true &
gone=$!
wait "$gone"
bad 2 "--pid of an exited process ($gone)" "$gone" -- restrict --pid "$gone" "${A[@]}"
bad 2 "--netns /nonexistent" "/nonexistent" -- restrict --netns /nonexistent "${A[@]}"
bad 1 "--netns /etc/hostname (not a namespace)" "/etc/hostname" -- restrict --netns /etc/hostname "${A[@]}"
bad 1 "--netns /proc/self/ns/uts (a namespace, not a network one)" "uts" -- restrict --netns /proc/self/ns/uts "${A[@]}"
bad 1 "--netns /run/netns (a directory)" "/run/netns" -- restrict --netns /run/netns "${A[@]}"

section "--netns: the opened file is judged, not the path"
# nsegress runs in gw (see nsg): a link to gw's namespace is a link to the host's, as far as
# this run is concerned; a link to ctr's is fine (the control case).
ln -s "/run/netns/${P}_gw" "$TMPD/link-to-own"
bad 2 "--netns symlink to the namespace nsegress runs in" "itself runs in" -- restrict --netns "$TMPD/link-to-own" "${A[@]}"
# (run from inside ctr, as test_refuse_host does: the link resolves to nsegress's own namespace,
# so a broken refusal could only hit the lab)
ln -s /proc/self/ns/net "$TMPD/link-to-self"
DESC="--netns symlink to /proc/self/ns/net" expect_exit 2 in_ctr "$NSEGRESS" restrict --netns "$TMPD/link-to-self" "${A[@]}"
assert_contains "$ERR" "itself runs in" "symlink to /proc/self/ns/net: refused as nsegress's own namespace"
snapshot >"$TMPD/now"
assert_same "$TMPD/baseline" "$TMPD/now" "symlink to /proc/self/ns/net: ctr unchanged"
ln -s "$TMPD/nothing-here" "$TMPD/dangling"
bad 2 "--netns dangling symlink" "does not exist" -- restrict --netns "$TMPD/dangling" "${A[@]}"
bad 1 "--netns /proc/self/ns/user (a namespace of the wrong type)" "not a network namespace" -- restrict --netns /proc/self/ns/user "${A[@]}"
bad 1 "--netns /proc/self/ns/mnt (a namespace of the wrong type)" "not a network namespace" -- restrict --netns /proc/self/ns/mnt "${A[@]}"
bad 1 "--netns /dev/null (a character device)" "not a namespace file" -- restrict --netns /dev/null "${A[@]}"
: >"$TMPD/regular"
bad 1 "--netns a regular empty file" "not a namespace file" -- restrict --netns "$TMPD/regular" "${A[@]}"
# A FIFO with no writer: a blocking open would hang forever. timeout turns a hang into 124.
mkfifo "$TMPD/fifo"
DESC="--netns a FIFO with no writer is refused, not waited on" \
	expect_exit 1 timeout 20 ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns "$TMPD/fifo" "${A[@]}"
assert_contains "$ERR" "not a namespace file" "FIFO: the error says why"
ln -s "$CTR_NS" "$TMPD/link-to-ctr"
DESC="--netns symlink to ctr's namespace (control: a link as such is fine)" \
	expect_exit 0 nsg restrict --netns "$TMPD/link-to-ctr" "${A[@]}" --no-probe
assert_contains "$(nft_table)" "192.168.1.0/24" "restricted through the link"
expect_exit 0 nsg release --netns "$TMPD/link-to-ctr"
snapshot >"$TMPD/now"
assert_same "$TMPD/baseline" "$TMPD/now" "after release through the link: ctr as before"

section "a zombie (exited, not reaped) is no target"
# perl (Essential in Debian) forks a child that exits and is never reaped until perl ends.
ip netns exec "${P}_ctr" perl -e '$p = fork; exit 0 if $p == 0; open(F, ">", $ARGV[0]) or die; print F $p; close F; sleep 30' \
	"$TMPD/zombie" &
zparent=$!
on_exit "kill $zparent 2>/dev/null"
for i in $(seq 1 100); do [[ -s $TMPD/zombie ]] && break; sleep 0.02; done
zpid=$(<"$TMPD/zombie")
for i in $(seq 1 100); do [[ $(lab_proc_state "$zpid") == Z ]] && break; sleep 0.02; done
assert_eq "Z" "$(lab_proc_state "$zpid")" "pid $zpid is a zombie"
bad 2 "--pid of a zombie ($zpid)" "" -- restrict --pid "$zpid" "${A[@]}"
kill "$zparent" 2>/dev/null

section "allow-files"
printf '192.168.1.0/24\n# comment\n\n  2001:db8:1::/64  \nbanana\n' >"$TMPD/malformed.allow"
bad 1 "malformed allow-file names the line" ":5" -- restrict --netns "$CTR_NS" --allow-file "$TMPD/malformed.allow"
assert_contains "$ERR$(<"$TMPD/err")" "banana" "malformed allow-file: the error names the bad entry"
bad 1 "allow-file that does not exist" "$TMPD/none.allow" -- restrict --netns "$CTR_NS" --allow-file "$TMPD/none.allow"
mkdir "$TMPD/dir.allow"
bad 1 "allow-file that is a directory (unreadable)" "$TMPD/dir.allow" -- restrict --netns "$CTR_NS" --allow-file "$TMPD/dir.allow"
# A named FIFO nobody writes to: a blocking open waits forever. timeout turns a hang into 124.
mkfifo "$TMPD/fifo.allow"
DESC="allow-file a FIFO with no writer is refused, not waited on" \
	expect_exit 1 timeout 20 ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns "$CTR_NS" --allow-file "$TMPD/fifo.allow"
assert_contains "$ERR" "no writer" "FIFO allow-file: the error says why"
snapshot >"$TMPD/now"
assert_same "$TMPD/baseline" "$TMPD/now" "FIFO allow-file: ctr unchanged"
DESC="allow-file a pipe that ends without a line (<(true)): refused, not an empty list" \
	expect_exit 1 timeout 20 ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns "$CTR_NS" --allow-file <(true)
assert_contains "$ERR" "wrote nothing" "empty pipe: the error says why"
# Control: a pipe with a writer (process substitution, a slow generator) is read to its end.
DESC="allow-file a pipe whose writer is slow (<(sleep 1; echo CIDR))" \
	expect_exit 0 timeout 20 ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns "$CTR_NS" --no-probe \
	--allow-file <(sleep 1; echo 192.168.1.0/24)
assert_contains "$(nft_table)" "192.168.1.0/24" "slow pipe: its list was installed"
expect_exit 0 nsg release --netns "$CTR_NS"
# A writer already waiting in its open() of the named FIFO (a shell's `> fifo`) connects once
# nsegress opens it, and its list is read.
(echo started >"$TMPD/writer.started"; exec 3>"$TMPD/fifo.allow"; sleep 1; echo 192.168.1.0/24 >&3) &
writer=$!
wait_for_text "$TMPD/writer.started" started 5
DESC="allow-file a FIFO with a writer" \
	expect_exit 0 timeout 20 ip netns exec "${P}_gw" "$NSEGRESS" restrict --netns "$CTR_NS" --no-probe --allow-file "$TMPD/fifo.allow"
wait "$writer"
assert_contains "$(nft_table)" "192.168.1.0/24" "FIFO with a writer: its list was installed"
expect_exit 0 nsg release --netns "$CTR_NS"

section "usage"
bad 1 "--allow with a comma-separated list" "one CIDR per --allow" -- restrict --netns "$CTR_NS" --allow 192.168.1.0/24,10.0.0.0/8
bad 1 "a word that is no option's value (restrict web ...)" "'web'" -- restrict web --netns "$CTR_NS" "${A[@]}"
bad 1 "restrict web without a target names the ignored word" "--container web" -- restrict web "${A[@]}"
bad 1 "unknown option" "--bogus" -- restrict --netns "$CTR_NS" "${A[@]}" --bogus
bad 1 "no --allow" "" -- restrict --netns "$CTR_NS"
bad 1 "unknown command" "frobnicate" -- frobnicate --netns "$CTR_NS"
bad 1 "probe without --target" "" -- probe --netns "$CTR_NS"
bad 1 "probe --expect maybe" "maybe" -- probe --netns "$CTR_NS" --target 192.168.1.10 --expect maybe
bad 1 "probe --count 0" "" -- probe --netns "$CTR_NS" --target 192.168.1.10 --count 0
bad 1 "probe --count x" "" -- probe --netns "$CTR_NS" --target 192.168.1.10 --count x
bad 1 "probe --timeout-ms -1" "" -- probe --netns "$CTR_NS" --target 192.168.1.10 --timeout-ms -1
bad 1 "status with no target" "" -- status
bad 1 "release with --allow" "" -- release --netns "$CTR_NS" "${A[@]}"

section "--json on an error: one JSON document saying what failed"
expect_exit 1 nsg restrict --netns "$CTR_NS" --allow banana --json
assert_eq "false" "$(jq -r .ok <<<"$OUT")" "--json: ok is false"
assert_eq "1" "$(jq -r .exit_code <<<"$OUT")" "--json: exit_code is 1"
assert_contains "$(jq -r .error <<<"$OUT")" "banana" "--json: error names the bad CIDR"
expect_exit 2 nsg restrict --netns /nonexistent --allow 192.168.1.0/24 --json
assert_eq "2" "$(jq -r .exit_code <<<"$OUT")" "--json: exit_code is 2 for a missing target"

section "not root: refused, names the missing privilege"
expect_exit 2 ip netns exec "${P}_gw" setpriv --reuid=65534 --regid=65534 --clear-groups \
	"$NSEGRESS" restrict --netns "$CTR_NS" "${A[@]}"
assert_match "$ERR" 'CAP_(SYS|NET)_ADMIN' "the error names the missing capability"
assert_eq "1" "$(grep -c . <<<"$ERR")" "one-line error"
expect_exit 2 ip netns exec "${P}_gw" setpriv --reuid=65534 --regid=65534 --clear-groups \
	"$NSEGRESS" release --netns "$CTR_NS"
snapshot >"$TMPD/now"
assert_same "$TMPD/baseline" "$TMPD/now" "not root: ctr unchanged"

finish
