#!/usr/bin/env bash
# --container NAME as a newcomer meets it (issue 18), with stand-in docker/podman CLIs on PATH
# that answer like the real ones and record every call (the real engines: test_engine_*.sh):
#   - docker's definitive "No such container" ends the search: podman is not asked;
#   - docker's daemon not answering: podman is asked (and its answer used);
#   - a non-root user gets the same "missing privilege" line as with --pid, and no engine CLI
#     runs for them (rootless podman would start state of its own: a `podman pause` process);
#   - run by sudo without DOCKER_HOST, the error says how to keep it (sudo -E, docker context).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup_lab

bg_in_ctr sleep 600
sleeper=$!
on_exit "kill $sleeper 2>/dev/null"

mkdir -p "$TMPD/bin"
: >"$TMPD/calls"
chmod 755 "$TMPD" "$TMPD/bin"
chmod 666 "$TMPD/calls"
# stand-in ENGINE MODE: MODE nosuch (docker's daemon: no such container), down (daemon not
# running), found (the lab's sleeper is the container's init).
stand_in() {
	local engine=$1 mode=$2
	cat >"$TMPD/bin/$engine" <<EOS
#!/bin/sh
echo "$engine uid=\$(/usr/bin/id -u) \$*" >>"$TMPD/calls"
for last; do :; done
case $mode in
nosuch) echo "Error response from daemon: No such container: \$last" >&2; exit 1 ;;
down) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1 ;;
found) echo "$sleeper true" ;;
esac
EOS
	chmod 755 "$TMPD/bin/$engine"
}
PATHS="PATH=$TMPD/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# run nsegress from gw with the stand-ins first on PATH (and no SUDO_USER unless given)
nsg_env() { ip netns exec "${P}_gw" env -u SUDO_USER -u DOCKER_HOST "$PATHS" "$@"; }
calls() { grep -c "^$1 " "$TMPD/calls"; }

section "docker says 'No such container': that ends the search"
stand_in docker nosuch
stand_in podman found
: >"$TMPD/calls"
DESC="restrict --container wbe (a typo)" \
	expect_exit 2 nsg_env "$NSEGRESS" restrict --container wbe --allow 192.168.1.0/24
assert_eq "1" "$(grep -c . <<<"$ERR")" "one-line error"
assert_contains "$ERR" "no such container 'wbe'" "the error says the container does not exist"
assert_contains "$ERR" "No such container: wbe" "and quotes docker's answer"
assert_contains "$ERR" "--engine podman" "and how to ask podman instead"
assert_not_contains "$ERR" "podman:" "no mixed message with podman's answer"
assert_eq "1" "$(calls docker)" "docker was asked once"
assert_eq "0" "$(calls podman)" "podman was not asked"
assert_eq "" "$(nft_table)" "nothing installed"

section "--engine podman asks podman (only)"
: >"$TMPD/calls"
expect_exit 0 nsg_env "$NSEGRESS" status --container web --engine podman --json
assert_eq "$sleeper" "$(jq -r .target.pid <<<"$OUT")" "podman's answer was used"
assert_eq "0" "$(calls docker)" "docker was not asked"

section "docker's daemon does not answer: podman is asked"
stand_in docker down
: >"$TMPD/calls"
expect_exit 0 nsg_env "$NSEGRESS" restrict --container web --allow 192.168.1.0/24 --no-probe --json
assert_eq "$sleeper" "$(jq -r .target.pid <<<"$OUT")" "podman's answer was used"
assert_contains "$(nft_table)" "192.168.1.0/24" "and the container restricted"
assert_eq "1 1" "$(calls docker) $(calls podman)" "docker, then podman, once each"
expect_exit 0 nsg release --netns "$CTR_NS"

section "docker not installed, podman not found either: both answers in one line"
rm "$TMPD/bin/docker"
stand_in podman nosuch
DESC="no docker on PATH" expect_exit 2 ip netns exec "${P}_gw" env -u SUDO_USER "PATH=$TMPD/bin" \
	"$NSEGRESS" status --container web
assert_contains "$ERR" "docker: not installed" "says docker is not installed"
assert_contains "$ERR" "podman: Error response from daemon: No such container" "and what podman said"

section "not root: the missing-privilege line of --pid, and no engine CLI runs"
stand_in docker found
stand_in podman found
as_nobody() { ip netns exec "${P}_gw" env -u SUDO_USER "$PATHS" setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
for cmd in "restrict --allow 192.168.1.0/24" "status" "release" "watch --duration 1" \
	"verify --allow 192.168.1.0/24" "probe --target 192.168.1.10" "restrict --audit --no-probe"; do
	: >"$TMPD/calls"
	# shellcheck disable=SC2086 # $cmd: the command and its options
	DESC="as uid 65534, $cmd --pid" expect_exit 2 as_nobody "$NSEGRESS" $cmd --pid "$sleeper"
	pid_err=$ERR
	# shellcheck disable=SC2086
	DESC="as uid 65534, $cmd --container web" expect_exit 2 as_nobody "$NSEGRESS" $cmd --container web
	assert_contains "$ERR" "missing privilege" "$cmd --container: names the missing privilege"
	assert_eq "$pid_err" "$ERR" "$cmd --container: the same line as --pid"
	assert_eq "" "$(<"$TMPD/calls")" "$cmd --container: no engine CLI was run"
done

section "a non-root caller with the capabilities still never runs podman"
stand_in docker down
: >"$TMPD/calls"
DESC="uid 65534 with CAP_SYS_ADMIN, CAP_NET_ADMIN" \
	expect_exit 2 ip netns exec "${P}_gw" env -u SUDO_USER "$PATHS" setpriv --reuid=65534 --regid=65534 --clear-groups \
	--inh-caps=+sys_admin,+net_admin --ambient-caps=+sys_admin,+net_admin "$NSEGRESS" status --container web
assert_contains "$ERR" "podman: not asked" "says why podman was not asked"
assert_eq "1 0" "$(calls docker) $(calls podman)" "docker asked, podman never run"

section "under sudo without DOCKER_HOST: the error says how to keep it"
stand_in docker nosuch
DESC="SUDO_USER set, no DOCKER_HOST" expect_exit 2 ip netns exec "${P}_gw" env -u DOCKER_HOST SUDO_USER=alice "$PATHS" \
	"$NSEGRESS" status --container web
assert_contains "$ERR" "sudo -E" "names sudo -E"
assert_contains "$ERR" "docker context" "names docker contexts"
DESC="SUDO_USER and DOCKER_HOST set" expect_exit 2 ip netns exec "${P}_gw" env DOCKER_HOST=unix:///nonexistent SUDO_USER=alice "$PATHS" \
	"$NSEGRESS" status --container web
assert_not_contains "$ERR" "sudo -E" "DOCKER_HOST kept: no hint"

finish
