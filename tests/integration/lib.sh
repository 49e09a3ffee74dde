# shellcheck shell=bash
# tests/integration/lib.sh: shared setup and assertions for the integration tests.
#
# Source it first thing in a test script. It
#   - skips (exit 77) when not root, or fails when CI is set (a skip in CI is a failure);
#   - sources testenv/lab.sh and picks a lab prefix unique to this run: $P;
#   - defines assertions that count and go on (no set -e), and `finish` that prints the tally
#     "N passed, N failed" and exits non-zero on any failure.
#
# nsegress is always run from inside the lab's gw namespace (the lab's "host"): it is pointed at
# the container with --netns/--pid, and if it ever acted on its own namespace instead, a lab
# namespace would take the hit, never the machine's. Use `nsg ARGS...` for that.

set -uo pipefail

TEST_NAME=$(basename "$0" .sh)
REPO=${NSEGRESS_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
NSEGRESS=${NSEGRESS:-$REPO/build/nsegress}

if [[ $(id -u) -ne 0 ]]; then
	if [[ -n ${CI-} ]]; then
		echo "FAIL: $TEST_NAME needs root (network namespaces); CI is set, so this is not skipped"
		exit 1
	fi
	echo "SKIP: $TEST_NAME needs root (network namespaces)"
	exit 77
fi
if [[ ! -x $NSEGRESS ]]; then
	echo "FAIL: nsegress binary not found at '$NSEGRESS' (set NSEGRESS or build first)"
	exit 1
fi
# require_tools TOOL...: fail the test at once (never skip) when a tool is missing.
require_tools() {
	local tool
	for tool in "$@"; do
		if ! command -v "$tool" >/dev/null; then
			echo "FAIL: $tool is missing (run testenv/bootstrap.sh)"
			exit 1
		fi
	done
}
require_tools ip nft ping nc socat jq conntrack setpriv unshare

# shellcheck source=../../testenv/lab.sh
source "$REPO/testenv/lab.sh"
LAB_AUTOREAP=1 # a lab of a test killed by its timeout is reaped by the next run

# Unique per test (from CMake) and per run (pid), so parallel ctest runs never share a lab.
P="${LAB_PREFIX:-nsg${TEST_NAME#test_}}-$$"
P=${P//_/}
CTR_NS=$(lab_netns "$P" ctr)
TMPD=$(mktemp -d "/tmp/nsegress-$TEST_NAME.XXXXXX")

_pass=0
_fail=0
_cleanup_hooks=()

# Register extra cleanup (runs before the lab is torn down).
on_exit() { _cleanup_hooks+=("$*"); }

_run_cleanup() {
	local h
	for h in "${_cleanup_hooks[@]}"; do eval "$h" || true; done
	lab_down "$P"
	rm -rf -- "$TMPD"
}
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Build the lab or give up at once (nothing can be asserted without it).
setup_lab() {
	lab_reap_stale
	if ! lab_up "$P"; then
		echo "FAIL: could not build the lab '$P'"
		exit 1
	fi
}

pass() {
	_pass=$((_pass + 1))
	echo "ok - $*"
}
fail() {
	_fail=$((_fail + 1))
	echo "not ok - $*"
}
section() { printf '\n# %s\n' "$*"; }

# assert_eq EXPECTED ACTUAL MESSAGE
assert_eq() {
	if [[ $1 == "$2" ]]; then
		pass "$3"
	else
		fail "$3: expected '$1', got '$2'"
	fi
}

# assert_contains HAYSTACK NEEDLE MESSAGE (fixed string)
assert_contains() {
	if [[ $1 == *"$2"* ]]; then
		pass "$3"
	else
		fail "$3: '$2' not found in: $(printf '%s' "$1" | head -c 2000)"
	fi
}

assert_not_contains() {
	if [[ $1 != *"$2"* ]]; then
		pass "$3"
	else
		fail "$3: '$2' unexpectedly found in: $(printf '%s' "$1" | head -c 2000)"
	fi
}

# assert_match HAYSTACK EXTENDED-REGEX MESSAGE (grep -E on the whole text)
assert_match() {
	if grep -Eq -- "$2" <<<"$1"; then
		pass "$3"
	else
		fail "$3: /$2/ does not match: $(printf '%s' "$1" | head -c 2000)"
	fi
}

assert_true() {
	local msg=$1
	shift
	if "$@"; then pass "$msg"; else fail "$msg (command failed: $*)"; fi
}

assert_false() {
	local msg=$1
	shift
	if "$@"; then fail "$msg (command unexpectedly succeeded: $*)"; else pass "$msg"; fi
}

# assert_same FILE_BEFORE FILE_AFTER MESSAGE: identical, or fail with the diff
assert_same() {
	local d
	if d=$(diff -u "$1" "$2"); then
		pass "$3"
	else
		fail "$3; diff:"
		printf '%s\n' "$d" | sed 's/^/#   /'
	fi
}

# expect_exit CODE CMD...: run CMD, keep stdout in $OUT and stderr in $ERR, check the exit status.
OUT='' ERR='' RC=0
expect_exit() {
	local want=$1
	shift
	local desc="${DESC:-$*}"
	"$@" >"$TMPD/out" 2>"$TMPD/err"
	RC=$?
	OUT=$(<"$TMPD/out")
	ERR=$(<"$TMPD/err")
	if [[ $RC -eq $want ]]; then
		pass "exit $want: $desc"
	else
		fail "exit $want expected, got $RC: $desc"
		# A JSON report (verify, grade, status): its checks that did not pass, whole, first.
		jq -c '(.checks // [])[] | select(.status != "pass")' <<<"$OUT" 2>/dev/null | head -20 | sed 's/^/#   check: /'
		jq -c '(.forged_replies // [])[] | select(.leaked)' <<<"$OUT" 2>/dev/null | head -10 | sed 's/^/#   leaked: /'
		[[ -n $OUT ]] && printf '%s\n' "$OUT" | head -20 | sed 's/^/#   stdout: /'
		[[ -n $ERR ]] && printf '%s\n' "$ERR" | head -20 | sed 's/^/#   stderr: /'
	fi
	return 0
}

finish() {
	echo
	echo "$TEST_NAME: $_pass passed, $_fail failed"
	[[ $_fail -eq 0 && $_pass -gt 0 ]]
	exit $?
}

# --- lab helpers ----------------------------------------------------------------------------------

# The test runner's own network namespace: nsegress must never be pointed at it.
RUNNER_NETNS_INO=$(stat -L -c %i "/proc/$$/ns/net")

_lab_netns_inos() {
	local n
	for n in "${_lab_nodes[@]}"; do stat -L -c %i "/run/netns/${P}_$n" 2>/dev/null; done
	# Extra namespaces of this lab (lab_extra_ns): PREFIX_NAME, NAME without '_'.
	for n in /run/netns/"${P}"_*; do
		[[ -e $n && ${n#/run/netns/"${P}"_} != *_* ]] && stat -L -c %i "$n" 2>/dev/null
	done
}

# Safety net against test bugs: refuse to run nsegress when --pid names a live process outside the
# lab's namespaces (or one whose namespace cannot be read, such as PID 1's), or --netns names the
# runner's own namespace. Nonexistent pids and paths pass: they are what bad-input tests need.
_guard_target() {
	local prev='' a val kind ino
	for a in "$@"; do
		kind='' val=''
		case $a in
		--pid=*) kind=pid val=${a#--pid=} ;;
		--netns=*) kind=netns val=${a#--netns=} ;;
		*) case $prev in --pid) kind=pid val=$a ;; --netns) kind=netns val=$a ;; esac ;;
		esac
		prev=$a
		case $kind in
		pid)
			[[ $val =~ ^[0-9]+$ && -e /proc/$val ]] || continue
			ino=$(stat -L -c %i "/proc/$val/ns/net" 2>/dev/null)
			# A zombie has no namespaces left to read; vouch for it by its parent's.
			if [[ -z $ino && $(lab_proc_state "$val") == Z ]]; then
				local ppid
				ppid=$(awk '/^PPid:/ {print $2}' "/proc/$val/status" 2>/dev/null)
				[[ -n $ppid ]] && ino=$(stat -L -c %i "/proc/$ppid/ns/net" 2>/dev/null)
			fi
			local labs
			labs=" $(_lab_netns_inos | tr '\n' ' ') "
			if [[ -z $ino || $labs != *" $ino "* ]]; then
				echo "SAFETY: --pid $val is not a process in this test's lab namespaces; not running nsegress"
				return 1
			fi
			;;
		netns)
			[[ -e $val ]] || continue
			ino=$(stat -L -c %i "$val" 2>/dev/null)
			if [[ $(stat -f -L -c %T "$val" 2>/dev/null) == nsfs && $ino == "$RUNNER_NETNS_INO" ]]; then
				echo "SAFETY: --netns $val is the test runner's own network namespace; not running nsegress"
				return 1
			fi
			;;
		esac
	done
	return 0
}

# nsegress, run on the lab's "host" (gw namespace). Use --netns "$CTR_NS" or --pid to target ctr.
# Exits 99 (a failed assertion) instead of running when the target fails _guard_target.
nsg() {
	local why
	if ! why=$(_guard_target "$@"); then
		fail "$why: nsegress $*"
		echo "$why" >&2
		return 99
	fi
	ip netns exec "${P}_gw" "$NSEGRESS" "$@"
}

# bg_in_ns NAME CMD...: start CMD in the background in namespace /run/netns/NAME and return once it
# is really there. $! is then the command itself (ip netns exec execs it), never a subshell of this
# script (a backgrounded shell function would be one, in the runner's namespace). Until ip has
# called setns() and exec'd CMD, that pid is still in the runner's namespace: a test that passed
# it as --pid straight away would race (and _guard_target refuses it).
bg_in_ns() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@" &
	eventually _entered "$!" "$(stat -L -c %i "/run/netns/$ns")" || true
}

# _entered PID NETNS_INO: PID is in that namespace and has exec'd its command (or is gone).
_entered() {
	[[ -e /proc/$1 ]] || return 0
	[[ $(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) == "$2" && $(cat "/proc/$1/comm" 2>/dev/null) != ip ]]
}

bg_in_ctr() { bg_in_ns "${P}_ctr" "$@"; }

in_ctr() { ip netns exec "${P}_ctr" "$@"; }

# One quick echo request from inside ctr; succeeds when answered.
ping_ok() { in_ctr ping -n -c1 -W1 -q "$1" >/dev/null 2>&1; }

# TCP connect from ctr to a lab listener.
tcp_ok() { in_ctr nc -z -w2 "$1" "$LAB_TCP_PORT" >/dev/null 2>&1; }

# Send one UDP datagram from ctr (no answer expected; the listener logs what it got).
udp_send() { printf '%s\n' "$2" | in_ctr socat -u - "UDP-SENDTO:$(bracket "$1"):$LAB_UDP_PORT" >/dev/null 2>&1; }

# The line of a ping's output that says why it failed.
why() { grep -Em1 'not permitted|nreachable|No route to host|rohibited|100% packet loss' <<<"$1" || head -1 <<<"$1"; }

bracket() { if [[ $1 == *:* ]]; then printf '[%s]' "$1"; else printf '%s' "$1"; fi; }

# eventually CMD...: poll CMD until it succeeds, up to 5 s. For state the kernel removes
# asynchronously (a dead namespace's devices go in a workqueue, once its last reference, e.g.
# a socket of nsegress's short-lived nsegress-close helper, is gone). Not a timing assertion.
eventually() {
	local i
	for ((i = 0; i < 250; i++)); do
		"$@" && return 0
		sleep 0.02
	done
	return 1
}

# wait_all PID...: wait for each background job of this shell (not in a subshell: it could not
# wait for them); WAIT_FAILED is how many exited non-zero.
wait_all() {
	local pid
	WAIT_FAILED=0
	for pid in "$@"; do wait "$pid" || WAIT_FAILED=$((WAIT_FAILED + 1)); done
}

# wait_for_text FILE TEXT [SECONDS]: poll until FILE contains TEXT.
wait_for_text() {
	local f=$1 text=$2 secs=${3:-3} i
	for ((i = 0; i < secs * 50; i++)); do
		grep -qF -- "$text" "$f" 2>/dev/null && return 0
		sleep 0.02
	done
	return 1
}

# Kernel state of ctr as independent tools see it (counters left out: traffic changes them).
snapshot() {
	{
		echo "== ip -4 rule"
		ip -n "${P}_ctr" -4 rule show
		echo "== ip -6 rule"
		ip -n "${P}_ctr" -6 rule show
		echo "== ip -4 route show table all"
		ip -n "${P}_ctr" -4 route show table all
		echo "== ip -6 route show table all"
		ip -n "${P}_ctr" -6 route show table all
		echo "== nft list ruleset"
		in_ctr nft -s list ruleset
	} 2>&1
}

# The table nsegress owns, as nft prints it (empty when absent).
nft_table() { in_ctr nft list table inet nsegress 2>/dev/null; }
nft_table_json() { in_ctr nft -j list table inet nsegress 2>/dev/null; }

# Elements of the allow-list set of a given type (ipv4_addr: allow4, ipv6_addr: allow6; another
# set by name as $2), one per line, as nft shows them: "192.168.1.0/24",
# "192.168.1.0-192.168.2.127" or a bare address.
nft_elements() {
	local name=${2:-}
	[[ -n $name ]] || { [[ $1 == ipv4_addr ]] && name=allow4 || name=allow6; }
	nft_table_json | jq -r --arg t "$1" --arg n "$name" '
		.nftables[] | select(.set) | .set | select(.type == $t and .name == $n) | (.elem // [])[] |
		if type == "string" then .
		elif has("prefix") then "\(.prefix.addr)/\(.prefix.len)"
		elif has("range") then "\(.range[0])-\(.range[1])"
		elif has("elem") then (.elem.val | if type == "object" and has("prefix") then "\(.prefix.addr)/\(.prefix.len)" else tostring end)
		else tostring end'
}

# ip route get from ctr's point of view (quiet; the exit status tells).
route_get() { ip -n "${P}_ctr" "-$1" route get "$2" >/dev/null 2>&1; }

# ctr's ip rules (one family) other than the kernel's defaults (priorities 0, 32766, 32767).
extra_rules() {
	ip -n "${P}_ctr" "-$1" rule show | grep -Ev '^(0|32766|32767):'
}

# The kernel's own count of locally generated packets refused for want of a route.
out_no_routes() {
	case $1 in
	4) in_ctr awk '/^Ip: / && !h {h=1; for (i=1;i<=NF;i++) n[i]=$i; next} /^Ip: / {for (i=1;i<=NF;i++) if (n[i]=="OutNoRoutes") print $i}' /proc/net/snmp ;;
	6) in_ctr awk '$1=="Ip6OutNoRoutes" {print $2}' /proc/net/snmp6 ;;
	esac
}

# --- shared by the tests that run real engines (they source testenv/engines.sh first) ----------
nse() { engines_nsegress "$P" "$@"; }
dk() { docker_cmd "$P" "$@"; }
pid_of() { dk inspect -f '{{.State.Pid}}' "$1"; }
# One echo request from inside container $1 to $2 (ping or ping6 by the address).
dping() {
	local cmd=ping
	[[ $2 == *:* ]] && cmd=ping6
	dk exec "$1" "$cmd" -c1 -W1 "$2" 2>&1
}
reach() { dping "$1" "$2" >/dev/null; }

# count_packets HOST COMMENT: packets counted by the rule tagged COMMENT in table inet count of
# ${P}_HOST (an observer table a test installs on a lab host).
count_packets() {
	ip netns exec "${P}_$1" nft -j list table inet count |
		jq -r --arg c "$2" '.nftables[] | select(.rule) | .rule | select(.comment == $c) | .expr[] | select(.counter) | .counter.packets'
}
