// The route set: a second, independent layer under the nft policy.
//
// It refers to the main table instead of copying it, so it is a pure function of the
// allow-list and holds whatever the container's network becomes after restrict (interfaces,
// addresses and gateways added, moved or removed later). Per family:
//     rule 100: from all lookup 28275 proto 245       ahead of main (32766)
//     table 28275: throw <cidr>          one per allowed CIDR, no nexthop
//                  unreachable default   everything else
// An allowed destination meets its `throw` route: the lookup leaves the table and goes on with
// the next rules, i.e. main, whatever main says *now*. Anything else meets the `unreachable`
// route and fails with EHOSTUNREACH. When an allowed CIDR is the whole family, its `throw
// default` takes the place of the unreachable route.
//
// Why routes, not an `unreachable` rule: the kernel validates a new IPv4 gateway
// (fib_check_nh_v4_gw) by a lookup through the rules, at scope link or narrower; a catch-all
// rule answers that lookup ("Nexthop has invalid gateway"), but table lookups skip routes of a
// wider scope than asked, and ours are all scope universe, so the gateway lookup falls through
// to main. IPv6 looks a gateway up in the new route's own table (main) first. The price: an
// unreachable route fails with EHOSTUNREACH, which no kernel counter counts (Ip/Ip6
// OutNoRoutes count only ENETUNREACH), so what the route set refuses is not counted anywhere.
//
// What it stops and what it does not: every socket whose route is looked up by destination
// (TCP, UDP, ping and raw sockets; IP_HDRINCL raw sockets are routed by their sendto()
// address, not the header's). A socket with a pinned interface (SO_BINDTODEVICE, IP_UNICAST_IF,
// IPV6_UNICAST_IF) is not stopped: when routing fails, the kernel assumes its destination is
// on-link on that interface. The nftables policy stops those.
//
// The main table is never touched, so release restores routing exactly.
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
// The catch-all `unreachable` rule of the earlier layout (a copy of main's routes, taken at
// restrict time): recognised so that restrict replaces it and release removes it.
inline constexpr std::uint32_t kLegacyRulePriorityUnreachable = 101;
inline constexpr std::uint8_t kRouteProtocol = 245;  // marks our routes and rules

struct RoutePlan {
    std::vector<Route> routes;
    std::vector<Rule> rules;
};

// Pure: a function of the allow-list alone. Per family, the unreachable default first (unless
// the family is allowed whole), then one throw route per allowed CIDR; one rule per family.
RoutePlan plan_route_set(const AllowList& allow);

// The routes of plan_route_set one at a time, in its order, without holding them all: with
// 10^5 CIDRs the plan alone is about 20 MiB.
void for_each_planned_route(const AllowList& allow, const std::function<void(const Route&)>& emit);

// The rules of every route set: lookup 28275, per family.
std::vector<Rule> route_set_rules();

// True when `snap` holds the earlier layout (its catch-all unreachable rule): a snapshot of main
// taken at restrict time, stale as soon as the network changes; restrict replaces it.
bool legacy_route_set(const Snapshot& snap);

// Our rules and our table's routes, as found in a snapshot.
RoutePlan installed_route_set(const Snapshot& snap);

// Installs `plan`, replacing what an earlier run installed (the earlier layout included).
void apply_route_set(nl_sock* sock, const Snapshot& before, const RoutePlan& plan);

// The same for a namespace with no routes in our table yet (the container start path): plans
// and sends the routes as it goes, in chunks, and calls `seen` on each. Returns how many.
std::size_t apply_fresh_route_set(nl_sock* sock, const Snapshot& before, const AllowList& allow,
                                  const std::function<void(const Route&)>& seen);

// The same for a snapshot read with inspect(..., kRouteTable) (Snapshot::table_routes): the
// plan is streamed and merged against the installed routes, so a re-run sends only what differs
// (nothing at all when nothing does) without ever holding 10^5 Routes. The phases and their order
// are apply_route_set's. `seen` gets every planned route.
struct RouteSetChanges {
    std::size_t routes = 0;   // planned
    std::size_t added = 0;    // added or replaced
    std::size_t deleted = 0;  // stale routes deleted
};
// `have`: the snapshot's table_routes, handed over (sorted here if the kernel did not).
RouteSetChanges apply_route_set_diff(nl_sock* sock, const Snapshot& before,
                                     std::deque<TableRoute> have, const AllowList& allow,
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
