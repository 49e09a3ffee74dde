# shellcheck shell=bash
# shellcheck disable=SC2034,SC2016,SC2013  # exported for tests; jq filters; /proc paths have no spaces
# testenv/engines.sh: real container engines (dockerd, podman, runc) inside a sealed lab.
#
# Source testenv/lab.sh first (tests/integration/lib.sh does), build a lab with lab_up PREFIX,
# then:
#   engine_rootfs DIR               minimal busybox-static rootfs in DIR (sh, ping, nc, sleep, ip...)
#   engine_tarball PREFIX           build a tarball of that rootfs once per PREFIX; print its path
#   dockerd_up PREFIX               containerd + dockerd (--userns-remap=default) inside PREFIX_gw,
#                                   and the busybox image imported as $ENGINE_IMAGE; a JSON object
#                                   in $ENGINES_DOCKERD_CONFIG is merged into its daemon.json
#   docker_cmd PREFIX ARGS...       the docker CLI against that daemon
#   docker_env PREFIX               print DOCKER_HOST=... (for tools that run `docker` themselves)
#   dockerd_restart PREFIX          stop dockerd and start it again (containerd stays)
#   dockerd_down PREFIX             remove its containers, stop both daemons, unmount, delete
#   podman_env PREFIX               private podman config + storage; the busybox image imported
#   podman_cmd PREFIX ARGS...       podman with that setup, inside PREFIX_gw
#   podman_vars PREFIX              the environment behind it (VAR=value lines)
#   podman_down PREFIX              remove its containers, unmount, delete
#   runc_bundle DIR [PREFIX]        OCI bundle: busybox rootfs + `runc spec` config.json (own netns)
#   runc_add_hook DIR STAGE PATH [ARG]...   append a hook to the bundle
#   runc_set DIR JQ-FILTER [JQ-ARGS]...     edit the bundle's config.json
#   runc_cmd PREFIX ARGS...         runc with a private --root, inside PREFIX_gw
#   runc_down PREFIX                kill and delete what runc_cmd created
#   engines_down PREFIX             every *_down above (safe twice, or when nothing was started)
#   engines_trap PREFIX             on exit: engines_down, then lab_down (for scripts without lib.sh)
#   engines_test_setup              for tests/integration/test_engine_*.sh (after lib.sh): reap
#                                   stale engines, snapshot the root namespace into
#                                   $TMPD/root.before, build the lab, stop the engines on exit
#   engines_reap_stale              engines_down for state whose lab or owner is gone
#   engines_leftovers [PREFIX]      print what is left behind (processes, mounts, netns, cgroups,
#                                   files); nothing printed = clean
#   engines_root_snapshot           the root namespace's interfaces and nft tables (read only), to
#                                   compare before/after
#
# Rules kept (shared/docs/lab-safety.md): every daemon and runtime runs via `nsenter --net=/run/
# netns/PREFIX_gw` (not `ip netns exec`, which remounts /sys and hides the cgroup mounts), so its
# bridges, veths and iptables rules live in the sealed gw namespace; nothing here configures the
# root namespace; daemons are stopped by their recorded pids; containers live in the cgroup
# /nsegress-PREFIX (killed there if an engine is gone); all state is under
# $ENGINES_STATE_ROOT/PREFIX and is removed, after unmounting, by the *_down functions.
#
# Needs (Debian): docker.io runc podman conmon containernetworking-plugins busybox-static uidmap
# iptables jq util-linux.

ENGINES_STATE_ROOT=${ENGINES_STATE_ROOT:-/var/tmp/nsegress-engines}
ENGINE_IMAGE=${ENGINE_IMAGE:-localhost/nsegress-busybox:latest}
ENGINES_BUSYBOX=${ENGINES_BUSYBOX:-/bin/busybox}
# The engines' own networks, all inside the sealed gw namespace.
ENGINES_DOCKER_BIP=${ENGINES_DOCKER_BIP:-172.17.0.1/16}
ENGINES_DOCKER_GW4=${ENGINES_DOCKER_BIP%/*}
ENGINES_DOCKER_V6=${ENGINES_DOCKER_V6:-fd00:17::/64}
ENGINES_DOCKER_GW6=${ENGINES_DOCKER_V6%::/*}::1
ENGINES_PODMAN_SUBNET=${ENGINES_PODMAN_SUBNET:-172.31.88.0/24}
# Bounded waits (seconds).
ENGINES_START_TIMEOUT=${ENGINES_START_TIMEOUT:-40}
ENGINES_STOP_TIMEOUT=${ENGINES_STOP_TIMEOUT:-15}
# The Debian docker CLI (another one may come first on PATH).
ENGINES_DOCKER_CLI=${ENGINES_DOCKER_CLI:-/usr/bin/docker}

_ENGINES_FIXTURES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fixtures

_eng_err() { printf 'engines: %s\n' "$*" >&2; }

_eng_check_prefix() {
	if [[ ! ${1-} =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$ ]]; then
		_eng_err "invalid prefix '${1-}'"
		return 1
	fi
}

engines_dir() { printf '%s/%s\n' "$ENGINES_STATE_ROOT" "$1"; }
_eng_gw() { printf '/run/netns/%s_gw\n' "$1"; }
_eng_cgroup() { printf 'nsegress-%s\n' "$1"; }

_eng_need() {
	local c
	for c in "$@"; do
		if ! command -v "$c" >/dev/null 2>&1; then
			_eng_err "$c is missing (run testenv/bootstrap.sh)"
			return 1
		fi
	done
}

# The lab's gw namespace must exist and must not be the namespace we run in (the root one).
_eng_need_gw() {
	local p=${1-} gw
	_eng_check_prefix "$p" || return 1
	gw=$(_eng_gw "$p")
	if [[ ! -e $gw ]]; then
		_eng_err "no sealed namespace $gw: run lab_up $p first"
		return 1
	fi
	lab_sealed "$gw"
}

# _eng_wait SECONDS PID CMD...: poll CMD until it succeeds; give up after SECONDS, or at once
# when process PID (the daemon waited for; 0: none) has exited.
_eng_wait() {
	local secs=$1 pid=$2 end
	shift 2
	end=$((SECONDS + secs))
	while ((SECONDS < end)); do
		"$@" >/dev/null 2>&1 && return 0
		if [[ $pid != 0 ]] && ! kill -0 "$pid" 2>/dev/null; then
			_eng_err "pid $pid exited while waiting for: $*"
			return 1
		fi
		sleep 0.1
	done
	_eng_err "timed out after ${secs}s waiting for: $*"
	return 1
}

# --- rootfs and image -----------------------------------------------------------------------------

# engine_rootfs DIR: a minimal rootfs around the static busybox.
engine_rootfs() {
	local dir=${1-} a real
	if [[ -z $dir ]]; then
		_eng_err "usage: engine_rootfs DIR"
		return 1
	fi
	if ! { LC_ALL=C ldd "$ENGINES_BUSYBOX" 2>&1 || true; } | grep -q 'not a dynamic executable'; then
		_eng_err "$ENGINES_BUSYBOX is missing or not static (install busybox-static)"
		return 1
	fi
	mkdir -p "$dir"/{bin,usr/bin,etc,proc,sys,dev,tmp,root,run,var/tmp} || return 1
	chmod 1777 "$dir/tmp" "$dir/var/tmp"
	chmod 700 "$dir/root"
	# busybox --install -s DIR links every applet in DIR to busybox's own real path (from
	# /proc/self/exe, e.g. /usr/bin/busybox): put the binary at that same path in the rootfs.
	real=$(readlink -f "$ENGINES_BUSYBOX") || return 1
	mkdir -p "$dir${real%/*}" || return 1
	install -m 0755 "$ENGINES_BUSYBOX" "$dir$real" || return 1
	"$ENGINES_BUSYBOX" --install -s "$dir/bin" || return 1
	install -m 0644 "$_ENGINES_FIXTURES/passwd" "$dir/etc/passwd" || return 1
	install -m 0644 "$_ENGINES_FIXTURES/group" "$dir/etc/group" || return 1
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$dir/etc/hosts"
	: >"$dir/etc/resolv.conf"
	for a in sh ping ping6 nc sleep cat ip grep; do
		if [[ $(readlink "$dir/bin/$a") != "$real" ]]; then
			_eng_err "rootfs has no /bin/$a -> busybox"
			return 1
		fi
	done
}

# engine_tarball PREFIX: a tarball of the rootfs, built once per prefix; prints its path.
engine_tarball() {
	local p=$1 dir
	dir=$(engines_dir "$p")
	if [[ ! -s $dir/rootfs.tar ]]; then
		mkdir -p "$dir" || return 1
		rm -rf -- "$dir/rootfs.tmp"
		engine_rootfs "$dir/rootfs.tmp" || return 1
		tar -C "$dir/rootfs.tmp" --numeric-owner --owner=0 --group=0 -cf "$dir/rootfs.tar.tmp" . &&
			mv "$dir/rootfs.tar.tmp" "$dir/rootfs.tar" || return 1
		rm -rf -- "$dir/rootfs.tmp"
	fi
	printf '%s\n' "$dir/rootfs.tar"
}

# --- processes, mounts, cgroups -------------------------------------------------------------------

_eng_cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline"; }

# The pid recorded in FILE, if that process still exists and its command line contains NEEDLE.
_eng_live_pid() {
	local f=$1 needle=$2 pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	_eng_cmdline "$pid" | grep -qF -- "$needle" || return 1
	printf '%s\n' "$pid"
}

_eng_alive() {
	[[ -d /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# Stop PID with SIGTERM; SIGKILL after SECONDS.
_eng_stop_pid() {
	local pid=$1 secs=${2:-$ENGINES_STOP_TIMEOUT} end
	kill -TERM "$pid" 2>/dev/null || return 0
	end=$((SECONDS + secs))
	while ((SECONDS < end)); do
		_eng_alive "$pid" || return 0
		sleep 0.1
	done
	_eng_err "pid $pid ($(_eng_cmdline "$pid" | head -c 80)) ignored SIGTERM for ${secs}s; killing it"
	kill -KILL "$pid" 2>/dev/null
	end=$((SECONDS + 5))
	while ((SECONDS < end)); do
		_eng_alive "$pid" || return 0
		sleep 0.1
	done
}

# Processes whose command line contains NEEDLE, one pid a line.
_eng_pids_with() {
	local f
	# cmdline separates arguments with NULs: -a reads it as text (a needle holds no NUL).
	for f in $(grep -laF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null); do
		f=${f#/proc/}
		printf '%s\n' "${f%/cmdline}"
	done
}

# Mount points at or below DIR in this mount namespace, deepest first.
_eng_mounts_under() {
	local m
	# mountinfo field 5 is the mount point with space, tab, newline and backslash octal-escaped;
	# DIR (ours) has none of those, so compare as is and unescape only the matches.
	awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print length($5) "\t" $5}' /proc/self/mountinfo |
		sort -rn | cut -f2- | while read -r m; do printf '%b\n' "${m//\\/\\0}"; done
}

_eng_umount_all() {
	local dir=$1 m n left
	for n in 1 2 3; do
		left=0
		while read -r m; do
			[[ -n $m ]] || continue
			left=1
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || _eng_err "could not unmount $m"
		done < <(_eng_mounts_under "$dir")
		[[ $left -eq 0 ]] && return 0
	done
	[[ -z $(_eng_mounts_under "$dir") ]]
}

# Remove a state dir once nothing is mounted below it (never crossing into another filesystem).
_eng_rm_state() {
	local dir=$1
	[[ -e $dir ]] || return 0
	if ! _eng_umount_all "$dir"; then
		_eng_err "mounts left under $dir; not removing it"
		return 1
	fi
	rm -rf --one-file-system -- "$dir"
}

# Every cgroup directory named NAME directly under a hierarchy root (v1 and v2).
_eng_cgroup_dirs() {
	local d
	for d in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
		[[ -d $d ]] && printf '%s\n' "$d"
	done
}

# Kill whatever still runs in the cgroup NAME (the containers of one lab's engines) and remove it.
_eng_rm_cgroup() {
	local name=$1 d pids
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		pids=$(_eng_cgroup_dirs "$name" | while read -r d; do
			find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
		done | sort -u | tr '\n' ' ')
		[[ -z ${pids// /} ]] && break
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null
		sleep 0.2
	done
	[[ -z ${pids// /} ]] || _eng_err "processes left in cgroup $name: $pids"
	_eng_cgroup_dirs "$name" | while read -r d; do
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	return 0
}

# --- userns-remap ---------------------------------------------------------------------------------

# The `dockremap` user and group with 65536 subordinate uids and gids each: what
# --userns-remap=default uses. Idempotent; existing entries are kept as they are.
engines_userns_setup() {
	mkdir -p "$ENGINES_STATE_ROOT" || return 1
	(
		flock -w 30 9 || { _eng_err "could not take $ENGINES_STATE_ROOT/.lock"; exit 1; }
		getent group dockremap >/dev/null || groupadd --system dockremap || exit 1
		getent passwd dockremap >/dev/null ||
			useradd --system --gid dockremap --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin dockremap || exit 1
		for f in /etc/subuid /etc/subgid; do
			[[ -e $f ]] || install -m 0644 /dev/null "$f" || exit 1
			grep -q '^dockremap:' "$f" && continue
			# The first range above every range already handed out, at least 100000.
			start=$(awk -F: 'BEGIN {m = 100000} NF >= 3 && $2 + $3 > m {m = $2 + $3} END {print m}' "$f")
			printf 'dockremap:%s:65536\n' "$start" >>"$f" || exit 1
		done
	) 9>>"$ENGINES_STATE_ROOT/.lock"
}

# --- docker ---------------------------------------------------------------------------------------

_eng_docker_sock() { printf '%s/docker.sock\n' "$(engines_dir "$1")"; }
docker_env() { printf 'DOCKER_HOST=unix://%s\n' "$(_eng_docker_sock "$1")"; }

docker_cmd() {
	local p=$1
	shift
	DOCKER_HOST="unix://$(_eng_docker_sock "$p")" DOCKER_CONFIG="$(engines_dir "$p")/docker-cli" \
		"$ENGINES_DOCKER_CLI" "$@"
}

# docker_cmd with a time limit: _eng_docker_t SECONDS PREFIX ARGS...
_eng_docker_t() {
	local secs=$1 p=$2
	shift 2
	timeout "$secs" env DOCKER_HOST="unix://$(_eng_docker_sock "$p")" \
		DOCKER_CONFIG="$(engines_dir "$p")/docker-cli" "$ENGINES_DOCKER_CLI" "$@"
}

dockerd_up() {
	local p=${1-}
	_eng_need_gw "$p" || return 1
	_eng_need dockerd containerd containerd-shim-runc-v2 ctr runc nsenter flock tar iptables jq || return 1
	if [[ ! -x $ENGINES_DOCKER_CLI ]]; then
		_eng_err "$ENGINES_DOCKER_CLI is missing (install docker.io)"
		return 1
	fi
	local dir ctd
	dir=$(engines_dir "$p")
	ctd=$dir/containerd
	if [[ -e $dir/dockerd.pid || -e $dir/containerd.pid ]]; then
		_eng_err "docker of lab $p already started (dockerd_down $p first)"
		return 1
	fi
	engines_userns_setup || return 1
	# The remapped root (uid 100000+) must be able to traverse to its layers: 0711 on the way.
	mkdir -p "$dir"/{data,exec,docker-cli} "$ctd" || return 1
	chmod 0711 "$ENGINES_STATE_ROOT" "$dir" "$dir/data" || return 1

	# containerd of our own: dockerd would use a system containerd instead whenever
	# /run/containerd/containerd.sock exists, and that one does not live in the lab.
	cat >"$ctd/config.toml" <<-EOF
		version = 2
		root = "$ctd/root"
		state = "$ctd/state"
		disabled_plugins = ["io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$ctd/c.sock"
		[ttrpc]
		  address = "$ctd/c.sock.ttrpc"
		[debug]
		  address = ""
		[metrics]
		  address = ""
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$ctd/opt"
	EOF
	# nsenter execs the daemon: $! is the daemon's own pid.
	nsenter --net="$(_eng_gw "$p")" containerd --config "$ctd/config.toml" --log-level warn \
		</dev/null >"$dir/containerd.log" 2>&1 &
	echo $! >"$dir/containerd.pid"
	if ! _eng_wait "$ENGINES_START_TIMEOUT" "$(<"$dir/containerd.pid")" ctr --address "$ctd/c.sock" version; then
		_eng_err "containerd did not start; its log:"
		tail -20 "$dir/containerd.log" >&2
		return 1
	fi

	# A config file of our own (not /etc/docker/daemon.json); only there can the daemon's
	# identity key be moved out of /etc/docker.
	# ENGINES_DOCKERD_CONFIG: a JSON object merged into it (e.g. "runtimes").
	jq -n --arg key "$dir/key.json" --argjson extra "${ENGINES_DOCKERD_CONFIG:-"{}"}" \
		'{"deprecated-key-path": $key} + $extra' >"$dir/daemon.json" || {
		_eng_err "ENGINES_DOCKERD_CONFIG is not a JSON object"
		return 1
	}
	_eng_dockerd_start "$p" || return 1
	local tarball
	tarball=$(engine_tarball "$p") || return 1
	if ! docker_cmd "$p" import -c 'CMD ["/bin/sh"]' "$tarball" "$ENGINE_IMAGE" >/dev/null; then
		_eng_err "docker import of the busybox rootfs failed"
		return 1
	fi
}

# Start dockerd (its daemon.json and containerd exist) and wait until it answers.
_eng_dockerd_start() {
	local p=$1 dir ctd
	dir=$(engines_dir "$p")
	ctd=$dir/containerd
	nsenter --net="$(_eng_gw "$p")" dockerd \
		--config-file "$dir/daemon.json" \
		--data-root "$dir/data" \
		--exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid" \
		-H "unix://$(_eng_docker_sock "$p")" \
		--containerd "$ctd/c.sock" \
		--userns-remap=default \
		--storage-driver overlay2 \
		--exec-opt native.cgroupdriver=cgroupfs \
		--cgroup-parent "/$(_eng_cgroup "$p")" \
		--bip "$ENGINES_DOCKER_BIP" \
		--ipv6 --fixed-cidr-v6 "$ENGINES_DOCKER_V6" \
		--iptables=true --ip-forward=true --ip-masq=true \
		--userland-proxy=false \
		--shutdown-timeout 2 \
		--log-level warn \
		</dev/null >>"$dir/dockerd.log" 2>&1 &
	echo $! >"$dir/dockerd.launch.pid"
	if ! _eng_wait "$ENGINES_START_TIMEOUT" "$(<"$dir/dockerd.launch.pid")" docker_cmd "$p" version; then
		_eng_err "dockerd did not start; its log:"
		tail -20 "$dir/dockerd.log" >&2
		return 1
	fi
}

# dockerd_restart PREFIX: stop dockerd (SIGTERM: it stops its containers) and start it again with
# the same configuration; containerd keeps running. Containers with a restart policy come back.
dockerd_restart() {
	local p=${1-} dir pid
	_eng_need_gw "$p" || return 1
	dir=$(engines_dir "$p")
	if ! pid=$(_eng_live_pid "$dir/dockerd.pid" "$dir/data"); then
		_eng_err "no dockerd of lab $p is running"
		return 1
	fi
	_eng_stop_pid "$pid"
	rm -f "$dir/dockerd.pid" "$dir/dockerd.launch.pid"
	_eng_dockerd_start "$p"
}

dockerd_down() {
	local p=${1-} dir pid ids
	_eng_check_prefix "$p" || return 1
	dir=$(engines_dir "$p")
	[[ -d $dir ]] || return 0
	if pid=$(_eng_live_pid "$dir/dockerd.pid" "$dir/data") ||
		pid=$(_eng_live_pid "$dir/dockerd.launch.pid" "$dir/data"); then
		ids=$(_eng_docker_t 20 "$p" ps -aq 2>/dev/null)
		# shellcheck disable=SC2086
		[[ -n $ids ]] && { _eng_docker_t 30 "$p" rm -f -v $ids >/dev/null 2>&1 || _eng_err "docker rm -f failed"; }
		_eng_stop_pid "$pid"
	fi
	rm -f "$dir/dockerd.pid" "$dir/dockerd.launch.pid"
	_eng_stop_containerd "$p"
	_eng_rm_cgroup "$(_eng_cgroup "$p")"
	_eng_rm_state "$dir/data" && _eng_rm_state "$dir/exec" && _eng_rm_state "$dir/containerd"
}

_eng_stop_containerd() {
	local p=$1 dir pid s c
	dir=$(engines_dir "$p")
	# Shims (and what they still run) first: they outlive containerd by design.
	for s in $(_eng_pids_with "$dir/containerd/c.sock"); do
		[[ $(cat "/proc/$s/comm" 2>/dev/null) == containerd-shim* ]] || continue
		for c in $(pgrep -P "$s"); do kill -KILL "$c" 2>/dev/null; done
		_eng_stop_pid "$s" 5
	done
	if pid=$(_eng_live_pid "$dir/containerd.pid" "$dir/containerd/config.toml"); then
		_eng_stop_pid "$pid"
	fi
	rm -f "$dir/containerd.pid"
	# containerd puts shim sockets in /run/containerd/s whatever its config says: remove the
	# (empty) directories unless a system containerd runs.
	[[ -e /run/containerd/containerd.sock ]] || rmdir /run/containerd/s /run/containerd 2>/dev/null
	return 0
}

# --- runc -----------------------------------------------------------------------------------------

# runc_bundle DIR [PREFIX [ROOTFS]]: DIR/config.json from `runc spec` and DIR/rootfs (busybox),
# or the existing rootfs ROOTFS (absolute; shared by bundles run one after another). Adjusted: no
# terminal, a writable rootfs, CAP_NET_RAW (for ping), its own empty network namespace (a
# "network" entry without a path), no hooks yet (add them with runc_add_hook) and, given PREFIX,
# the cgroup /nsegress-PREFIX/<DIR's name> (so runc_down can always find what it runs).
runc_bundle() {
	local dir=${1-} p=${2-} rootfs=${3-}
	[[ -n $dir ]] || { _eng_err "usage: runc_bundle DIR [PREFIX [ROOTFS]]"; return 1; }
	_eng_need runc jq || return 1
	mkdir -p "$dir" || return 1
	rm -f "$dir/config.json"
	if [[ -z $rootfs ]]; then
		engine_rootfs "$dir/rootfs" || return 1
		rootfs=rootfs
	elif [[ $rootfs != /* || ! -x $rootfs/bin/sh ]]; then
		_eng_err "runc_bundle: ROOTFS must be an absolute path to a rootfs ($rootfs)"
		return 1
	fi
	(cd "$dir" && runc spec) || return 1
	local cg=null
	[[ -n $p ]] && cg="\"/$(_eng_cgroup "$p")/$(basename "$dir")\""
	runc_set "$dir" '
		.process.terminal = false |
		.root = {"path": $rootfs, "readonly": false} |
		.hostname = "nsegress-runc" |
		.process.capabilities |= with_entries(.value = ((.value + ["CAP_NET_RAW"]) | unique)) |
		.linux.namespaces = ([.linux.namespaces[] | select(.type != "network")] + [{"type": "network"}]) |
		.hooks = {} |
		if $cg != null then .linux.cgroupsPath = $cg else . end
	' --argjson cg "$cg" --arg rootfs "$rootfs"
}

# runc_add_hook DIR STAGE PATH [ARG...]: append a hook (args[0] = PATH) to the bundle's STAGE.
runc_add_hook() {
	local dir=$1 stage=$2 path=$3
	shift 3
	local tmp=$dir/config.json.tmp
	jq --arg stage "$stage" --arg path "$path" '
		.hooks[$stage] = ((.hooks[$stage] // []) + [{"path": $path, "args": ([$path] + $ARGS.positional), "timeout": 30}])
	' "$dir/config.json" --args -- "$@" >"$tmp" && mv "$tmp" "$dir/config.json"
}

# runc_set DIR JQ-FILTER [JQ-ARGS...]: rewrite the bundle's config.json through a jq filter.
runc_set() {
	local dir=$1 filter=$2
	shift 2
	local tmp=$dir/config.json.tmp
	jq "$@" "$filter" <"$dir/config.json" >"$tmp" && mv "$tmp" "$dir/config.json"
}

_eng_runc_root() { printf '%s/runc\n' "$(engines_dir "$1")"; }

# runc_cmd PREFIX ARGS...: runc with a private state root, in the sealed gw namespace (so are its
# hooks).
runc_cmd() {
	local p=$1
	shift
	_eng_need_gw "$p" || return 1
	mkdir -p "$(_eng_runc_root "$p")" || return 1
	nsenter --net="$(_eng_gw "$p")" runc --root "$(_eng_runc_root "$p")" "$@"
}

# runc_down PREFIX: kill and delete every container of that runc root, then remove it.
runc_down() {
	local p=${1-} root id
	_eng_check_prefix "$p" || return 1
	root=$(_eng_runc_root "$p")
	[[ -d $root ]] || return 0
	for id in $(runc --root "$root" list -q 2>/dev/null); do
		runc --root "$root" kill "$id" KILL >/dev/null 2>&1
		timeout 10 runc --root "$root" delete --force "$id" >/dev/null 2>&1 ||
			_eng_err "runc delete $id failed"
	done
	_eng_rm_state "$root"
}

# --- podman ---------------------------------------------------------------------------------------

_eng_podman_dir() { printf '%s/podman\n' "$(engines_dir "$1")"; }
# podman refuses a runroot longer than 50 characters (conmon's socket paths): a short one in /run,
# named by a checksum of the prefix.
_eng_podman_runroot() { printf '/run/nsegress-podman-%s\n' "$(printf '%s' "$1" | cksum | cut -d' ' -f1)"; }

# podman_vars PREFIX: the environment that points podman at the private setup, one VAR=value a
# line (e.g. `env $(podman_vars P) ...` for a tool that runs `podman inspect` itself).
podman_vars() {
	local d
	d=$(_eng_podman_dir "$1")
	printf '%s\n' "CONTAINERS_CONF=$d/containers.conf" "CONTAINERS_STORAGE_CONF=$d/storage.conf" \
		"CONTAINERS_REGISTRIES_CONF=$d/registries.conf"
}

# _eng_podman_argv PREFIX: set _ENG_PODMAN to the command line of the private setup, in the
# sealed gw namespace (no checks).
_eng_podman_argv() {
	local p=$1 d
	d=$(_eng_podman_dir "$p")
	# shellcheck disable=SC2207
	_ENG_PODMAN=(env $(podman_vars "$p") nsenter --net="$(_eng_gw "$p")" podman
		--root "$d/storage" --runroot "$(_eng_podman_runroot "$p")" --tmpdir "$d/tmp" --storage-driver overlay
		--cgroup-manager cgroupfs --events-backend none --runtime runc
		--network-config-dir "$d/net.d")
}

# podman_cmd PREFIX ARGS...: podman with the private setup, in the sealed gw namespace (its CNI
# bridge, veths and iptables rules land there). `run` and `create` (after any --hooks-dir DIR)
# get the lab's cgroup parent.
podman_cmd() {
	local p=$1
	shift
	_eng_need_gw "$p" || return 1
	local pre=()
	while [[ ${1-} == --hooks-dir && $# -ge 2 ]] || [[ ${1-} == --hooks-dir=* ]]; do
		if [[ $1 == --hooks-dir ]]; then pre+=("$1" "$2"); shift 2; else pre+=("$1"); shift; fi
	done
	if [[ ${1-} == run || ${1-} == create ]]; then
		local sub=$1
		shift
		set -- "$sub" --cgroup-parent "/$(_eng_cgroup "$p")" "$@"
	fi
	_eng_podman_argv "$p"
	"${_ENG_PODMAN[@]}" "${pre[@]}" "$@"
}

# podman_env PREFIX: write the private configuration (containers.conf with default_ulimits = []
# since the sandbox lacks CAP_SYS_RESOURCE; runc; cgroupfs; no events; a CNI bridge network
# "nsegress" with its own subnet and IPAM store) and import the busybox image as $ENGINE_IMAGE.
podman_env() {
	local p=${1-} d
	_eng_need_gw "$p" || return 1
	_eng_need podman conmon runc nsenter iptables || return 1
	if [[ ! -x /usr/lib/cni/bridge || ! -x /usr/lib/cni/host-local || ! -x /usr/lib/cni/firewall ]]; then
		_eng_err "CNI plugins missing (install containernetworking-plugins)"
		return 1
	fi
	d=$(_eng_podman_dir "$p")
	mkdir -p "$d"/{storage,tmp,net.d,cni-ipam} "$(_eng_podman_runroot "$p")" || return 1
	chmod 0711 "$ENGINES_STATE_ROOT" "$(engines_dir "$p")" || return 1
	cat >"$d/containers.conf" <<-EOF
		[containers]
		default_ulimits = []
		log_driver = "k8s-file"
		netns = "bridge"

		[network]
		network_backend = "cni"
		network_config_dir = "$d/net.d"
		cni_plugin_dirs = ["/usr/lib/cni"]
		default_network = "nsegress"

		[engine]
		runtime = "runc"
		cgroup_manager = "cgroupfs"
		events_logger = "none"
		tmp_dir = "$d/tmp"
	EOF
	cat >"$d/storage.conf" <<-EOF
		[storage]
		driver = "overlay"
		runroot = "$(_eng_podman_runroot "$p")"
		graphroot = "$d/storage"
	EOF
	printf 'unqualified-search-registries = []\n' >"$d/registries.conf"
	local sub=$ENGINES_PODMAN_SUBNET
	cat >"$d/net.d/nsegress.conflist" <<-EOF
		{
		  "cniVersion": "0.4.0",
		  "name": "nsegress",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "nsgpod0",
		      "isGateway": true,
		      "ipMasq": true,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "dataDir": "$d/cni-ipam",
		        "routes": [{ "dst": "0.0.0.0/0" }],
		        "ranges": [[{ "subnet": "$sub", "gateway": "${sub%.*}.1" }]]
		      }
		    },
		    { "type": "firewall", "backend": "iptables" }
		  ]
		}
	EOF
	local tarball
	tarball=$(engine_tarball "$p") || return 1
	if ! podman_cmd "$p" import --quiet --change 'CMD ["/bin/sh"]' "$tarball" "$ENGINE_IMAGE" >/dev/null; then
		_eng_err "podman import of the busybox rootfs failed"
		return 1
	fi
}

# podman_down PREFIX: remove every container of the private setup, then its files.
podman_down() {
	local p=${1-} d pid
	_eng_check_prefix "$p" || return 1
	d=$(_eng_podman_dir "$p")
	[[ -d $d ]] || return 0
	# rm in the gw namespace, so CNI can take the bridge ports and iptables rules down there.
	local keys='' k
	if [[ -e $(_eng_gw "$p") && -e $d/containers.conf ]]; then
		_eng_podman_argv "$p"
		# The containers' namespaces (/run/netns/netns-*): podman removes them, check it did.
		keys=$(timeout 20 "${_ENG_PODMAN[@]}" ps -aq 2>/dev/null |
			xargs -r timeout 20 "${_ENG_PODMAN[@]}" inspect -f '{{.NetworkSettings.SandboxKey}}' 2>/dev/null)
		timeout 60 "${_ENG_PODMAN[@]}" rm -a -f -t 0 >/dev/null 2>&1 || _eng_err "podman rm -a failed"
	fi
	for k in $keys; do
		[[ $k == /run/netns/netns-* && -e $k ]] || continue
		_eng_err "podman left $k behind; removing it"
		umount "$k" 2>/dev/null || umount -l "$k" 2>/dev/null
		rm -f -- "$k"
	done
	# conmon processes of this setup that outlived their containers.
	for pid in $(_eng_pids_with "$d/"); do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == conmon ]] && _eng_stop_pid "$pid" 5
	done
	_eng_rm_cgroup "$(_eng_cgroup "$p")"
	_eng_rm_state "$(_eng_podman_runroot "$p")"
	_eng_rm_state "$d"
}

# --- all engines ----------------------------------------------------------------------------------

# engines_down PREFIX: stop and remove everything the functions above made for PREFIX.
engines_down() {
	local p=${1-} dir
	_eng_check_prefix "$p" || return 1
	dir=$(engines_dir "$p")
	[[ -d $dir ]] || return 0
	runc_down "$p"
	podman_down "$p"
	dockerd_down "$p"
	_eng_rm_cgroup "$(_eng_cgroup "$p")"
	_eng_rm_state "$dir"
}

# engines_trap PREFIX: for a script that does not use tests/integration/lib.sh: on exit, run
# engines_down then lab_down.
engines_trap() {
	local p=$1
	_eng_check_prefix "$p" || return 1
	lab_trap "$p" "engines_down '$p'"
}

# engines_reap_stale: engines_down for every engine state whose lab is gone, or whose lab was
# built with LAB_AUTOREAP=1 (tests) and whose owner died: a test killed by a timeout cannot run
# its own cleanup. Engines of a lab built by hand stay until their own engines_down.
engines_reap_stale() {
	local d p lab owner
	[[ -d $ENGINES_STATE_ROOT ]] || return 0
	for d in "$ENGINES_STATE_ROOT"/*/; do
		[[ -d $d ]] || continue
		p=$(basename "$d")
		_eng_check_prefix "$p" 2>/dev/null || continue
		lab=$(lab_state_dir "$p")
		if [[ -d $lab ]]; then
			[[ -e $lab/autoreap ]] || continue
			owner=$(cat "$lab/owner" 2>/dev/null || true)
			if [[ $owner =~ ^[0-9]+$ && -d /proc/$owner ]] &&
				[[ $(awk '{print $3}' "/proc/$owner/stat" 2>/dev/null) != Z ]]; then
				continue
			fi
		elif [[ -e /run/netns/${p}_gw ]]; then
			continue # a lab whose state dir is gone but whose namespaces are not: not ours to judge
		fi
		_eng_err "reaping stale engines of '$p' (its lab or the lab's owner is gone)"
		engines_down "$p"
	done
}

# engines_leftovers [PREFIX]: print one line per thing left behind by the engines of PREFIX
# (processes, mounts, state dirs, cgroups) or, with no PREFIX, by any engine on the machine (any
# dockerd/containerd/shim/podman/conmon process, engine state, cgroups, podman netns files).
engines_leftovers() {
	local p=${1-} dir pid comm
	if [[ -n $p ]]; then
		dir=$(engines_dir "$p")
		for pid in $(_eng_pids_with "$dir/"); do
			[[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
			comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
			case $comm in dockerd | containerd* | podman | conmon | runc | sleep) echo "process $pid $comm: $(_eng_cmdline "$pid" | head -c 120)" ;; esac
		done
		_eng_mounts_under "$dir" | sed 's/^/mount /'
		_eng_mounts_under "$(_eng_podman_runroot "$p")" | sed 's/^/mount /'
		[[ -e $dir ]] && echo "state dir $dir"
		[[ -e $(_eng_podman_runroot "$p") ]] && echo "state dir $(_eng_podman_runroot "$p")"
		_eng_cgroup_dirs "$(_eng_cgroup "$p")" | sed 's/^/cgroup /'
	else
		for pid in $(grep -lxE 'dockerd|containerd|containerd-shim|podman|conmon' /proc/[0-9]*/comm 2>/dev/null); do
			pid=${pid#/proc/}
			pid=${pid%/comm}
			echo "process $pid $(cat "/proc/$pid/comm" 2>/dev/null): $(_eng_cmdline "$pid" | head -c 120)"
		done
		_eng_mounts_under "$ENGINES_STATE_ROOT" | sed 's/^/mount /'
		local n
		for n in "$ENGINES_STATE_ROOT"/*/ /run/nsegress-podman-*; do [[ -d $n ]] && echo "state dir $n"; done
		for n in /sys/fs/cgroup/*/nsegress-* /sys/fs/cgroup/nsegress-*; do [[ -d $n ]] && echo "cgroup $n"; done
		# podman's container namespaces (/run/netns/netns-*, cni-* in older versions): any left
		# means some podman did not clean up (podman_down removes those of its containers).
		for n in /run/netns/cni-* /run/netns/netns-*; do [[ -e $n ]] && echo "netns $n"; done
	fi
	return 0
}

# engines_root_snapshot: the root network namespace as the engines could have changed it, read
# only: interface names and nft tables (iptables-nft rules show up as tables too).
engines_root_snapshot() {
	echo "== links"
	ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort
	echo "== nft tables"
	nft list tables 2>&1 | sort
}

# --- running nsegress against engine containers ---------------------------------------------------

# engines_guard_target PREFIX NSEGRESS-ARGS...: a safety net against test bugs. Fails (printing
# why) when --pid, or the container named by --container, is a live process that is neither in a
# namespace of the lab PREFIX nor in the lab's engine cgroup, or whose network namespace is this
# shell's own (the root namespace); or when --netns names this shell's own namespace.
# Nonexistent pids, paths and containers pass: bad-input tests need them.
engines_guard_target() {
	local p=$1
	shift
	local prev='' a kind val pid ino own labs n
	own=$(stat -L -c %i "/proc/$$/ns/net")
	labs=' '
	for n in ctr gw lan wan; do labs+="$(stat -L -c %i "/run/netns/${p}_$n" 2>/dev/null) "; done
	for a in "$@"; do
		kind='' val=''
		case $a in
		--pid=* | --netns=* | --container=*) kind=${a%%=*} val=${a#*=} ;;
		*) case $prev in --pid | --netns | --container) kind=$prev val=$a ;; esac ;;
		esac
		prev=$a
		pid=''
		case $kind in
		--pid) pid=$val ;;
		--container)
			pid=''
			if [[ -S $(_eng_docker_sock "$p") ]]; then
				pid=$(docker_cmd "$p" inspect -f '{{.State.Pid}}' "$val" 2>/dev/null)
			fi
			if [[ -z $pid && -e $(_eng_podman_dir "$p")/containers.conf ]]; then
				pid=$(podman_cmd "$p" inspect -f '{{.State.Pid}}' "$val" 2>/dev/null)
			fi
			[[ $pid == 0 ]] && pid=''
			;;
		--netns)
			[[ -e $val ]] || continue
			if [[ $(stat -L -c %i "$val" 2>/dev/null) == "$own" ]]; then
				echo "SAFETY: --netns $val is this shell's own network namespace; not running nsegress"
				return 1
			fi
			continue
			;;
		*) continue ;;
		esac
		[[ $pid =~ ^[0-9]+$ && -e /proc/$pid ]] || continue
		ino=$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)
		if [[ -z $ino || $ino == "$own" ]]; then
			echo "SAFETY: $kind $val (pid $pid) is in this shell's own network namespace (or an unreadable one); not running nsegress"
			return 1
		fi
		if [[ $labs != *" $ino "* ]] && ! grep -q ":/$(_eng_cgroup "$p")/" "/proc/$pid/cgroup" 2>/dev/null; then
			echo "SAFETY: $kind $val (pid $pid) belongs neither to lab $p nor to its engines; not running nsegress"
			return 1
		fi
	done
	return 0
}

# engines_nsegress PREFIX ARGS...: $NSEGRESS in the lab's gw namespace (the "docker host"), with
# DOCKER_HOST and the podman environment of the lab's engines, after engines_guard_target (a
# refusal returns 99, and counts as a failed assertion when lib.sh's `fail` is defined).
engines_nsegress() {
	local p=$1 why
	shift
	if ! why=$(engines_guard_target "$p" "$@"); then
		if declare -F fail >/dev/null; then fail "$why: nsegress $*"; fi
		echo "$why" >&2
		return 99
	fi
	# shellcheck disable=SC2046
	env "$(docker_env "$p")" $(podman_vars "$p") ip netns exec "${p}_gw" "${NSEGRESS:?}" "$@"
}

# engines_in_netns PREFIX PID CMD...: run CMD (e.g. iptables) in the network namespace of the
# engine container process PID, after the same checks as engines_guard_target.
engines_in_netns() {
	local p=$1 pid=$2 why
	shift 2
	if ! why=$(engines_guard_target "$p" --pid "$pid"); then
		echo "$why" >&2
		return 99
	fi
	[[ $pid =~ ^[0-9]+$ && -e /proc/$pid ]] || { _eng_err "no process $pid"; return 1; }
	nsenter --net="/proc/$pid/ns/net" "$@"
}

engines_test_setup() {
	engines_reap_stale
	engines_root_snapshot >"$TMPD/root.before"
	setup_lab
	on_exit "engines_down '$P'"
}

# Test sections carry the elapsed time: the engine tests are the slow ones of the suite.
step() { section "$* [${SECONDS}s]"; }
