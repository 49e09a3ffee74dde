#pragma once
// What the verbs (src/cmd/restrict.cpp, release.cpp, status.cpp, probe_command.cpp) share: the
// sockets opened inside the target, document basics, route and snapshot rendering. Private to
// src/cmd.

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/commands.hpp"
#include "nsegress/conntrack.hpp"
#include "nsegress/deferred_close.hpp"
#include "nsegress/foreign.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/names_proxy.hpp"
#include "nsegress/netns.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/probe.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/routeset.hpp"
#include "nsegress/verify.hpp"

namespace nsegress {

namespace verbs {

using nlohmann::json;

// Sockets and files opened inside the target, used after we are back home.
struct Handles {
    DeferredClose closer;  // first: destroyed last, after the sockets it holds copies of
    NlSock rtnl;
    nft::MnlSocket nfnl;
    nft::MnlSocket ctnl;
    ProbeSockets probe;
    NetSnmp snmp;
};

enum Need : unsigned { need_rtnl = 1, need_nfnl = 2, need_ct = 4, need_probe = 8, need_snmp = 16 };

Handles open_handles(const Netns& ns, unsigned need);
// Once we commit an nftables change, closing our nfnetlink sockets would wait for the kernel to
// free the old objects (deferred_close.hpp): hand their last references to a helper instead.
void close_nfnl_in_background(Handles& h);

// How many routes a report names (status lists them all).
inline constexpr std::size_t kReportedRoutes = 256;
// One line per route (the first `max_routes`), then one per rule.
std::vector<std::string> route_set_lines(const RoutePlan& p, const Snapshot& s,
                                         std::size_t max_routes = SIZE_MAX);
std::vector<IpAddr> local_addresses(const Snapshot& s);
// Non-loopback interfaces without a chain in the netdev table (created after restrict).
std::vector<std::string> uncovered_interfaces(const Snapshot& snap, const nft::NetdevState& nd);
json base_doc(const char* command);
// The one place a command's outcome is decided: the exit status and the document agree.
void finish(CommandResult& res, Exit exit);
// The first sequence number of a policy batch (nfnl.hpp's one source).
std::uint32_t batch_seq();
// Incremental re-restrict: the file, beside the namespace's lock, holding what the last commit
// wrote into the inet table's sets; release forgets it.
std::string state_path(const Netns& ns);
void forget_state(const Netns& ns);
// The installed policy: the kernel's sets, and, when the table has names, the names the names
// proxy serves (its state file; an entry it cannot parse is left out).
Policy installed_policy(const nft::PolicyState& st, const NamesInfo& names);
// Other people's egress policies in the namespace (foreign.hpp).
ForeignPolicies foreign_policies(const Netns& ns, mnl_socket* nfnl);

}  // namespace verbs
}  // namespace nsegress
