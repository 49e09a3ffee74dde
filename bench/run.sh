#!/usr/bin/env bash
# bench/run.sh: the nsegress performance benchmark (issue 5), side by side with its peers.
#
#   sudo bench/run.sh                              the full run (a few minutes on 2 cores)
#   sudo BENCH_RUNS=1 BENCH_N=1000 bench/run.sh    a quick smoke run (well under a minute)
#
# Installs what is missing (testenv/bootstrap.sh), builds nsegress (RelWithDebInfo, into build/),
# builds the sealed lab (testenv/lab.sh) and measures, interleaving the tools run by run:
#   1  restrict --no-probe with 1 CIDR on a fresh namespace, against `nsenter --net=PATH nft -f`
#      of the same policy plus the same route set with `ip -batch` (wall time)
#   2  restrict --allow-file with BENCH_N CIDRs on a fresh namespace (with and without the route
#      set), re-restrict with the same list, re-restrict with 1% of it changed (incremental:
#      only the difference is sent), against nft -f (the same set), nft -f + ip -batch (the same
#      route set), iptables-nft-restore and iptables-legacy-restore (wall, peak RSS)
#   3  new TCP connections/s from a restricted namespace to an allowed host: no policy, nsegress
#      with BENCH_N CIDRs, nsegress with 1 CIDR, the floor (nsegress's BENCH_N-CIDR sets with no
#      conntrack rule and no route set, loaded by nft -f), nsegress plus a `notrack` path for
#      allowed traffic (what that path would gain; not what nsegress installs), an
#      iptables-legacy linear list; and in a Docker-like topology (a second "host" namespace that
#      masquerades its clients, as Docker's bridge does): no policy and nsegress with BENCH_N CIDRs
#   4  `runc run` of a busybox container with and without the `nsegress hook` createRuntime hook
#      (and with a no-op /bin/true hook: what any hook costs the runtime)
#   5  restrict + probe (one reach, one block target: the lab's allowed and forbidden hosts) on a
#      fresh namespace wired to the lab, against nft -f + ip -batch + two pings
#   6  `docker run --rm` of a busybox `true` with the default runtime and with nsegress-runtime
#      (dockerd 20.10 with --userns-remap=default inside the lab's gw, testenv/engines.sh)
#   7  BENCH_PORTS port-scoped entries ("10.A.B.1 tcp/P udp/53": two elements each of the
#      concatenated set allowp4) on a fresh namespace: restrict --no-route-set against nft -f of
#      the same policy, and restrict with its route set
#   8  BENCH_MANY restricted namespaces on the host: restrict (1 CIDR) of a fresh namespace
#      before any other is restricted, and with BENCH_MANY others restricted
#   9  names: BENCH_DNS lookups from the lab's ctr (each followed by a TCP connect to the answer)
#      with no policy and through the names proxy; the proxy's memory
# and prints one table with the medians, min-max and the ratios against the issue's targets.
#
# Environment:
#   BENCH_RUNS        runs per tool for the heavy metrics 2 and 3 (default 5)
#   BENCH_RUNS_SMALL  runs per tool for the cheap metrics 1, 4, 5 and 6 (default 10 x BENCH_RUNS)
#   BENCH_N           CIDRs of the large allow-list, 1% of them IPv6 (default 100000)
#   BENCH_DP_SECS     seconds per datapath sample (default 1)
#   BENCH_SETTLE      seconds to let the kernel free deleted namespaces between runs of metric 2
#                     (default 0.5)
#   BENCH_OUT         where inputs, raw samples and the table go (default build/bench)
#   BENCH_PORTS       port-scoped entries of metric 7 (default BENCH_N / 10)
#   BENCH_MANY        restricted namespaces of metric 8 (default 500)
#   BENCH_DNS         lookups of metric 9 (default 2000)
#   BENCH_NAMES_NS    namespaces with a names proxy each, for metric 9's memory per namespace
#                     (default 10)
#   BENCH_METRICS     which metrics to run (default "1 2 3 4 5 6 7 8 9")
#   NSEGRESS          a prebuilt binary to measure instead of building build/nsegress
#   NSEGRESS_RUNTIME  the nsegress-runtime for metric 6 (default: the one next to NSEGRESS)
#
# Safety (shared/docs/lab-safety.md): everything happens in namespaces this script creates, all
# named after its prefix: the lab (PREFIX_ctr/_gw/_lan/_wan), fresh namespaces PREFIX_fN (a veth
# pair inside each, connected to nothing) and wired namespaces PREFIX_dN (a veth into the lab's
# gw, for the datapath and the probes). nsegress runs inside the lab's gw namespace and is pointed at the namespace under
# test; the peers run through `nsenter --net=PATH` from there. Nothing configures or sends from
# the root namespace. A trap removes every namespace, runc container and process on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_RUNS_SMALL=${BENCH_RUNS_SMALL:-$((10 * BENCH_RUNS))}
BENCH_N=${BENCH_N:-100000}
BENCH_DP_SECS=${BENCH_DP_SECS:-1}
BENCH_SETTLE=${BENCH_SETTLE:-0.5}
BENCH_OUT=${BENCH_OUT:-$REPO/build/bench}
BENCH_PORTS=${BENCH_PORTS:-$((BENCH_N / 10 > 0 ? BENCH_N / 10 : 1))}
BENCH_MANY=${BENCH_MANY:-500}
BENCH_DNS=${BENCH_DNS:-2000}
BENCH_NAMES_NS=${BENCH_NAMES_NS:-10}
BENCH_METRICS=${BENCH_METRICS:-1 2 3 4 5 6 7 8 9}

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

for v in BENCH_RUNS BENCH_RUNS_SMALL BENCH_N BENCH_PORTS BENCH_MANY BENCH_NAMES_NS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $BENCH_DP_SECS =~ ^[0-9]+(\.[0-9]+)?$ && $BENCH_SETTLE =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
	die "BENCH_DP_SECS and BENCH_SETTLE must be numbers of seconds"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, nftables, runc); run it with sudo"

# --- install, build -------------------------------------------------------------------------------

testenv/bootstrap.sh >&2
if [[ -z ${NSEGRESS-} ]]; then
	say "building nsegress (RelWithDebInfo, build/)"
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j2 --target nsegress nsegress-runtime >&2
	# The names proxy's own executable (metric 9), when this configuration has it.
	if cmake --build build --target help | grep -q 'nsegress-names-proxy'; then
		cmake --build build -j2 --target nsegress-names-proxy >&2
	fi
	NSEGRESS=$REPO/build/nsegress
fi
[[ -x $NSEGRESS ]] || die "no nsegress binary at $NSEGRESS"
NSEGRESS_RUNTIME=${NSEGRESS_RUNTIME:-$(dirname "$NSEGRESS")/nsegress-runtime}

rm -rf -- "$BENCH_OUT"
mkdir -p "$BENCH_OUT/raw" "$BENCH_OUT/in"
OUT=$BENCH_OUT RAW=$BENCH_OUT/raw IN=$BENCH_OUT/in
gcc -O2 -Wall -o "$OUT/measure" bench/measure.c
gcc -O2 -Wall -o "$OUT/tcp_cps" bench/tcp_cps.c
M=$OUT/measure TCP=$OUT/tcp_cps

N6=$((BENCH_N / 100))
N4=$((BENCH_N - N6))
python3 bench/gen_cidrs.py "$N4" "$N6" 42 "$IN" "$BENCH_PORTS"

# --- the lab and its cleanup ----------------------------------------------------------------------

# shellcheck source=testenv/lab.sh
source testenv/lab.sh
# shellcheck source=testenv/engines.sh
source testenv/engines.sh
LAB_AUTOREAP=1 # if this shell is killed, the next lab user reaps the lab
P=bench$$
GW=${P}_gw
EXTRA_NS=() # fresh and datapath namespaces still to delete
SERVER_PID=''
EXTRA_PIDS=() # other processes this script started (metric 9's DNS server)

cleanup() {
	local ns pid
	[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null
	for pid in "${EXTRA_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	# A names proxy of the lab's ctr (metric 9) ends with its namespace; release it first anyway.
	[[ -e /run/netns/${P}_ctr ]] && ip netns exec "$GW" "$NSEGRESS" release --netns "/run/netns/${P}_ctr" >/dev/null 2>&1
	engines_down "$P" || true
	for ns in "${EXTRA_NS[@]}"; do
		[[ -e /run/netns/$ns ]] || continue
		# A names proxy (metric 9's other namespaces) would keep its namespace alive: release.
		ip netns exec "$GW" "$NSEGRESS" release --netns "/run/netns/$ns" >/dev/null 2>&1
		ip netns del "$ns" 2>/dev/null
	done
	lab_down "$P"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

lab_reap_stale
engines_reap_stale
say "building the sealed lab $P"
lab_up "$P" || die "could not build the lab"

# nsegress as the lab's "host" runs it: from inside gw, pointed at the namespace under test.
# measure runs there too, so `ip netns exec` itself is never timed.
nsg_measure() {
	local key=$1
	shift
	ip netns exec "$GW" "$M" "$RAW/$key" "$NSEGRESS" "$@"
}
# A peer, exactly as a user would run it from the host: `nsenter --net=PATH CMD...`, timed whole.
peer_measure() {
	local key=$1 ns=$2
	shift 2
	ip netns exec "$GW" "$M" "$RAW/$key" nsenter --net="/run/netns/$ns" "$@"
}

# fresh_ns: a brand-new namespace shaped like the lab's ctr (eth0 172.31.0.2/24, fd00:31::2/64,
# default routes via .1 / ::1), whose eth0 is one end of a veth pair that lies wholly inside it:
# connected to nothing. Its name is left in $NS (no subshell: EXTRA_NS must see it).
FRESH=0 NS=''
fresh_ns() {
	local ns=${P}_f$FRESH
	FRESH=$((FRESH + 1))
	EXTRA_NS+=("$ns")
	NS=$ns
	ip netns add "$ns"
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$ns" link set lo up
	ip -n "$ns" link add eth0 type veth peer name eth1
	ip -n "$ns" addr add 172.31.0.2/24 dev eth0
	ip -n "$ns" addr add fd00:31::2/64 dev eth0 nodad
	ip -n "$ns" link set eth1 up
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add default via 172.31.0.1
	ip -n "$ns" -6 route add default via fd00:31::1
}
drop_ns() { ip netns del "$1"; }

# wired_ns K: a brand-new namespace on its own veth into the lab's gw (172.30.K.2/24, default
# via 172.30.K.1), its neighbour entries warmed with one ping to the allowed LAN host. As a
# container's namespace, it has no conntrack entries. Its name is left in $NS.
wired_ns() {
	local k=$1 ns=${P}_d$1
	EXTRA_NS+=("$ns")
	NS=$ns
	ip netns add "$ns"
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$ns" link set lo up
	ip -n "$ns" link add eth0 type veth peer name "d$k" netns "$GW"
	ip -n "$ns" addr add "172.30.$k.2/24" dev eth0
	ip -n "$GW" addr add "172.30.$k.1/24" dev "d$k"
	ip -n "$ns" link set eth0 up
	ip -n "$GW" link set "d$k" up
	ip -n "$ns" route add default via "172.30.$k.1"
	local _
	for _ in 1 2 3 4 5; do ip netns exec "$ns" ping -c1 -W1 -q "$LAB_LAN4" >/dev/null 2>&1 && return 0; done
	die "namespace $ns cannot reach $LAB_LAN4"
}

# peer_inputs NS TAG NSEGRESS-ARGS...: the exact nft script and route set nsegress would install
# in NS (restrict --dry-run), as peer inputs: IN/TAG.nft, IN/TAG.ip4 and IN/TAG.ip6 (ip -batch).
peer_inputs() {
	local ns=$1 tag=$2
	shift 2
	ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/$ns" "$@" --dry-run --json >"$IN/$tag.json"
	jq -r .nft "$IN/$tag.json" >"$IN/$tag.nft"
	jq -r '.route_set.commands[] | select(startswith("ip -4 ")) | sub("^ip -4 "; "")' "$IN/$tag.json" >"$IN/$tag.ip4"
	jq -r '.route_set.commands[] | select(startswith("ip -6 ")) | sub("^ip -6 "; "")' "$IN/$tag.json" >"$IN/$tag.ip6"
	rm -f "$IN/$tag.json"
}
# The shell line a peer runs to install TAG: nft policy, then the route set.
peer_full() { printf 'nft -f %q && ip -4 -batch %q && ip -6 -batch %q' "$IN/$1.nft" "$IN/$1.ip4" "$IN/$1.ip6"; }

metric_on() { [[ " $BENCH_METRICS " == *" $1 "* ]]; }

ALLOW1=$LAB_LAN_NET4 # the one-CIDR policy: the lab's allowed LAN

# --- 1: restrict, 1 CIDR, fresh namespace ---------------------------------------------------------
if metric_on 1; then
	say "metric 1: restrict 1 CIDR on a fresh namespace vs nft -f + ip ($BENCH_RUNS_SMALL runs each)"
	fresh_ns
	ns=$NS
	peer_inputs "$ns" one --allow "$ALLOW1"
	drop_ns "$ns"
	for ((r = 0; r < BENCH_RUNS_SMALL; r++)); do
		fresh_ns
		a=$NS
		fresh_ns
		b=$NS
		# Alternate who goes first, so neither always follows the other's namespace setup.
		if ((r % 2)); then
			peer_measure m1.peer "$b" sh -c "$(peer_full one)"
			nsg_measure m1.nsegress restrict --netns "/run/netns/$a" --allow "$ALLOW1" --no-probe >/dev/null
		else
			nsg_measure m1.nsegress restrict --netns "/run/netns/$a" --allow "$ALLOW1" --no-probe >/dev/null
			peer_measure m1.peer "$b" sh -c "$(peer_full one)"
		fi
		# Both really installed the same thing (read back with nft, an independent tool).
		[[ $(ip netns exec "$a" nft list set inet nsegress allow4) == "$(ip netns exec "$b" nft list set inet nsegress allow4)" ]] ||
			die "metric 1: nsegress and the peer installed different sets"
		drop_ns "$a"
		drop_ns "$b"
	done
fi

# --- 2: restrict with BENCH_N CIDRs -----------------------------------------------------------------
if metric_on 2; then
	say "metric 2: $BENCH_N CIDRs on fresh namespaces ($BENCH_RUNS runs per tool)"
	fresh_ns
	ns=$NS
	peer_inputs "$ns" big --allow-file "$IN/cidrs.txt"
	drop_ns "$ns"
	elements() { ip netns exec "$1" nft -j list set inet nsegress allow4 | jq '[.nftables[] | select(.set) | .set.elem // [] | length] | add'; }
	for ((r = 0; r < BENCH_RUNS; r++)); do
		say "  run $((r + 1))/$BENCH_RUNS"
		fresh_ns
		a=$NS
		nsg_measure m2.nsegress restrict --netns "/run/netns/$a" --allow-file "$IN/cidrs.txt" --no-probe >/dev/null
		nsg_measure m2.nsegress_again restrict --netns "/run/netns/$a" --allow-file "$IN/cidrs.txt" --no-probe >/dev/null
		[[ $(ip -n "$a" -4 route show table 28275 | wc -l) -ge $N4 ]] || die "metric 2: the route set is incomplete"
		# 1% of the list changed: only the difference goes to the kernel (policy.update).
		nsg_measure m2.nsegress_changed restrict --netns "/run/netns/$a" --allow-file "$IN/cidrs_changed.txt" --no-probe --json >"$OUT/m2.json"
		jq -e '.policy.update == "incremental" and .route_set.routes_added > 0' "$OUT/m2.json" >/dev/null ||
			die "metric 2: the changed list was not applied incrementally: $(jq -c '[.policy, .route_set.routes_added]' "$OUT/m2.json")"
		# Both layers hold exactly the changed list (read back with nft and ip).
		want_changed=$(grep -c '^[0-9]*\.' "$IN/cidrs_changed.txt")
		[[ $(elements "$a") == "$want_changed" && $(ip -n "$a" -4 route show table 28275 | grep -c '^throw') == "$want_changed" ]] ||
			die "metric 2: after the 1% change: $(elements "$a") elements, $(ip -n "$a" -4 route show table 28275 | grep -c '^throw') throw routes, want $want_changed"
		drop_ns "$a"
		fresh_ns
		a=$NS
		nsg_measure m2.nsegress_norouteset restrict --netns "/run/netns/$a" --allow-file "$IN/cidrs.txt" --no-probe --no-route-set >/dev/null
		n_nsg=$(elements "$a")
		drop_ns "$a"
		fresh_ns
		a=$NS
		peer_measure m2.nft "$a" nft -f "$IN/big.nft"
		n_nft=$(elements "$a")
		drop_ns "$a"
		[[ $n_nsg == "$n_nft" && $n_nft -ge $N4 ]] || die "metric 2: nsegress loaded $n_nsg IPv4 elements, nft -f $n_nft"
		fresh_ns
		a=$NS
		peer_measure m2.nft_ip "$a" sh -c "$(peer_full big)"
		drop_ns "$a"
		fresh_ns
		a=$NS
		peer_measure m2.iptnft "$a" sh -c "$(printf 'iptables-nft-restore %q && ip6tables-nft-restore %q' "$IN/ipt4.rules" "$IN/ipt6.rules")"
		drop_ns "$a"
		fresh_ns
		a=$NS
		peer_measure m2.iptlegacy "$a" sh -c "$(printf 'iptables-legacy-restore %q && ip6tables-legacy-restore %q' "$IN/ipt4.rules" "$IN/ipt6.rules")"
		drop_ns "$a"
		# Deleted namespaces are freed by a kernel worker: let it finish before the next run.
		sleep "$BENCH_SETTLE"
	done
fi

# --- 3: datapath --------------------------------------------------------------------------------------
if metric_on 3; then
	say "metric 3: new TCP connections/s ($BENCH_RUNS x ${BENCH_DP_SECS}s per configuration)"
	PORT=7070
	ip netns exec "${P}_lan" "$TCP" serve "$PORT" </dev/null >/dev/null 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 100); do
		[[ -n $(ip netns exec "${P}_lan" ss -Htln "sport = :$PORT") ]] && break
		sleep 0.02
	done
	# One client namespace per configuration, each on its own veth into gw, so that the
	# configurations can be interleaved without reloading 10^5 CIDRs between samples.
	DP=(none nsegress nsegress1 bare notrack iptlegacy)
	declare -A DPNS DPDST
	k=40
	for c in "${DP[@]}"; do
		wired_ns "$k"
		DPNS[$c]=$NS
		DPDST[$c]=$LAB_LAN4
		k=$((k + 1))
	done
	# The Docker-like topology: a second "host" namespace DH, linked to the LAN host (LAN side
	# 192.168.3.10), that routes its clients (172.29.K.0/24) and masquerades them as Docker's
	# bridge does (nat postrouting, so conntrack runs on the host end). The lab's gw is not
	# involved: the plain topology above stays free of NAT.
	DH=${P}_dh
	EXTRA_NS+=("$DH")
	ip netns add "$DH"
	ip netns exec "$DH" sysctl -qw net.ipv4.ip_forward=1
	ip -n "$DH" link set lo up
	ip -n "${P}_lan" link add dh0 type veth peer name l3 netns "$DH"
	ip -n "${P}_lan" addr add 192.168.3.10/24 dev dh0
	ip -n "$DH" addr add 192.168.3.1/24 dev l3
	ip -n "${P}_lan" link set dh0 up
	ip -n "$DH" link set l3 up
	# A second address on the same link, outside every allow-list: the forbidden host here.
	ip -n "${P}_lan" addr add 192.168.4.10/24 dev dh0
	ip -n "$DH" addr add 192.168.4.1/24 dev l3
	ip netns exec "$DH" nft -f - <<-'EOF'
		table ip benchnat {
			chain postrouting { type nat hook postrouting priority srcnat; policy accept; oifname "l3" masquerade; }
		}
	EOF
	for c in nat_none nat_nsegress; do
		ns=${P}_d$k
		EXTRA_NS+=("$ns")
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip -n "$ns" link add eth0 type veth peer name "d$k" netns "$DH"
		ip -n "$ns" addr add "172.29.$k.2/24" dev eth0
		ip -n "$DH" addr add "172.29.$k.1/24" dev "d$k"
		ip -n "$ns" link set eth0 up
		ip -n "$DH" link set "d$k" up
		ip -n "$ns" route add default via "172.29.$k.1"
		for _ in 1 2 3 4 5; do ip netns exec "$ns" ping -c1 -W1 -q 192.168.3.10 >/dev/null 2>&1 && break; done
		DP+=("$c")
		DPNS[$c]=$ns
		DPDST[$c]=192.168.3.10
		k=$((k + 1))
	done
	ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/${DPNS[nsegress]}" --allow-file "$IN/cidrs.txt" --no-probe >/dev/null
	ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/${DPNS[nsegress1]}" --allow "$ALLOW1" --no-probe >/dev/null
	# The floor any nftables policy of this list has: nsegress's own sets and chain minus every
	# rule that needs conntrack (reply/related, the deny log) or ND, and no route set. What is
	# left is one set lookup per packet, nothing issue 2's semantics could do without.
	ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/${DPNS[bare]}" --allow-file "$IN/cidrs.txt" \
		--no-route-set --dry-run --json | jq -r .nft | grep -v -E '(^|[[:space:]])ct |icmpv6 type' >"$IN/bare.nft"
	ip netns exec "${DPNS[bare]}" nft -f "$IN/bare.nft"
	if ip netns exec "${DPNS[bare]}" nft list ruleset | grep -q -E '(^|[[:space:]])(ct|log) '; then
		die "metric 3: the bare set policy still uses conntrack"
	fi
	# What a `notrack` path for allowed traffic would gain (docs/design.md: why nsegress has
	# none): nsegress's own policy, plus raw-priority chains that take allowed flows out of
	# conntrack in both directions.
	ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/${DPNS[notrack]}" --allow-file "$IN/cidrs.txt" --no-probe >/dev/null
	ip netns exec "${DPNS[notrack]}" nft -f - <<-'EOF'
		add chain inet nsegress raw_out { type filter hook output priority raw; policy accept; }
		add rule inet nsegress raw_out ip daddr @allow4 notrack
		add chain inet nsegress raw_pre { type filter hook prerouting priority raw; policy accept; }
		add rule inet nsegress raw_pre ip saddr @allow4 notrack
	EOF
	ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/${DPNS[nat_nsegress]}" --allow-file "$IN/cidrs.txt" \
		--allow 192.168.3.0/24 --no-probe >/dev/null
	ip netns exec "${DPNS[iptlegacy]}" iptables-legacy-restore "$IN/ipt4.rules"
	ip netns exec "${DPNS[iptlegacy]}" ip6tables-legacy-restore "$IN/ipt6.rules"
	for c in "${DP[@]}"; do
		ns=${DPNS[$c]}
		ip netns exec "$ns" "$TCP" connect "${DPDST[$c]}" "$PORT" 0.3 >/dev/null || die "metric 3: $c cannot connect to ${DPDST[$c]}"
		# The policies really hold: the forbidden host, which answers without them, is refused
		# (in the Docker-like topology: the LAN host's 192.168.4.10, outside the allow-list).
		forbidden=$LAB_WAN4 fport=$LAB_TCP_PORT
		[[ $c == nat_* ]] && forbidden=192.168.4.10 fport=$PORT
		if [[ $c != none && $c != nat_none ]] && ip netns exec "$ns" nc -z -w1 "$forbidden" "$fport" 2>/dev/null; then
			die "metric 3: $c does not refuse $forbidden"
		fi
	done
	ip netns exec "${DPNS[none]}" nc -z -w1 "$LAB_WAN4" "$LAB_TCP_PORT" || die "metric 3: $LAB_WAN4 does not answer without a policy"
	ip netns exec "${DPNS[nat_none]}" nc -z -w1 192.168.4.10 "$PORT" || die "metric 3: 192.168.4.10 does not answer the Docker-like topology without a policy"
	for ((r = 0; r < BENCH_RUNS; r++)); do
		for c in "${DP[@]}"; do
			line=$(ip netns exec "${DPNS[$c]}" "$TCP" connect "${DPDST[$c]}" "$PORT" "$BENCH_DP_SECS") ||
				die "metric 3: $c: failed connections ($line)"
			echo "${line%% *}" >>"$RAW/m3.$c"
		done
	done
	kill "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=''
fi

# --- 4: OCI hook -----------------------------------------------------------------------------------
if metric_on 4; then
	say "metric 4: runc run with and without the nsegress createRuntime hook ($BENCH_RUNS_SMALL runs each)"
	B=$(engines_dir "$P")/bundles
	engine_rootfs "$B/rootfs"
	for b in plain noop hook; do
		runc_bundle "$B/$b" "$P" "$B/rootfs"
		runc_set "$B/$b" '.process.args = ["true"]'
	done
	# A hook that does nothing: what running any createRuntime hook costs the runtime.
	runc_add_hook "$B/noop" createRuntime /bin/true
	runc_add_hook "$B/hook" createRuntime "$NSEGRESS" hook --allow "$ALLOW1"
	RUNC_ROOT=$(engines_dir "$P")/runc
	mkdir -p "$RUNC_ROOT"
	runc_measure() {
		nsenter --net="/run/netns/$GW" "$M" "$RAW/m4.$1" runc --root "$RUNC_ROOT" run --bundle "$B/$1" "b$1$2" </dev/null
	}
	# Warm-up (page cache, cgroup setup), not counted.
	for b in plain noop hook; do runc_measure "$b" w >/dev/null; done
	rm -f "$RAW/m4.plain" "$RAW/m4.noop" "$RAW/m4.hook"
	for ((r = 0; r < BENCH_RUNS_SMALL; r++)); do
		case $((r % 3)) in
		0) order="plain noop hook" ;;
		1) order="hook plain noop" ;;
		2) order="noop hook plain" ;;
		esac
		for b in $order; do runc_measure "$b" "$r"; done
	done
	[[ -z $(runc --root "$RUNC_ROOT" list -q) ]] || die "metric 4: runc left containers behind"
fi

# --- 5: restrict + probe -----------------------------------------------------------------------------
if metric_on 5; then
	say "metric 5: restrict + probe (reach $LAB_LAN4, block $LAB_WAN4), $BENCH_RUNS_SMALL runs each"
	for ((r = 0; r < BENCH_RUNS_SMALL; r++)); do
		# A new wired namespace per run and tool, as at a container's start.
		wired_ns $((100 + (2 * r) % 150))
		a=$NS
		nsg_measure m5.nsegress restrict --netns "/run/netns/$a" --allow "$ALLOW1" \
			--probe-reach "$LAB_LAN4" --probe-block "$LAB_WAN4" --json >"$OUT/m5.json"
		jq -e '.probes[0].outcome == "reachable" and (.probes[1].outcome | startswith("refused-"))' "$OUT/m5.json" >/dev/null ||
			die "metric 5: the probes did not hold: $(jq -c .probes "$OUT/m5.json")"
		jq -r '.probes[0].rtt_ms' "$OUT/m5.json" >>"$RAW/m5.rtt"
		drop_ns "$a"
		wired_ns $((101 + (2 * r) % 150))
		b=$NS
		peer_inputs "$b" wired --allow "$ALLOW1"
		# The peer's probes: the allowed host answers a ping, the forbidden host's ping fails.
		peer_measure m5.peer "$b" sh -c "$(peer_full wired) && ping -n -q -c1 -W1 $LAB_LAN4 >/dev/null && ! ping -n -q -c1 -W1 $LAB_WAN4 >/dev/null 2>&1"
		drop_ns "$b"
	done
fi

# --- 6: docker run through nsegress-runtime ------------------------------------------------------------
if metric_on 6; then
	say "metric 6: docker run --rm busybox true with and without nsegress-runtime ($BENCH_RUNS_SMALL runs each)"
	[[ -x $NSEGRESS_RUNTIME ]] || die "metric 6: no nsegress-runtime at $NSEGRESS_RUNTIME"
	ENGINES_DOCKERD_CONFIG=$(jq -n --arg rt "$NSEGRESS_RUNTIME" --arg a "$ALLOW1" \
		'{runtimes: {"nsegress-bench": {path: $rt, runtimeArgs: ["--allow", $a]}}}')
	export ENGINES_DOCKERD_CONFIG
	dockerd_up "$P" || die "metric 6: dockerd did not start (logs: $(engines_dir "$P")/*.log)"
	# The docker CLI as docker_cmd runs it, timed whole (it only talks to dockerd's socket).
	docker_measure() {
		local key=$1
		shift
		"$M" "$RAW/m6.$key" env "$(docker_env "$P")" DOCKER_CONFIG="$(engines_dir "$P")/docker-cli" \
			"$ENGINES_DOCKER_CLI" run --rm "$@" "$ENGINE_IMAGE" true
	}
	# The wrapper really restricts (the forbidden host answers the default runtime).
	docker_cmd "$P" run --rm "$ENGINE_IMAGE" ping -c1 -W1 "$LAB_WAN4" >/dev/null 2>&1 ||
		die "metric 6: $LAB_WAN4 does not answer a container of the default runtime"
	if docker_cmd "$P" run --rm --runtime nsegress-bench "$ENGINE_IMAGE" ping -c1 -W1 "$LAB_WAN4" >/dev/null 2>&1; then
		die "metric 6: a container of nsegress-runtime reaches $LAB_WAN4"
	fi
	# Warm-up, not counted.
	docker_measure plain >/dev/null
	docker_measure wrapper --runtime nsegress-bench >/dev/null
	rm -f "$RAW/m6.plain" "$RAW/m6.wrapper"
	for ((r = 0; r < BENCH_RUNS_SMALL; r++)); do
		if ((r % 2)); then
			docker_measure wrapper --runtime nsegress-bench
			docker_measure plain
		else
			docker_measure plain
			docker_measure wrapper --runtime nsegress-bench
		fi
	done
	dockerd_down "$P" || say "metric 6: dockerd_down reported a problem (the exit trap tries again)"
fi

# --- 7: port-scoped entries ---------------------------------------------------------------------------
if metric_on 7; then
	say "metric 7: $BENCH_PORTS port-scoped entries on fresh namespaces ($BENCH_RUNS runs per tool)"
	fresh_ns
	ns=$NS
	peer_inputs "$ns" ports --allow-file "$IN/ports.txt" --no-route-set
	drop_ns "$ns"
	port_elements() { ip netns exec "$1" nft -j list set inet nsegress allowp4 | jq '[.nftables[] | select(.set) | .set.elem // [] | length] | add'; }
	for ((r = 0; r < BENCH_RUNS; r++)); do
		fresh_ns
		a=$NS
		nsg_measure m7.nsegress restrict --netns "/run/netns/$a" --allow-file "$IN/ports.txt" --no-probe --no-route-set >/dev/null
		n_nsg=$(port_elements "$a")
		drop_ns "$a"
		fresh_ns
		a=$NS
		peer_measure m7.nft "$a" nft -f "$IN/ports.nft"
		n_nft=$(port_elements "$a")
		drop_ns "$a"
		[[ $n_nsg == "$n_nft" && $n_nft -ge $BENCH_PORTS ]] || die "metric 7: nsegress loaded $n_nsg port elements, nft -f $n_nft"
		fresh_ns
		a=$NS
		nsg_measure m7.nsegress_routes restrict --netns "/run/netns/$a" --allow-file "$IN/ports.txt" --no-probe >/dev/null
		drop_ns "$a"
		sleep "$BENCH_SETTLE"
	done
fi

# --- 8: many restricted namespaces ------------------------------------------------------------------
if metric_on 8; then
	say "metric 8: restrict with 0 and with $BENCH_MANY other restricted namespaces ($BENCH_RUNS_SMALL runs each)"
	many_sample() {
		fresh_ns
		nsg_measure "$1" restrict --netns "/run/netns/$NS" --allow "$ALLOW1" --no-probe >/dev/null
		drop_ns "$NS"
	}
	many_sample m8.warmup # not counted
	rm -f "$RAW/m8.warmup"
	for ((r = 0; r < BENCH_RUNS_SMALL; r++)); do many_sample m8.first; done
	MANY=()
	for ((i = 0; i < BENCH_MANY; i++)); do
		ns=${P}_m$i
		EXTRA_NS+=("$ns")
		MANY+=("$ns")
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/$ns" --allow "$ALLOW1" --no-probe >/dev/null ||
			die "metric 8: restrict of namespace $i failed"
	done
	for ((r = 0; r < BENCH_RUNS_SMALL; r++)); do many_sample m8.many; done
	for ns in "${MANY[@]}"; do ip netns del "$ns"; done
fi

# --- 9: names ----------------------------------------------------------------------------------------
# A DNS server on lan (tests/integration/helpers/dns_server.py) answers bench.example.test with
# lan's address; ctr asks it BENCH_DNS times, each answer followed by a TCP connect to the address
# (bench/dns_rtt.c), first with no policy, then restricted to "bench.example.test tcp/PORT" (the
# queries go through the names proxy, which adds the address before it relays the answer). The
# delay nsegress adds is the difference of the percentiles. The proxy's memory is its PSS and
# private memory (/proc/PID/smaps_rollup): that one proxy alone (the worst case: the proxy's
# code is charged to it whole), and then with BENCH_NAMES_NS namespaces restricted with a name
# each, the sum of their proxies' PSS divided by their number (the target's scenario: many
# restricted namespaces on one host, the proxy's code shared between them).
if metric_on 9; then
	if ! "$NSEGRESS" restrict --help 2>/dev/null | grep -q -- '--resolver'; then
		say "metric 9: this nsegress has no names (no --resolver): skipped"
	else
		say "metric 9: names, $BENCH_DNS lookups with and without the names proxy"
		gcc -O2 -Wall -o "$OUT/dns_rtt" bench/dns_rtt.c
		CTRNS=${P}_ctr
		ip netns exec "${P}_lan" /usr/bin/python3 "$REPO/tests/integration/helpers/dns_server.py" --log "$OUT/m9.dns.log" \
			--ttl 300 "bench.example.test=4:$LAB_LAN4" >"$OUT/m9.dns.out" 2>&1 &
		DNSPID=$!
		EXTRA_PIDS+=("$DNSPID")
		for _ in $(seq 50); do ip netns exec "${P}_lan" ss -Hlun | grep -q ":53 " && break; sleep 0.1; done
		ip netns exec "${P}_lan" ss -Hlun | grep -q ":53 " || die "metric 9: the DNS server did not start: $(tail -3 "$OUT/m9.dns.out")"
		ip netns exec "$CTRNS" "$OUT/dns_rtt" "$LAB_LAN4" bench.example.test 20 | grep -q '^# ok 20 fail 0' ||
			die "metric 9: lookups without a policy fail" # and a warm-up
		ip netns exec "$CTRNS" "$OUT/dns_rtt" "$LAB_LAN4" bench.example.test "$BENCH_DNS" "$LAB_TCP_PORT" >"$RAW/m9.plain.all"
		ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/$CTRNS" --allow "bench.example.test tcp/$LAB_TCP_PORT" \
			--resolver "$LAB_LAN4" --no-probe >/dev/null || die "metric 9: restrict with a name failed"
		ip netns exec "$CTRNS" "$OUT/dns_rtt" "$LAB_LAN4" bench.example.test 20 | grep -q '^# ok 20 fail 0' ||
			die "metric 9: lookups through the names proxy fail" # and a warm-up
		ip netns exec "$CTRNS" "$OUT/dns_rtt" "$LAB_LAN4" bench.example.test "$BENCH_DNS" "$LAB_TCP_PORT" >"$RAW/m9.names.all"
		proxy=$(ip netns exec "$GW" "$NSEGRESS" status --netns "/run/netns/$CTRNS" --json | jq -r '.names.proxy_pid // empty')
		if [[ -n $proxy && -r /proc/$proxy/smaps_rollup ]]; then
			awk '/^Pss:/ {pss=$2} /^Private_(Clean|Dirty):/ {priv+=$2} END {print pss, priv}' "/proc/$proxy/smaps_rollup" >"$RAW/m9.proxy_kib"
			# Per mapping, to see where it goes (not read by report.py).
			cp "/proc/$proxy/smaps" "$OUT/m9.proxy_smaps" 2>/dev/null || true
		fi
		# More namespaces with a name each: their proxies share the code.
		NAMES_NS=()
		for ((k = 1; k < BENCH_NAMES_NS; k++)); do
			fresh_ns
			NAMES_NS+=("$NS")
			ip netns exec "$GW" "$NSEGRESS" restrict --netns "/run/netns/$NS" --allow "bench.example.test tcp/$LAB_TCP_PORT" \
				--resolver "$LAB_LAN4" --no-probe >/dev/null || die "metric 9: restrict with a name failed on $NS"
		done
		total_pss=0 total_priv=0 count=0
		for ns in "$CTRNS" "${NAMES_NS[@]}"; do
			pid=$(ip netns exec "$GW" "$NSEGRESS" status --netns "/run/netns/$ns" --json | jq -r '.names.proxy_pid // empty')
			[[ -n $pid && -r /proc/$pid/smaps_rollup ]] || die "metric 9: no names proxy in $ns"
			read -r pss priv < <(awk '/^Pss:/ {pss=$2} /^Private_(Clean|Dirty):/ {priv+=$2} END {print pss, priv}' "/proc/$pid/smaps_rollup")
			total_pss=$((total_pss + pss)) total_priv=$((total_priv + priv)) count=$((count + 1))
		done
		echo "$count $total_pss $total_priv" >"$RAW/m9.proxies_kib"
		for ns in "${NAMES_NS[@]}"; do
			ip netns exec "$GW" "$NSEGRESS" release --netns "/run/netns/$ns" >/dev/null
			drop_ns "$ns"
		done
		ip netns exec "$GW" "$NSEGRESS" release --netns "/run/netns/$CTRNS" >/dev/null
		kill "$DNSPID" 2>/dev/null || true
		for t in plain names; do
			grep -v '^#' "$RAW/m9.$t.all" >"$RAW/m9.$t"
			sed -n 's/^# ok \([0-9]*\) fail \([0-9]*\) refused \([0-9]*\)$/\1 \2 \3/p' "$RAW/m9.$t.all" >"$RAW/m9.$t.counts"
			rm -f "$RAW/m9.$t.all"
		done
	fi
fi

# --- the table ---------------------------------------------------------------------------------------
cmdline="sudo"
for v in BENCH_RUNS BENCH_RUNS_SMALL BENCH_N BENCH_DP_SECS BENCH_PORTS BENCH_MANY; do cmdline+=" $v=${!v}"; done
cmdline+=" bench/run.sh"
python3 bench/report.py "$RAW" \
	--command "$cmdline" --runs "$BENCH_RUNS" --runs-small "$BENCH_RUNS_SMALL" --n "$BENCH_N" \
	--ports "$BENCH_PORTS" --many "$BENCH_MANY" \
	--commit "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src include 2>/dev/null || echo '+dirty')" |
	tee "$OUT/table.txt"
say "raw samples in $RAW, table in $OUT/table.txt"
