#include <doctest/doctest.h>

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>

#include <algorithm>

#include "nsegress/commands.hpp"
#include "nsegress/restrict_plan.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/routeset.hpp"
#include "snapshot_helpers.hpp"

using namespace nsegress;

namespace {

using test::route;

// The lab's container: eth0 (2) with a connected /24, a default route, and IPv6 alike.
Snapshot lab() {
    Snapshot s;
    s.links = {{1, "lo", true, true, "", 65536}, {2, "eth0", true, false, "veth", 1500}};
    s.addresses = {{2, parse_ip("172.31.0.2"), 24, 0}, {2, parse_ip("fd00:31::2"), 64, 0}};
    s.routes = {route("0.0.0.0/0", "172.31.0.1", 2),
                route("172.31.0.0/24", nullptr, 2),
                route("::/0", "fd00:31::1", 2, 1024),
                route("fd00:31::/64", nullptr, 2, 256),
                route("fe80::/64", nullptr, 2, 256),
                route("127.0.0.0/8", nullptr, 1, 0, RT_TABLE_LOCAL, RTN_LOCAL)};
    return s;
}

std::vector<std::string> lines(const RoutePlan& p, const Snapshot& s) {
    std::vector<std::string> out;
    for (const auto& r : p.routes) out.push_back(format_route(r, s));
    return out;
}

}  // namespace

TEST_CASE("one throw route per allowed CIDR, after one unreachable default per family") {
    Snapshot s = lab();
    RoutePlan p =
        plan_route_set(AllowList({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")}));
    CHECK(lines(p, s) == std::vector<std::string>{"unreachable default table 28275",
                                                  "throw 192.168.1.0/24 table 28275",
                                                  "unreachable default table 28275 metric 1024",
                                                  "throw 2001:db8:1::/64 table 28275 metric 1024"});
    for (const auto& r : p.routes) {
        CHECK(r.table == kRouteTable);
        CHECK(r.protocol == kRouteProtocol);
        // No nexthop: nothing in the route set depends on an interface or a gateway.
        CHECK(!r.gateway);
        CHECK(r.oif == 0);
        CHECK(!r.prefsrc);
        // Scope universe: a gateway check (scope link) looks past it, into main.
        CHECK(r.scope == RT_SCOPE_UNIVERSE);
    }
}

TEST_CASE("the plan is a function of the allow-list alone") {
    AllowList allow(
        {parse_cidr("10.0.0.0/8"), parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8::/32")});
    RoutePlan a = plan_route_set(allow), b = plan_route_set(allow);
    Snapshot empty, wired = lab();
    CHECK(lines(a, empty) == lines(b, wired));
    CHECK(a.routes.size() == 2 + 3);
}

TEST_CASE("one rule per family: lookup our table, ahead of main, no catch-all rule") {
    RoutePlan p = plan_route_set(AllowList({parse_cidr("192.168.1.0/24")}));
    REQUIRE(p.rules.size() == 2);
    CHECK(p.rules[0].family == Family::v4);
    CHECK(p.rules[1].family == Family::v6);
    for (const auto& r : p.rules) {
        CHECK(r.protocol == kRouteProtocol);
        CHECK(r.priority == kRulePriorityLookup);
        CHECK(r.action == FR_ACT_TO_TBL);
        CHECK(r.table == kRouteTable);
        CHECK(!r.has_selector);
    }
    static_assert(kRulePriorityLookup > 0, "after the local table's rule (priority 0)");
    static_assert(kRulePriorityLookup < 32766, "before the main table's rule");
}

TEST_CASE("an unallowed family is closed: its unreachable default alone") {
    RoutePlan p = plan_route_set(AllowList({parse_cidr("192.168.1.0/24")}));
    std::vector<std::string> v6;
    for (const auto& r : p.routes)
        if (r.family == Family::v6) v6.push_back(format_route(r, Snapshot{}));
    CHECK(v6 == std::vector<std::string>{"unreachable default table 28275 metric 1024"});
    RoutePlan none = plan_route_set(AllowList{});
    CHECK(lines(none, Snapshot{}) ==
          std::vector<std::string>{"unreachable default table 28275",
                                   "unreachable default table 28275 metric 1024"});
}

TEST_CASE("a family allowed whole: throw default instead of unreachable default (same key)") {
    RoutePlan p = plan_route_set(AllowList({parse_cidr("0.0.0.0/0"), parse_cidr("2001:db8::/32")}));
    CHECK(lines(p, Snapshot{}) ==
          std::vector<std::string>{"throw default table 28275",
                                   "unreachable default table 28275 metric 1024",
                                   "throw 2001:db8::/32 table 28275 metric 1024"});
    // Two halves that merge into the whole family are the whole family too.
    RoutePlan q = plan_route_set(AllowList({parse_cidr("0.0.0.0/1"), parse_cidr("128.0.0.0/1")}));
    CHECK(format_route(q.routes[0], Snapshot{}) == "throw default table 28275");
}

TEST_CASE("allowed ranges become their minimal CIDR cover, in order") {
    RoutePlan p = plan_route_set(
        AllowList({parse_cidr("10.0.0.1"), parse_cidr("10.0.0.2/31"), parse_cidr("10.0.0.4")}));
    CHECK(lines(p, Snapshot{}) ==
          std::vector<std::string>{"unreachable default table 28275",
                                   "throw 10.0.0.1/32 table 28275", "throw 10.0.0.2/31 table 28275",
                                   "throw 10.0.0.4/32 table 28275",
                                   "unreachable default table 28275 metric 1024"});
}

TEST_CASE("installed_route_set finds our rules (the earlier layout's too) and our table only") {
    Snapshot s = lab();
    s.routes.push_back(route("192.168.1.0/24", "172.31.0.1", 2, 0, kRouteTable));
    s.rules = {
        Rule{Family::v4, 0, RT_TABLE_LOCAL, FR_ACT_TO_TBL, 2, false},
        Rule{Family::v4, kRulePriorityLookup, kRouteTable, FR_ACT_TO_TBL, kRouteProtocol, false},
        Rule{Family::v4, kLegacyRulePriorityUnreachable, 0, FR_ACT_UNREACHABLE, 0,
             false},  // proto stripped
        Rule{Family::v4, kLegacyRulePriorityUnreachable, 0, FR_ACT_UNREACHABLE, 0,
             true},  // someone else's
        Rule{Family::v4, 32766, RT_TABLE_MAIN, FR_ACT_TO_TBL, 2, false}};
    RoutePlan p = installed_route_set(s);
    CHECK(p.routes.size() == 1);
    CHECK(p.rules.size() == 2);
    CHECK(legacy_route_set(s));
    s.rules.erase(s.rules.begin() + 2);
    CHECK(!legacy_route_set(s));  // someone else's unreachable rule is not ours
}

TEST_CASE("dry-run commands are ip commands for exactly the plan") {
    Snapshot s = lab();
    auto cmds = render_route_set(plan_route_set(AllowList({parse_cidr("192.168.1.0/24")})), s);
    REQUIRE(cmds.size() == 5);
    CHECK(cmds[0] == "ip -4 route replace unreachable default table 28275 proto 245");
    CHECK(cmds[1] == "ip -4 route replace throw 192.168.1.0/24 table 28275 proto 245");
    CHECK(cmds[2] == "ip -6 route replace unreachable default table 28275 metric 1024 proto 245");
    CHECK(cmds[3] == "ip -4 rule add priority 100 lookup 28275 proto 245");
    CHECK(cmds[4] == "ip -6 rule add priority 100 lookup 28275 proto 245");
}

TEST_CASE("default probe targets: the gateway is a reach target when allowed, block otherwise") {
    Snapshot s = lab();
    auto t = default_probe_targets(s, AllowList({parse_cidr("192.168.1.0/24")}));
    REQUIRE(t.size() == 2);
    CHECK(t[0].addr.str() == "172.31.0.1");
    CHECK(t[0].expect == Expect::block);
    CHECK(t[1].addr.str() == "fd00:31::1");
    CHECK(t[1].expect == Expect::block);
    auto u = default_probe_targets(s, AllowList({parse_cidr("172.31.0.0/24")}));
    REQUIRE(u.size() == 2);
    CHECK(u[0].expect == Expect::reach);
    CHECK(u[1].expect == Expect::block);
    // Link-local IPv6 gateways need a zone: skipped.
    s.routes[2].gateway = parse_ip("fe80::1");
    CHECK(default_probe_targets(s, AllowList{}).size() == 1);
}

TEST_CASE(
    "route_set_drift: none when installed as planned; names missing rules, stray routes, the "
    "earlier layout") {
    Snapshot s = lab();
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    RoutePlan want = plan_route_set(allow);
    Snapshot installed = s;
    for (const auto& r : want.routes) installed.routes.push_back(r);
    for (const auto& r : want.rules) installed.rules.push_back(r);
    CHECK(route_set_drift(installed, want).empty());

    // The kernel reports IPv6 reject and throw routes on lo: no part of the route.
    Snapshot on_lo = installed;
    for (auto& r : on_lo.routes)
        if (r.table == kRouteTable && r.family == Family::v6) r.oif = 1;
    CHECK(route_set_drift(on_lo, want).empty());

    Snapshot no_rule = installed;
    no_rule.rules.erase(no_rule.rules.begin() + 1);  // IPv6 priority 100
    auto d = route_set_drift(no_rule, want);
    REQUIRE(d.size() == 1);
    CHECK(d[0].find("100") != std::string::npos);
    CHECK(d[0].find("missing") != std::string::npos);

    Snapshot stray = installed;
    stray.routes.push_back(route("198.51.100.0/24", "172.31.0.1", 2, 0, kRouteTable));
    auto e = route_set_drift(stray, want);
    REQUIRE(e.size() == 1);
    CHECK(e[0].find("unexpected route 198.51.100.0/24") == 0);

    // The refusal turned into a throw: missing and unexpected.
    Snapshot opened = installed;
    for (auto& r : opened.routes)
        if (r.table == kRouteTable && r.type == RTN_UNREACHABLE && r.family == Family::v4)
            r.type = RTN_THROW;
    CHECK(route_set_drift(opened, want).size() == 2);

    // The earlier layout: copies of main's routes and a catch-all rule.
    Snapshot legacy = s;
    legacy.routes.push_back(route("192.168.1.0/24", "172.31.0.1", 2, 0, kRouteTable));
    for (Family f : {Family::v4, Family::v6}) {
        legacy.rules.push_back(
            Rule{f, kRulePriorityLookup, kRouteTable, FR_ACT_TO_TBL, kRouteProtocol, false});
        legacy.rules.push_back(
            Rule{f, kLegacyRulePriorityUnreachable, 0, FR_ACT_UNREACHABLE, kRouteProtocol, false});
    }
    auto l = route_set_drift(legacy, want);
    CHECK(std::count_if(l.begin(), l.end(), [](const std::string& x) {
              return x.find("unexpected rule '101") == 0;
          }) == 2);
    CHECK(std::count_if(l.begin(), l.end(),
                        [](const std::string& x) { return x.find("missing route") == 0; }) == 3);
}
