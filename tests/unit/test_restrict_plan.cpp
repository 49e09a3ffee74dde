// restrict's plan (restrict_plan.hpp): everything restrict decides from the policy and a
// namespace snapshot, checked without root or a namespace.
#include <doctest/doctest.h>

#include <linux/rtnetlink.h>

#include "nsegress/error.hpp"
#include "nsegress/restrict_plan.hpp"
#include "snapshot_helpers.hpp"

using namespace nsegress;

namespace {

using test::route;

// A container: lo, eth0 (Ethernet) and wg0 (no link layer), IPv4 and IPv6 default routes.
Snapshot container() {
    Snapshot s;
    s.links = {{1, "lo", true, true, "", 65536},
               {2, "eth0", true, false, "veth", 1500},
               {3, "wg0", true, false, "wireguard", 1420}};
    s.links[1].arptype = 1;      // ARPHRD_ETHER
    s.links[2].arptype = 65534;  // ARPHRD_NONE
    s.addresses = {{1, parse_ip("127.0.0.1"), 8, RT_SCOPE_HOST},
                   {2, parse_ip("172.31.0.2"), 24, 0},
                   {2, parse_ip("fd00:31::2"), 64, 0},
                   {3, parse_ip("2001:db8:9::2"), 48, 0}};
    s.routes = {route("0.0.0.0/0", "172.31.0.1", 2), route("172.31.0.0/24", nullptr, 2),
                route("::/0", "2001:db8:ff::1", 2), route("fd00:31::/64", nullptr, 2)};
    return s;
}

PolicySpec spec_of(std::initializer_list<const char*> entries) {
    PolicySpec s;
    for (const char* e : entries) s.allow.push_back(parse_allow_entry(e));
    return s;
}

std::vector<std::uint16_t> types(const nft::Batch& b) {
    std::vector<std::uint16_t> out;
    for (const auto& m : b.messages) out.push_back(m.type);
    return out;
}

}  // namespace

TEST_CASE(
    "restrict plan: a CIDR policy gets the route layer, drops forbidden flows, probes the "
    "gateways") {
    const auto p =
        plan_restrict(spec_of({"192.168.1.0/24", "172.31.0.0/24"}), container(), true, true);
    CHECK(p.mode == nft::Mode::enforce);
    CHECK(p.route_set);
    CHECK_FALSE(p.route_set_disabled_by);
    CHECK_FALSE(p.names);
    CHECK(p.drop_forbidden_flows);
    CHECK(p.destinations() == p.policy.all());
    CHECK_FALSE(p.netdev.install);
    CHECK(p.netdev.devices.empty());
    REQUIRE(p.probes.size() == 2);
    CHECK(p.probes[0].addr.str() == "172.31.0.1");
    CHECK(p.probes[0].expect == Expect::reach);
    CHECK(p.probes[1].addr.str() == "2001:db8:ff::1");
    CHECK(p.probes[1].expect == Expect::block);
    CHECK(p.probes_none.empty());
}

TEST_CASE("restrict plan: explicit probe targets replace the defaults; none at all is said why") {
    auto spec = spec_of({"192.168.1.0/24"});
    spec.probe_reach = {parse_ip("192.168.1.10")};
    spec.probe_block = {parse_ip("198.51.100.1")};
    auto p = plan_restrict(spec, container(), true, true);
    REQUIRE(p.probes.size() == 2);
    CHECK(p.probes[0].expect == Expect::reach);
    CHECK(p.probes[1].expect == Expect::block);
    p = plan_restrict(spec_of({"192.168.1.0/24"}), container(), true, false);
    CHECK(p.probes.empty());
    CHECK(p.probes_none == "no --probe-reach/--probe-block, and default probes are off");
    p = plan_restrict(spec_of({"192.168.1.0/24"}), container(), false, true);
    CHECK(p.probes.empty());
    CHECK(p.probes_none == "--no-probe");
    Snapshot no_gateway = container();
    no_gateway.routes.clear();
    p = plan_restrict(spec_of({"192.168.1.0/24"}), no_gateway, true, true);
    CHECK(p.probes.empty());
    CHECK(p.probes_none == "no --probe-reach/--probe-block, and no default gateway to test");
}

TEST_CASE(
    "restrict plan: audit mode refuses nothing -- no route layer, no netdev table, flows kept, "
    "blocks expected out") {
    auto spec = spec_of({"192.168.1.0/24"});
    spec.audit = true;
    spec.netdev_egress = true;
    const auto p = plan_restrict(spec, container(), true, true);
    CHECK(p.mode == nft::Mode::audit);
    CHECK_FALSE(p.route_set);
    CHECK(p.route_set_disabled_by == "audit");
    CHECK_FALSE(p.netdev.install);
    CHECK_FALSE(p.drop_forbidden_flows);
    REQUIRE(p.probes.size() == 2);
    CHECK(p.probes[0].expect == Expect::audit);
    CHECK(p.probes[1].expect == Expect::audit);
}

TEST_CASE(
    "restrict plan: names turn the route layer and the flow drop off; with --netdev-egress they "
    "are refused") {
    auto spec = spec_of({"api.example.com tcp/443", "192.168.1.0/24"});
    auto p = plan_restrict(spec, container(), false, false);
    CHECK(p.names);
    CHECK_FALSE(p.route_set);
    CHECK(p.route_set_disabled_by == "names");
    CHECK_FALSE(p.drop_forbidden_flows);
    spec.route_set = false;  // not asked for: not "disabled by names"
    CHECK_FALSE(plan_restrict(spec, container(), false, false).route_set_disabled_by);
    spec.netdev_egress = true;
    CHECK_THROWS_AS(check_plannable(spec), Error);
    CHECK_THROWS_AS(plan_restrict(spec, container(), false, false), Error);
    spec.audit = true;  // audit installs no netdev table: nothing to refuse
    CHECK_NOTHROW(plan_restrict(spec, container(), false, false));
    CHECK_NOTHROW(check_plannable(spec_of({"192.168.1.0/24"})));
}

TEST_CASE("restrict plan: with ports the route layer admits every destination an entry names") {
    const auto p = plan_restrict(spec_of({"192.168.1.0/24 tcp/443", "10.0.0.1 udp/53"}),
                                 container(), false, false);
    CHECK(p.route_set);
    CHECK(p.destinations().contains(parse_ip("192.168.1.77")));
    CHECK(p.destinations().contains(parse_ip("10.0.0.1")));
    CHECK_FALSE(p.destinations().contains(parse_ip("10.0.0.2")));
}

TEST_CASE(
    "restrict plan: --netdev-egress filters every non-loopback link; ND may reach the link and the "
    "gateway") {
    auto spec = spec_of({"192.168.1.0/24"});
    spec.netdev_egress = true;
    const auto p = plan_restrict(spec, container(), false, false);
    CHECK(p.netdev.install);
    CHECK_FALSE(p.netdev.replace_existing);  // decided at commit, against what is installed
    REQUIRE(p.netdev.devices.size() == 2);
    CHECK(p.netdev.devices[0].name == "eth0");
    CHECK(p.netdev.devices[0].ethernet);
    CHECK(p.netdev.devices[1].name == "wg0");
    CHECK_FALSE(p.netdev.devices[1].ethernet);
    // Own addresses, not the host-scope loopback one.
    CHECK(p.netdev.own.contains(parse_ip("172.31.0.2")));
    CHECK(p.netdev.own.contains(parse_ip("fd00:31::2")));
    CHECK_FALSE(p.netdev.own.contains(parse_ip("127.0.0.1")));
    // ND: link-local, link multicast, the /64 on-link prefix and the IPv6 gateway; not the /48
    // (a prefix wider than /64 is no link) and not elsewhere.
    CHECK(p.netdev.neighbour6.contains(parse_ip("fe80::1")));
    CHECK(p.netdev.neighbour6.contains(parse_ip("ff02::1:ff00:2")));
    CHECK(p.netdev.neighbour6.contains(parse_ip("fd00:31::99")));
    CHECK(p.netdev.neighbour6.contains(parse_ip("2001:db8:ff::1")));
    CHECK_FALSE(p.netdev.neighbour6.contains(parse_ip("2001:db8:9::1")));
    CHECK_FALSE(p.netdev.neighbour6.contains(parse_ip("2001:db8:ff::2")));
}

TEST_CASE("restrict plan: the batch is the compiler's, replacing a netdev table found at commit") {
    auto spec = spec_of({"192.168.1.0/24"});
    spec.netdev_egress = true;
    const auto p = plan_restrict(spec, container(), false, false);
    nft::Installed none;
    CHECK(types(p.batch(none, 100)) ==
          types(nft::compile_policy(p.policy, 100, p.mode, p.netdev, none)));
    nft::Installed with_netdev;
    with_netdev.netdev = nft::Found::foreign;
    nft::NetdevPlan replacing = p.netdev;
    replacing.replace_existing = true;
    const auto b = p.batch(with_netdev, 100);
    CHECK(types(b) == types(nft::compile_policy(p.policy, 100, p.mode, replacing, with_netdev)));
    CHECK(b.bytes == nft::compile_policy(p.policy, 100, p.mode, replacing, with_netdev).bytes);
    // Without --netdev-egress, a netdev table an earlier run left is deleted in the same batch.
    const auto q = plan_restrict(spec_of({"192.168.1.0/24"}), container(), false, false);
    CHECK(types(q.batch(with_netdev, 100)).size() > types(q.batch(none, 100)).size());
}
