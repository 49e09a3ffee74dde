// The verbs. Each returns a typed report (reports.hpp; verify's is VerifyResult, verify.hpp) with
// its exit status; its JSON document (--json) and its human text are both rendered from that
// report at the edge (render.hpp), so the two never disagree. watch streams its events to a
// sink and ends with a JSON document (watch.hpp); the OCI hook answers with restrict's document.
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

// Which namespace a report is about: the "target" object of every document.
struct TargetInfo {
    std::string label;
    std::optional<int> pid;
    std::optional<std::string> path;
    std::optional<std::string> container;
    std::uint64_t netns_inode = 0;
};

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

struct RestrictReport;
struct ReleaseReport;
struct StatusReport;
struct ProbeReport;
// restrict, stage by stage: target, inspect, plan, commit, names proxy, route layer, probes.
// Takes the options by value: once planned, the allow entries are let go (a 10^5-entry list is
// not held twice while its batch is built); move them in when they are not needed afterwards.
RestrictReport run_restrict(RestrictOptions opt);
ReleaseReport cmd_release(const TargetSpec& target);
StatusReport cmd_status(const TargetSpec& target);
ProbeReport cmd_probe(const ProbeCommandOptions& opt);

// How the namespace's installed egress policy differs from what `want` asks for (the nft table:
// present, complete, same allow-list, same mode; the route set: present or absent as asked,
// absent in audit mode, with exactly the planned rules and routes; with netdev_egress, the
// netdev table exists and covers every non-loopback interface). Probes and dry_run are ignored.
// One line per difference; empty when they agree.
std::vector<std::string> policy_drift(const RestrictOptions& want);

// The target of a report: label, pid, path, container, netns_inode.
TargetInfo target_info(const Netns& ns, const TargetSpec& spec);

// The document printed for a failed command under --json.
nlohmann::json error_document(const std::string& command, const Error& e);

// Default probe targets for restrict: restrict_plan.hpp.

}  // namespace nsegress
