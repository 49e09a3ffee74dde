# shellcheck shell=bash
# testenv/cni.sh: run CNI plugins exactly as a container runtime does, inside sealed namespaces.
#
# Source testenv/lab.sh first (tests/integration/lib.sh does), build a lab with lab_up; its gw
# namespace plays the "node": the plugins run there (so the bridge, its veth ends and any
# masquerade rule live in it) and configure a "pod" namespace made with cni_pod_add.
#
#   cni_state_init PREFIX             record what this run creates (pods, podman dirs, namespaces) in
#                                     $CNI_STATE_ROOT/PREFIX with the caller's pid as owner, so a run
#                                     killed before its trap (a ctest timeout) is cleaned up later
#   cni_state_note KIND VALUE         record one more thing: netns NAME | podman DIR | dir TMPDIR
#   cni_state_done                    forget the record (after a normal cleanup)
#   cni_reap_stale                    clean up what runs whose owner died left behind
#   cni_require_plugins TYPE...      fail (message on stderr) unless each system plugin exists
#   cni_test_setup                    for tests/integration/test_cni*.sh (after lib.sh): reap what
#                                     killed runs left, build the lab, record this run's state
#   cni_pod_add NAME                  ip netns add NAME (refuses an existing one); prints its path
#   cni_pod_del NAME                  delete it (killing what still runs in it); safe twice
#   cni_plugin_dir DIR NSEGRESS       DIR holding a copy of NSEGRESS named `nsegress` (as it would be
#                                     installed in /opt/cni/bin); prints DIR
#   cni_invoke NODE TYPE VAR=VALUE... run plugin TYPE (looked up in the CNI_PATH given, like libcni)
#                                     in namespace NODE (a /run/netns path) with exactly those CNI_*
#                                     variables; the netconf on stdin; its stdout on stdout; its rc
#   cni_netconf CONFLIST I [PREV]     the netconf libcni gives plugin I of CONFLIST: the plugin's
#                                     object with the list's cniVersion and name, and prevResult
#                                     from file PREV when given
#   cni_chain CMD CONFLIST NODE NETNS CONTAINERID CACHE
#                                     a tiny cnitool: ADD runs the plugins in order threading
#                                     prevResult and stores the final result in file CACHE; CHECK
#                                     runs them in order and DEL in reverse, each with the cached
#                                     result as prevResult (as libcni does). Stops at the first
#                                     failing plugin; prints the result or that plugin's error
#                                     JSON; returns its status. NETNS "-" leaves CNI_NETNS unset.
#                                     CNI_DRIVER_PATH (CNI_PATH) and CNI_DRIVER_IFNAME (eth0) apply;
#                                     CNI_DRIVER_KEEP=DIR keeps each plugin's ADD output as
#                                     DIR/ADD.<index>.json.
#   cni_conflist_localize IN OUT DATADIR
#                                     copy a shipped conflist, pointing every host-local IPAM's
#                                     dataDir at DATADIR (never /var/lib/cni/networks)
#   cni_rootfs_tar DIR                a busybox-static rootfs tarball in DIR; prints its path
#   cni_podman_env DIR NODE CONFDIR PLUGINDIR...
#                                     private podman setup in DIR: CNI backend, CONFDIR as its CNI
#                                     config dir, the plugin dirs, runc, no ulimits, own storage
#   cni_podman DIR ARGS...            podman with that setup, run in the namespace of the setup
#                                     (bounded by CNI_PODMAN_TIMEOUT seconds, 120)
#   cni_podman_down DIR               remove its containers, unmount its storage, delete DIR
#
# Safety (shared/docs/lab-safety.md): every plugin and podman runs under nsenter --net= a lab
# namespace, never in the runner's own (refused by inode, whatever the path says); every pod
# namespace is ours (a name given by the test, created here); host-local state goes to a temp dir.

CNI_SYSTEM_PLUGINS=${CNI_SYSTEM_PLUGINS:-/usr/lib/cni}
CNI_DRIVER_IFNAME=${CNI_DRIVER_IFNAME:-eth0}
CNI_PLUGIN_TIMEOUT=${CNI_PLUGIN_TIMEOUT:-60}
CNI_BUSYBOX=${CNI_BUSYBOX:-/bin/busybox}
CNI_PODMAN_IMAGE=${CNI_PODMAN_IMAGE:-localhost/nsegress-cni-busybox:latest}
CNI_STATE_ROOT=${CNI_STATE_ROOT:-/run/nsegress-cni}
CNI_STATE=''

_cni_err() { printf 'cni: %s\n' "$*" >&2; }

cni_require_plugins() {
	local plugin
	for plugin in "$@"; do
		if [[ ! -x $CNI_SYSTEM_PLUGINS/$plugin ]]; then
			echo "FAIL: $CNI_SYSTEM_PLUGINS/$plugin is missing (install containernetworking-plugins)"
			return 1
		fi
	done
}

# The network namespace inode of the shell that sourced this file (the runner's namespace).
_CNI_RUNNER_NETNS_INO=$(stat -L -c %i "/proc/$$/ns/net")

cni_state_init() {
	local p=$1
	if [[ ! $p =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,50}$ ]]; then
		_cni_err "invalid prefix '$p'"
		return 1
	fi
	CNI_STATE=$CNI_STATE_ROOT/$p
	mkdir -p "$CNI_STATE" || return 1
	echo "$$" >"$CNI_STATE/owner"
	: >>"$CNI_STATE/items"
}

cni_state_note() {
	[[ -n $CNI_STATE && -d $CNI_STATE ]] || return 0
	printf '%s %s\n' "$1" "$2" >>"$CNI_STATE/items"
}

cni_state_done() {
	[[ -n $CNI_STATE ]] && rm -rf -- "$CNI_STATE"
	CNI_STATE=''
}

# Delete a namespace under /run/netns recorded by a dead run (killing what still runs in it).
_cni_reap_netns() {
	local name=${1#/run/netns/}
	[[ $name == */* || -z $name ]] && return 0
	cni_pod_del "$name"
}

cni_reap_stale() {
	local d owner kind value
	[[ -d $CNI_STATE_ROOT ]] || return 0
	for d in "$CNI_STATE_ROOT"/*/; do
		[[ -d $d ]] || continue
		d=${d%/}
		owner=$(cat "$d/owner" 2>/dev/null || true)
		if [[ $owner =~ ^[0-9]+$ && -d /proc/$owner ]] &&
			[[ $(awk '{print $3}' "/proc/$owner/stat" 2>/dev/null) != Z ]]; then
			continue
		fi
		_cni_err "reaping what run ${d##*/} (owner ${owner:-unknown} is gone) left behind"
		# Last recorded first: podman's container namespaces before its storage.
		while read -r kind value; do
			case $kind in
			netns) _cni_reap_netns "$value" ;;
			podman) _cni_podman_remove "$value" ;;
			dir) [[ $value == /tmp/nsegress-* && -d $value ]] && rm -rf -- "$value" ;;
			esac
		done < <(tac "$d/items" 2>/dev/null)
		rm -rf -- "$d"
	done
}

cni_pod_add() {
	local name=${1-}
	if [[ ! $name =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,50}$ ]]; then
		_cni_err "invalid namespace name '$name'"
		return 1
	fi
	if [[ -e /run/netns/$name ]]; then
		_cni_err "namespace $name already exists"
		return 1
	fi
	ip netns add "$name" || return 1
	cni_state_note netns "$name"
	printf '/run/netns/%s\n' "$name"
}

cni_pod_del() {
	local name=$1 pids
	[[ -e /run/netns/$name ]] || return 0
	pids=$(ip netns pids "$name" 2>/dev/null | tr '\n' ' ')
	# shellcheck disable=SC2086
	[[ -n ${pids// /} ]] && kill -KILL $pids 2>/dev/null
	ip netns del "$name" 2>/dev/null || _cni_err "could not delete namespace $name"
}

cni_plugin_dir() {
	local dir=$1 bin=$2
	mkdir -p "$dir" || return 1
	install -m 0755 "$bin" "$dir/nsegress" || return 1
	printf '%s\n' "$dir"
}

# Find plugin TYPE in a CNI_PATH (colon-separated), the first directory that has it wins.
_cni_find() {
	local type=$1 path=$2 d
	local IFS=:
	for d in $path; do
		if [[ -n $d && -x $d/$type && ! -d $d/$type ]]; then
			printf '%s\n' "$d/$type"
			return 0
		fi
	done
	return 1
}

cni_invoke() {
	local node=$1 type=$2
	shift 2
	local a cnipath=''
	for a in "$@"; do
		case $a in
		CNI_PATH=*) cnipath=${a#CNI_PATH=} ;;
		CNI_COMMAND=* | CNI_CONTAINERID=* | CNI_NETNS=* | CNI_IFNAME=* | CNI_ARGS=*) ;;
		*)
			_cni_err "cni_invoke: not a CNI variable: $a"
			return 1
			;;
		esac
	done
	lab_sealed "$node" || return 1
	local netns
	for a in "$@"; do
		[[ $a == CNI_NETNS=* ]] && netns=${a#CNI_NETNS=}
	done
	# The pod may already be gone (DEL) or be a bogus path (error tests); when it exists it must
	# not be the runner's namespace.
	if [[ -n ${netns-} && -e $netns ]] && [[ $(stat -L -c %i "$netns") == "$_CNI_RUNNER_NETNS_INO" ]]; then
		_cni_err "CNI_NETNS=$netns is the runner's own network namespace; refusing"
		return 1
	fi
	local plugin
	if ! plugin=$(_cni_find "$type" "$cnipath"); then
		_cni_err "plugin '$type' not found in CNI_PATH '$cnipath'"
		return 1
	fi
	# A runtime passes its own environment plus the CNI variables; keep only PATH of ours (the
	# bridge plugin runs iptables for ipMasq).
	timeout "$CNI_PLUGIN_TIMEOUT" nsenter --net="$node" \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@" "$plugin"
}

cni_netconf() {
	local conflist=$1 i=$2 prev=${3-}
	if [[ -n $prev ]]; then
		jq -c --argjson i "$i" --slurpfile prev "$prev" \
			'. as $l | .plugins[$i] + {cniVersion: $l.cniVersion, name: $l.name, prevResult: $prev[0]}' "$conflist"
	else
		jq -c --argjson i "$i" '. as $l | .plugins[$i] + {cniVersion: $l.cniVersion, name: $l.name}' "$conflist"
	fi
}

cni_chain() {
	local cmd=$1 conflist=$2 node=$3 netns=$4 cid=$5 cache=$6
	local cnipath=${CNI_DRIVER_PATH:-$CNI_SYSTEM_PLUGINS}
	local n i out rc conf prev='' order types
	# One jq call for the plugin types (jq is not cheap on a loaded machine).
	mapfile -t types < <(jq -r '.plugins[].type' "$conflist") || return 1
	n=${#types[@]}
	if ((n == 0)); then
		_cni_err "$conflist has no plugins"
		return 1
	fi
	local env=(CNI_COMMAND="$cmd" CNI_CONTAINERID="$cid" CNI_IFNAME="$CNI_DRIVER_IFNAME" CNI_PATH="$cnipath")
	[[ $netns != - ]] && env+=(CNI_NETNS="$netns")
	case $cmd in
	ADD | CHECK) order=$(seq 0 $((n - 1))) ;;
	DEL) order=$(seq $((n - 1)) -1 0) ;;
	*)
		_cni_err "cni_chain: unknown command $cmd"
		return 1
		;;
	esac
	if [[ $cmd == CHECK && ! -s $cache ]]; then
		_cni_err "cni_chain CHECK: no cached result $cache"
		return 1
	fi
	# DEL and CHECK give every plugin the cached final result (DEL works without one too).
	[[ $cmd != ADD && -s $cache ]] && prev=$cache
	local steps
	steps=$(mktemp -d) || return 1
	for i in $order; do
		local type=${types[i]}
		if ! conf=$(cni_netconf "$conflist" "$i" "$prev"); then
			rm -rf -- "$steps"
			return 1
		fi
		out=$(cni_invoke "$node" "$type" "${env[@]}" <<<"$conf")
		rc=$?
		if ((rc != 0)); then
			_cni_err "$cmd: plugin $i ($type) failed with status $rc"
			printf '%s\n' "$out"
			rm -rf -- "$steps"
			return "$rc"
		fi
		if [[ $cmd == ADD ]]; then
			# A result is a JSON object (checked in full by whoever reads it).
			if [[ ! $out =~ ^[[:space:]]*\{ ]]; then
				_cni_err "ADD: plugin $i ($type) printed no result object: $out"
				rm -rf -- "$steps"
				return 1
			fi
			printf '%s\n' "$out" >"$steps/$i.json"
			prev=$steps/$i.json
			[[ -n ${CNI_DRIVER_KEEP-} ]] && cp "$prev" "$CNI_DRIVER_KEEP/ADD.$i.json"
		fi
	done
	case $cmd in
	ADD)
		cp "$prev" "$cache"
		cat "$cache"
		;;
	DEL) rm -f "$cache" ;;
	esac
	rm -rf -- "$steps"
	return 0
}

cni_conflist_localize() {
	local in=$1 out=$2 datadir=$3
	jq --arg d "$datadir" \
		'.plugins |= map(if (.ipam.type? // "") == "host-local" then .ipam.dataDir = $d else . end)' \
		"$in" >"$out"
}

# --- podman ---------------------------------------------------------------------------------------

cni_rootfs_tar() {
	local dir=$1 root real a
	if ! { ldd "$CNI_BUSYBOX" 2>&1 || true; } | grep -q 'not a dynamic executable'; then
		_cni_err "$CNI_BUSYBOX is not a static busybox (install busybox-static)"
		return 1
	fi
	root=$dir/rootfs
	mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,run} || return 1
	chmod 1777 "$root/tmp"
	# busybox --install -s links the applets to its real path (/proc/self/exe): put it there.
	real=$(readlink -f "$CNI_BUSYBOX") || return 1
	mkdir -p "$root${real%/*}" || return 1
	install -m 0755 "$CNI_BUSYBOX" "$root$real" || return 1
	"$CNI_BUSYBOX" --install -s "$root/bin" || return 1
	for a in sh ping nc sleep ip; do
		[[ -L $root/bin/$a ]] || {
			_cni_err "busybox has no '$a' applet"
			return 1
		}
	done
	printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$dir/rootfs.tar" . || return 1
	rm -rf -- "$root"
	printf '%s\n' "$dir/rootfs.tar"
}

# The options every podman call of a setup uses (command-line flags win over any system config).
_cni_podman_flags() {
	local d=$1
	printf '%s\n' --root "$d/storage" --runroot "$d/run" --tmpdir "$d/tmp" --storage-driver overlay \
		--cgroup-manager cgroupfs --events-backend none --runtime runc \
		--network-config-dir "$(<"$d/confdir")"
}

cni_podman_env() {
	local d=$1 node=$2 confdir=$3
	shift 3
	local dirs='' p
	for p in "$@"; do dirs+="${dirs:+, }\"$p\""; done
	lab_sealed "$node" || return 1
	mkdir -p "$d"/{storage,run,tmp} || return 1
	cni_state_note podman "$d"
	printf '%s\n' "$node" >"$d/node"
	printf '%s\n' "$confdir" >"$d/confdir"
	cat >"$d/containers.conf" <<-EOF
		[containers]
		default_ulimits = []
		log_driver = "k8s-file"

		[network]
		network_backend = "cni"
		cni_plugin_dirs = [$dirs]
		network_config_dir = "$confdir"

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
}

cni_podman() {
	local d=$1
	shift
	local node
	node=$(<"$d/node") || return 1
	lab_sealed "$node" || return 1
	local flags
	mapfile -t flags < <(_cni_podman_flags "$d")
	timeout "${CNI_PODMAN_TIMEOUT:-120}" env CONTAINERS_CONF="$d/containers.conf" \
		CONTAINERS_STORAGE_CONF="$d/storage.conf" CONTAINERS_REGISTRIES_CONF="$d/registries.conf" \
		nsenter --net="$node" podman "${flags[@]}" "$@"
}

cni_podman_down() {
	local d=$1
	[[ -d $d ]] || return 0
	if [[ -f $d/node && -e $(<"$d/node") ]]; then
		CNI_PODMAN_TIMEOUT=60 cni_podman "$d" rm -a -f -t 0 >/dev/null 2>&1 || _cni_err "podman rm -a failed"
		CNI_PODMAN_TIMEOUT=60 cni_podman "$d" rmi -a -f >/dev/null 2>&1 || _cni_err "podman rmi -a failed"
	fi
	_cni_podman_remove "$d"
}

# Without podman's help: kill the container processes of setup DIR and their conmon processes, delete the container namespaces podman made under /run/netns (found by inode from
# those children: other podman users' namespaces are never touched), unmount what is mounted under
# DIR (overlay layers, shm), deepest first, and delete it.
_cni_podman_remove() {
	local d=$1 f pid ino n
	# Only a directory cni_podman_env wrote (a corrupt record must not name / or the like).
	[[ -n $d && $d == /?*/?* && -f $d/storage.conf && -f $d/containers.conf ]] || return 0
	local conmons=() kids=() inos=' ' mine
	mine=$(readlink /proc/self/ns/mnt)
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == conmon ]]; then
			tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$d/" && conmons+=("$pid")
		# A container process: a mount namespace of its own whose root mount (the overlay)
		# comes from DIR's storage. Found this way even when conmon is already gone. Only the
		# root mount counts: any process started meanwhile in a mount namespace of its own
		# (`ip netns exec`, another test's lab listener) has copies of DIR's mounts too.
		elif [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) != "$mine" ]] &&
			[[ $(awk '$5 == "/"' "/proc/$pid/mountinfo" 2>/dev/null) == *"$d/"* ]]; then
			kids+=("$pid")
			ino=$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null) && inos+="$ino "
		fi
	done
	((${#kids[@]})) && kill -KILL "${kids[@]}" 2>/dev/null
	((${#conmons[@]})) && kill -KILL "${conmons[@]}" 2>/dev/null
	for n in /run/netns/netns-*; do
		[[ -e $n ]] || continue
		ino=$(stat -L -c %i "$n" 2>/dev/null) || continue
		# Never the runner's own namespace, whatever a container shared.
		[[ $ino != "$_CNI_RUNNER_NETNS_INO" && $inos == *" $ino "* ]] && cni_pod_del "${n#/run/netns/}"
	done
	# shellcheck disable=SC2013 # mount points under our temp dir hold no spaces
	for n in $(awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
		umount -l "$n" 2>/dev/null || _cni_err "could not unmount $n"
	done
	rm -rf -- "$d"
}

cni_test_setup() {
	# What a run killed before its trap (a ctest timeout) left beyond its lab: pods, podman
	# state (before setup_lab reaps the lab: a container is found by its processes while they live).
	cni_reap_stale
	setup_lab
	cni_state_init "$P" || {
		fail "could not record the run's state in $CNI_STATE_ROOT"
		finish
	}
	cni_state_note dir "$TMPD"
}
