#!/usr/bin/env bash
# The bash completion (share/bash-completion/completions/nsegress), sourced in a plain bash and
# called the way bash calls it (COMP_WORDS, COMP_CWORD). No privileges, no network: container
# names come from stub docker/podman CLIs on PATH that also record that they were asked.
#   - every option `nsegress COMMAND --help` prints is completed for that command, and nothing else;
#   - --container completes the engine's running containers; --engine docker|podman;
#   - podman is never run by a non-root user; a missing engine CLI is skipped quietly.
# Usage: test_completion.sh [NSEGRESS_BINARY]   (ctest passes the build's binary)
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPLETION=${COMPLETION:-$REPO/share/bash-completion/completions/nsegress}
NSEGRESS=${1:-${NSEGRESS:-$REPO/build/nsegress}}
TMPD=$(mktemp -d /tmp/nsegress-completion.XXXXXX)
trap 'rm -rf -- "$TMPD"' EXIT

pass=0 failed=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }
bad() { failed=$((failed + 1)); echo "not ok - $*"; }
check_eq() { if [[ $1 == "$2" ]]; then ok "$3"; else bad "$3: expected '$1', got '$2'"; fi; }

# Stub engines: docker lists two containers, podman one; each call is logged.
mkdir "$TMPD/bin"
for e in docker podman; do
	cat >"$TMPD/bin/$e" <<EOF
#!/bin/sh
echo "$e \$*" >>"$TMPD/calls"
[ "\$1" = ps ] || exit 1
case $e in docker) printf 'web\nweb-db\n' ;; podman) printf 'pod-app\n' ;; esac
EOF
	chmod +x "$TMPD/bin/$e"
done

# complete WORD... : the completions bash would offer for the command line WORD... (the last
# word is the one being completed), sorted, one per line. Runs in a clean bash with PATH=$CPATH.
CPATH="$TMPD/bin:/usr/bin:/bin"
complete_words() {
	env -i PATH="$CPATH" HOME="$TMPD" bash --norc --noprofile -c '
		source "$1"; shift
		COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		_nsegress nsegress "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
		printf "%s\n" "${COMPREPLY[@]}"' completion "$COMPLETION" "$@" 2>"$TMPD/stderr" | sort
}

echo "# syntax"
if bash -n "$COMPLETION"; then ok "bash -n"; else bad "bash -n"; fi

echo "# commands"
check_eq "$(printf '%s\n' --help --version hook probe release restrict status verify watch | sort)" \
	"$(complete_words nsegress '')" "every command is offered, and --help, --version"
check_eq "release restrict" "$(complete_words nsegress re | tr '\n' ' ' | sed 's/ $//')" "prefix 're'"

echo "# options: exactly what 'nsegress COMMAND --help' lists"
if [[ -x $NSEGRESS ]]; then
	for cmd in restrict release status probe verify watch hook; do
		want=$("$NSEGRESS" "$cmd" --help | grep -oE '^ +(-[a-z] \[ )?--[a-z][a-z-]*' | grep -oE -- '--[a-z-]+' | sort -u)
		got=$(complete_words nsegress "$cmd" -- | sort -u)
		check_eq "$want" "$got" "$cmd: the options of '$cmd --help'"
	done
else
	bad "no nsegress binary at '$NSEGRESS' to compare the options with"
fi
check_eq "--allow
--allow-file" "$(complete_words nsegress restrict --netns /x --allo)" "restrict --allo"

echo "# values"
check_eq "docker
podman" "$(complete_words nsegress restrict --engine '')" "--engine: docker and podman"
check_eq "block
reach" "$(complete_words nsegress probe --expect '')" "--expect: reach and block"
check_eq "" "$(complete_words nsegress restrict --allow '')" "--allow: nothing to invent"
: >"$TMPD/list.allow"
check_eq "$TMPD/list.allow" "$(complete_words nsegress restrict --allow-file "$TMPD/li")" "--allow-file: files"

echo "# --container: names from the engines"
rm -f "$TMPD/calls"
if [[ $(id -u) -eq 0 ]]; then
	check_eq "pod-app
web
web-db" "$(complete_words nsegress restrict --container '')" "as root: docker's and podman's containers"
else
	check_eq "web
web-db" "$(complete_words nsegress restrict --container '')" "as a user: docker's containers"
fi
check_eq "web
web-db" "$(complete_words nsegress status --container we)" "prefix 'we'"
check_eq "web-db" "$(complete_words nsegress status --engine docker --container web-)" "--engine docker: docker only"
check_eq "" "$(grep -v ' ps --format' "$TMPD/calls" || true)" "the engines are only asked 'ps --format'"
check_eq "" "$(<"$TMPD/stderr")" "nothing on stderr"

# As a non-root user podman must never run (rootless podman would create its own state).
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
	chmod 755 "$TMPD" "$TMPD/bin"
	: >"$TMPD/calls"
	chmod 666 "$TMPD/calls"
	got=$(env -i PATH="$CPATH" HOME="$TMPD" setpriv --reuid=65534 --regid=65534 --clear-groups \
		bash --norc --noprofile -c 'source "$1"; COMP_WORDS=(nsegress restrict --container ""); COMP_CWORD=3
			_nsegress nsegress "" --container; printf "%s\n" "${COMPREPLY[@]}"' completion "$COMPLETION" | sort)
	check_eq "web
web-db" "$got" "as uid 65534: docker's containers only"
	check_eq "0" "$(grep -c '^podman' "$TMPD/calls")" "as uid 65534: podman never run"
fi

# The same with bash-completion loaded, as in an interactive shell: its _init_completion then
# splits the words (testenv/bootstrap.sh installs it; CI must not skip this).
BC=/usr/share/bash-completion/bash_completion
if [[ -r $BC ]]; then
	with_bc() {
		env -i PATH="$CPATH" HOME="$TMPD" bash --norc --noprofile -c '
			source "$1"; source "$2"; shift 2
			COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
			COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
			_nsegress nsegress "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
			printf "%s\n" "${COMPREPLY[@]}"' completion "$BC" "$COMPLETION" "$@" 2>"$TMPD/stderr" | sort
	}
	check_eq "release restrict" "$(with_bc nsegress re | tr '\n' ' ' | sed 's/ $//')" "bash-completion loaded: commands"
	check_eq "docker
podman" "$(with_bc nsegress status --engine '')" "bash-completion loaded: --engine"
	check_eq "web
web-db" "$(with_bc nsegress status --engine docker --container w)" "bash-completion loaded: --container names"
	check_eq "--no-probe
--no-route-set" "$(with_bc nsegress restrict --netns /x --no-)" "bash-completion loaded: options"
	check_eq "" "$(<"$TMPD/stderr")" "bash-completion loaded: nothing on stderr"
	check_eq "_init_completion" "$(env -i PATH="$CPATH" bash --norc --noprofile -c 'source "$1"; declare -F _init_completion' x "$BC")" \
		"bash-completion loaded: its _init_completion is what _nsegress used"
elif [[ -n ${CI-} ]]; then
	bad "$BC is missing (testenv/bootstrap.sh installs bash-completion)"
fi

# No engine installed at all: nothing offered, nothing printed.
CPATH="/usr/bin:/bin"
if ! command -v docker >/dev/null && ! command -v podman >/dev/null; then
	check_eq "" "$(complete_words nsegress restrict --container '')" "no engine installed: no names"
	check_eq "" "$(<"$TMPD/stderr")" "no engine installed: quiet"
fi

echo
echo "$pass passed, $failed failed"
[[ $failed -eq 0 ]]
