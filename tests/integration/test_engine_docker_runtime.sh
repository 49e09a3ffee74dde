#!/usr/bin/env bash
# nsegress-runtime with the real Debian dockerd (20.10, --userns-remap=default) in the sealed lab:
# the wrapper is registered in daemon.json "runtimes" with its policy as runtimeArgs. A container
# of that runtime is restricted before its first instruction (the first thing it does is ping the
# allowed and the forbidden host), again after `docker restart` and after its process is killed
# under --restart=always, and after dockerd itself restarts (a new network namespace each time);
# Docker's embedded DNS keeps working on a user-defined network; a bad policy (the wrapper's, or a
# probe of the hook that does not hold) keeps the container from starting with nsegress's reason
# in docker's error; a container of the default runtime is left alone. Under runc itself, an
# annotation narrows the runtime's allow-list and cannot widen it.
# shellcheck disable=SC2016 # the container's script is single-quoted on purpose
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/engines.sh
source "$REPO/testenv/engines.sh"

RUNTIME=${NSEGRESS_RUNTIME:-$(dirname "$NSEGRESS")/nsegress-runtime}
if [[ ! -x $RUNTIME ]]; then
	echo "FAIL: nsegress-runtime not found at '$RUNTIME' (build it, or set NSEGRESS_RUNTIME)"
	exit 1
fi

engines_test_setup

# nse, dk, dping, reach, pid_of: lib.sh
netns_of() { stat -L -c %i "/proc/$1/ns/net" 2>/dev/null; }
LAN=$LAB_LAN4 WAN=$LAB_WAN4 LANNET=$LAB_LAN_NET4
CTD_STATE=$(engines_dir "$P")/containerd/state/io.containerd.runtime.v2.task/moby

# The container's first instructions: ping each target once, one line per target.
PINGS='for t in "$@"; do if out=$(ping -c1 -W1 "$t" 2>&1); then echo "REACH $t"; else echo "REFUSED $t: $(echo "$out" | tail -1)"; fi; done'
# The same, then stay up (for restarts).
PINGS_STAY="$PINGS; exec sleep 600"

# count CONTAINER TEXT: lines of its log (stdout of every run so far) that start with TEXT.
count() { dk logs "$1" 2>&1 | grep -c "^$2"; }
# running_with_new_pid CONTAINER OLD-PID: running, and no longer as OLD-PID.
running_with_new_pid() {
	local s
	s=$(dk inspect -f '{{.State.Running}} {{.State.Pid}}' "$1" 2>/dev/null)
	[[ $s == "true "* && $s != "true $2" && $s != "true 0" ]]
}
# The createRuntime hooks of a container's current bundle, as the wrapper left them for runc.
bundle_hooks() { jq -c '[.hooks.createRuntime // [] | .[] | select((.env // []) | index("NSEGRESS_HOOK_BY=nsegress-runtime"))]' "$CTD_STATE/$1/config.json" 2>&1; }
full_id() { dk inspect -f '{{.Id}}' "$1"; }
# nft tables in the network namespace of container process PID (read only).
tables_of() { engines_in_netns "$P" "$1" nft list tables 2>&1; }

printf '# an allow-file the hook would refuse\nnot-a-cidr\n' >"$TMPD/bad.allow"
ENGINES_DOCKERD_CONFIG=$(jq -n --arg rt "$RUNTIME" --arg lan "$LANNET" --arg wan "$WAN" --arg bad "$TMPD/bad.allow" '{
	runtimes: {
		"nsegress-lan": {path: $rt, runtimeArgs: ["--allow", $lan]},
		"nsegress-badfile": {path: $rt, runtimeArgs: ["--allow-file", $bad]},
		"nsegress-probe": {path: $rt, runtimeArgs: ["--allow", $lan, "--probe-reach", $wan]}
	}}')
export ENGINES_DOCKERD_CONFIG

step "pass-through: what is not create/run/restore is the real runtime's, output and status"
RUNC=$(command -v runc)
assert_eq "$(runc --version 2>&1)" "$("$RUNTIME" --allow "$LANNET" --version 2>&1)" "--version: runc's own output"
mkdir -p "$TMPD/runc-root"
runc --root "$TMPD/runc-root" state nosuch >"$TMPD/want.out" 2>"$TMPD/want.err"
want_rc=$?
"$RUNTIME" --allow "$LANNET" --runtime "$RUNC" --root "$TMPD/runc-root" state nosuch >"$TMPD/got.out" 2>"$TMPD/got.err"
got_rc=$?
assert_eq "$want_rc" "$got_rc" "state of a missing container: runc's exit status ($want_rc)"
assert_eq "$(sed 's/time="[^"]*"//' "$TMPD/want.err")" "$(sed 's/time="[^"]*"//' "$TMPD/got.err")" "... and runc's message"
expect_exit 1 "$RUNTIME" --allow 300.1.1.1 --runtime "$RUNC" --root "$TMPD/runc-root" create --bundle "$TMPD/runc-root" x
assert_contains "$ERR" "nsegress-runtime: --allow: invalid allow entry '300.1.1.1'" "an invalid policy: create refused with one line"
mkdir -p "$TMPD/bundle" && echo '{"ociVersion":"1.0.2"}' >"$TMPD/bundle/config.json"
expect_exit 1 "$RUNTIME" --allow "$LANNET" --nsegress /nonexistent/nsegress --runtime "$RUNC" --root "$TMPD/runc-root" \
	--log "$TMPD/runc.log" --log-format json create --bundle "$TMPD/bundle" x
assert_contains "$ERR" "hook binary '/nonexistent/nsegress' is not executable" "a missing hook binary: create refused"
assert_eq '{"ociVersion":"1.0.2"}' "$(cat "$TMPD/bundle/config.json")" "... and the bundle left as it was"
assert_contains "$(jq -r 'select(.level == "error") | .msg' "$TMPD/runc.log" 2>&1)" "nsegress-runtime: the hook binary" \
	"... with the reason in the runtime log (JSON), where containerd reads it"
expect_exit 127 "$RUNTIME" --runtime "$RUNTIME" --allow "$LANNET" state x
assert_contains "$ERR" "is nsegress-runtime itself" "--runtime pointing at the wrapper itself is refused (no loop)"

step "dockerd with nsegress-runtime registered in daemon.json"
t0=$SECONDS
if ! dockerd_up "$P"; then
	fail "dockerd_up: dockerd/containerd did not start in ${P}_gw (logs: $(engines_dir "$P")/*.log)"
	tail -n 20 "$(engines_dir "$P")"/dockerd.log "$(engines_dir "$P")"/containerd.log 2>/dev/null | sed 's/^/#   /'
	finish
fi
pass "dockerd up in $((SECONDS - t0))s"
info=$(dk info --format '{{json .Runtimes}} {{json .SecurityOptions}}' 2>&1)
assert_contains "$info" '"nsegress-lan"' "docker info lists the runtime nsegress-lan"
assert_contains "$info" "name=userns" "userns-remap enabled"

step "the default runtime, for comparison: both hosts answer, nothing installed"
expect_exit 0 dk run --rm "$ENGINE_IMAGE" sh -c "$PINGS" pings "$LAN" "$WAN"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "default runtime: $LAN answers"
assert_contains "$OUT" "REACH $WAN" "default runtime: $WAN answers (the forbidden host is really there)"

step "docker run --runtime nsegress-lan: the first instruction is already restricted"
expect_exit 0 dk run --rm --runtime nsegress-lan "$ENGINE_IMAGE" sh -c "$PINGS" pings "$LAN" "$WAN"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "first instruction: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: .*(not permitted|nreachable|No route to host)" "first instruction: $WAN refused, locally"

step "a detached container of the runtime: the bundle, status and verify"
expect_exit 0 dk run -d --name r1 --runtime nsegress-lan "$ENGINE_IMAGE" sh -c "$PINGS_STAY" pings "$LAN" "$WAN"
R1=$(pid_of r1)
assert_match "$R1" '^[0-9]+$' "r1 runs (pid $R1)"
ID1=$(full_id r1)
hooks=$(bundle_hooks "$ID1")
assert_eq 1 "$(jq length <<<"$hooks" 2>&1)" "r1's config.json has exactly one nsegress-runtime hook"
assert_eq "[\"nsegress\",\"hook\",\"--allow\",\"$LANNET\"]" "$(jq -c '.[0].args' <<<"$hooks" 2>&1)" \
	"the hook carries the runtime's policy"
assert_eq "$NSEGRESS" "$(jq -r '.[0].path' <<<"$hooks" 2>&1)" "the hook is the nsegress next to the wrapper"
assert_true "r1's log: $LAN answered first" eventually eval '[[ $(count r1 "REACH $LAN") == 1 ]]'
assert_true "r1's log: $WAN refused first" eventually eval '[[ $(count r1 "REFUSED $WAN") == 1 ]]'
assert_contains "$(tables_of "$R1")" "table inet nsegress" "r1's namespace has the nsegress table"
expect_exit 0 nse status --container r1 --engine docker
assert_contains "$OUT" "restricted: yes" "status --container r1: restricted"
expect_exit 0 nse verify --container r1 --allow "$LANNET" --reach "$LAN" --block "$WAN" --expect-userns-remap
assert_not_contains "$OUT" "FAIL" "verify --container r1 passes"
expect_exit 0 dk pause r1
expect_exit 0 dk unpause r1
assert_false "r1: $WAN refused (docker exec)" reach r1 "$WAN"

step "docker restart: a new namespace, restricted again before the first instruction"
NS1=$(netns_of "$R1")
# Hold the old namespace open: a freed namespace's inode number is reused at once, so only a
# namespace that still exists proves that the new one is another.
exec {old_ns}<"/proc/$R1/ns/net"
expect_exit 0 dk restart -t 0 r1
assert_true "r1 runs again with a new pid" eventually running_with_new_pid r1 "$R1"
R1B=$(pid_of r1)
NS1B=$(netns_of "$R1B")
assert_true "r1's new namespace ($NS1B) is not the old one ($NS1)" test -n "$NS1B" -a "$NS1B" != "$NS1"
exec {old_ns}<&-
assert_true "r1's log: $WAN refused by the second run's first instruction too" \
	eventually eval '[[ $(count r1 "REFUSED $WAN") == 2 ]]'
assert_eq 0 "$(count r1 "REACH $WAN")" "r1 never reached $WAN"
assert_true "r1's log: $LAN answered the second run" eventually eval '[[ $(count r1 "REACH $LAN") == 2 ]]'
assert_false "r1 after restart: $WAN refused (docker exec)" reach r1 "$WAN"
assert_true "r1 after restart: $LAN answers (docker exec)" reach r1 "$LAN"
assert_eq 1 "$(bundle_hooks "$ID1" | jq length 2>&1)" "r1's new bundle: still exactly one nsegress-runtime hook"

step "--restart=always: the process is killed, docker starts it again, restricted"
expect_exit 0 dk run -d --name ra --restart=always --runtime nsegress-lan "$ENGINE_IMAGE" sh -c "$PINGS_STAY" pings "$LAN" "$WAN"
RA=$(pid_of ra)
assert_true "ra's log: $WAN refused" eventually eval '[[ $(count ra "REFUSED $WAN") == 1 ]]'
NSA=$(netns_of "$RA")
exec {old_ns}<"/proc/$RA/ns/net"
# ra's init: started by this test's dockerd, in the lab's cgroup (checked before killing it).
if [[ $RA =~ ^[0-9]+$ ]] && grep -q ":/$(_eng_cgroup "$P")/" "/proc/$RA/cgroup" 2>/dev/null; then
	kill -KILL "$RA"
	pass "killed ra's process $RA"
else
	fail "ra's pid '$RA' is not a process of this lab's engine cgroup; not killing it"
fi
# docker's restart policy waits 100 ms, then starts it: poll (bounded by ENGINES_START_TIMEOUT).
assert_true "ra runs again with a new pid" _eng_wait "$ENGINES_START_TIMEOUT" 0 running_with_new_pid ra "$RA"
RAB=$(pid_of ra)
NSAB=$(netns_of "$RAB")
assert_true "ra's new namespace ($NSAB) is not the old one ($NSA)" test -n "$NSAB" -a "$NSAB" != "$NSA"
exec {old_ns}<&-
assert_true "ra's log: $WAN refused by the restarted process's first instruction" \
	eventually eval '[[ $(count ra "REFUSED $WAN") == 2 ]]'
assert_eq 0 "$(count ra "REACH $WAN")" "ra never reached $WAN"
assert_false "ra after the restart: $WAN refused (docker exec)" reach ra "$WAN"

step "dockerd restarts: the --restart=always container comes back, restricted"
RA=$RAB NSA=$NSAB
exec {old_ns}<"/proc/$RA/ns/net"
assert_true "dockerd restarted" dockerd_restart "$P"
assert_true "ra runs again with a new pid" _eng_wait "$ENGINES_START_TIMEOUT" 0 running_with_new_pid ra "$RA"
RAB=$(pid_of ra)
NSAB=$(netns_of "$RAB")
assert_true "ra's new namespace ($NSAB) is not the old one ($NSA)" test -n "$NSAB" -a "$NSAB" != "$NSA"
exec {old_ns}<&-
assert_true "ra's log: $WAN refused by the first instruction after the dockerd restart" \
	eventually eval '[[ $(count ra "REFUSED $WAN") == 3 ]]'
assert_eq 0 "$(count ra "REACH $WAN")" "ra never reached $WAN"
assert_false "ra after the dockerd restart: $WAN refused (docker exec)" reach ra "$WAN"
expect_exit 0 dk update --restart=no ra
expect_exit 0 dk rm -f ra

step "a user-defined network: Docker's embedded DNS (127.0.0.11) still resolves container names"
expect_exit 0 dk network create nsgnet
expect_exit 0 dk run -d --name peer --network nsgnet "$ENGINE_IMAGE" sleep 600
PEER_IP=$(dk inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' peer)
assert_match "$PEER_IP" '^[0-9.]+$' "peer has an address on nsgnet ($PEER_IP)"
expect_exit 0 dk run --rm --runtime nsegress-lan --network nsgnet "$ENGINE_IMAGE" \
	sh -c 'nslookup peer; '"$PINGS" pings "$LAN" "$WAN" "$PEER_IP"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_match "$OUT" "Address:? *(1: )?$PEER_IP" "nslookup peer (through 127.0.0.11) answers $PEER_IP"
assert_contains "$OUT" "REACH $LAN" "on nsgnet: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: " "on nsgnet: $WAN refused"
assert_match "$OUT" "^REFUSED $PEER_IP: " "on nsgnet: peer's address is not in the allow-list: refused"
expect_exit 0 dk run -d --name dn --runtime nsegress-lan --network nsgnet "$ENGINE_IMAGE" sleep 600
DN=$(pid_of dn)
nat=$(engines_in_netns "$P" "$DN" iptables -t nat -S 2>&1)
assert_contains "$nat" "127.0.0.11" "Docker's DNS rules are still in dn's namespace"
assert_contains "$(tables_of "$DN")" "table inet nsegress" "... next to the nsegress table"
expect_exit 0 dk exec dn nslookup peer
assert_contains "$OUT" "$PEER_IP" "docker exec dn nslookup peer: $PEER_IP"
expect_exit 0 dk rm -f dn peer
expect_exit 0 dk network rm nsgnet

step "fail closed: a policy the wrapper refuses keeps the container from starting"
expect_exit_nonzero() {
	local desc=$1
	shift
	"$@" >"$TMPD/out" 2>"$TMPD/err"
	RC=$?
	OUT=$(<"$TMPD/out")
	ERR=$(<"$TMPD/err")
	if [[ $RC -ne 0 ]]; then pass "$desc (exit $RC)"; else fail "$desc: exit 0"; fi
}
expect_exit_nonzero "docker run --runtime nsegress-badfile fails" \
	dk run --name bad --runtime nsegress-badfile "$ENGINE_IMAGE" sh -c 'echo STARTED'
printf '%s\n' "$ERR" | sed 's/^/#   /'
assert_match "$ERR" "nsegress-runtime: .*bad\.allow.*2: .*not-a-cidr" "docker's error carries the wrapper's reason (file and line)"
assert_not_contains "$(dk logs bad 2>&1)" "STARTED" "bad: its first instruction never ran"
assert_true "bad is not running" eval '[[ $(dk inspect -f "{{.State.Running}}" bad 2>&1) == false ]]'

step "fail closed: a hook probe that does not hold keeps the container from starting"
expect_exit_nonzero "docker run --runtime nsegress-probe (--probe-reach $WAN) fails" \
	dk run --name pb --runtime nsegress-probe "$ENGINE_IMAGE" sh -c 'echo STARTED'
printf '%s\n' "$ERR" | sed 's/^/#   /'
assert_contains "$ERR" "nsegress hook: " "docker's error carries the hook's one-line reason"
assert_contains "$ERR" "a probe did not hold" "... saying which step failed"
assert_not_contains "$(dk logs pb 2>&1)" "STARTED" "pb: its first instruction never ran"
assert_true "pb is not running" eval '[[ $(dk inspect -f "{{.State.Running}}" pb 2>&1) == false ]]'
expect_exit 0 dk rm -f bad pb

step "escape hatch: the same container with the default runtime is untouched"
expect_exit 0 dk run -d --name c0 "$ENGINE_IMAGE" sleep 600
C0=$(pid_of c0)
assert_eq 0 "$(bundle_hooks "$(full_id c0)" | jq length 2>&1)" "c0's config.json has no nsegress hook"
assert_not_contains "$(tables_of "$C0")" "nsegress" "c0's namespace has no nsegress table"
assert_true "c0 reaches $WAN" reach c0 "$WAN"
expect_exit 0 nse status --container c0 --engine docker
assert_contains "$OUT" "restricted: no" "status --container c0: not restricted"

step "the wrapper under runc itself: \`run\`, and annotations that narrow but never widen"
# A runc bundle whose first createRuntime hook plumbs a veth from gw (as in test_engine_runc.sh);
# the wrapper appends its own hook after it. WANNET is in the runtime's list only to be
# narrowed away.
BUNDLES=$(engines_dir "$P")/bundles
GW_NS=$(lab_netns "$P" gw)
WANNET=$LAB_WAN_NET4
wbundle() {
	local dir=$BUNDLES/$1
	if [[ ! -x $BUNDLES/rootfs/bin/sh ]]; then engine_rootfs "$BUNDLES/rootfs" || return 1; fi
	runc_bundle "$dir" "$P" "$BUNDLES/rootfs" || return 1
	runc_add_hook "$dir" createRuntime "$REPO/testenv/fixtures/veth-hook.sh" "$GW_NS" rc0 172.31.5.2/24 172.31.5.1/24 || return 1
	runc_set "$dir" '.process.args = ["sh", "-c", $s, "pings", $lan, $wan] | .annotations = $a' \
		--arg s "$PINGS" --arg lan "$LAN" --arg wan "$WAN" --argjson a "$2"
}
wrun() {
	local name=$1
	shift
	mkdir -p "$(_eng_runc_root "$P")"
	timeout 60 nsenter --net="$GW_NS" "$RUNTIME" "$@" --root "$(_eng_runc_root "$P")" \
		run --bundle "$BUNDLES/$name" "$name" </dev/null
}
assert_true "bundle 'both' built" wbundle both '{}'
expect_exit 0 wrun both --allow "$LANNET" --allow "$WANNET"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $WAN" "runtime $LANNET + $WANNET, no annotation: $WAN answers (the control)"
assert_true "bundle 'narrow' built" wbundle narrow "{\"io.nsegress.allow\": \"$LANNET\"}"
expect_exit 0 wrun narrow --allow "$LANNET" --allow "$WANNET"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "runtime $LANNET + $WANNET, annotation $LANNET: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: " "... $WAN (the runtime's, not the annotation's) refused: narrowed"
assert_true "bundle 'widen' built" wbundle widen '{"io.nsegress.allow": "0.0.0.0/0, ::/0", "io.nsegress.audit": "true"}'
expect_exit 0 wrun widen --allow "$LANNET"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_contains "$OUT" "REACH $LAN" "runtime $LANNET, annotation 0.0.0.0/0 + audit: $LAN answers"
assert_match "$OUT" "^REFUSED $WAN: " "... $WAN still refused: an annotation cannot widen, nor switch to audit mode"
assert_eq 1 "$(jq '[.hooks.createRuntime[] | select((.env // []) | index("NSEGRESS_HOOK_BY=nsegress-runtime"))] | length' "$BUNDLES/widen/config.json" 2>&1)" \
	"the bundle has one nsegress-runtime hook, after the veth hook"
expect_exit 0 wrun widen --allow "$LANNET"
assert_eq 1 "$(jq '[.hooks.createRuntime[] | select((.env // []) | index("NSEGRESS_HOOK_BY=nsegress-runtime"))] | length' "$BUNDLES/widen/config.json" 2>&1)" \
	"run twice on the same bundle: still one (idempotent)"
assert_eq 2 "$(jq '.hooks.createRuntime | length' "$BUNDLES/widen/config.json" 2>&1)" "... and the veth hook kept"
assert_eq "" "$(runc_cmd "$P" list -q 2>&1)" "no runc container left"

step "teardown: nothing left behind, root namespace untouched"
engines_down "$P"
left=$(engines_leftovers "$P")
assert_eq "" "$left" "engines_down left nothing (processes, mounts, state, cgroups, netns)"
engines_root_snapshot >"$TMPD/root.after"
assert_same "$TMPD/root.before" "$TMPD/root.after" "root namespace links and nft tables unchanged"
echo "# elapsed: ${SECONDS}s"

finish
