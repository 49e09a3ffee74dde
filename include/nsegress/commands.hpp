// The verbs. Each returns one JSON document (what --json prints) and an exit status; the human
// output is rendered from the same document (report.hpp), so the two never disagree.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/cidr.hpp"
#include "nsegress/error.hpp"
#include "nsegress/netns.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/probe.hpp"

namespace nsegress {

struct CommandResult {
    nlohmann::json doc;
    Exit exit = Exit::ok;
};

// The policy (PolicySpec, policy.hpp) and how restrict is to apply it to which target.
struct RestrictOptions : PolicySpec {
    TargetSpec target;
    bool probe = true;
    bool dry_run = false;
    bool default_probes = true;  // probe the default gateways when no target is given
    // The container's process has not run yet (the OCI hook, the runtime wrapper): its
    // resolv.conf is the engine's, a loopback nameserver there is trusted (Docker's 127.0.0.11).
    bool before_workload = false;
    ProbeOptions probe_options;
};

struct ProbeCommandOptions {
    TargetSpec target;
    std::vector<IpAddr> targets;
    Expect expect = Expect::reach;
    ProbeOptions probe_options;
};

// restrict, typed (restrict_report.hpp): target, inspect, plan, commit, names proxy, route
// layer, probes. cmd_restrict renders its document (restrict_json).
struct RestrictReport;
RestrictReport run_restrict(const RestrictOptions& opt);
CommandResult cmd_restrict(const RestrictOptions& opt);
CommandResult cmd_release(const TargetSpec& target);
CommandResult cmd_status(const TargetSpec& target);
CommandResult cmd_probe(const ProbeCommandOptions& opt);

// How the namespace's installed egress policy differs from what `want` asks for (the nft table:
// present, complete, same allow-list, same mode; the route set: present or absent as asked,
// absent in audit mode, with exactly the planned rules and routes; with netdev_egress, the
// netdev table exists and covers every non-loopback interface). Probes and dry_run are ignored.
// One line per difference; empty when they agree.
std::vector<std::string> policy_drift(const RestrictOptions& want);

// The "target" object of every document: label, pid, path, container, netns_inode.
nlohmann::json target_json(const Netns& ns, const TargetSpec& spec);

// The document printed for a failed command under --json.
nlohmann::json error_document(const std::string& command, const Error& e);

// Default probe targets for restrict: restrict_plan.hpp.

}  // namespace nsegress
