#!/usr/bin/env bash
# The process environment cannot change what nsegress does, and nsegress leaks no descriptor:
#   - the same results under `env -i`, under a hostile environment (libnl's NLDBG/NLCB debug
#     switches, odd locale, PATH, HOME, TMPDIR) and from a deleted working directory;
#   - started with stdin, stdout and stderr closed, it writes nothing into its own sockets;
#   - every descriptor it creates is close-on-exec and closed again by exit (strace as the
#     observer, tests/integration/fdtrace.py as the judge), for every command;
#   - a child it starts (docker/podman inspect for --container) inherits only 0, 1 and 2.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for tool in strace python3; do
	command -v "$tool" >/dev/null || { fail "$tool is missing (run testenv/bootstrap.sh)"; finish; }
done
setup_lab

A=(--allow 192.168.1.0/24 --allow 2001:db8:1::/64)
GW=("ip" "netns" "exec" "${P}_gw")
HOSTILE=(NLDBG=7 NLCB=debug LANG=tr_TR.UTF-8 LC_ALL=tr_TR.UTF-8 TZ=Pacific/Kiritimati
	PATH=/nonexistent HOME=/nonexistent TMPDIR=/nonexistent IFS=x)

# An ASan build: its runtime opens files and pipes of its own, and LeakSanitizer cannot run
# under ptrace (strace): see fdtrace.py --sanitizer-runtime.
FDTRACE=(python3 "$REPO/tests/integration/fdtrace.py")
# (Not `ldd | grep -q`: under pipefail, ldd writing on after grep's early exit dies of SIGPIPE
# and the test, once in CI, took an ASan build for a plain one.)
if [[ $(ldd "$NSEGRESS" 2>/dev/null) == *libasan* ]]; then
	FDTRACE+=(--sanitizer-runtime)
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi

# run_as LABEL ENVPREFIX... -- ARGS...: nsegress ARGS in gw with the given env wrapper; keeps
# "exit code / stdout / stderr" in $TMPD/LABEL.
run_as() {
	local label=$1
	shift
	local wrapper=()
	while [[ $1 != -- ]]; do
		wrapper+=("$1")
		shift
	done
	shift
	local rc=0
	"${GW[@]}" "${wrapper[@]}" "$NSEGRESS" "$@" >"$TMPD/$label.out" 2>"$TMPD/$label.err" || rc=$?
	printf 'exit %s\n--- stdout\n%s\n--- stderr\n%s\n' "$rc" "$(no_counters <"$TMPD/$label.out")" "$(<"$TMPD/$label.err")" >"$TMPD/$label"
}

# Counters move with whatever ctr sends meanwhile (IPv6 neighbour and router solicitations hit
# the policy too): compare everything but their values.
no_counters() {
	sed -E 's/("(packets|bytes|ipv4|ipv6)": )[0-9]+/\1N/g; s/[0-9]+ (packets|bytes)/N \1/g; s/(IPv[46]) [0-9]+/\1 N/g'
}

# Each compared restrict is a first one: a re-restrict reports how it updated what was there
# (policy.update, set_element_messages), which rightly differs from a first restrict's report.
fresh() { "${GW[@]}" "$NSEGRESS" release --netns "$CTR_NS" >/dev/null 2>&1; }

section "env -i and a hostile environment: same output, same kernel state"
for mode in plain empty hostile; do
	fresh
	case $mode in
	plain) w=(env) ;;
	empty) w=(env -i) ;;
	hostile) w=(env "${HOSTILE[@]}") ;;
	esac
	run_as "restrict.$mode" "${w[@]}" -- restrict --netns "$CTR_NS" "${A[@]}" --no-probe --json
	snapshot >"$TMPD/state.$mode"
	run_as "status.$mode" "${w[@]}" -- status --netns "$CTR_NS" --json
	run_as "human.$mode" "${w[@]}" -- status --netns "$CTR_NS"
	run_as "error.$mode" "${w[@]}" -- restrict --netns "$CTR_NS" --allow 10.0.0.0/33
done
assert_contains "$(<"$TMPD/restrict.plain")" '"ok": true' "restrict works (plain environment)"
assert_contains "$(<"$TMPD/error.plain")" "exit 1" "a bad CIDR is exit 1 (plain environment)"
for mode in empty hostile; do
	for what in restrict status human error; do
		assert_same "$TMPD/$what.plain" "$TMPD/$what.$mode" "$what: the same under the $mode environment"
	done
	assert_same "$TMPD/state.plain" "$TMPD/state.$mode" "kernel state: the same after restrict under the $mode environment"
done
assert_eq "" "$(<"$TMPD/status.hostile.err")" "NLDBG/NLCB set: nothing on stderr (libnl debug output is off)"

section "a deleted working directory"
mkdir "$TMPD/gone"
cwd_run() { (cd "$TMPD/gone" && rmdir "$TMPD/gone" && "$@"); }
DESC="status from a deleted cwd" expect_exit 0 cwd_run "${GW[@]}" "$NSEGRESS" status --netns "$CTR_NS" --json
assert_eq "$(no_counters <"$TMPD/status.plain.out")" "$(no_counters <<<"$OUT")" "status from a deleted cwd: the same document"
mkdir "$TMPD/gone"
fresh
DESC="restrict from a deleted cwd" expect_exit 0 cwd_run "${GW[@]}" "$NSEGRESS" restrict --netns "$CTR_NS" "${A[@]}" --no-probe --json
assert_eq "$(<"$TMPD/restrict.plain.out")" "$OUT" "restrict from a deleted cwd: the same document"
mkdir "$TMPD/gone"
DESC="a relative allow-file from a deleted cwd: a clear error" \
	expect_exit 1 cwd_run "${GW[@]}" "$NSEGRESS" restrict --netns "$CTR_NS" --allow-file list.txt
assert_contains "$ERR" "cannot read allow-file 'list.txt'" "the error names the file"
snapshot >"$TMPD/now"
assert_same "$TMPD/state.plain" "$TMPD/now" "after the deleted-cwd runs: kernel state as before"

section "stdin, stdout and stderr closed: output goes to /dev/null, never into a socket"
# sh closes them right before exec, inside strace (strace's own log must not take fd 1).
# shellcheck disable=SC2016
for cmd in status restrict; do
	args=(status --netns "$CTR_NS")
	[[ $cmd == restrict ]] && args=(restrict --netns "$CTR_NS" "${A[@]}" --no-probe)
	rc=0
	"${GW[@]}" strace -qq -y -o "$TMPD/closed.$cmd" -e signal=none -e trace=write,writev,sendto,sendmsg \
		sh -c 'exec "$0" "$@" <&- >&- 2>&-' "$NSEGRESS" "${args[@]}" || rc=$?
	assert_eq 0 "$rc" "$cmd with 0-2 closed: exit 0"
	assert_match "$(<"$TMPD/closed.$cmd")" '^write\(1</dev/null>' "$cmd with 0-2 closed: its report went to /dev/null"
	# (pipes: an ASan runtime probes memory through pipes of its own)
	stray=$(grep -E '^(write|writev)\([0-9]+<' "$TMPD/closed.$cmd" | grep -Ev '</dev/null>|<pipe:' || true)
	assert_eq "" "$stray" "$cmd with 0-2 closed: nothing written into a socket or file"
	assert_eq "" "$(grep -E '^(write|writev)\([012]<' "$TMPD/closed.$cmd" | grep -v '</dev/null>' || true)" \
		"$cmd with 0-2 closed: fds 0-2 are /dev/null"
done

section "every descriptor close-on-exec, none left open at exit"
TRACE=open,openat,openat2,creat,socket,socketpair,accept,accept4,pipe,pipe2,dup,dup2,dup3,fcntl,memfd_create,eventfd2,epoll_create1,pidfd_open,pidfd_getfd,ioctl,close,close_range
bg_in_ctr sleep 600
sleeper=$!
on_exit "kill $sleeper 2>/dev/null"
for _ in $(seq 1 100); do [[ $(readlink "/proc/$sleeper/exe" 2>/dev/null) == */sleep ]] && break; sleep 0.02; done
printf '192.168.1.0/24\n2001:db8:1::/64\n' >"$TMPD/allow.txt"
state=$(printf '{"ociVersion":"1.0.2","id":"fd","status":"creating","pid":%s,"annotations":{"io.nsegress.allow":"192.168.1.0/24"}}' "$sleeper")
netconf='{"cniVersion":"1.0.0","name":"fd","type":"nsegress","allow":["192.168.1.0/24"],"prevResult":{"cniVersion":"1.0.0"}}'
# traced NAME EXIT STDIN ENV... -- ARGS...: nsegress ARGS in gw under strace (expecting exit
# status EXIT), then the judgement.
traced() {
	local name=$1 want=$2 input=$3
	shift 3
	local envs=()
	while [[ $1 != -- ]]; do
		envs+=("$1")
		shift
	done
	shift
	local rc=0
	printf '%s' "$input" | "${GW[@]}" env "${envs[@]}" strace -qq -o "$TMPD/trace.$name" -e signal=none -e trace="$TRACE" \
		"$NSEGRESS" "$@" >"$TMPD/out.$name" 2>&1 || rc=$?
	assert_eq "$want" "$rc" "$name: exit $want"
	local verdict
	if verdict=$("${FDTRACE[@]}" "$TMPD/trace.$name"); then
		pass "$name: every fd close-on-exec and closed by exit ($(grep -cE '^(openat|socket|pipe2|pidfd_open)\(' "$TMPD/trace.$name") created)"
	else
		fail "$name: fd hygiene"
		printf '%s\n' "$verdict" | head -20 | sed 's/^/#   /'
	fi
}
traced restrict-pid 0 "" -- restrict --pid "$sleeper" "${A[@]}" --allow-file "$TMPD/allow.txt" --probe-reach 192.168.1.10 --probe-block 198.51.100.10
traced status 0 "" -- status --pid "$sleeper" --json
traced probe 0 "" -- probe --netns "$CTR_NS" --target 192.168.1.10 --target 2001:db8:1::10
# (exit 3: the sleeper runs as root, so verify reports a CAP_NET_ADMIN bypass)
traced verify 3 "" -- verify --pid "$sleeper" --allow 192.168.1.0/24 --allow 2001:db8:1::/64 --allow 0.0.0.0/0 --allow ::/0 --reach 192.168.1.10 --junit "$TMPD/junit.xml"
traced release 0 "" -- release --pid "$sleeper"
traced hook 0 "$state" -- hook
traced cni-add 0 "$netconf" CNI_COMMAND=ADD "CNI_NETNS=$CTR_NS" CNI_IFNAME=eth0 CNI_CONTAINERID=fd CNI_PATH=/nonexistent --
traced cni-del 0 "$netconf" CNI_COMMAND=DEL "CNI_NETNS=$CTR_NS" CNI_IFNAME=eth0 CNI_CONTAINERID=fd CNI_PATH=/nonexistent --
assert_eq "" "$(nft_table)" "after CNI DEL: no policy left"

section "a child nsegress starts inherits only 0, 1 and 2"
# A stand-in for `docker inspect` (the only program nsegress runs): it records the descriptors
# it was given and names the lab's sleeper as the container's init. nsegress itself is started
# with fd 7 open, as a careless caller might leave it: that one must not reach the child either.
mkdir -p "$TMPD/bin"
cat >"$TMPD/bin/docker" <<EOS
#!/usr/bin/python3
import os
fds = []
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        fds.append(fd + " " + os.readlink("/proc/self/fd/" + fd))
    except OSError:
        pass  # listdir's own handle, closed by now
open("$TMPD/child-fds", "w").write("\\n".join(fds) + "\\n")
print("$sleeper true")
EOS
chmod +x "$TMPD/bin/docker"
DESC="status --container through the stand-in engine, started with fd 7 open" \
	expect_exit 0 "${GW[@]}" env "PATH=$TMPD/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	sh -c 'exec 7</dev/null; exec "$0" "$@"' "$NSEGRESS" status --container fdtest --engine docker --json
assert_eq "$sleeper" "$(jq -r .target.pid <<<"$OUT")" "the stand-in's answer was used"
assert_eq "0 1 2 " "$(cut -d' ' -f1 "$TMPD/child-fds" | tr '\n' ' ')" "the child got exactly fds 0, 1, 2"
assert_match "$(<"$TMPD/child-fds")" '^0 /dev/null' "the child's stdin is /dev/null"

finish
