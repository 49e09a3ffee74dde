#include <doctest/doctest.h>

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>

#include "nsegress/commands.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/routeset.hpp"

using namespace nsegress;

namespace {

Route route(const char* dst, const char* gw, int oif, std::uint32_t metric = 0,
            std::uint32_t table = RT_TABLE_MAIN, std::uint8_t type = RTN_UNICAST) {
    Route r;
    r.dst = parse_cidr(dst);
    r.family = r.dst.addr.family;
    if (gw) r.gateway = parse_ip(gw);
    r.oif = oif;
    r.metric = metric;
    r.table = table;
    r.type = type;
    r.scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    return r;
}

// The lab's container: eth0 (2) with a connected /24, a default route, and IPv6 alike.
Snapshot lab() {
    Snapshot s;
    s.links = {{1, "lo", true, true, "", 65536}, {2, "eth0", true, false, "veth", 1500}};
    s.addresses = {{2, parse_ip("172.31.0.2"), 24, 0}, {2, parse_ip("fd00:31::2"), 64, 0}};
    s.routes = {route("0.0.0.0/0", "172.31.0.1", 2), route("172.31.0.0/24", nullptr, 2),
                route("::/0", "fd00:31::1", 2, 1024), route("fd00:31::/64", nullptr, 2, 256),
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

TEST_CASE("an allowed CIDR behind the gateway gets the gateway's nexthop, onlink") {
    Snapshot s = lab();
    RoutePlan p = plan_route_set(s, AllowList({parse_cidr("192.168.1.0/24")}));
    CHECK(lines(p, s) == std::vector<std::string>{"192.168.1.0/24 via 172.31.0.1 dev eth0 table 28275 onlink"});
    for (const auto& r : p.routes) {
        CHECK(r.table == kRouteTable);
        CHECK(r.protocol == kRouteProtocol);
    }
}

TEST_CASE("two rules per family: lookup our table, then unreachable") {
    RoutePlan p = plan_route_set(lab(), AllowList({parse_cidr("192.168.1.0/24")}));
    REQUIRE(p.rules.size() == 4);
    for (Family f : {Family::v4, Family::v6}) {
        int seen = 0;
        for (const auto& r : p.rules) {
            if (r.family != f) continue;
            ++seen;
            CHECK(r.protocol == kRouteProtocol);
            if (r.priority == kRulePriorityLookup) CHECK((r.action == FR_ACT_TO_TBL && r.table == kRouteTable));
            else CHECK((r.priority == kRulePriorityUnreachable && r.action == FR_ACT_UNREACHABLE));
        }
        CHECK(seen == 2);  // an unallowed family is still closed at the route layer
    }
    CHECK(kRulePriorityLookup > 0);          // after the local table
    CHECK(kRulePriorityUnreachable < 32766);  // before main
}

TEST_CASE("main's longest-prefix match is preserved inside a wide allowed CIDR") {
    Snapshot s = lab();
    RoutePlan p = plan_route_set(s, AllowList({parse_cidr("0.0.0.0/0")}));
    // The connected /24 stays on-link; everything else goes via the gateway.
    CHECK(lines(p, s) == std::vector<std::string>{"default via 172.31.0.1 dev eth0 table 28275 onlink",
                                                   "172.31.0.0/24 dev eth0 table 28275"});
}

TEST_CASE("an allowed CIDR inside the connected subnet stays on-link; the local table is ignored") {
    Snapshot s = lab();
    RoutePlan p = plan_route_set(s, AllowList({parse_cidr("172.31.0.128/25"), parse_cidr("127.0.0.1")}));
    CHECK(lines(p, s) == std::vector<std::string>{"127.0.0.1/32 via 172.31.0.1 dev eth0 table 28275 onlink",
                                                   "172.31.0.128/25 dev eth0 table 28275"});
}

TEST_CASE("IPv6 allowed prefixes copy main's IPv6 routes and metrics") {
    Snapshot s = lab();
    RoutePlan p = plan_route_set(s, AllowList({parse_cidr("2001:db8:1::/64"), parse_cidr("fd00:31::/64")}));
    CHECK(lines(p, s) == std::vector<std::string>{"2001:db8:1::/64 via fd00:31::1 dev eth0 table 28275 metric 1024 onlink",
                                                   "fd00:31::/64 dev eth0 table 28275 metric 256"});
}

TEST_CASE("no route in main: nothing to copy, the unreachable rule decides") {
    Snapshot s;
    s.links = {{1, "lo", true, true, "", 65536}};
    RoutePlan p = plan_route_set(s, AllowList({parse_cidr("192.168.1.0/24")}));
    CHECK(p.routes.empty());
    CHECK(p.rules.size() == 4);
}

TEST_CASE("installed_route_set finds our rules and our table only") {
    Snapshot s = lab();
    s.routes.push_back(route("192.168.1.0/24", "172.31.0.1", 2, 0, kRouteTable));
    s.rules = {Rule{Family::v4, 0, RT_TABLE_LOCAL, FR_ACT_TO_TBL, 2, false},
               Rule{Family::v4, kRulePriorityLookup, kRouteTable, FR_ACT_TO_TBL, kRouteProtocol, false},
               Rule{Family::v4, kRulePriorityUnreachable, 0, FR_ACT_UNREACHABLE, 0, false},  // proto stripped
               Rule{Family::v4, kRulePriorityUnreachable, 0, FR_ACT_UNREACHABLE, 0, true},   // someone else's
               Rule{Family::v4, 32766, RT_TABLE_MAIN, FR_ACT_TO_TBL, 2, false}};
    RoutePlan p = installed_route_set(s);
    CHECK(p.routes.size() == 1);
    CHECK(p.rules.size() == 2);
}

TEST_CASE("dry-run commands are ip commands for exactly the plan") {
    Snapshot s = lab();
    auto cmds = render_route_set(plan_route_set(s, AllowList({parse_cidr("192.168.1.0/24")})), s);
    REQUIRE(cmds.size() == 5);
    CHECK(cmds[0] == "ip -4 route replace 192.168.1.0/24 via 172.31.0.1 dev eth0 table 28275 onlink proto 245");
    CHECK(cmds[1] == "ip -4 rule add priority 100 lookup 28275 proto 245");
    CHECK(cmds[4] == "ip -6 rule add priority 101 unreachable proto 245");
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

TEST_CASE("route_set_drift: none when installed as planned; names missing rules and stray routes") {
    Snapshot s = lab();
    AllowList allow({parse_cidr("192.168.1.0/24")});
    RoutePlan want = plan_route_set(s, allow);
    Snapshot installed = s;
    for (const auto& r : want.routes) installed.routes.push_back(r);
    for (const auto& r : want.rules) installed.rules.push_back(r);
    CHECK(route_set_drift(installed, want).empty());

    Snapshot no_unreach = installed;
    no_unreach.rules.erase(no_unreach.rules.begin() + 1);  // IPv4 priority 101
    auto d = route_set_drift(no_unreach, want);
    REQUIRE(d.size() == 1);
    CHECK(d[0].find("101") != std::string::npos);
    CHECK(d[0].find("missing") != std::string::npos);

    Snapshot stray = installed;
    stray.routes.push_back(route("198.51.100.0/24", "172.31.0.1", 2, 0, kRouteTable));
    auto e = route_set_drift(stray, want);
    REQUIRE(e.size() == 1);
    CHECK(e[0].find("unexpected route 198.51.100.0/24") == 0);

    // A route the plan wants but that points elsewhere is both missing and unexpected.
    Snapshot moved = installed;
    for (auto& r : moved.routes)
        if (r.table == kRouteTable) r.oif = 1;
    CHECK(route_set_drift(moved, want).size() == 2);
}
