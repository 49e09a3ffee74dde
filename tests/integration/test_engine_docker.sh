#!/usr/bin/env bash
# Docker (Debian docker.io) for real: dockerd with --userns-remap=default runs inside the lab's
# sealed gw namespace (the "docker host", router to lan and wan). A busybox container is restricted
# by PID and by --container, proven with `docker exec ... ping`, graded with verify (userns-remap,
# no-new-privileges, CAP_NET_ADMIN bypass, --net=host, missing containers) and released. verify
# also judges a hand-made iptables policy: IPv4 only fails (the container has IPv6), with the
# ip6tables half it passes. dockerd failing to start is a failure, never a skip.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../testenv/engines.sh
source "$REPO/testenv/engines.sh"

engines_test_setup

# nse, dk, dping, reach, pid_of: lib.sh
GW4=$ENGINES_DOCKER_GW4
LAN=$LAB_LAN4 WAN=$LAB_WAN4 LANNET=$LAB_LAN_NET4

step "dockerd starts inside the sealed gw namespace, with userns-remap"
t0=$SECONDS
if ! dockerd_up "$P"; then
	fail "dockerd_up: dockerd/containerd did not start in ${P}_gw (logs: $(engines_dir "$P")/*.log)"
	tail -n 20 "$(engines_dir "$P")"/dockerd.log "$(engines_dir "$P")"/containerd.log 2>/dev/null | sed 's/^/#   /'
	finish
fi
pass "dockerd up and busybox image imported in $((SECONDS - t0))s"
dpid=$(<"$(engines_dir "$P")/dockerd.pid")
assert_eq "$(stat -L -c %i "$(lab_netns "$P" gw)")" "$(stat -L -c %i "/proc/$dpid/ns/net")" \
	"dockerd runs in ${P}_gw"
info=$(dk info --format '{{.Driver}} {{.CgroupDriver}} {{json .SecurityOptions}}' 2>&1)
assert_contains "$info" "overlay2" "storage driver overlay2"
assert_contains "$info" "cgroupfs" "cgroup driver cgroupfs"
assert_contains "$info" "name=userns" "userns-remap enabled"
has_link() { "$@" link show docker0 >/dev/null 2>&1; }
assert_true "docker0 exists in ${P}_gw" has_link ip -n "${P}_gw"
assert_false "no docker0 in the root namespace (read only: ip link show)" has_link ip
assert_match "$(ip netns exec "${P}_gw" iptables -t nat -S POSTROUTING)" '172\.17\.0\.0/16.*MASQUERADE' \
	"docker's NAT lives in ${P}_gw"

step "a container, before any policy: the lab answers over IPv4 and IPv6"
expect_exit 0 dk run -d --name c1 "$ENGINE_IMAGE" sleep 600
C1=$(pid_of c1)
assert_match "$C1" '^[0-9]+$' "docker inspect gives c1's pid ($C1)"
map=$(awk 'NR == 1 {print $1, $2, $3}' "/proc/$C1/uid_map" 2>/dev/null)
assert_match "$map" '^0 [1-9][0-9]{5,} ' "c1's uid 0 is a remapped host uid ($map)"
for dst in "$LAN" "$WAN" "$GW4" "$LAB_LAN6"; do
	assert_true "c1 reaches $dst before restrict" reach c1 "$dst"
done

step "restrict by PID (docker inspect -f '{{.State.Pid}}')"
expect_exit 0 nse restrict --pid "$C1" --allow "$LANNET"
assert_true "c1 reaches $LAN" reach c1 "$LAN"
out=$(dping c1 "$WAN")
assert_false "c1 cannot reach $WAN (forbidden): $(why "$out")" reach c1 "$WAN"
out=$(dping c1 "$GW4")
assert_false "c1 cannot reach the docker gateway $GW4: $(why "$out")" reach c1 "$GW4"
assert_false "c1 cannot reach $LAB_LAN6 (IPv6 not allowed)" reach c1 "$LAB_LAN6"

step "restrict by --container (replaces the policy)"
expect_exit 0 nse restrict --container c1 --allow "$LANNET" --probe-reach "$LAN" --probe-block "$WAN"
assert_contains "$OUT" "pid $C1" "--container c1 resolved to pid $C1"
assert_true "c1 reaches $LAN" reach c1 "$LAN"
assert_false "c1 cannot reach $WAN" reach c1 "$WAN"
expect_exit 0 nse status --container c1 --engine docker

step "verify --expect-userns-remap passes and reports the uid map"
expect_exit 0 nse verify --container c1 --allow "$LANNET" --reach "$LAN" --block "$WAN" \
	--block "$GW4" --expect-userns-remap --junit "$TMPD/verify.xml"
printf '%s\n' "$OUT" | sed 's/^/#   /'
assert_match "$OUT" '^PASS reach 192\.168\.1\.10' "PASS reach $LAN"
assert_match "$OUT" '^PASS block 198\.51\.100\.10' "PASS block $WAN"
assert_match "$OUT" '^PASS ipv6-outside-refused' "PASS ipv6-outside-refused"
assert_match "$OUT" '^PASS userns-remap' "PASS userns-remap"
host_uid=$(grep -Eo 'uid_map: 0 [0-9]+ ' <<<"$OUT" | awk '{print $3}')
if [[ $host_uid =~ ^[0-9]+$ ]] && ((host_uid >= 100000)); then
	pass "verify shows the uid map: container uid 0 = host uid $host_uid (>= 100000)"
else
	fail "verify shows no uid map with a host uid >= 100000 (got '${host_uid}')"
fi
assert_true "--junit wrote a JUnit report" grep -q '<testsuite' "$TMPD/verify.xml"
expect_exit 0 nse verify --container c1 --allow "$LANNET" --reach "$LAN" --block "$WAN" --expect-userns-remap --json
assert_eq "true 0" "$(jq -r '"\(.ok) \(.exit_code)"' <<<"$OUT" 2>&1)" "--json: ok true, exit_code 0"
assert_eq "pass" "$(jq -r '.checks[] | select(.name == "userns-remap") | .status' <<<"$OUT" 2>&1)" \
	"--json: userns-remap check passed"

step "release brings the forbidden network back"
expect_exit 0 nse release --container c1
assert_true "c1 reaches $WAN after release" reach c1 "$WAN"
assert_true "c1 reaches $GW4 after release" reach c1 "$GW4"
expect_exit 3 nse verify --container c1 --allow "$LANNET" --block "$WAN"
assert_match "$OUT" '^FAIL block 198\.51\.100\.10' "verify fails once released"

step "no-new-privileges"
expect_exit 0 dk run -d --name nnp --security-opt no-new-privileges:true "$ENGINE_IMAGE" sleep 600
expect_exit 0 nse restrict --container nnp --allow "$LANNET"
expect_exit 0 nse verify --container nnp --allow "$LANNET" --expect-no-new-privs
assert_match "$OUT" '^PASS no-new-privs' "nnp: PASS no-new-privs"
expect_exit 0 nse restrict --container c1 --allow "$LANNET"
expect_exit 3 nse verify --container c1 --allow "$LANNET" --expect-no-new-privs
assert_match "$OUT" '^FAIL no-new-privs' "c1 (started without it): FAIL no-new-privs"
assert_eq "no-new-privs" "$(grep '^FAIL' <<<"$OUT" | sed -E 's/^FAIL ([^:]+):.*/\1/' | tr '\n' ' ' | sed 's/ $//')" \
	"no-new-privs is c1's only failed check"

step "--lab-profile: the whole seed lab, each check saying what it looked at"
nse verify --container nnp --allow "$LANNET" --reach "$LAN" --lab-profile --json >"$TMPD/lab.json" 2>"$TMPD/lab.err"
labcheck() { jq -r --arg n "$1" '.checks[] | select(.name==$n) | "\(.status) \(.detail)"' "$TMPD/lab.json"; }
for c in lab-container-root lab-id-maps lab-daemon-userns-remap lab-data-dir lab-host-dir userns-remap no-new-privs; do
	assert_match "$(labcheck "$c")" '^pass ' "lab profile: $c passes"
done
assert_match "$(labcheck lab-id-maps)" "inside /etc/subuid's entry of 'dockremap'" "the remap user's subuid range is named"
assert_match "$(labcheck lab-data-dir)" 'DockerRootDir .*/[0-9]+\.[0-9]+: named after the remapped ids' "the data directory is named"
assert_match "$(labcheck lab-host-dir)" '/etc .* not writable' "container root cannot write a root-owned host directory"
assert_match "$(labcheck probe-identity)" "uid 0 gid 0 .*in user namespace" "the probes went as container root, in its user namespace"

step "a class in one run: one JUnit report, a missing container is an error testcase"
expect_exit 2 nse verify --engine docker --container nnp --container nosuch --allow "$LANNET" --reach "$LAN" --junit "$TMPD/class.xml"
assert_match "$(cat "$TMPD/class.xml")" '<testsuite name="nnp" ' "a suite named after the container"
assert_match "$(cat "$TMPD/class.xml")" '<testsuite name="nosuch" tests="1" failures="0" errors="1"' "the missing one: an error"

step "--cap-add NET_ADMIN: the container could remove the policy"
expect_exit 0 dk run -d --name adm --cap-add NET_ADMIN "$ENGINE_IMAGE" sleep 600
expect_exit 0 nse restrict --container adm --allow "$LANNET"
expect_exit 3 nse verify --container adm --allow "$LANNET" --reach "$LAN" --block "$WAN"
assert_match "$OUT" '^FAIL bypass-net-admin:.*CAP_NET_ADMIN' "FAIL bypass-net-admin, naming CAP_NET_ADMIN"
assert_match "$OUT" '^FAIL bypass-net-admin:.*(delete|remove|rewrite|flush)' "the failure explains the bypass"

step "--net=host (with --userns=host): not the container's own namespace"
expect_exit 0 dk run -d --name hostnet --userns=host --net=host "$ENGINE_IMAGE" sleep 600
expect_exit 3 nse verify --container hostnet --allow "$LANNET"
assert_match "$OUT" '^FAIL netns-not-host' "verify: FAIL netns-not-host"
expect_exit 2 nse restrict --container hostnet --allow "$LANNET"
gw_table() { ip netns exec "${P}_gw" nft list table inet nsegress >/dev/null 2>&1; }
assert_false "restrict left no nsegress table in ${P}_gw (the docker host)" gw_table

step "--container errors"
expect_exit 2 nse verify --container nosuch --engine docker --allow "$LANNET"
assert_contains "$ERR" "nosuch" "the error names the missing container"
expect_exit 2 nse restrict --container nosuch --engine docker --allow "$LANNET"
# Without --engine: the real docker's "No such container" ends the search (podman not asked).
expect_exit 2 nse restrict --container nosuch --allow "$LANNET"
assert_contains "$ERR" "no such container 'nosuch'" "docker's 'No such container' is recognized"
assert_not_contains "$ERR" "podman:" "and podman is not asked after it"
expect_exit 0 dk stop -t 0 nnp
expect_exit 2 nse verify --container nnp --engine docker --allow "$LANNET"
assert_contains "$ERR" "not running" "a stopped container: 'not running'"

step "verify on a hand-made iptables policy (IPv4 only, then both families)"
expect_exit 0 dk run -d --name hm "$ENGINE_IMAGE" sleep 600
HM=$(pid_of hm)
assert_match "$(dk exec hm ip -6 addr show dev eth0 2>&1)" 'inet6 fd00:17::' "hm has a global IPv6 address"
assert_true "hm reaches $LAB_LAN6 and $LAB_WAN6 over IPv6 (usable)" eval "reach hm $LAB_LAN6 && reach hm $LAB_WAN6"
hand4() { engines_in_netns "$P" "$HM" iptables "$@"; }
hand6() { engines_in_netns "$P" "$HM" ip6tables "$@"; }
assert_true "iptables by hand in hm's namespace" eval \
	'hand4 -A OUTPUT -o lo -j ACCEPT && hand4 -A OUTPUT -d 192.168.1.0/24 -j ACCEPT && hand4 -A OUTPUT -j DROP'
assert_false "hm: $WAN refused by the hand-made IPv4 policy" reach hm "$WAN"
assert_true "hm: $LAB_WAN6 still answers (IPv6 left open)" reach hm "$LAB_WAN6"
expect_exit 3 nse verify --container hm --allow "$LANNET" --reach "$LAN" --block "$WAN"
assert_match "$OUT" '^FAIL ipv6-outside-refused' "IPv4-only policy: FAIL ipv6-outside-refused"
assert_match "$OUT" '^PASS ipv4-outside-refused' "... while IPv4 passes"
assert_true "ip6tables half by hand" eval 'hand6 -A OUTPUT -o lo -j ACCEPT && hand6 -A OUTPUT -j DROP'
assert_false "hm: $LAB_WAN6 refused now" reach hm "$LAB_WAN6"
expect_exit 0 nse verify --container hm --allow "$LANNET" --reach "$LAN" --block "$WAN" --block "$GW4"
assert_not_contains "$OUT" "FAIL" "both families closed by hand: verify passes"

step "a class on the userns-remapped daemon: five hand-written solutions, one report"
for s in good cheat icmp wide routes; do
	expect_exit 0 dk run -d --name "st_$s" "$ENGINE_IMAGE" sleep 600
done
# student NAME FIRST-LINE ALLOW4: the careful nft solution, in the container's namespace.
student() {
	engines_in_netns "$P" "$(pid_of "st_$1")" nft -f - <<EOF
table inet hw {
	chain out {
		type filter hook output priority 0; policy drop;
		$2
		oif lo accept
		ip daddr $3 accept
		ip6 daddr { fe80::/10, ff02::/16 } icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
		reject
	}
}
EOF
}
assert_true "st_good: the careful solution" student good "" "$LANNET"
assert_true "st_cheat: 'meta skuid 0 accept' (container root) first" student cheat "meta skuid 0 accept" "$LANNET"
assert_true "st_wide: 192.168.0.0/16" student wide "" 192.168.0.0/16
assert_true "st_icmp: only ICMP refused" engines_in_netns "$P" "$(pid_of st_icmp)" nft -f - <<'EOF'
table inet hw {
	chain out {
		type filter hook output priority 0;
		ip daddr != 192.168.1.0/24 meta l4proto icmp reject
		meta l4proto ipv6-icmp icmpv6 type echo-request reject
	}
}
EOF
assert_true "st_routes: routes only" engines_in_netns "$P" "$(pid_of st_routes)" sh -c \
	"ip route del default && ip route add $LANNET via $GW4 && ip -6 route del default"
assert_true "the cheat is real: st_cheat's root reaches $WAN" reach st_cheat "$WAN"
assert_false "st_good: $WAN refused" reach st_good "$WAN"
expect_exit 3 nse verify --engine docker --container st_good --container st_cheat --container st_icmp --container st_wide \
	--container st_routes --allow "$LANNET" --reach "$LAN" --block "$WAN" --expect-userns-remap --json --junit "$TMPD/class.xml"
verdict() { jq -r --arg c "$1" --arg n "$2" '.targets[] | select(.target.container==$c) | .checks[] | select(.name==$n) | .status' <<<"$OUT"; }
fails() { jq -r --arg c "$1" '[.targets[] | select(.target.container==$c) | .checks[] | select(.status=="fail") | .name] | join(",")' <<<"$OUT"; }
assert_eq "" "$(fails st_good)" "st_good passes"
assert_eq pass "$(verdict st_good probe-identity)" "st_good: probes went as container root"
assert_eq fail "$(verdict st_cheat "block $WAN")" "st_cheat: FAIL block $WAN"
assert_eq fail "$(verdict st_icmp "block $WAN")" "st_icmp: FAIL block $WAN (TCP and UDP leave)"
assert_eq fail "$(verdict st_wide ipv4-outside-refused)" "st_wide: FAIL ipv4-outside-refused"
assert_eq pass "$(verdict st_wide "block $WAN")" "st_wide: the forbidden host itself is refused"
assert_eq fail "$(verdict st_routes ipv4-outside-refused)" "st_routes: FAIL ipv4-outside-refused (the docker host stays reachable)"
xml=$(cat "$TMPD/class.xml" 2>/dev/null)
assert_match "$xml" '<testsuite name="st_good" tests="[0-9]+" failures="0"' "JUnit: st_good's suite, no failure"
for s in cheat icmp wide routes; do
	assert_match "$xml" "<testsuite name=\"st_$s\" tests=\"[0-9]+\" failures=\"[1-9]" "JUnit: st_$s's suite fails"
done

step "teardown: nothing left behind, root namespace untouched"
engines_down "$P"
left=$(engines_leftovers "$P")
assert_eq "" "$left" "engines_down left nothing (processes, mounts, state, cgroups, netns)"
engines_root_snapshot >"$TMPD/root.after"
assert_same "$TMPD/root.before" "$TMPD/root.after" "root namespace links and nft tables unchanged"
echo "# elapsed: ${SECONDS}s"

finish
