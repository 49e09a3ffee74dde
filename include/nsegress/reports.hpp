#pragma once
// What the verbs found and did, as types: run_restrict, cmd_release, cmd_status and cmd_probe
// (src/cmd) fill these reports (verify's is VerifyResult, verify.hpp). Their JSON documents and
// human text are rendered at the edge from these types alone (render.hpp, src/cli/render.cpp);
// the OCI hook's and CNI's answers are made from them too.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/error.hpp"
#include "nsegress/foreign.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/names_proxy.hpp"
#include "nsegress/netns.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/probe.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/routeset.hpp"
#include "nsegress/verify.hpp"

namespace nsegress {

// The parts of a RestrictReport, at namespace scope (an optional of a class nested in the one
// being defined, with default member initializers, is not default-constructible for clang).
// --dry-run: what would be sent, in nft syntax, and the route layer as ip commands.
struct RestrictDryRun {
    std::string nft;
    bool route_set = false;
    std::vector<std::string> route_commands;
};
// The policy's commit.
struct RestrictCommit {
    int attempts = 0;
    std::string update;  // "new", "replace", "full", "incremental"
    std::size_t set_element_messages = 0;
};
// The names proxy.
struct RestrictNames {
    bool enabled = false;
    std::vector<IpAddr> resolvers;
    std::string resolvers_from;
    std::vector<IpAddr> resolvers_not_trusted;
    std::string resolv_conf;
    std::string warning;
    std::optional<pid_t> proxy_pid;
    std::uint16_t port = 0;
    std::string state, log;
    bool stopped_proxy = false;
};
// The route layer.
struct RestrictRouteLayer {
    bool enabled = false;
    bool installed = false;
    std::optional<std::string> disabled_by;
    std::optional<std::vector<std::string>> routes;  // at most kReportedRoutes lines
    std::size_t rule_count = 0, route_count = 0;
    bool truncated = false;
    std::optional<std::size_t> added, deleted;  // merged into an earlier one
    std::optional<std::size_t> removed_rules,
        removed_routes;  // not installed: a previous one's
};

struct RestrictReport {
    using DryRun = RestrictDryRun;
    using Commit = RestrictCommit;
    using Names = RestrictNames;
    using RouteLayer = RestrictRouteLayer;

    Exit exit = Exit::ok;
    std::optional<std::string> error;
    TargetInfo target;
    bool dry_run = false;
    nft::Mode mode = nft::Mode::enforce;
    std::optional<DryRun> dry;
    std::optional<Commit> policy;
    std::optional<nft::NetdevPlan> netdev;  // "netdev_egress": what the plan filters
    std::optional<std::size_t> conntrack_dropped;
    std::optional<Names> names;
    std::optional<RouteLayer> route_set;
    std::optional<std::vector<ProbeResult>> probes;
    std::string probes_none;
    std::shared_ptr<const Policy> allow;  // the normalized policy ("allow"), when reported
};

// release: what it removed, every failure on the way (it keeps going after one), and the
// other people's policies it left in place.
struct ReleaseReport {
    Exit exit = Exit::ok;
    std::vector<std::string> errors;  // in order; the first decides the exit status
    TargetInfo target;
    std::optional<bool> removed_names_proxy;  // nothing when stopping it failed
    bool removed_table = false, removed_netdev_table = false;
    std::size_t removed_rules = 0, removed_routes = 0;
    std::optional<ForeignPolicies> foreign;  // nothing when they could not be read
    // Every failure in one line ("...; ..."), nothing when there was none.
    std::optional<std::string> error() const {
        std::optional<std::string> all;
        for (const auto& e : errors) all = all ? *all + "; " + e : e;
        return all;
    }
};

// probe: one result per target.
struct ProbeReport {
    Exit exit = Exit::ok;
    std::optional<std::string> error;
    TargetInfo target;
    std::vector<ProbeResult> probes;
};

// status: the namespace, its policy and what the policy allowed and refused. Only read.
struct StatusReport {
    TargetInfo target;
    UsernsInfo owner;  // the user namespace owning the network namespace
    Snapshot snapshot;
    nft::PolicyState policy;  // the inet table, with its counters
    Policy allow;             // the installed policy: the kernel's sets and the proxy's names
    // The route set as installed; "snapshot" is an earlier nsegress's layout (a copy of main).
    bool route_set_present = false, route_set_legacy = false;
    std::vector<std::string> route_set_lines;
    NoRouteCounters no_route;
    NamesInfo names;                                   // the names proxy's state
    std::vector<nft::NameElementState> name_elements;  // names4/names6, when the policy has names
    nft::NetdevState netdev;
    std::vector<std::string> uncovered;  // interfaces the netdev table has no chain for
    ForeignPolicies foreign;
    BypassRisks bypass;
    bool restricted() const {
        return policy.present && policy.complete && policy.mode == nft::Mode::enforce;
    }
};

}  // namespace nsegress
