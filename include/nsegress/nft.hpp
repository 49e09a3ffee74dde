// The nftables egress policy: compiled into one nfnetlink batch (pure, testable without root),
// committed atomically over a libmnl socket, and read back for `status`.
//
// Table `inet nsegress`:
//   set allow4 { type ipv4_addr; flags interval; }   the normalized IPv4 allow-list
//   set allow6 { type ipv6_addr; flags interval; }   the normalized IPv6 allow-list
//   chain output { type filter hook output priority filter; policy drop;
//     oif "lo" accept
//     ct direction reply accept                  replies to connections initiated from outside
//     ip daddr @allow4 counter accept            allowed destinations (counted)
//     ip6 daddr @allow6 counter accept
//     meta l4proto icmp ct state related accept  ICMP errors about flows conntrack knows
//     meta l4proto ipv6-icmp ct state related accept
//     icmpv6 type {nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert} accept
//                                                only when an IPv6 CIDR is allowed
//     counter reject with icmpx admin-prohibited everything else, refused at once (counted)
//   }
// There is deliberately no `ct state established accept` ahead of the destination check: a
// connection to a forbidden host opened before restrict must stop working after it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"

struct mnl_socket;
struct nlmsghdr;

namespace nsegress::nft {

inline constexpr const char* kTable = "nsegress";  // family inet
inline constexpr const char* kChain = "output";
inline constexpr const char* kSet4 = "allow4";
inline constexpr const char* kSet6 = "allow6";
// Rule comments: how status finds the counted rules again.
inline constexpr const char* kCommentAllow4 = "nsegress: allowed ipv4";
inline constexpr const char* kCommentAllow6 = "nsegress: allowed ipv6";
inline constexpr const char* kCommentDeny = "nsegress: refused";

// One message of a batch, for mapping kernel errors back to what we asked.
struct BatchMessage {
    std::uint32_t seq = 0;
    std::uint16_t type = 0;  // NFT_MSG_* (0 for batch begin/end)
    std::string what;        // "set allow4 elements 1-1024", "rule allowed ipv4", ...
    bool ack = false;        // carries NLM_F_ACK
};

struct Batch {
    std::vector<char> bytes;  // BATCH_BEGIN ... BATCH_END, ready for one sendmsg
    std::vector<BatchMessage> messages;
};

// Ranges per NEWSETELEM message. The element list is one netlink nest, and nla_len is 16 bits:
// a range is two elements of at most 36 bytes (IPv6), so 512 ranges stay under 37 KiB.
inline constexpr std::size_t kElementsPerMessage = 512;

// Replace-or-create the whole table in one transaction: "add table; delete table; add table
// {...}" is committed at BATCH_END, so there is no moment with an empty or missing policy.
Batch compile_policy(const AllowList& allow, std::uint32_t first_seq);
// "add table; delete table": removes the table, and succeeds when it was not there.
Batch compile_delete(std::uint32_t first_seq);

// The same policy in nft syntax (an `nft -f` script doing exactly what the batch does).
std::string render_policy(const AllowList& allow);

struct MnlSocketDeleter {
    void operator()(mnl_socket* s) const;
};
using MnlSocket = std::unique_ptr<mnl_socket, MnlSocketDeleter>;

// NETLINK_NETFILTER, close-on-exec, bound, extended ACKs on. Call inside the target netns.
MnlSocket open_nfnl_socket();

// Sends the batch in one sendmsg and checks one ACK per acked message. Any error throws
// Error(Exit::failed) naming the message the kernel refused and the kernel's own text.
void commit(mnl_socket* sock, const Batch& batch);

struct Counter {
    std::uint64_t packets = 0;
    std::uint64_t bytes = 0;
};

struct PolicyState {
    bool present = false;     // the table exists
    bool complete = false;    // chain, both sets and the counted rules are all there
    AllowList allow;          // read back from the kernel's sets
    Counter allowed;          // allow4 + allow6 rule counters
    Counter refused;          // the final reject rule's counter
    std::size_t rules = 0;
};

PolicyState read_policy(mnl_socket* sock);

// For unit tests: decode set elements (start / interval-end keys) back into ranges.
struct ElementKey {
    IpAddr key;
    bool interval_end = false;
};
std::vector<Range> elements_to_ranges(Family f, std::vector<ElementKey> elements);

// read_policy()'s parsing of one dump reply message, apart from the socket (for tests and
// fuzzing: whoever else can write nftables could have written these bytes). Both return false
// when libnftnl cannot parse the message.
struct RuleSummary {
    std::string comment;  // the rule's comment, "" when none
    Counter counter;      // its counter expression, zero when none
};
// `out` is empty when the rule is not in inet nsegress / output.
bool parse_rule_message(const nlmsghdr* nlh, std::optional<RuleSummary>& out);
// Appends the keys of one NEWSETELEM message of a set of family `f` (keys of another length
// are skipped).
bool parse_setelem_message(const nlmsghdr* nlh, Family f, std::vector<ElementKey>& keys);

}  // namespace nsegress::nft
