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
//     ct state new limit rate 50/second burst 100 packets counter
//         log prefix "nsegress refused" group 28275
//                                                the deny log (see below)
//     counter reject with icmpx admin-prohibited everything else, refused at once (counted)
//   }
// There is deliberately no `ct state established accept` ahead of the destination check: a
// connection to a forbidden host opened before restrict must stop working after it.
//
// The deny log: what is about to be refused is first handed to nfnetlink_log group 28275 of the
// namespace (nflog groups are per network namespace; nsegress watch binds it there). It is a rule
// of its own, rate-limited, ahead of the verdict: packets over the limit are still refused, they
// are just not logged, so a flood costs the host at most 50 log messages a second (plus a burst of
// 100). Only the first packet of a flow is logged (ct state new): in enforce mode every attempt
// is new (a refused packet never confirms its conntrack entry), so retransmissions and repeated
// datagrams still show; in audit mode an established flow is logged once, not per packet. Packets
// conntrack does not track (invalid, untracked: e.g. neighbour discovery, MLD) are not logged.
// With no listener bound to the group the log rule costs a lookup and nothing else.
//
// Audit mode (restrict --audit): the same table and sets, chain policy accept, the log prefix
// "nsegress audit", and the final rule `counter accept` (comment "nsegress: audited") instead of
// the reject: everything passes, and what enforce mode would refuse is counted and logged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"

struct mnl_socket;

namespace nsegress::nft {

inline constexpr const char* kTable = "nsegress";  // family inet
inline constexpr const char* kChain = "output";
inline constexpr const char* kSet4 = "allow4";
inline constexpr const char* kSet6 = "allow6";
// Rule comments: how status finds the counted rules again.
inline constexpr const char* kCommentAllow4 = "nsegress: allowed ipv4";
inline constexpr const char* kCommentAllow6 = "nsegress: allowed ipv6";
inline constexpr const char* kCommentDeny = "nsegress: refused";
inline constexpr const char* kCommentAudit = "nsegress: audited";   // audit mode's final rule
inline constexpr const char* kCommentLog = "nsegress: deny log";     // the rate-limited log rule

// The deny log. 28275 is also the route set's table number: one number to remember. nflog
// groups are 16 bits and per network namespace, so every container can use the same one.
inline constexpr std::uint16_t kNflogGroup = 28275;
inline constexpr std::uint64_t kLogRatePerSecond = 50;
inline constexpr std::uint32_t kLogBurst = 100;
// The log prefix tells a listener which mode refused (or would have refused) the packet.
inline constexpr const char* kLogPrefixEnforce = "nsegress refused";
inline constexpr const char* kLogPrefixAudit = "nsegress audit";

enum class Mode { enforce, audit };
const char* mode_name(Mode m);  // "enforce" / "audit"

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
// Mode::audit: accept (counted and logged) instead of rejecting; see the top of this file.
Batch compile_policy(const AllowList& allow, std::uint32_t first_seq, Mode mode = Mode::enforce);
// "add table; delete table": removes the table, and succeeds when it was not there.
Batch compile_delete(std::uint32_t first_seq);

// The same policy in nft syntax (an `nft -f` script doing exactly what the batch does).
std::string render_policy(const AllowList& allow, Mode mode = Mode::enforce);

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
    Mode mode = Mode::enforce;  // audit when the final rule is the audit accept
    AllowList allow;          // read back from the kernel's sets
    Counter allowed;          // allow4 + allow6 rule counters
    Counter refused;          // the final rule's counter (in audit mode: would have been refused)
    bool deny_log = false;    // the rate-limited log rule is there (policies before it had none)
    Counter logged;           // its counter: packets handed to the nflog group
    std::size_t rules = 0;
};

PolicyState read_policy(mnl_socket* sock);

// For unit tests: decode set elements (start / interval-end keys) back into ranges.
struct ElementKey {
    IpAddr key;
    bool interval_end = false;
};
std::vector<Range> elements_to_ranges(Family f, std::vector<ElementKey> elements);

}  // namespace nsegress::nft
