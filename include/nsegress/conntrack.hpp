// Dropping the conntrack entries of flows the new policy forbids.
//
// The policy alone already stops such a flow (it never accepts `ct state established` before
// the destination check), but a stale entry would still be reported as an open connection and
// would let a later rule change resurrect it. Only flows *initiated from inside* (original
// source is one of the namespace's addresses) towards a destination outside the allow-list are
// deleted; inbound connections and loopback flows are left alone.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "nsegress/cidr.hpp"

struct mnl_socket;
struct nlmsghdr;

namespace nsegress {

struct FlowTuple {
    IpAddr src, dst;
};

// Pure decision, unit-tested.
bool is_forbidden_flow(const FlowTuple& orig, const AllowList& allow,
                       const std::vector<IpAddr>& local_addresses);

// The original tuple of one ctnetlink dump message (IPCTNL_MSG_CT_NEW), or nothing when it has
// no IPv4/IPv6 source and destination. What drop_forbidden_flows() reads; for tests and fuzzing.
std::optional<FlowTuple> parse_conntrack_message(const nlmsghdr* nlh);

// Dumps the namespace's conntrack table over ctnetlink and deletes the forbidden flows.
// Returns how many were deleted. A namespace without conntrack state has nothing to delete.
std::size_t drop_forbidden_flows(mnl_socket* sock, const AllowList& allow,
                                 const std::vector<IpAddr>& local_addresses);

}  // namespace nsegress
