#!/usr/bin/env bash
# The Debian package (CPack DEB, from the build tree): it installs with dpkg -i, nsegress
# --version and man nsegress work from it, its hooks.d entry points at the packaged binary, the
# completion and the examples are there, and dpkg -r removes every file it installed.
# It must not disturb the build directory or a copy installed with `cmake --install`
# (/usr/local): their files are checksummed before and after. No network namespace is needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools dpkg dpkg-deb cpack man sha256sum

BUILD=${NSEGRESS_BUILD:-$REPO/build}
PKG=nsegress

skip_or_fail() { # a precondition the test cannot fix without touching what it must not
	if [[ -n ${CI-} ]]; then
		echo "FAIL: $*"
		exit 1
	fi
	echo "SKIP: $*"
	exit 77
}

status_of() { dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true; }
case $(status_of) in
'' | not-installed) ;;
*) skip_or_fail "package $PKG is already installed here ($(status_of)); not touching it" ;;
esac
[[ -f $BUILD/CPackConfig.cmake ]] || { echo "FAIL: no $BUILD/CPackConfig.cmake (configure first)"; exit 1; }

# What must stay as it is: the build's binary and a `cmake --install`ed copy, if any.
guarded() {
	local f
	for f in "$BUILD/nsegress" /usr/local/sbin/nsegress /usr/local/share/man/man8/nsegress.8 \
		/usr/local/share/containers/oci/hooks.d/nsegress.json \
		/usr/local/share/bash-completion/completions/nsegress; do
		[[ -e $f ]] && sha256sum "$f"
	done
	ls -d "$BUILD"/_CPack_Packages "$BUILD"/*.deb 2>/dev/null # cpack must not write into the build
}
guarded >"$TMPD/guarded.before"

section "build the package (cpack, output outside the build directory)"
expect_exit 0 cpack --config "$BUILD/CPackConfig.cmake" -B "$TMPD/pkg"
deb=$(find "$TMPD/pkg" -maxdepth 1 -name "${PKG}_*.deb" | head -1)
assert_true "a .deb was made ($deb)" test -s "$deb"
[[ -s $deb ]] || finish
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|' >"$TMPD/contents"
# The names proxy's own executable is built when the static archives are there, not in
# instrumented builds (CMakeLists.txt): the package holds it exactly when the build made it.
if [[ -x $BUILD/nsegress-names-proxy ]]; then
	assert_true "the package holds /usr/sbin/nsegress-names-proxy (the build made it)" grep -qx -- /usr/sbin/nsegress-names-proxy "$TMPD/contents"
else
	assert_false "the package holds no nsegress-names-proxy (the build made none)" grep -q -- nsegress-names-proxy "$TMPD/contents"
fi
for f in /usr/sbin/nsegress /usr/sbin/nsegress-runtime /usr/share/man/man8/nsegress.8 /usr/share/containers/oci/hooks.d/nsegress.json \
	/usr/share/bash-completion/completions/nsegress /usr/share/nsegress/cni/nsegress.conflist \
	/usr/share/nsegress/kubernetes/nsegress-daemonset.yaml; do
	assert_true "the package holds $f" grep -qx -- "$f" "$TMPD/contents"
done
assert_eq "$PKG" "$(dpkg-deb -f "$deb" Package)" "control: Package"
assert_contains "$(dpkg-deb -f "$deb" Depends)" "libc6" "control: Depends (from dpkg-shlibdeps) names libc6"

# Refuse to overwrite files that something else put there (e.g. cmake --install --prefix /usr):
# dpkg would take them over silently and dpkg -r would then delete them.
while read -r f; do
	[[ -f $f || -L $f ]] && skip_or_fail "$f exists outside the package (installed with --prefix /usr?); not overwriting it"
done < <(grep -v '/$' "$TMPD/contents")

section "dpkg -i"
on_exit "[[ \$(dpkg-query -W -f='\${db:Status-Status}' $PKG 2>/dev/null) == not-installed ]] || dpkg --purge $PKG >/dev/null 2>&1"
expect_exit 0 dpkg -i "$deb"
assert_eq "installed" "$(status_of)" "dpkg: $PKG is installed"
dpkg -L "$PKG" | sort >"$TMPD/owned"

section "the installed nsegress works"
expect_exit 0 /usr/sbin/nsegress --version
assert_eq "nsegress $("$BUILD/nsegress" --version | cut -d' ' -f2)" "$OUT" "/usr/sbin/nsegress --version"
assert_match "$(dpkg-deb -f "$deb" Version)" "^$(cut -d' ' -f2 <<<"$OUT")" "the package version is the binary's"
expect_exit 0 env LC_ALL=C MANPATH=/usr/share/man MANPAGER=cat MANWIDTH=80 man nsegress
assert_contains "$OUT" "nsegress - confine what a container" "man nsegress shows the packaged page"
assert_eq "/usr/share/man/man8/nsegress.8" "$(MANPATH=/usr/share/man man -w nsegress)" "man -w finds the packaged page"
hook=/usr/share/containers/oci/hooks.d/nsegress.json
assert_eq "/usr/sbin/nsegress" "$(jq -r .hook.path "$hook")" "hooks.d entry: path is the packaged binary"
assert_eq "createRuntime" "$(jq -r '.stages[0]' "$hook")" "hooks.d entry: stage createRuntime"
got=$(bash --norc --noprofile -c 'source /usr/share/bash-completion/completions/nsegress
	COMP_WORDS=(nsegress res); COMP_CWORD=1; _nsegress; printf "%s\n" "${COMPREPLY[@]}"')
assert_eq "restrict" "$got" "the packaged completion completes 'res' to restrict"
assert_eq "nsegress" "$(jq -r '.plugins[-1].type' /usr/share/nsegress/cni/nsegress.conflist)" \
	"the CNI conflist example ends with the nsegress plugin"

section "dpkg -r: nothing left"
expect_exit 0 dpkg -r "$PKG"
st=$(status_of)
if [[ $st == config-files ]]; then
	fail "dpkg -r left configuration files: $(dpkg-query -W -f='${Conffiles}' "$PKG")"
	dpkg --purge "$PKG" >/dev/null 2>&1
else
	assert_true "dpkg: $PKG is not installed any more (status '$st')" test "$st" = not-installed -o -z "$st"
fi
left=''
while read -r f; do
	[[ -d $f ]] && continue # shared directories (/usr/sbin, ...) stay
	[[ -e $f || -L $f ]] && left+="$f "
done <"$TMPD/owned"
assert_eq "" "$left" "every file the package installed is gone"
for d in /usr/share/nsegress /usr/share/doc/nsegress; do
	assert_false "$d is gone" test -e "$d"
done

section "the build and a cmake --install'ed copy are untouched"
guarded >"$TMPD/guarded.after"
assert_same "$TMPD/guarded.before" "$TMPD/guarded.after" "checksums of the build's binary and /usr/local copies"

finish
