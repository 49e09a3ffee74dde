#!/usr/bin/env bash
# The pure modules (parsers, policy logic and the nftables batch compiler, testable without root)
# reach the kernel through nothing: no socket, no kernel-facing module of nsegress, no namespace
# switch -- also not through a header they include (followed transitively, the core's private
# headers under src/ too). Building netlink messages is pure: libnftnl, libmnl's message helpers
# and the netfilter/netlink uapi headers may be included; opening, binding or using a socket may
# not (libmnl's mnl_socket_*, libnl, the socket calls).
#   check_pure.sh REPO
set -euo pipefail
repo=${1:?repo}
cd "$repo"

# The pure modules: every source file of the pure layer (src/policy/) and those of src/base/ that
# are pure, and their headers; a file here may include only pure headers and the C/C++ library.
mapfile -t pure < <(ls src/policy/*.cpp | xargs -n1 basename | sed 's/\.cpp$//')
pure+=(error untrusted fd handle)
# Headers of kernel-facing modules whose types the plan uses (Snapshot, Batch, ProbeTarget, the
# socket type of nfnl.hpp): allowed as headers only (their .cpp is not pure), and checked like the
# rest. nft.hpp is also the interface of the pure src/policy/nft_*.cpp; its socket half,
# src/kernel/nft.cpp, is what the self-check below must catch.
pure+=(inspect nft probe nfnl)
# Headers for building netlink messages, allowed although the prefixes below would match.
building='^(libnftnl/|libmnl/libmnl\.h$|linux/netfilter|linux/netlink\.h$)'
# Headers (or prefixes) that mean "talks to the kernel's networking".
forbidden='^(libmnl/|netlink/|linux/rtnetlink\.h|sys/socket\.h|net/if\.h|sched\.h)'
# Calls that do: sockets (libc, libmnl, libnl) and namespace switches.
calls='(^|[^_[:alnum:]])(::)?(socket|setns|sendmsg|recvmsg|sendto|recvfrom|bind|connect|nl_connect|unshare)[[:space:]]*\(|(^|[^_[:alnum:]])(mnl_socket_|nl_socket_)[_[:alnum:]]*'

status=0
declare -A seen=()
visit() { # FILE WHY: check FILE and the project headers it includes
	local f=$1 why=$2 inc
	[[ -n ${seen[$f]:-} ]] && return 0
	seen[$f]=1
	[[ -f $f ]] || return 0
	while IFS= read -r inc; do
		if [[ $inc == nsegress/* ]]; then
			local name=${inc#nsegress/}
			name=${name%.hpp}
			if [[ " ${pure[*]} " != *" $name "* ]]; then
				echo "not ok - $why includes $inc, which is not a pure module"
				status=1
			fi
			visit "include/$inc" "$why -> $inc"
		elif [[ -f src/$inc ]]; then
			# A private header of the core: only one of the pure layer's (or base's) will do.
			if [[ $inc != policy/* && $inc != base/* ]]; then
				echo "not ok - $why includes $inc, which is not a pure module"
				status=1
			fi
			visit "src/$inc" "$why -> $inc"
		elif [[ $inc =~ $building ]]; then
			:
		elif [[ $inc =~ $forbidden ]]; then
			echo "not ok - $why includes <$inc>"
			status=1
		fi
	done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]+)[>"].*/\1/p' "$f")
	if grep -nE "$calls" "$f" | grep -vE '^[0-9]+:[[:space:]]*//' >/dev/null; then
		echo "not ok - $why calls into the kernel's networking: $(grep -nE "$calls" "$f" | head -3 | tr '\n' ' ')"
		status=1
	fi
}

for m in "${pure[@]}"; do
	for f in "include/nsegress/$m.hpp" src/policy/"$m".cpp src/base/"$m".cpp; do
		[[ -f $f ]] && visit "$f" "$f"
	done
done
# And the check itself must be able to fail: a kernel-facing module is caught.
seen=()
if (visit src/kernel/nft.cpp src/kernel/nft.cpp >/dev/null; exit $status); then
	echo "not ok - the check does not catch src/kernel/nft.cpp (it cannot fail)"
	status=1
fi
[[ $status -eq 0 ]] && echo "ok - pure modules (${pure[*]}) reach no socket or namespace"
exit $status
