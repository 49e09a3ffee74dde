# shellcheck shell=bash
# testenv/engines.sh: real container engines (dockerd, podman, runc) inside a sealed lab.
#
# Source testenv/lab.sh first (or tests/integration/lib.sh, which does), build a lab with lab_up,
# then:
#   engine_rootfs DIR               minimal busybox-static rootfs in DIR (sh, ping, nc, sleep, ip...)
#   engine_tarball PREFIX           print the path of a tarball of that rootfs (built once per PREFIX)
#   dockerd_up PREFIX               containerd + dockerd (userns-remap) inside PREFIX_gw; imports
#                                   the busybox image as $ENGINE_IMAGE
#   docker_cmd PREFIX ARGS...       the docker CLI against that daemon
#   docker_env PREFIX               print DOCKER_HOST=... (for tools that call `docker` themselves)
#   dockerd_down PREFIX             remove its containers, stop both daemons, unmount, delete
#   podman_env PREFIX               private podman config/storage; imports the busybox image
#   podman_cmd PREFIX ARGS...       podman with that config, inside PREFIX_gw
#   podman_vars PREFIX              print the environment podman_cmd uses (VAR=value lines)
#   podman_down PREFIX              remove its containers, unmount, delete
#   runc_bundle DIR                 OCI bundle: busybox rootfs + `runc spec` config.json (new netns)
#   runc_cmd PREFIX ARGS...         runc with a private --root, inside PREFIX_gw
#   runc_down PREFIX                kill and delete what runc_cmd created
#   engines_down PREFIX             all of the *_down above (safe to call twice, or when nothing ran)
#   engines_trap PREFIX             lab_trap that runs engines_down before lab_down
#   engines_leftovers [PREFIX]      print what was left behind (daemons, mounts, netns); empty = clean
#   engines_root_snapshot           the root namespace's links and nft tables (compare before/after)
#
# Rules kept here (shared/docs/lab-safety.md): every daemon runs via `nsenter --net=/run/netns/
# PREFIX_gw` (not `ip netns exec`, which remounts /sys and hides the cgroup mounts), so its
# bridges, veths and iptables rules live in the sealed gw namespace; nothing here configures the
# root namespace; daemons are stopped by their own recorded pids; all state lives in
# $ENGINES_STATE_ROOT/PREFIX and is removed (after unmounting) by the *_down functions.

ENGINES_STATE_ROOT=${ENGINES_STATE_ROOT:-/var/tmp/nsegress-engines}
ENGINE_IMAGE=${ENGINE_IMAGE:-localhost/nsegress-busybox:latest}
ENGINES_BUSYBOX=${ENGINES_BUSYBOX:-/bin/busybox}
# Addresses of the engines' own networks, all inside the sealed gw namespace.
ENGINES_DOCKER_BIP=${ENGINES_DOCKER_BIP:-172.17.0.1/16}
ENGINES_DOCKER_GW4=${ENGINES_DOCKER_BIP%/*}
ENGINES_DOCKER_V6=${ENGINES_DOCKER_V6:-fd00:17::/64}
ENGINES_PODMAN_SUBNET=${ENGINES_PODMAN_SUBNET:-172.31.88.0/24}
# Bounded waits (seconds).
ENGINES_START_TIMEOUT=${ENGINES_START_TIMEOUT:-40}
ENGINES_STOP_TIMEOUT=${ENGINES_STOP_TIMEOUT:-20}
# The Debian docker CLI; /usr/local/bin may hold another one first on PATH.
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

# Run a command in the sealed gw namespace, sharing every other namespace (mounts, cgroups,
# pids) with the caller.
_eng_in_gw() {
	local p=$1
	shift
	nsenter --net="$(_eng_gw "$p")" "$@"
}

_eng_need() {
	local c
	for c in "$@"; do
		if ! command -v "$c" >/dev/null 2>&1; then
			_eng_err "$c is missing (run testenv/bootstrap.sh)"
			return 1
		fi
	done
}

_eng_need_gw() {
	local p=$1
	_eng_check_prefix "$p" || return 1
	if [[ ! -e $(_eng_gw "$p") ]]; then
		_eng_err "no sealed namespace $(_eng_gw "$p"): run lab_up $p first"
		return 1
	fi
	# Never let a daemon land in the root namespace, whatever the path points to.
	if [[ $(stat -L -c %i "$(_eng_gw "$p")") == $(stat -L -c %i /proc/$$/ns/net) ]]; then
		_eng_err "$(_eng_gw "$p") is the root network namespace; refusing"
		return 1
	fi
}

# _eng_wait SECONDS PID CMD...: poll CMD until it succeeds; give up after SECONDS or as soon as
# process PID (the daemon being waited for; 0: none) has exited.
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
	local dir=${1-} a
	if [[ -z $dir ]]; then
		_eng_err "usage: engine_rootfs DIR"
		return 1
	fi
	if ! file -L "$ENGINES_BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
		# `file` may be absent: fall back to ldd's verdict.
		if ! { ldd "$ENGINES_BUSYBOX" 2>&1 || true; } | grep -q 'not a dynamic executable'; then
			_eng_err "$ENGINES_BUSYBOX is not a static busybox (install busybox-static)"
			return 1
		fi
	fi
	mkdir -p "$dir"/{bin,usr/bin,etc,proc,sys,dev,tmp,root,run,var/tmp} || return 1
	chmod 1777 "$dir/tmp" "$dir/var/tmp"
	chmod 700 "$dir/root"
	# busybox --install -s DIR links every applet in DIR to the busybox's own real path (from
	# /proc/self/exe, e.g. /usr/bin/busybox): put the binary at that same path in the rootfs.
	local real
	real=$(readlink -f "$ENGINES_BUSYBOX") || return 1
	mkdir -p "$dir${real%/*}" || return 1
	install -m 0755 "$ENGINES_BUSYBOX" "$dir$real" || return 1
	"$ENGINES_BUSYBOX" --install -s "$dir/bin" || return 1
	[[ $(readlink "$dir/bin/sh") == "$real" ]] || { _eng_err "busybox --install made no usable links"; return 1; }
	install -m 0644 "$_ENGINES_FIXTURES/passwd" "$dir/etc/passwd" || return 1
	install -m 0644 "$_ENGINES_FIXTURES/group" "$dir/etc/group" || return 1
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$dir/etc/hosts"
	: >"$dir/etc/resolv.conf"
	for a in sh ping ping6 nc sleep cat ip grep; do
		if [[ ! -L $dir/bin/$a ]]; then
			_eng_err "busybox has no '$a' applet"
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
		tar -C "$dir/rootfs.tmp" --numeric-owner --owner=0 --group=0 -cf "$dir/rootfs.tar" . || return 1
		rm -rf -- "$dir/rootfs.tmp"
	fi
	printf '%s\n' "$dir/rootfs.tar"
}

# --- process and mount helpers --------------------------------------------------------------------

# pid recorded in FILE if that process still exists and its command line contains NEEDLE.
_eng_live_pid() {
	local f=$1 needle=$2 pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle" || return 1
	printf '%s\n' "$pid"
}

# Stop PID with SIGTERM, SIGKILL after SECONDS.
_eng_stop_pid() {
	local pid=$1 secs=${2:-$ENGINES_STOP_TIMEOUT} i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < secs * 10; i++)); do
		[[ -d /proc/$pid ]] || return 0
		# A zombie child of ours is gone for every purpose here.
		[[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
		sleep 0.1
	done
	_eng_err "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | head -c 80)) ignored SIGTERM for ${secs}s; killing"
	kill -KILL "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		[[ -d /proc/$pid ]] || return 0
		sleep 0.1
	done
}

# Processes whose command line contains NEEDLE (one pid a line).
_eng_pids_with() {
	local f
	# cmdline separates arguments with NULs: -a reads it as text, and a needle has no NUL.
	for f in $(grep -laF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null); do
		f=${f#/proc/}
		printf '%s\n' "${f%/cmdline}"
	done
}

# Mount points at or below DIR in this mount namespace, deepest first.
_eng_mounts_under() {
	local dir=$1
	# mountinfo field 5 is the mount point with space, tab, newline and backslash octal-escaped.
	awk '{print $5}' /proc/self/mountinfo | while read -r m; do
		m=$(printf '%b' "${m//\\/\\0}")
		[[ $m == "$dir" || $m == "$dir"/* ]] && printf '%s\n' "$m"
	done | awk '{print length($0) "\t" $0}' | sort -rn | cut -f2-
}

_eng_umount_all() {
	local dir=$1 m n
	for n in 1 2 3; do
		local left=0
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
	[[ -d $dir ]] || return 0
	if ! _eng_umount_all "$dir"; then
		_eng_err "mounts left under $dir; not removing it"
		return 1
	fi
	rm -rf --one-file-system -- "$dir"
}

# --- userns-remap ---------------------------------------------------------------------------------

# The `dockremap` user and group with 65536 subordinate ids each (what --userns-remap=default
# uses). Idempotent; an existing entry is kept as it is.
engines_userns_setup() {
	(
		flock -w 30 9 || { _eng_err "could not lock /etc/subuid"; exit 1; }
		getent group dockremap >/dev/null || groupadd --system dockremap || exit 1
		getent passwd dockremap >/dev/null ||
			useradd --system --gid dockremap --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin dockremap || exit 1
		local f start
		for f in /etc/subuid /etc/subgid; do
			[[ -e $f ]] || install -m 0644 /dev/null "$f"
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

# docker_cmd with a time limit (SECONDS first).
_eng_docker_t() {
	local secs=$1 p=$2
	shift 2
	timeout "$secs" env DOCKER_HOST="unix://$(_eng_docker_sock "$p")" \
		DOCKER_CONFIG="$(engines_dir "$p")/docker-cli" "$ENGINES_DOCKER_CLI" "$@"
}

dockerd_up() {
	local p=${1-}
	_eng_need_gw "$p" || return 1
	_eng_need dockerd containerd containerd-shim-runc-v2 runc nsenter flock tar || return 1
	[[ -x $ENGINES_DOCKER_CLI ]] || { _eng_err "$ENGINES_DOCKER_CLI missing (install docker.io)"; return 1; }
	local dir
	dir=$(engines_dir "$p")
	if [[ -e $dir/dockerd.pid || -e $dir/containerd.pid ]]; then
		_eng_err "docker of lab $p already started (run dockerd_down $p)"
		return 1
	fi
	engines_userns_setup || return 1
	# The remapped root (uid 100000+) must be able to traverse to its layers: 0711 on the way.
	mkdir -p "$ENGINES_STATE_ROOT" "$dir"/{data,exec,containerd,docker-cli} || return 1
	chmod 0711 "$ENGINES_STATE_ROOT" "$dir" "$dir/data" || return 1

	# Our own containerd: dockerd would otherwise use a system containerd if
	# /run/containerd/containerd.sock exists, which lives outside the lab.
	local ctd=$dir/containerd
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
	# nsenter execs the daemon, so $! is the daemon's own pid.
	nsenter --net="$(_eng_gw "$p")" containerd --config "$ctd/config.toml" --log-level warn \
		</dev/null >"$dir/containerd.log" 2>&1 &
	echo $! >"$dir/containerd.pid"
	if ! _eng_wait "$ENGINES_START_TIMEOUT" "$(<"$dir/containerd.pid")" ctr --address "$ctd/c.sock" version; then
		_eng_err "containerd did not start within ${ENGINES_START_TIMEOUT}s; its log:"
		tail -20 "$dir/containerd.log" >&2
		return 1
	fi

	# Only a config file can move the daemon's identity key out of /etc/docker.
	printf '{"deprecated-key-path": "%s"}\n' "$dir/key.json" >"$dir/daemon.json"
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
		--cgroup-parent "/nsegress-$p" \
		--bip "$ENGINES_DOCKER_BIP" \
		--ipv6 --fixed-cidr-v6 "$ENGINES_DOCKER_V6" \
		--iptables=true --ip-forward=true --ip-masq=true \
		--userland-proxy=false \
		--shutdown-timeout 2 \
		--log-level warn \
		</dev/null >"$dir/dockerd.log" 2>&1 &
	echo $! >"$dir/dockerd.launch.pid"
	if ! _eng_wait "$ENGINES_START_TIMEOUT" "$(<"$dir/dockerd.launch.pid")" docker_cmd "$p" version; then
		_eng_err "dockerd did not answer within ${ENGINES_START_TIMEOUT}s; its log:"
		tail -20 "$dir/dockerd.log" >&2
		return 1
	fi
	local tarball
	tarball=$(engine_tarball "$p") || return 1
	if ! docker_cmd "$p" import -c 'CMD ["/bin/sh"]' "$tarball" "$ENGINE_IMAGE" >/dev/null; then
		_eng_err "docker import of the busybox rootfs failed"
		return 1
	fi
}

dockerd_down() {
	local p=${1-} dir pid ids
	_eng_check_prefix "$p" || return 1
	dir=$(engines_dir "$p")
	[[ -d $dir ]] || return 0
	if pid=$(_eng_live_pid "$dir/dockerd.pid" "$dir/data"); then
		ids=$(_eng_docker_t 20 "$p" ps -aq 2>/dev/null)
		# shellcheck disable=SC2086
		[[ -n $ids ]] && _eng_docker_t 30 "$p" rm -f -v $ids >/dev/null 2>&1
		_eng_stop_pid "$pid"
	elif pid=$(_eng_live_pid "$dir/dockerd.launch.pid" "$dir/data"); then
		_eng_stop_pid "$pid"
	fi
	_eng_stop_containerd "$p"
	rm -f "$dir/dockerd.pid" "$dir/dockerd.launch.pid"
	_eng_rm_cgroups "nsegress-$p"
	_eng_rm_state "$dir/data" && _eng_rm_state "$dir/exec" && _eng_rm_state "$dir/containerd"
}

_eng_stop_containerd() {
	local p=$1 dir pid s c
	dir=$(engines_dir "$p")
	# Shims (and whatever they still run) first: they outlive containerd by design.
	for s in $(_eng_pids_with "$dir/containerd/c.sock"); do
		tr '\0' ' ' <"/proc/$s/cmdline" 2>/dev/null | grep -q '^containerd-shim\|/containerd-shim' || continue
		for c in $(pgrep -P "$s"); do kill -KILL "$c" 2>/dev/null; done
		_eng_stop_pid "$s" 5
	done
	if pid=$(_eng_live_pid "$dir/containerd.pid" "$dir/containerd/config.toml"); then
		_eng_stop_pid "$pid"
	fi
	rm -f "$dir/containerd.pid"
	# containerd puts shim sockets under /run/containerd/s whatever its config says; leave the
	# directories only to a system containerd.
	[[ -e /run/containerd/containerd.sock ]] || rmdir /run/containerd/s /run/containerd 2>/dev/null
	return 0
}

# Remove the (empty) cgroups named NAME that the engines created under each v1 hierarchy / v2.
_eng_rm_cgroups() {
	local name=$1 d
	for d in /sys/fs/cgroup/*/"$name" /sys/fs/cgroup/"$name"; do
		[[ -d $d ]] || continue
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

# --- runc -----------------------------------------------------------------------------------------

# runc_bundle DIR: DIR/rootfs (busybox) and DIR/config.json from `runc spec`, adjusted: no
# terminal, a writable rootfs, CAP_NET_RAW (for ping), its own empty network namespace (a
# "network" entry without a path) and no hooks yet (tests add them with runc_add_hook).
runc_bundle() {
	local dir=${1-}
	[[ -n $dir ]] || { _eng_err "usage: runc_bundle DIR"; return 1; }
	_eng_need runc jq || return 1
	mkdir -p "$dir" || return 1
	rm -f "$dir/config.json"
	engine_rootfs "$dir/rootfs" || return 1
	(cd "$dir" && runc spec) || return 1
	local tmp=$dir/config.json.tmp
	jq '
		.process.terminal = false |
		.root.readonly = false |
		.hostname = "nsegress-runc" |
		.process.capabilities |= with_entries(.value = ((.value + ["CAP_NET_RAW"]) | unique)) |
		.linux.namespaces = ([.linux.namespaces[] | select(.type != "network")] + [{"type": "network"}]) |
		.hooks = {}
	' "$dir/config.json" >"$tmp" && mv "$tmp" "$dir/config.json"
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

# runc_set DIR JQ-FILTER [jq args...]: edit the bundle's config.json with jq.
runc_set() {
	local dir=$1 filter=$2
	shift 2
	local tmp=$dir/config.json.tmp
	jq "$@" "$filter" <"$dir/config.json" >"$tmp" && mv "$tmp" "$dir/config.json"
}

_eng_runc_root() { printf '%s/runc\n' "$(engines_dir "$1")"; }

# runc_cmd PREFIX ARGS...: runc with a private state root, in the sealed gw namespace.
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

# podman_vars PREFIX: the environment that makes a plain `podman` use this private setup (one
# VAR=value a line; e.g. for `env $(podman_vars P) nsegress ... --engine podman`).
podman_vars() {
	local d
	d=$(_eng_podman_dir "$1")
	printf '%s\n' "CONTAINERS_CONF=$d/containers.conf" "CONTAINERS_STORAGE_CONF=$d/storage.conf" \
		"CONTAINERS_REGISTRIES_CONF=$d/registries.conf"
}

# podman_cmd PREFIX ARGS...: podman with the private setup, in the sealed gw namespace (its CNI
# bridge, veths and iptables rules land there).
podman_cmd() {
	local p=$1
	shift
	_eng_need_gw "$p" || return 1
	local d
	d=$(_eng_podman_dir "$p")
	# shellcheck disable=SC2046
	env $(podman_vars "$p") nsenter --net="$(_eng_gw "$p")" podman \
		--root "$d/storage" --runroot "$d/run" --tmpdir "$d/tmp" --storage-driver overlay \
		--cgroup-manager cgroupfs --events-backend none --runtime runc \
		--network-config-dir "$d/net.d" "$@"
}

# podman_env PREFIX: write the private configuration (containers.conf with default_ulimits = []:
# the sandbox lacks CAP_SYS_RESOURCE; runc; cgroupfs; a CNI bridge network "nsegress" with its
# own subnet and IPAM store) and import the busybox image as $ENGINE_IMAGE.
podman_env() {
	local p=${1-}
	_eng_need_gw "$p" || return 1
	_eng_need podman conmon runc nsenter || return 1
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] ||
		{ _eng_err "CNI plugins missing (install containernetworking-plugins)"; return 1; }
	local d
	d=$(_eng_podman_dir "$p")
	mkdir -p "$ENGINES_STATE_ROOT" "$d"/{storage,run,tmp,net.d,cni-ipam} || return 1
	chmod 0711 "$ENGINES_STATE_ROOT" "$(engines_dir "$p")"
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
		runroot = "$d/run"
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

# podman_down PREFIX: remove every container and image of the private setup, then its files.
podman_down() {
	local p=${1-} d pid
	_eng_check_prefix "$p" || return 1
	d=$(_eng_podman_dir "$p")
	[[ -d $d ]] || return 0
	if [[ -e /run/netns/${p}_gw ]]; then
		timeout 60 env $(podman_vars "$p") nsenter --net="/run/netns/${p}_gw" podman \
			--root "$d/storage" --runroot "$d/run" --tmpdir "$d/tmp" --storage-driver overlay \
			--cgroup-manager cgroupfs --events-backend none --runtime runc \
			--network-config-dir "$d/net.d" rm -a -f -t 0 >/dev/null 2>&1 ||
			_eng_err "podman rm -a failed"
	fi
	# conmon processes of this setup that outlived their containers.
	for pid in $(_eng_pids_with "$d/"); do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == conmon ]] && _eng_stop_pid "$pid" 5
	done
	_eng_rm_state "$d"
}
