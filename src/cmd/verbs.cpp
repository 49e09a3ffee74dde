#include "verbs.hpp"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>
#include <libmnl/libmnl.h>

#include "nsegress/foreign.hpp"
#include "nsegress/nfnl.hpp"

namespace nsegress {
namespace verbs {

Handles open_handles(const Netns& ns, unsigned need) {
    Handles h;
    ns.run_inside([&] {
        if (need & need_rtnl) h.rtnl = open_rtnl_socket();
        if (need & need_nfnl) h.nfnl = nft::open_nfnl_socket();
        if (need & need_ct) h.ctnl = nft::open_nfnl_socket();
        if (need & need_probe) h.probe = open_probe_sockets();
        if (need & need_snmp) h.snmp = NetSnmp::open_here();
    });
    return h;
}

void close_nfnl_in_background(Handles& h) {
    h.closer = DeferredClose({h.nfnl ? mnl_socket_get_fd(h.nfnl.get()) : -1,
                              h.ctnl ? mnl_socket_get_fd(h.ctnl.get()) : -1});
}

// The first sequence number of a policy batch, from the process's one source (nfnl.hpp); a batch
// of 10^5 ranges is a few hundred messages.
std::uint32_t batch_seq() { return nfnl::next_seq(1u << 20); }

std::vector<std::string> route_set_lines(const RoutePlan& p, const Snapshot& s,
                                         std::size_t max_routes) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < p.routes.size() && i < max_routes; ++i)
        out.push_back(
            fmt::format("{} ({})", format_route(p.routes[i], s), family_name(p.routes[i].family)));
    for (const auto& r : p.rules)
        out.push_back(fmt::format("rule {} ({})", format_rule(r), family_name(r.family)));
    return out;
}

std::vector<IpAddr> local_addresses(const Snapshot& s) {
    std::vector<IpAddr> out;
    for (const auto& a : s.addresses) out.push_back(a.addr);
    return out;
}

std::vector<std::string> uncovered_interfaces(const Snapshot& snap, const nft::NetdevState& nd) {
    std::vector<std::string> out;
    for (const auto& l : snap.links) {
        if (l.loopback) continue;
        if (std::none_of(nd.chains.begin(), nd.chains.end(),
                         [&](const nft::NetdevChainState& c) { return c.device == l.name; }))
            out.push_back(l.name);
    }
    return out;
}

json base_doc(const char* command) {
    return json{{"command", command}, {"ok", true}, {"exit_code", 0}, {"error", nullptr}};
}

void finish(CommandResult& res, Exit exit) {
    res.exit = exit;
    res.doc["ok"] = exit == Exit::ok;
    res.doc["exit_code"] = static_cast<int>(exit);
}

Policy installed_policy(const nft::PolicyState& st, const NamesInfo& names) {
    Policy p = st.policy();
    if (st.names) {
        std::vector<AllowEntry> entries;
        for (const auto& n : names.names) {
            try {
                entries.push_back(parse_allow_entry(n));
            } catch (const Error&) {
            }
        }
        p.set_names(std::move(entries));
    }
    return p;
}

ForeignPolicies foreign_policies(const Netns& ns, mnl_socket* nfnl) {
    ForeignPolicies f;
    ns.run_inside([&] { f.legacy_iptables = legacy_iptables_tables(); });
    f.chains = foreign_output_hooks(nfnl);
    return f;
}

// Incremental re-restrict (nft.hpp, SetContents): what the last commit wrote into the inet
// table's sets, kept beside the namespace's lock. Trusted only through the table's stamp.
std::string state_path(const Netns& ns) {
    return fmt::format("/run/nsegress/netns-{}-{}.sets", static_cast<unsigned long>(ns.id().dev),
                       static_cast<unsigned long>(ns.id().ino));
}

void forget_state(const Netns& ns) { ::unlink(state_path(ns).c_str()); }

}  // namespace verbs

using namespace verbs;

TargetInfo target_info(const Netns& ns, const TargetSpec& spec) {
    return TargetInfo{ns.label(), spec.pid, spec.netns_path, spec.container,
                      static_cast<std::uint64_t>(ns.id().ino)};
}

nlohmann::json error_document(const std::string& command, const Error& e) {
    CommandResult res{base_doc(command.c_str())};
    finish(res, e.exit_code());
    res.doc["error"] = e.what();
    return res.doc;
}

}  // namespace nsegress
