#pragma once
// What restrict did, as types: run_restrict (src/cmd/restrict.cpp) fills a RestrictReport; the
// JSON document (restrict_json, src/cli/report.cpp), the human text rendered from it, the OCI
// hook's and CNI's answers are all made from it at the edge.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/error.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/probe.hpp"

namespace nsegress {

// The "target" object of every document.
struct TargetInfo {
    std::string label;
    std::optional<int> pid;
    std::optional<std::string> path;
    std::optional<std::string> container;
    std::uint64_t netns_inode = 0;
};

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

// The JSON document of restrict (--json, and what the human text is rendered from).
nlohmann::json restrict_json(const RestrictReport& r);
nlohmann::json target_json(const TargetInfo& t);
nlohmann::json probe_json(const ProbeResult& r);
nlohmann::json allow_json(const AllowList& a);
nlohmann::json allow_json(const Policy& p);

}  // namespace nsegress
