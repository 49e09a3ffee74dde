#include "verbs.hpp"

#include "nsegress/names_proxy.hpp"
#include "nsegress/testpoint.hpp"

namespace nsegress {

using namespace verbs;

CommandResult cmd_release(const TargetSpec& target) {
    CommandResult res{base_doc("release")};
    json& doc = res.doc;
    require_privileges(priv_enter | priv_net_admin);
    Netns ns = open_target(target);
    doc["target"] = target_json(ns, target);
    NetnsLock lock(ns);
    Handles h = open_handles(ns, need_rtnl | need_nfnl);
    testing::test_point("release-entered");
    close_nfnl_in_background(h);
    bool had_table = nft::read_policy(h.nfnl.get()).present;
    bool had_netdev = nft::netdev_table_present(h.nfnl.get());
    // Keep going after a failure: remove as much as possible, then report every failure.
    std::vector<Error> failures;
    bool tables_removed = false;
    try {
        doc["removed_names_proxy"] = stop_names_proxy(ns.id());
    } catch (const Error& e) {
        failures.push_back(e.in("stop the names proxy"));
    }
    try {
        nft::commit(h.nfnl.get(), nft::compile_delete(batch_seq(), had_netdev));
        tables_removed = true;
        forget_state(ns);
    } catch (const Error& e) {
        failures.push_back(e.in("remove the nftables tables"));
    }
    testing::test_point("release-committed");
    RouteSetRemoval removed;
    try {
        removed = remove_route_set(
            h.rtnl.get(), inspect(h.rtnl.get(), inspect_routes | inspect_rules | inspect_links));
    } catch (const Error& e) {
        failures.push_back(e.in("remove the route set"));
    }
    doc["removed"] = json{{"table", had_table && tables_removed},
                          {"netdev_table", had_netdev && tables_removed},
                          {"rules", removed.rules},
                          {"routes", removed.routes}};
    try {
        doc["foreign"] = foreign_policies(ns, h.nfnl.get());  // left in place: not ours
    } catch (const Error&) {
        // Only a report about other people's policies: release itself is done.
    }
    if (!failures.empty()) {
        json errors = json::array();
        std::string all;
        for (const auto& f : failures) {
            errors.push_back(f.what());
            all += (all.empty() ? "" : "; ") + std::string(f.what());
        }
        doc["errors"] = errors;
        doc["error"] = all;
        finish(res, failures.front().exit_code());
    }
    return res;
}

}  // namespace nsegress
