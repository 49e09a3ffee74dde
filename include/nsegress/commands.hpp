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
#include "nsegress/probe.hpp"

namespace nsegress {

struct CommandResult {
    nlohmann::json doc;
    Exit exit = Exit::ok;
};

struct RestrictOptions {
    TargetSpec target;
    std::vector<Cidr> allow;          // already parsed; may be empty (deny everything)
    std::vector<IpAddr> probe_reach;
    std::vector<IpAddr> probe_block;
    bool probe = true;
    bool route_set = true;
    bool dry_run = false;
    bool netdev_egress = false;  // also filter every interface's netdev egress hook
    bool default_probes = true;  // probe the default gateways when no target is given
    ProbeOptions probe_options;
};

struct ProbeCommandOptions {
    TargetSpec target;
    std::vector<IpAddr> targets;
    Expect expect = Expect::reach;
    ProbeOptions probe_options;
};

CommandResult cmd_restrict(const RestrictOptions& opt);
CommandResult cmd_release(const TargetSpec& target);
CommandResult cmd_status(const TargetSpec& target);
CommandResult cmd_probe(const ProbeCommandOptions& opt);

// How the namespace's installed egress policy differs from what `allow` and `route_set` ask for
// (the nft table: present, complete, same allow-list; the route set: present or absent as asked,
// with exactly the planned rules and routes). One line per difference; empty when they agree.
// With netdev_egress, also: the netdev table exists and covers every non-loopback interface.
std::vector<std::string> policy_drift(const TargetSpec& target, const std::vector<Cidr>& allow,
                                      bool route_set, bool netdev_egress = false);

// The document printed for a failed command under --json.
nlohmann::json error_document(const std::string& command, const Error& e);

// Default probe targets for restrict: per family, the main default gateway is a reach target
// when the allow-list covers it and a block target when it does not (link-local gateways are
// skipped: they need a zone). Exposed for unit tests.
struct Snapshot;
std::vector<ProbeTarget> default_probe_targets(const Snapshot& snap, const AllowList& allow);

}  // namespace nsegress
