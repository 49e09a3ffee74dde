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

// The planner sorts one allowed CIDR's candidates at a time (it never holds the whole plan).
// Against the plain definition -- every (allowed CIDR, main route) intersection, one global
// stable sort, the most specific then lowest-metric route per prefix -- on random inputs.
TEST_CASE("the streamed plan equals the globally sorted plan, in order") {
    std::uint64_t seed = 42;
    auto rnd = [&](std::uint64_t n) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        return (seed >> 33) % n;
    };
    auto v4 = [&](unsigned prefix) {
        std::uint32_t a = static_cast<std::uint32_t>(rnd(1u << 16)) << 16 | static_cast<std::uint32_t>(rnd(1u << 16));
        if (rnd(2)) a = 0x0a000000u | (a & 0x00ffffffu);  // cluster in 10/8 so routes overlap
        a &= prefix ? ~0u << (32 - prefix) : 0u;
        return Cidr{IpAddr{Family::v4, a}, static_cast<std::uint8_t>(prefix)};
    };
    for (int round = 0; round < 200; ++round) {
        Snapshot s = lab();
        for (int i = 0, n = static_cast<int>(rnd(6)); i < n; ++i) {
            Route r = route("10.0.0.0/8", rnd(2) ? "172.31.0.1" : nullptr, 2, static_cast<std::uint32_t>(rnd(3)));
            r.dst = v4(static_cast<unsigned>(8 + rnd(20)));
            s.routes.push_back(r);
        }
        std::vector<Cidr> cidrs;
        for (int i = 0, n = static_cast<int>(1 + rnd(40)); i < n; ++i) cidrs.push_back(v4(static_cast<unsigned>(4 + rnd(29))));
        AllowList allow(cidrs);

        std::vector<std::pair<Cidr, const Route*>> all;
        for (const auto& range : allow.ranges(Family::v4))
            for (const Cidr& a : range.to_cidrs())
                for (const auto& r : s.routes) {
                    if (r.family != Family::v4 || r.table != RT_TABLE_MAIN || r.type != RTN_UNICAST) continue;
                    if (r.dst.contains(a)) all.emplace_back(a, &r);
                    else if (a.contains(r.dst)) all.emplace_back(r.dst, &r);
                }
        std::stable_sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
        std::vector<std::string> want;
        for (std::size_t i = 0; i < all.size();) {
            const Route* best = all[i].second;
            std::size_t j = i + 1;
            for (; j < all.size() && all[j].first == all[i].first; ++j) {
                const Route* c = all[j].second;
                if (c->dst.prefix > best->dst.prefix || (c->dst.prefix == best->dst.prefix && c->metric < best->metric))
                    best = c;
            }
            Route r = *best;
            r.dst = all[i].first;
            r.table = kRouteTable;
            if (r.gateway) r.onlink = true;
            want.push_back(format_route(r, s));
            i = j;
        }
        std::vector<std::string> got;
        for (const auto& r : plan_route_set(s, allow).routes)
            if (r.family == Family::v4) got.push_back(format_route(r, s));
        REQUIRE(got == want);
    }
}
