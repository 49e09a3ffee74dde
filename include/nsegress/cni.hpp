// nsegress as a chained CNI plugin (spec 1.0.0; 0.4.0 accepted).
//
// Whenever CNI_COMMAND is set, whatever the binary is called (/opt/cni/bin/nsegress), the
// process speaks CNI: netconf on stdin, result or error JSON on stdout. It runs after the
// interface plugins (bridge, host-local...), so ADD sees the finished interface and routes.
//   ADD     restrict CNI_NETNS like `restrict --netns`, print prevResult unchanged
//   DEL     release; succeeds when the namespace is gone or was never restricted
//   CHECK   fail when the policy is missing or differs from the netconf (drift)
//   VERSION the supported versions
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/cidr.hpp"
#include "nsegress/policy.hpp"

namespace nsegress {

// CNI error codes (spec 1.0.0) and ours (100+).
enum CniCode : int {
    cni_incompatible_version = 1,
    cni_invalid_env = 4,
    cni_decode_failed = 6,
    cni_invalid_config = 7,
    cni_restrict_failed = 100,
    cni_probe_failed = 101,
    cni_drift = 102,
};

struct CniFailure {
    int code;
    std::string msg;
    std::string details;
};

// The policy ("allow": entries of the grammar, one JSON string each; "probeReach", "probeBlock",
// "resolvers" (the names proxy's trusted resolvers: CNI knows no pid, so without them a policy
// with names resolves nothing), "routeSet", "audit", "netdevEgress") and the plugin's own fields.
struct CniNetconf : PolicySpec {
    std::string cni_version;
    std::string name;
    std::optional<nlohmann::json> prev_result;
};

inline const std::vector<std::string> kCniVersions = {"0.4.0", "1.0.0"};

// Strict parse; throws CniFailure with a precise message.
CniNetconf parse_cni_netconf(std::string_view text);

nlohmann::json cni_error_json(const std::string& cni_version, const CniFailure& f);

struct CniOutcome {
    int exit = 0;  // process exit status
    std::string stdout_text;
};

// Runs one CNI invocation: env holds CNI_COMMAND, CNI_NETNS, ... (only those are read).
CniOutcome run_cni(const std::map<std::string, std::string>& env, std::string_view stdin_text);

}  // namespace nsegress
