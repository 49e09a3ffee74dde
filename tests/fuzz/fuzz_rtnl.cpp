// rtnetlink dump replies (links, addresses, routes, rules) into the inspection structs, and
// everything that is computed from them: the route set plan, its drift check and rendering, the
// default probe targets, the `ip`-style formatting. A namespace's routing state is set by whoever
// holds CAP_NET_ADMIN in it.
#include <linux/rtnetlink.h>

#include "fuzz_common.hpp"

#include "nsegress/commands.hpp"
#include "nsegress/restrict_plan.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/routeset.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Snapshot snap;
    try {
        parse_rtnl_messages({data, size}, snap);
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::failed);
        return 0;
    }
    for (std::size_t i = 1; i < snap.links.size(); ++i)
        fuzz::check(snap.links[i - 1].ifindex <= snap.links[i].ifindex, "links are not sorted");
    for (const auto& r : snap.routes) {
        fuzz::check(r.dst.addr.family == r.family, "route destination of the other family");
        fuzz::check(r.dst.prefix <= bits_of(r.family), "route prefix longer than the family");
        (void)format_route(r, snap);
    }
    for (const auto& r : snap.rules) (void)format_rule(r);
    for (Family f : {Family::v4, Family::v6})
        if (const Route* d = snap.default_route(f))
            fuzz::check(d->family == f && d->is_default(), "default route");

    static const AllowList allow(
        std::vector<Cidr>{parse_cidr("192.168.1.0/24"), parse_cidr("10.0.0.0/8"),
                          parse_cidr("2001:db8:1::/64"), parse_cidr("0.0.0.0/1")});
    RoutePlan plan = plan_route_set(allow);
    for (const auto& r : plan.routes) {
        fuzz::check(r.table == kRouteTable && r.protocol == kRouteProtocol,
                    "planned route outside our table");
        // Only throw routes send a destination on to main: never outside the allow-list.
        fuzz::check(
            r.type == RTN_UNREACHABLE || (r.type == RTN_THROW && allow.contains(r.dst.first()) &&
                                          allow.contains(r.dst.last())),
            "planned route reaches outside the allow-list", format_route(r, snap));
    }
    (void)route_set_drift(snap, plan);
    (void)render_route_set(plan, snap);
    (void)installed_route_set(snap);
    for (const auto& t : default_probe_targets(snap, allow))
        fuzz::check((t.expect == Expect::reach) == allow.contains(t.addr),
                    "default probe expects the wrong thing", t.addr.str());
    return 0;
}
