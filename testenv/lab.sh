# shellcheck shell=bash disable=SC2034  # a library: its variables are for the scripts that source it
# testenv/lab.sh: build and tear down the sealed test lab for nsegress.
#
# Source this file, then:
#   lab_up PREFIX        build the lab (namespaces PREFIX_ctr, _gw, _lan, _wan)
#   lab_down PREFIX      tear it down (safe twice, safe on a half-built lab)
#   lab_trap PREFIX      tear it down when the calling shell exits (also on failure)
#   lab_exec PREFIX NODE CMD...   run CMD inside PREFIX_NODE (NODE: ctr, gw, lan, wan)
#   lab_netns PREFIX NODE         print the namespace path (/run/netns/PREFIX_NODE)
#   lab_log PREFIX HOST PROTO     print the listener log path (HOST lan|wan, PROTO tcp|udp)
#   lab_reap_stale                tear down LAB_AUTOREAP=1 labs whose owning shell died (e.g. a test
#                                 killed by a timeout); labs built by hand are left alone
#
# Topology (see shared/docs/lab-safety.md; nothing here touches the root namespace):
#
#   ctr  eth0 172.31.0.2/24 fd00:31::2/64, default via 172.31.0.1 / fd00:31::1
#    |
#   gw   c0 172.31.0.1/24 fd00:31::1/64   (forwarding on, v4 and v6)
#    |-- l0 192.168.1.1/24 2001:db8:1::1/64 -- lan eth0 192.168.1.10/24 2001:db8:1::10/64  (allowed)
#    `-- w0 198.51.100.1/24 2001:db8:2::1/64 -- wan eth0 198.51.100.10/24 2001:db8:2::10/64 (forbidden)
#
# lan and wan each run listeners that record what they receive, on both families:
#   TCP port $LAB_TCP_PORT -> $(lab_log P HOST tcp)     UDP port $LAB_UDP_PORT -> $(lab_log P HOST udp)
#
# Safety rules enforced here: every namespace is created by `ip netns add` with the caller's prefix;
# veths are created directly inside lab namespaces (never in the root namespace); only lab
# addresses are used; every command that configures or sends anything runs via `ip -n`/
# `ip netns exec` in a lab namespace.

LAB_TCP_PORT=${LAB_TCP_PORT:-8080}
LAB_UDP_PORT=${LAB_UDP_PORT:-9999}
LAB_STATE_ROOT=${LAB_STATE_ROOT:-/run/nsegress-lab}

# Lab addresses, for scripts that source this file.
LAB_CTR4=172.31.0.2 LAB_CTR6=fd00:31::2
LAB_GW4=172.31.0.1 LAB_GW6=fd00:31::1
LAB_LAN4=192.168.1.10 LAB_LAN6=2001:db8:1::10 LAB_LAN_NET4=192.168.1.0/24 LAB_LAN_NET6=2001:db8:1::/64
LAB_WAN4=198.51.100.10 LAB_WAN6=2001:db8:2::10 LAB_WAN_NET4=198.51.100.0/24 LAB_WAN_NET6=2001:db8:2::/64

_lab_nodes=(ctr gw lan wan)

# A process's state letter (R, S, Z, ...) from /proc/PID/stat, empty when it does not exist.
# The command name in field 2 may hold spaces: read after its closing parenthesis.
lab_proc_state() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	st=${st##*) }
	printf '%s\n' "${st%% *}"
}

_lab_err() { printf 'lab: %s\n' "$*" >&2; }

_lab_check_prefix() {
	if [[ ! ${1-} =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$ ]]; then
		_lab_err "invalid lab prefix '${1-}' (letters, digits, _ and -, at most 40)"
		return 1
	fi
}

lab_state_dir() { printf '%s/%s\n' "$LAB_STATE_ROOT" "$1"; }
# lab_sealed PATH: PATH is a network namespace file and not the caller's own namespace (so not
# the machine's): daemons and plugins may be started in it.
lab_sealed() {
	if [[ $(stat -f -L -c %T "$1" 2>/dev/null) != nsfs ]]; then
		_lab_err "$1 is not a network namespace file"
		return 1
	fi
	if [[ $(stat -L -c %i "$1") == "$(stat -L -c %i "/proc/$$/ns/net")" ]]; then
		_lab_err "$1 is this shell's own network namespace; refusing"
		return 1
	fi
}
lab_netns() { printf '/run/netns/%s_%s\n' "$1" "$2"; }
lab_log() { printf '%s/%s.%s.log\n' "$(lab_state_dir "$1")" "$2" "$3"; }

lab_exec() {
	local p=$1 node=$2
	shift 2
	ip netns exec "${p}_${node}" "$@"
}

# Run a command in a lab namespace, failing loudly with the command in the message.
_lab_run() {
	local ns=$1
	shift
	if ! ip netns exec "$ns" "$@"; then
		_lab_err "in $ns: '$*' failed"
		return 1
	fi
}

_lab_ip() {
	local ns=$1
	shift
	if ! ip -n "$ns" "$@"; then
		_lab_err "ip -n $ns $* failed"
		return 1
	fi
}

# Start a background listener inside a lab namespace and record its pid.
_lab_listener() {
	local p=$1 host=$2 proto=$3 dir log pidfile
	dir=$(lab_state_dir "$p")
	log=$(lab_log "$p" "$host" "$proto")
	pidfile="$dir/$host.$proto.pid"
	: >"$log"
	local addr
	case $proto in
	# fork: one child per connection, all appending to one log; ipv6only=0: v4 and v6 on one socket.
	tcp) addr="TCP6-LISTEN:${LAB_TCP_PORT},ipv6only=0,reuseaddr,fork" ;;
	# UDP-RECV takes datagrams from every peer without connecting to the first one.
	udp) addr="UDP6-RECV:${LAB_UDP_PORT},ipv6only=0" ;;
	esac
	ip netns exec "${p}_${host}" socat -u "$addr" "OPEN:$log,creat,append" \
		</dev/null >/dev/null 2>>"$dir/listeners.err" &
	echo $! >"$pidfile"
}

_lab_wait_listening() {
	local p=$1 host=$2 i
	for i in $(seq 1 100); do
		# Captured, not piped into grep -q: under pipefail an early-exiting grep fails the pipe.
		if [[ -n $(ip netns exec "${p}_${host}" ss -Htln "sport = :$LAB_TCP_PORT") &&
			-n $(ip netns exec "${p}_${host}" ss -Huln "sport = :$LAB_UDP_PORT") ]]; then
			return 0
		fi
		sleep 0.02
	done
	_lab_err "listeners in ${p}_${host} did not start"
	return 1
}

_lab_wait_ll() {
	local ns=$1 dev=$2 i
	for i in $(seq 1 300); do
		if [[ $(ip -n "$ns" -6 addr show dev "$dev" scope link 2>/dev/null) == *"inet6 fe80"* &&
			$(ip -n "$ns" -6 addr show dev "$dev" tentative 2>/dev/null) != *inet6* ]]; then
			return 0
		fi
		sleep 0.01
	done
	_lab_err "no link-local IPv6 address on $dev in $ns after 3s"
	return 1
}

# Set up one namespace: lo up, no DAD, optional forwarding.
_lab_ns() {
	local ns=$1
	ip netns add "$ns" || return 1
	# accept_dad=0 before any link exists so new links inherit it from default.
	_lab_run "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 || return 1
	_lab_ip "$ns" link set lo up
}

lab_up() {
	local p=${1-}
	_lab_check_prefix "$p" || return 1
	if [[ $(id -u) -ne 0 ]]; then
		_lab_err "lab_up needs root"
		return 1
	fi
	local dir
	dir=$(lab_state_dir "$p")
	mkdir -p "$dir" || return 1
	# The owner's pid lets lab_reap_stale recognise a lab whose test was killed.
	echo "${LAB_OWNER_PID:-$$}" >"$dir/owner"
	# Only labs built with LAB_AUTOREAP=1 (tests, the demo) are reaped once their owner is gone;
	# a lab built by hand stays until its own lab_down.
	if [[ ${LAB_AUTOREAP:-0} == 1 ]]; then : >"$dir/autoreap"; fi
	local node
	for node in "${_lab_nodes[@]}"; do
		if [[ -e /run/netns/${p}_${node} ]]; then
			_lab_err "namespace ${p}_${node} already exists; pick another prefix or run lab_down $p"
			return 1
		fi
	done
	for node in "${_lab_nodes[@]}"; do
		_lab_ns "${p}_${node}" || return 1
	done
	local ctr=${p}_ctr gw=${p}_gw lan=${p}_lan wan=${p}_wan
	_lab_run "$gw" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 || return 1

	# veth pairs born inside lab namespaces, one end moved straight to its peer namespace.
	_lab_ip "$ctr" link add eth0 type veth peer name c0 netns "$gw" || return 1
	_lab_ip "$lan" link add eth0 type veth peer name l0 netns "$gw" || return 1
	_lab_ip "$wan" link add eth0 type veth peer name w0 netns "$gw" || return 1

	_lab_ip "$ctr" addr add 172.31.0.2/24 dev eth0 || return 1
	_lab_ip "$ctr" addr add fd00:31::2/64 dev eth0 nodad || return 1
	_lab_ip "$gw" addr add 172.31.0.1/24 dev c0 || return 1
	_lab_ip "$gw" addr add fd00:31::1/64 dev c0 nodad || return 1
	_lab_ip "$gw" addr add 192.168.1.1/24 dev l0 || return 1
	_lab_ip "$gw" addr add 2001:db8:1::1/64 dev l0 nodad || return 1
	_lab_ip "$gw" addr add 198.51.100.1/24 dev w0 || return 1
	_lab_ip "$gw" addr add 2001:db8:2::1/64 dev w0 nodad || return 1
	_lab_ip "$lan" addr add 192.168.1.10/24 dev eth0 || return 1
	_lab_ip "$lan" addr add 2001:db8:1::10/64 dev eth0 nodad || return 1
	_lab_ip "$wan" addr add 198.51.100.10/24 dev eth0 || return 1
	_lab_ip "$wan" addr add 2001:db8:2::10/64 dev eth0 nodad || return 1

	_lab_ip "$ctr" link set eth0 up || return 1
	_lab_ip "$lan" link set eth0 up || return 1
	_lab_ip "$wan" link set eth0 up || return 1
	local l
	for l in c0 l0 w0; do _lab_ip "$gw" link set "$l" up || return 1; done

	_lab_ip "$ctr" route add default via 172.31.0.1 || return 1
	_lab_ip "$ctr" -6 route add default via fd00:31::1 || return 1
	_lab_ip "$lan" route add default via 192.168.1.1 || return 1
	_lab_ip "$lan" -6 route add default via 2001:db8:1::1 || return 1
	_lab_ip "$wan" route add default via 198.51.100.1 || return 1
	_lab_ip "$wan" -6 route add default via 2001:db8:2::1 || return 1

	local host proto
	for host in lan wan; do
		for proto in tcp udp; do _lab_listener "$p" "$host" "$proto"; done
	done
	# Link-local IPv6 addresses appear only once the kernel's link watch marks a veth running
	# (it may batch that for up to a second); v6 neighbour discovery needs them.
	_lab_wait_ll "$ctr" eth0 || return 1
	_lab_wait_ll "$lan" eth0 || return 1
	_lab_wait_ll "$wan" eth0 || return 1
	for l in c0 l0 w0; do _lab_wait_ll "$gw" "$l" || return 1; done
	for host in lan wan; do _lab_wait_listening "$p" "$host" || return 1; done

	# Warm the neighbour caches (and prove the lab works) before anyone times anything.
	local dst ok=0
	for dst in 192.168.1.10 198.51.100.10 2001:db8:1::10 2001:db8:2::10; do
		local _try
		for _try in 1 2 3 4 5; do
			if ip netns exec "$ctr" ping -c1 -W1 -q "$dst" >/dev/null 2>&1; then
				ok=$((ok + 1))
				break
			fi
		done
	done
	if [[ $ok -ne 4 ]]; then
		_lab_err "lab $p: ctr cannot reach every lab host before any policy ($ok/4 answered)"
		return 1
	fi
	return 0
}

# Kill a recorded pid only if it still is one of our lab processes (guards against pid reuse).
_lab_kill_pidfile() {
	local f=$1 pid
	[[ -f $f ]] || return 0
	pid=$(<"$f")
	local cmd=''
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] && cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
	if [[ $cmd == "ip netns exec "* || $cmd == socat* ]]; then
		kill "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

lab_down() {
	local p=${1-}
	_lab_check_prefix "$p" || return 1
	local dir node ns pids
	dir=$(lab_state_dir "$p")
	if [[ -d $dir ]]; then
		local f
		for f in "$dir"/*.pid; do
			[[ -e $f ]] && _lab_kill_pidfile "$f"
		done
	fi
	# The four nodes, then any extra namespace a test made with lab_extra_ns (PREFIX_*).
	local extra=()
	for ns in /run/netns/"${p}"_*; do
		[[ -e $ns ]] || continue
		node=${ns#/run/netns/"${p}"_}
		# Extra names have no '_' (lab_extra_ns checks): PREFIX_a_ctr belongs to lab PREFIX_a.
		[[ $node == *_* || " ${_lab_nodes[*]} " == *" $node "* ]] || extra+=("$node")
	done
	for node in "${_lab_nodes[@]}" "${extra[@]}"; do
		ns=${p}_${node}
		[[ -e /run/netns/$ns ]] || continue
		# Whatever still runs inside a lab namespace (listeners, a test's sleep) belongs to the lab.
		pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
		if [[ -n ${pids// /} ]]; then
			# shellcheck disable=SC2086
			kill $pids 2>/dev/null || true
			local _i
			for _i in $(seq 1 50); do
				[[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
				sleep 0.02
			done
			pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
			# shellcheck disable=SC2086
			[[ -n ${pids// /} ]] && kill -KILL $pids 2>/dev/null
		fi
		ip netns del "$ns" 2>/dev/null || _lab_err "could not delete namespace $ns"
	done
	[[ -d $dir ]] && rm -rf -- "$dir"
	return 0
}

# lab_extra_ns PREFIX NAME: one more, unconnected namespace PREFIX_NAME (lo up, no DAD), for tests
# that need many namespaces without traffic; lab_down removes it with the lab.
lab_extra_ns() {
	local p=$1 name=$2
	_lab_check_prefix "$p" || return 1
	if [[ ! $name =~ ^[A-Za-z0-9-]{1,20}$ ]]; then
		_lab_err "invalid extra namespace name '$name' (letters, digits and -)"
		return 1
	fi
	_lab_ns "${p}_${name}"
}

# Tear the lab down when the calling shell exits, whatever the reason.
# Extra cleanup commands may be given as a second argument (a string evaluated first).
lab_trap() {
	local p=$1 extra=${2-}
	_lab_check_prefix "$p" || return 1
	# shellcheck disable=SC2064
	trap "${extra:+$extra;} lab_down '$p'" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM HUP
}

# Tear down labs whose owner shell no longer exists (a test killed by a ctest timeout cannot run
# its trap). Only labs that lab_up built with LAB_AUTOREAP=1 are considered.
lab_reap_stale() {
	local d p owner
	[[ -d $LAB_STATE_ROOT ]] || return 0
	for d in "$LAB_STATE_ROOT"/*/; do
		[[ -d $d && -e $d/autoreap ]] || continue
		p=$(basename "$d")
		owner=$(cat "$d/owner" 2>/dev/null || true)
		# A killed owner may linger a moment as a zombie: that counts as gone.
		if [[ ! $owner =~ ^[0-9]+$ ]] || [[ ! -d /proc/$owner ]] ||
			[[ $(lab_proc_state "$owner") == Z ]]; then
			_lab_err "reaping stale lab '$p' (owner ${owner:-unknown} is gone)"
			lab_down "$p"
		fi
	done
}
