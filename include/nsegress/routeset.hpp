// The route set: a second, independent layer under the nft policy.
//
// A dedicated routing table holds, for each allowed CIDR, the route the main table would use
// for it (main's routes intersected with the allow-list, nexthops copied). Two ip rules per
// family sit ahead of main:
//     100: from all lookup 28275 proto 245     the allowed destinations
//     101: from all unreachable proto 245       everything else
// The catch-all is an `unreachable` *rule*, not an `unreachable default` route in the table:
// the rule fails the lookup with ENETUNREACH, which the kernel counts in the namespace's
// Ip/Ip6 OutNoRoutes counters (an unreachable route yields EHOSTUNREACH, which no counter
// sees), so `status` can say how much the route layer refused. The main table is never
// touched, so release restores routing exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/inspect.hpp"

namespace nsegress {

inline constexpr std::uint32_t kRouteTable = 28275;
inline constexpr std::uint32_t kRulePriorityLookup = 100;
inline constexpr std::uint32_t kRulePriorityUnreachable = 101;
inline constexpr std::uint8_t kRouteProtocol = 245;  // marks our routes and rules

struct RoutePlan {
    std::vector<Route> routes;
    std::vector<Rule> rules;
};

// Pure: main's routes intersected with the allow-list, plus the two rules per family.
RoutePlan plan_route_set(const Snapshot& snap, const AllowList& allow);

// The routes of plan_route_set one at a time, in its order, without holding them all: with
// 10^5 CIDRs the plan alone is about 20 MiB.
void for_each_planned_route(const Snapshot& snap, const AllowList& allow,
                            const std::function<void(const Route&)>& emit);

// The rules of every route set: lookup 28275 and unreachable, per family.
std::vector<Rule> route_set_rules();

// Our rules and our table's routes, as found in a snapshot.
RoutePlan installed_route_set(const Snapshot& snap);

// Installs `plan` (routes first, then rules), replacing what an earlier run installed.
void apply_route_set(nl_sock* sock, const Snapshot& before, const RoutePlan& plan);

// The same for a namespace with no routes in our table yet (the container start path): plans
// and sends the routes as it goes, in chunks, and calls `seen` on each. Returns how many.
std::size_t apply_fresh_route_set(nl_sock* sock, const Snapshot& before, const AllowList& allow,
                                  const std::function<void(const Route&)>& seen);

struct RouteSetRemoval {
    std::size_t rules = 0;
    std::size_t routes = 0;
};
// Deletes our rules and our table's routes; what is already gone is fine.
RouteSetRemoval remove_route_set(nl_sock* sock, const Snapshot& snap);

// How the installed route set (in `snap`) differs from `want`: one line per missing or extra
// rule or route; empty when they agree. Used by CNI CHECK to detect drift.
std::vector<std::string> route_set_drift(const Snapshot& snap, const RoutePlan& want);

// `ip` commands that do exactly what apply_route_set does (for --dry-run).
std::vector<std::string> render_route_set(const RoutePlan& plan, const Snapshot& snap);

}  // namespace nsegress
