#include "verbs.hpp"

#include <fmt/format.h>

#include "nsegress/names_proxy.hpp"
#include "nsegress/restrict_report.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

using namespace verbs;

// The installed policy: the kernel's sets, and the names the names proxy serves (its state).
Policy installed_policy(const nft::PolicyState& st, NsId id) {
    Policy p = st.policy();
    if (st.names) {
        std::vector<AllowEntry> names;
        for (const auto& n : read_names_info(id).names) {
            try {
                names.push_back(parse_allow_entry(n));
            } catch (const Error&) {
            }
        }
        p.set_names(std::move(names));
    }
    return p;
}

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
    const Policy have = installed_policy(st, ns.id());
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

CommandResult cmd_status(const TargetSpec& target) {
    CommandResult res{base_doc("status")};
    json& doc = res.doc;
    require_privileges(priv_enter | priv_net_admin);  // reading nftables needs CAP_NET_ADMIN too
    Netns ns = open_target(target);
    json t = target_json(ns, target);
    UsernsInfo owner = ns.owner();
    t["userns"] = json{{"inode", static_cast<std::uint64_t>(owner.ino)},
                       {"initial", owner.initial},
                       {"uid_map", owner.uid_map ? json(*owner.uid_map) : json(nullptr)}};
    doc["target"] = t;
    Handles h = open_handles(ns, need_rtnl | need_nfnl | need_snmp);
    Snapshot snap = inspect(h.rtnl.get());
    json topology = snapshot_json(snap);  // a named object: items() must not outlive it
    for (auto& [k, v] : topology.items()) doc[k] = v;
    nft::PolicyState st = nft::read_policy(h.nfnl.get());
    RoutePlan installed = installed_route_set(snap);
    bool routes_present = !installed.rules.empty();
    // An audit-mode policy refuses nothing: the namespace is not restricted (mode says why).
    doc["restricted"] = st.present && st.complete && st.mode == nft::Mode::enforce;
    doc["policy"] =
        json{{"present", st.present},
             {"complete", st.complete},
             {"mode", st.present && st.complete ? json(nft::mode_name(st.mode)) : json(nullptr)},
             {"rules", st.rules},
             {"allow", allow_json(installed_policy(st, ns.id()))},
             {"deny_log", st.deny_log ? json{{"group", nft::kNflogGroup},
                                             {"rate_per_second", nft::kLogRatePerSecond},
                                             {"burst", nft::kLogBurst}}
                                      : json(nullptr)},
             // Replies are only honoured for connections that came from outside; a
             // policy of an older nsegress honours any (forgeable) reply: say so.
             {"reply_marking", st.reply_marking},
             {"counters",
              {{"allowed", counter_json(st.allowed)},
               {"allowed_ports", counter_json(st.allowed_ports)},
               {"allowed_echo", counter_json(st.allowed_echo)},
               // audit mode refuses nothing: its final rule counts what
               // enforce mode would refuse (and lets it through)
               {"refused", counter_json(st.mode == nft::Mode::audit ? nft::Counter{} : st.refused)},
               {"would_be_refused",
                st.mode == nft::Mode::audit ? counter_json(st.refused) : json(nullptr)},
               {"logged", counter_json(st.logged)},
               {"loopback", counter_json(st.loopback)},
               {"replies", counter_json(st.replies)},
               {"related", counter_json(st.related)},
               {"neighbour_discovery", counter_json(st.neighbour)},
               {"inbound_connections", counter_json(st.inbound)},
               {"forged_source", counter_json(st.forged)},
               {"source_route", counter_json(st.source_route)}}}};
    doc["mode"] = doc["policy"]["mode"];
    // The earlier layout (a copy of main taken at restrict time) goes stale with the network:
    // said only when it is what is installed.
    const bool legacy = legacy_route_set(snap);
    doc["route_set"] = json{
        {"present", routes_present},
        {"table", kRouteTable},
        {"layout", !routes_present ? json(nullptr) : json(legacy ? "snapshot" : "refers-to-main")},
        {"stale", legacy ? json("a copy of the main table taken at restrict time (an earlier "
                                "nsegress): run restrict again")
                         : json(nullptr)},
        {"routes", route_set_lines(installed, snap)}};
    // What the route set refuses is not counted: its unreachable route fails with EHOSTUNREACH,
    // and the kernel counts only ENETUNREACH (no route at all) in OutNoRoutes. That counter is
    // still reported, for what it is.
    NoRouteCounters no_route = h.snmp.out_no_routes();
    doc["route_refused"] =
        json{{"counted", false},
             {"not_counted", legacy ? "refusals by the earlier layout's unreachable rule are in "
                                      "OutNoRoutes, except those of raw sockets (IPv4 ping)"
                                    : "refusals by the route set (EHOSTUNREACH from its "
                                      "unreachable route): no kernel counter counts them"},
             {"ipv4_out_no_routes", opt_json(no_route.ipv4)},
             {"ipv6_out_no_routes", opt_json(no_route.ipv6)}};

    // Names: each name with the addresses its answers gave that are still allowed, and when
    // they expire (the kernel's timeout of their elements in names4/names6).
    {
        NamesInfo ni = read_names_info(ns.id());
        json names{{"enabled", st.names},
                   {"proxy_running", ni.pid.has_value()},
                   {"proxy_pid", ni.pid ? json(*ni.pid) : json(nullptr)},
                   {"state", ni.configured ? json(ni.state) : json(nullptr)},
                   {"log", ni.configured ? json(ni.log) : json(nullptr)},
                   {"resolvers", ni.resolvers},
                   {"resolvers_from", ni.configured ? json(ni.resolvers_from) : json(nullptr)},
                   {"counters",
                    {{"allowed", counter_json(st.allowed_names)},
                     {"established", counter_json(st.named)},
                     {"queries_redirected", counter_json(st.dns_redirected)},
                     {"proxy_queries", counter_json(st.resolver)}}}};
        std::map<IpAddr, std::uint64_t> expires;  // address -> latest expiry (ms)
        json elements = json::array();
        if (st.names) {
            for (const auto& e : nft::read_name_elements(h.nfnl.get())) {
                auto& x = expires[e.addr];
                x = std::max(x, e.expires_ms);
                std::string slot =
                    e.slot.proto_first == e.slot.proto_last
                        ? fmt::format("{}/{}-{}",
                                      proto_name(static_cast<IpProto>(e.slot.proto_first)),
                                      e.slot.port_first, e.slot.port_last)
                        : fmt::format("proto {}-{}", e.slot.proto_first, e.slot.proto_last);
                elements.push_back({{"address", e.addr.str()},
                                    {"slot", slot},
                                    {"expires_in_s", e.expires_ms / 1000}});
            }
        }
        json entries = json::array();
        for (const auto& n : ni.names) {
            const auto words = n.substr(0, n.find(' '));
            json addrs = json::array();
            for (const auto& [name, list] : ni.answered) {
                if (!name_matches(words, name)) continue;
                for (const auto& a : list) {
                    try {
                        auto it = expires.find(parse_ip(a));
                        if (it == expires.end()) continue;
                        addrs.push_back(
                            {{"name", name}, {"address", a}, {"expires_in_s", it->second / 1000}});
                    } catch (const Error&) {
                    }
                }
            }
            entries.push_back({{"entry", n}, {"addresses", addrs}});
        }
        names["entries"] = entries;
        names["elements"] = elements;
        doc["names"] = names;
    }

    // The netdev egress layer: which interfaces it covers (an interface created after restrict
    // is not covered until restrict runs again), and its counters per interface.
    nft::NetdevState nd = nft::read_netdev(h.nfnl.get());
    json chains = json::array(), uncovered = json::array();
    for (const auto& c : nd.chains)
        chains.push_back(
            json{{"chain", c.chain},
                 {"device", c.device},
                 {"counters",
                  {{"allowed", counter_json(c.allowed)}, {"refused", counter_json(c.refused)}}}});
    if (nd.present)
        for (const auto& name : uncovered_interfaces(snap, nd)) uncovered.push_back(name);
    doc["netdev_egress"] =
        json{{"present", nd.present}, {"chains", chains}, {"uncovered", uncovered}};

    doc["foreign"] = foreign_policies(ns, h.nfnl.get());
    // Who could undo or go around the policy from inside (see verify's bypass checks).
    BypassRisks risks = bypass_risks(ns);
    doc["bypass"] =
        json{{"processes", risks.processes},
             {"net_admin", procs_json(risks.net_admin)},
             {"net_raw", procs_json(risks.net_raw)},
             {"net_raw_filtered", nd.present && uncovered.empty()},
             // Never filtered from inside the namespace (no netfilter hook on its path).
             {"af_xdp_filtered", false}};
    return res;
}

}  // namespace nsegress
