// `nsegress hook`: an OCI runtime hook (runc, crun, podman, CRI-O).
//
// Intended stage: createRuntime -- the container's namespaces exist and none of its code has
// run, so there is no window. The state JSON on stdin gives the container's init PID; the
// policy comes from the hook's own arguments or from annotations. Any failure exits non-zero
// with one line on stderr, so the runtime refuses to start the container (fail closed). With
// no policy at all the hook does nothing and exits 0, so a global hooks.d entry is harmless.
// Nothing from the state is used as a path: the bundle and rootfs are never opened.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nsegress/commands.hpp"

namespace nsegress {

inline constexpr std::size_t kMaxOciState = 1 << 20;  // larger stdin is refused
inline constexpr const char* kAnnotationAllow = "io.nsegress.allow";
inline constexpr const char* kAnnotationProbeReach = "io.nsegress.probe-reach";
inline constexpr const char* kAnnotationProbeBlock = "io.nsegress.probe-block";
inline constexpr const char* kAnnotationAudit = "io.nsegress.audit";  // "true" or "false"

struct OciState {
    std::string id;
    std::string status;
    pid_t pid = 0;
    std::map<std::string, std::string> annotations;
};

// Strict parse of untrusted input: Error(Exit::usage) with a one-line reason for anything
// malformed (not JSON, not an object, pid missing / not a positive integer / 1, ...).
OciState parse_oci_state(std::string_view text);

// The installer's policy from the hook's arguments (audit: --audit, else annotation
// io.nsegress.audit).
struct HookArgs : PolicySpec {
    bool allow_given =
        false;  // --allow/--allow-file given (an empty allow-file refuses everything)
};

// What restrict would be asked to do, or nullopt when there is no policy (do nothing).
// Arguments take precedence over annotations; io.nsegress.allow next to an allow-list from the
// arguments narrows it (the intersection: an annotation never widens the installer's policy).
// io.nsegress.audit=true alone (no allow-list) is a policy too: audit everything. Exposed for
// tests.
std::optional<RestrictOptions> hook_plan(const OciState& state, const HookArgs& args);

// Reads the state from `stdin_text` (already read, at most kMaxOciState + 1 bytes).
CommandResult cmd_hook(std::string_view stdin_text, const HookArgs& args);

// intersect_allow (what both allow-lists allow, ports included) is in policy.hpp.

// Splits "a, b,c" (annotation lists); empty items are errors.
std::vector<std::string> split_list(std::string_view text, const std::string& what);

}  // namespace nsegress
