#include "verbs.hpp"

#include "nsegress/names_proxy.hpp"
#include "nsegress/reports.hpp"
#include "nsegress/testpoint.hpp"

namespace nsegress {

using namespace verbs;

ReleaseReport cmd_release(const TargetSpec& target) {
    ReleaseReport rep;
    require_privileges(priv_enter | priv_net_admin);
    Netns ns = open_target(target);
    rep.target = target_info(ns, target);
    NetnsLock lock(ns);
    Handles h = open_handles(ns, need_rtnl | need_nfnl);
    testing::test_point("release-entered");
    close_nfnl_in_background(h);
    const bool had_table = nft::read_policy(h.nfnl.get()).present;
    const bool had_netdev = nft::netdev_table_present(h.nfnl.get());
    // Keep going after a failure: remove as much as possible, then report every failure.
    std::vector<Error> failures;
    try {
        rep.removed_names_proxy = stop_names_proxy(ns.id());
    } catch (const Error& e) {
        failures.push_back(e.in("stop the names proxy"));
    }
    try {
        nft::commit(h.nfnl.get(), nft::compile_delete(batch_seq(), had_netdev));
        rep.removed_table = had_table;
        rep.removed_netdev_table = had_netdev;
        forget_state(ns);
    } catch (const Error& e) {
        failures.push_back(e.in("remove the nftables tables"));
    }
    testing::test_point("release-committed");
    try {
        RouteSetRemoval removed = remove_route_set(
            h.rtnl.get(), inspect(h.rtnl.get(), inspect_routes | inspect_rules | inspect_links));
        rep.removed_rules = removed.rules;
        rep.removed_routes = removed.routes;
    } catch (const Error& e) {
        failures.push_back(e.in("remove the route set"));
    }
    try {
        rep.foreign = foreign_policies(ns, h.nfnl.get());  // left in place: not ours
    } catch (const Error&) {
        // Only a report about other people's policies: release itself is done.
    }
    for (const auto& f : failures) rep.errors.push_back(f.what());
    if (!failures.empty()) rep.exit = failures.front().exit_code();
    return rep;
}

}  // namespace nsegress
