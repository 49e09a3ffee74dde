#include "nsegress/restrict_plan.hpp"

#include <algorithm>

#include "nsegress/error.hpp"

namespace nsegress {

namespace {
constexpr unsigned kArphrdEther = 1;  // ARPHRD_ETHER
}  // namespace

nft::NetdevPlan netdev_plan(const Snapshot& snap, bool install, bool present) {
    nft::NetdevPlan plan;
    plan.install = install;
    plan.replace_existing = present;
    if (install)
        for (const auto& l : snap.links)
            if (!l.loopback)
                plan.devices.push_back(nft::NetdevDevice{l.name, l.arptype == kArphrdEther});
    // The inet table's nd6 set too, netdev table or not.
    plan.neighbour6.add(parse_cidr("fe80::/10"));
    plan.neighbour6.add(parse_cidr("ff02::/16"));
    for (const auto& a : snap.addresses) {
        if (a.scope == kAddressScopeHost)
            continue;  // 127.0.0.1, ::1 on lo: never a source beyond it
        if (a.addr.family == Family::v4 && (a.addr.value >> 24) == 127) continue;
        if (a.addr.family == Family::v6 && a.addr.value == 1) continue;
        plan.own.add(Cidr{a.addr, a.addr.family == Family::v4 ? 32u : 128u});
        // An on-link prefix as wide as a /32 is not a link: a router would forward ND beyond
        // it. Only prefixes of /64 or longer count; gateways are added one by one below.
        if (a.addr.family != Family::v6 || a.prefix < 64 || a.prefix > 128) continue;
        u128 mask = a.prefix == 128 ? ~u128{0} : ~((~u128{0}) >> a.prefix);
        plan.neighbour6.add(Range{IpAddr{Family::v6, a.addr.value & mask},
                                  IpAddr{Family::v6, a.addr.value | ~mask}});
    }
    for (const auto& r : snap.routes)  // unicast NUD probes to a global IPv6 gateway
        if (r.gateway && r.gateway->family == Family::v6)
            plan.neighbour6.add(Cidr{*r.gateway, 128});
    return plan;
}

std::vector<ProbeTarget> default_probe_targets(const Snapshot& snap, const AllowList& allow) {
    std::vector<ProbeTarget> out;
    for (Family f : {Family::v4, Family::v6}) {
        const Route* def = snap.default_route(f);
        if (!def || !def->gateway) continue;
        const IpAddr& gw = *def->gateway;
        bool link_local = f == Family::v6 && (gw.value >> 118) == 0x3fa;  // fe80::/10
        if (link_local) continue;
        out.push_back(ProbeTarget{gw, allow.contains(gw) ? Expect::reach : Expect::block});
    }
    return out;
}

std::vector<ProbeTarget> default_probe_targets(const Snapshot& snap, const Policy& policy) {
    if (!policy.has_ports()) return default_probe_targets(snap, policy.all());
    auto out = default_probe_targets(snap, AllowList{});
    for (auto& t : out) t.expect = policy.echo_allowed(t.addr) ? Expect::reach : Expect::block;
    return out;
}

namespace {

// The netdev layer has no name sets: names with --netdev-egress cannot be planned.
void refuse_names_with_netdev(const PolicySpec& spec, bool names) {
    if (!spec.audit && spec.netdev_egress && names)
        throw_usage(
            "--netdev-egress cannot be combined with name entries yet (the netdev layer has no "
            "name sets)");
}

}  // namespace

void check_plannable(const PolicySpec& spec) {
    refuse_names_with_netdev(spec, std::any_of(spec.allow.begin(), spec.allow.end(),
                                               [](const AllowEntry& e) { return e.is_name(); }));
}

RestrictPlan plan_restrict(const PolicySpec& spec, const Snapshot& snap, bool probe,
                           bool default_probes) {
    check_plannable(spec);
    return plan_restrict(spec, Policy(spec.allow), snap, probe, default_probes);
}

RestrictPlan plan_restrict(const PolicySpec& spec, Policy policy, const Snapshot& snap, bool probe,
                           bool default_probes) {
    RestrictPlan p(std::move(policy));
    p.mode = spec.audit ? nft::Mode::audit : nft::Mode::enforce;
    if (p.policy.has_ports()) p.with_ports_ = p.policy.destinations();
    p.names = p.policy.has_names();
    refuse_names_with_netdev(spec, p.names);
    // Audit mode installs no route set: its unreachable route would refuse what audit lets
    // through. Nor does a policy with names: a name's addresses are learnt at run time, and the
    // route set is a function of the static list (SECURITY.md: the nft layer alone holds names).
    p.route_set = spec.route_set && !spec.audit && !p.names;
    if (spec.audit)
        p.route_set_disabled_by = "audit";
    else if (p.names && spec.route_set)
        p.route_set_disabled_by = "names";
    // Nor a netdev egress table in audit mode: it drops what it does not allow.
    p.netdev = netdev_plan(snap, spec.netdev_egress && !spec.audit, false);
    // Audit mode disturbs nothing: forbidden flows keep their conntrack entries (and so are not
    // logged: only new flows are). With names, flows to a name's addresses are not in the static
    // list: conntrack is left alone (the policy itself still refuses what it does not allow).
    p.drop_forbidden_flows = !spec.audit && !p.names;
    if (probe) {
        for (const auto& a : spec.probe_reach) p.probes.push_back({a, Expect::reach});
        for (const auto& a : spec.probe_block) p.probes.push_back({a, Expect::block});
        if (p.probes.empty() && default_probes) {
            p.probes = default_probe_targets(snap, p.policy);
            if (p.probes.empty())
                p.probes_none = "no --probe-reach/--probe-block, and no default gateway to test";
        } else if (p.probes.empty()) {
            p.probes_none = "no --probe-reach/--probe-block, and default probes are off";
        }
        if (spec.audit)  // what enforce mode would refuse must get out, not be refused
            for (auto& t : p.probes)
                if (t.expect == Expect::block) t.expect = Expect::audit;
    } else {
        p.probes_none = "--no-probe";
    }
    return p;
}

nft::Batch RestrictPlan::batch(const nft::Installed& installed, std::uint32_t first_seq) const {
    nft::NetdevPlan nd = netdev;
    nd.replace_existing = installed.netdev != nft::Found::absent;
    return nft::compile_policy(policy, first_seq, mode, nd, installed);
}

}  // namespace nsegress
