#include "verbs.hpp"

#include <fmt/format.h>

#include "nsegress/names_proxy.hpp"
#include "nsegress/render.hpp"
#include "nsegress/reports.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

using namespace verbs;

std::vector<std::string> policy_drift(const RestrictOptions& want) {
    const bool audit = want.audit;
    // audit mode never has a route set, nor has a policy with names
    const bool route_set = want.route_set && !audit && !Policy(want.allow).has_names();
    const bool netdev_egress = want.netdev_egress && !audit;
    require_privileges(priv_enter | priv_net_admin);
    Netns ns = open_target(want.target);
    Handles h = open_handles(ns, need_rtnl | need_nfnl);
    Snapshot snap = inspect(h.rtnl.get());
    nft::PolicyState st = nft::read_policy(h.nfnl.get());
    const Policy policy(want.allow);
    const AllowList allow = policy.destinations();  // what the route set admits
    std::vector<std::string> drift;
    if (!st.present)
        drift.push_back("table inet nsegress is missing");
    else if (!st.complete)
        drift.push_back("table inet nsegress is incomplete (modified by hand?)");
    if (st.present && st.complete && st.mode != (audit ? nft::Mode::audit : nft::Mode::enforce))
        drift.push_back(fmt::format("the policy is in {} mode but {} was asked for",
                                    nft::mode_name(st.mode), audit ? "audit" : "enforce"));
    const Policy have = installed_policy(st, read_names_info(ns.id()));
    if (st.present && !(have == policy))
        drift.push_back(fmt::format("allow-list is {} but {} was asked for",
                                    allow_json(have)["entries"].dump(),
                                    allow_json(policy)["entries"].dump()));
    if (policy.has_names() && !names_proxy_pid(ns.id()))
        drift.push_back("the names proxy is not running (no name resolves)");
    RoutePlan installed = installed_route_set(snap);
    if (route_set) {
        if (installed.rules.empty() && installed.routes.empty())
            drift.push_back("the route set is missing");
        else
            for (auto& d : route_set_drift(snap, plan_route_set(allow)))
                drift.push_back("route set: " + d);
    } else if (!installed.rules.empty() || !installed.routes.empty()) {
        drift.push_back("a route set is installed but none was asked for");
    }
    nft::NetdevState nd = nft::read_netdev(h.nfnl.get());
    if (netdev_egress && !nd.present) drift.push_back("table netdev nsegress is missing");
    if (!netdev_egress && nd.present)
        drift.push_back("table netdev nsegress is installed but none was asked for");
    if (netdev_egress && nd.present)
        for (const auto& name : uncovered_interfaces(snap, nd))
            drift.push_back(fmt::format("interface {} has no netdev egress chain", quote(name)));
    return drift;
}

StatusReport cmd_status(const TargetSpec& target) {
    StatusReport rep;
    require_privileges(priv_enter | priv_net_admin);  // reading nftables needs CAP_NET_ADMIN too
    Netns ns = open_target(target);
    rep.target = target_info(ns, target);
    rep.owner = ns.owner();
    Handles h = open_handles(ns, need_rtnl | need_nfnl | need_snmp);
    rep.snapshot = inspect(h.rtnl.get());
    const Snapshot& snap = rep.snapshot;
    rep.policy = nft::read_policy(h.nfnl.get());
    rep.names = read_names_info(ns.id());  // read once: the policy's names and the report's
    rep.allow = installed_policy(rep.policy, rep.names);
    const RoutePlan installed = installed_route_set(snap);
    rep.route_set_present = !installed.rules.empty();
    // The earlier layout (a copy of main taken at restrict time) goes stale with the network.
    rep.route_set_legacy = legacy_route_set(snap);
    rep.route_set_lines = route_set_lines(installed, snap);
    // What the route set refuses is not counted (its EHOSTUNREACH); OutNoRoutes is reported
    // for what it is.
    rep.no_route = h.snmp.out_no_routes();
    if (rep.policy.names) rep.name_elements = nft::read_name_elements(h.nfnl.get());
    // The netdev egress layer: an interface created after restrict is not covered until
    // restrict runs again.
    rep.netdev = nft::read_netdev(h.nfnl.get());
    if (rep.netdev.present) rep.uncovered = uncovered_interfaces(snap, rep.netdev);
    rep.foreign = foreign_policies(ns, h.nfnl.get());
    // Who could undo or go around the policy from inside (see verify's bypass checks).
    rep.bypass = bypass_risks(ns);
    return rep;
}

}  // namespace nsegress
