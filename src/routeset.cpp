#include "nsegress/routeset.hpp"

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <sys/socket.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "nsegress/error.hpp"
#include "nsegress/testpoint.hpp"

namespace nsegress {

namespace {

struct RouteFree { void operator()(rtnl_route* r) const { rtnl_route_put(r); } };
struct RuleFree { void operator()(rtnl_rule* r) const { rtnl_rule_put(r); } };
struct AddrFree { void operator()(nl_addr* a) const { nl_addr_put(a); } };
using RoutePtr = std::unique_ptr<rtnl_route, RouteFree>;
using RulePtr = std::unique_ptr<rtnl_rule, RuleFree>;
using AddrPtr = std::unique_ptr<nl_addr, AddrFree>;

AddrPtr to_nl(const IpAddr& a, unsigned prefix) {
    auto b = a.bytes();
    AddrPtr out(nl_addr_build(to_af(a.family), b.data(), a.size()));
    if (!out) throw std::bad_alloc();
    nl_addr_set_prefixlen(out.get(), static_cast<int>(prefix));
    return out;
}

bool ours(const Rule& r) {
    return r.protocol == kRouteProtocol ||
           // Also recognise our rules if a tool stripped the protocol: same priority and shape.
           (!r.has_selector && ((r.priority == kRulePriorityLookup && r.action == FR_ACT_TO_TBL &&
                                 r.table == kRouteTable) ||
                                (r.priority == kRulePriorityUnreachable &&
                                 r.action == FR_ACT_UNREACHABLE)));
}

bool copyable(const Route& r) {
    // Routes that decide where a destination goes: unicast and the refusing types. Local,
    // broadcast and multicast live in the local table and stay untouched there.
    return r.table == RT_TABLE_MAIN &&
           (r.type == RTN_UNICAST || r.type == RTN_UNREACHABLE || r.type == RTN_BLACKHOLE ||
            r.type == RTN_PROHIBIT);
}

RoutePtr to_nl_route(const Route& r, bool with_nexthop) {
    RoutePtr out(rtnl_route_alloc());
    if (!out) throw std::bad_alloc();
    rtnl_route_set_family(out.get(), static_cast<std::uint8_t>(to_af(r.family)));
    rtnl_route_set_table(out.get(), r.table);
    rtnl_route_set_type(out.get(), r.type);
    rtnl_route_set_protocol(out.get(), r.protocol);
    rtnl_route_set_scope(out.get(), r.scope);
    rtnl_route_set_priority(out.get(), r.metric);
    auto dst = to_nl(r.dst.addr, r.dst.prefix);
    rtnl_route_set_dst(out.get(), dst.get());  // takes its own reference
    if (r.prefsrc && with_nexthop) {
        auto src = to_nl(*r.prefsrc, r.prefsrc->family == Family::v4 ? 32 : 128);
        rtnl_route_set_pref_src(out.get(), src.get());
    }
    if (with_nexthop && r.oif) {
        rtnl_nexthop* nh = rtnl_route_nh_alloc();
        if (!nh) throw std::bad_alloc();
        rtnl_route_nh_set_ifindex(nh, r.oif);
        if (r.gateway) {
            auto gw = to_nl(*r.gateway, r.gateway->family == Family::v4 ? 32 : 128);
            rtnl_route_nh_set_gateway(nh, gw.get());
        }
        if (r.onlink) rtnl_route_nh_set_flags(nh, RTNH_F_ONLINK);
        rtnl_route_add_nexthop(out.get(), nh);  // the route owns it now
    }
    return out;
}

RulePtr to_nl_rule(const Rule& r) {
    RulePtr out(rtnl_rule_alloc());
    if (!out) throw std::bad_alloc();
    rtnl_rule_set_family(out.get(), to_af(r.family));
    rtnl_rule_set_prio(out.get(), r.priority);
    rtnl_rule_set_action(out.get(), r.action);
    if (r.action == FR_ACT_TO_TBL) rtnl_rule_set_table(out.get(), r.table);
    if (r.protocol) rtnl_rule_set_protocol(out.get(), r.protocol);
    return out;
}

// What identifies a route in its table (the kernel's own key), and everything that makes two
// routes with that key the same route.
auto route_key(const Route& r) { return std::tie(r.family, r.dst, r.metric); }
auto route_all(const Route& r) {
    return std::tie(r.family, r.dst, r.metric, r.type, r.scope, r.gateway, r.oif, r.prefsrc, r.onlink);
}

}  // namespace

RoutePlan plan_route_set(const Snapshot& snap, const AllowList& allow) {
    RoutePlan plan;
    for (Family f : {Family::v4, Family::v6}) {
        // prefix -> (main route it copies). For each allowed prefix A and main route R that
        // overlap, the intersection is the longer of the two prefixes and its nexthop is that of
        // the most specific R containing it -- exactly main's longest-prefix-match, restricted
        // to the allow-list.
        std::map<Cidr, const Route*> chosen;
        auto better = [](const Route* a, const Route* b) {
            if (!b) return true;
            if (a->dst.prefix != b->dst.prefix) return a->dst.prefix > b->dst.prefix;
            return a->metric < b->metric;
        };
        // Main's routes only (a handful), not the snapshot's every route: on a re-run the
        // snapshot also holds our own table, as large as the allow-list.
        std::vector<const Route*> main_routes;
        for (const auto& r : snap.routes)
            if (r.family == f && copyable(r)) main_routes.push_back(&r);
        for (const auto& range : allow.ranges(f)) {
            for (const Cidr& a : range.to_cidrs()) {
                for (const Route* rp : main_routes) {
                    const Route& r = *rp;
                    Cidr p;
                    if (r.dst.contains(a)) p = a;
                    else if (a.contains(r.dst)) p = r.dst;
                    else continue;
                    auto& slot = chosen[p];
                    if (better(&r, slot)) slot = &r;
                }
            }
        }
        for (const auto& [prefix, main] : chosen) {
            Route r = *main;
            r.dst = prefix;
            r.table = kRouteTable;
            r.protocol = kRouteProtocol;
            // The gateway check at insert time would consult the rules, which (on a re-run)
            // already refuse the gateway itself; onlink states what main already established.
            if (r.gateway) r.onlink = true;
            plan.routes.push_back(r);
        }
        plan.rules.push_back(Rule{f, kRulePriorityLookup, kRouteTable, FR_ACT_TO_TBL, kRouteProtocol, false});
        plan.rules.push_back(Rule{f, kRulePriorityUnreachable, 0, FR_ACT_UNREACHABLE, kRouteProtocol, false});
    }
    return plan;
}

RoutePlan installed_route_set(const Snapshot& snap) {
    RoutePlan p;
    for (const auto& r : snap.routes)
        if (r.table == kRouteTable) p.routes.push_back(r);
    for (const auto& r : snap.rules)
        if (ours(r)) p.rules.push_back(r);
    return p;
}

void apply_route_set(nl_sock* sock, const Snapshot& before, const RoutePlan& plan) {
    // Order matters under traffic: an allowed destination must have a route in our table at
    // every moment. So new and changed routes go in first, each with NLM_F_REPLACE (a route's
    // nexthop changes in place, never delete-then-add); stale routes go only after their
    // replacements; the rules last, the lookup rule before the unreachable one.
    RoutePlan old = installed_route_set(before);
    // Sorted views, so a re-run with thousands of routes is a merge, not a quadratic scan, and
    // routes that are already exactly right are not sent again.
    auto by_all = [](const Route& a, const Route& b) { return route_all(a) < route_all(b); };
    auto by_key = [](const Route& a, const Route& b) { return route_key(a) < route_key(b); };
    std::vector<Route> have = old.routes, want = plan.routes;
    std::sort(have.begin(), have.end(), by_all);
    std::sort(want.begin(), want.end(), by_key);
    for (const auto& r : plan.routes) {
        if (std::binary_search(have.begin(), have.end(), r, by_all)) continue;  // already installed
        auto nl = to_nl_route(r, true);
        if (int err = rtnl_route_add(sock, nl.get(), NLM_F_CREATE | NLM_F_REPLACE); err < 0)
            throw_failed(fmt::format("route set: add route {}: {}", format_route(r, before),
                                     nl_geterror(err)));
    }
    testing::test_point("route-set-routes");
    for (const auto& r : old.routes) {
        if (std::binary_search(want.begin(), want.end(), r, by_key)) continue;  // replaced or kept
        auto nl = to_nl_route(r, false);
        if (int err = rtnl_route_delete(sock, nl.get(), 0); err < 0 && err != -NLE_OBJ_NOTFOUND)
            throw_failed(fmt::format("route set: delete stale route {}: {}",
                                     format_route(r, before), nl_geterror(err)));
    }
    testing::test_point("route-set-stale");
    for (const auto& r : plan.rules) {
        bool present = std::any_of(old.rules.begin(), old.rules.end(), [&](const Rule& o) {
            return o.family == r.family && o.priority == r.priority && o.action == r.action &&
                   o.table == r.table;
        });
        if (present) continue;
        auto nl = to_nl_rule(r);
        if (int err = rtnl_rule_add(sock, nl.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0)
            throw_failed(fmt::format("route set: add rule '{}' ({}): {}", format_rule(r),
                                     family_name(r.family), nl_geterror(err)));
    }
    testing::test_point("route-set-rules");
}

RouteSetRemoval remove_route_set(nl_sock* sock, const Snapshot& snap) {
    // Rules first: from then on the table is unused, whatever happens next. The unreachable
    // rules go before the lookup rules: the other way round, there would be a moment with only
    // "unreachable" left ahead of main, refusing even allowed destinations (restrict
    // --no-route-set replacing a route set under traffic).
    RouteSetRemoval removed;
    RoutePlan cur = installed_route_set(snap);
    std::stable_partition(cur.rules.begin(), cur.rules.end(),
                          [](const Rule& r) { return r.action != FR_ACT_TO_TBL; });
    std::vector<std::string> errors;
    for (const auto& r : cur.rules) {
        auto nl = to_nl_rule(r);
        int err = rtnl_rule_delete(sock, nl.get(), 0);
        if (err >= 0) ++removed.rules;
        else if (err != -NLE_OBJ_NOTFOUND)
            errors.push_back(fmt::format("delete rule '{}': {}", format_rule(r), nl_geterror(err)));
    }
    testing::test_point("release-rules");
    for (const auto& r : cur.routes) {
        auto nl = to_nl_route(r, false);
        int err = rtnl_route_delete(sock, nl.get(), 0);
        if (err >= 0) ++removed.routes;
        else if (err != -NLE_OBJ_NOTFOUND)
            errors.push_back(fmt::format("delete route {}: {}", format_route(r, snap), nl_geterror(err)));
    }
    // Keep going on errors (remove as much as possible), then report them all.
    if (!errors.empty()) {
        std::string all = "route set: " + errors.front();
        for (std::size_t i = 1; i < errors.size(); ++i) all += "; " + errors[i];
        throw_failed(all);
    }
    return removed;
}

std::vector<std::string> route_set_drift(const Snapshot& snap, const RoutePlan& want) {
    RoutePlan have = installed_route_set(snap);
    std::vector<std::string> out;
    auto same_rule = [](const Rule& a, const Rule& b) {
        return a.family == b.family && a.priority == b.priority && a.action == b.action &&
               (a.action != FR_ACT_TO_TBL || a.table == b.table);
    };
    auto has_rule = [&](const std::vector<Rule>& in, const Rule& r) {
        return std::any_of(in.begin(), in.end(), [&](const Rule& o) { return same_rule(o, r); });
    };
    for (const auto& r : want.rules)
        if (!has_rule(have.rules, r))
            out.push_back(fmt::format("rule '{}' ({}) is missing", format_rule(r), family_name(r.family)));
    for (const auto& r : have.rules)
        if (!has_rule(want.rules, r))
            out.push_back(fmt::format("unexpected rule '{}' ({})", format_rule(r), family_name(r.family)));
    auto by_all = [](const Route& a, const Route& b) { return route_all(a) < route_all(b); };
    std::vector<Route> h = have.routes, w = want.routes;
    std::sort(h.begin(), h.end(), by_all);
    std::sort(w.begin(), w.end(), by_all);
    std::vector<Route> missing, extra;
    std::set_difference(w.begin(), w.end(), h.begin(), h.end(), std::back_inserter(missing), by_all);
    std::set_difference(h.begin(), h.end(), w.begin(), w.end(), std::back_inserter(extra), by_all);
    // A drifted table can be as large as the allow-list: name a few routes, count the rest.
    auto report = [&](const std::vector<Route>& rs, const char* what) {
        for (std::size_t i = 0; i < rs.size() && i < 3; ++i)
            out.push_back(fmt::format("{} route {}", what, format_route(rs[i], snap)));
        if (rs.size() > 3) out.push_back(fmt::format("... and {} more {} routes", rs.size() - 3, what));
    };
    report(missing, "missing");
    report(extra, "unexpected");
    return out;
}

std::vector<std::string> render_route_set(const RoutePlan& plan, const Snapshot& snap) {
    std::vector<std::string> out;
    for (const auto& r : plan.routes)
        out.push_back(fmt::format("ip -{} route replace {} proto {}", r.family == Family::v4 ? 4 : 6,
                                  format_route(r, snap), kRouteProtocol));
    for (const auto& r : plan.rules) {
        std::string action = r.action == FR_ACT_TO_TBL ? fmt::format("lookup {}", r.table) : "unreachable";
        out.push_back(fmt::format("ip -{} rule add priority {} {} proto {}",
                                  r.family == Family::v4 ? 4 : 6, r.priority, action, kRouteProtocol));
    }
    return out;
}

}  // namespace nsegress
