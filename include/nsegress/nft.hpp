// The nftables egress policy: compiled into one nfnetlink batch (pure, testable without root),
// committed atomically over a libmnl socket, and read back for `status`.
//
// Table `inet nsegress`:
//   set allow4 { type ipv4_addr; flags interval; }   the normalized IPv4 allow-list
//   set allow6 { type ipv6_addr; flags interval; }   the normalized IPv6 allow-list
//   set nd6    { type ipv6_addr; flags interval; }   where neighbour discovery may go: fe80::/10,
//                                                    ff02::/16 and the on-link IPv6 prefixes
//   set allowp4 { type ipv4_addr . inet_proto . inet_service; flags interval; }
//   set allowp6 { type ipv6_addr . inet_proto . inet_service; flags interval; }
//                                                    port-scoped entries (policy.hpp), disjoint
//                                                    elements (a concatenated interval set:
//                                                    pipapo, Linux >= 5.6)
//   set icmp4 { type ipv4_addr; flags interval; }    icmp / icmpv6 echo destinations
//   set icmp6 { type ipv6_addr; flags interval; }
//   The four are always there (empty when no entry has ports): one table shape to replace in
//   place. CIDR-only entries stay in allow4/allow6, as before: a large CIDR-only list keeps its
//   sets and speed.
//   chain inbound { type filter hook prerouting priority mangle; policy accept;
//     iif != "lo" ct state new tcp flags syn / syn,ack  ct label set 127  (counted)
//     iif != "lo" ct state new meta l4proto != tcp     ct label set 127  (counted)
//   }                                          marks connections that really came from outside
//   chain output { type filter hook output priority filter; policy drop;
//     ct state invalid,new,untracked fib saddr type != local  counter drop
//                                                a source that is not ours: forged (see below)
//     ip option lsrr exists counter drop         source routing: an allowed first hop would
//     ip option ssrr exists counter drop         forward the packet anywhere
//     exthdr rt exists counter drop              (IPv6: any routing header)
//     oif "lo" fib saddr type != local counter drop
//                                                forged whatever its state (see below)
//     oif "lo" counter accept                    the namespace talking to itself
//     ip daddr @allow4 counter accept            allowed destinations (counted)
//     ip6 daddr @allow6 counter accept
//     ip daddr . meta l4proto . th dport @allowp4 counter accept
//     ip6 daddr . meta l4proto . th dport @allowp6 counter accept
//                                                port-scoped entries ("198.51.100.0/24 tcp/443")
//     icmp type echo-request ip daddr @icmp4 counter accept
//     icmpv6 type echo-request ip6 daddr @icmp6 counter accept
//                                                "203.0.113.7 icmp": echo requests only
//     ct direction reply ct label 127 counter accept
//                                                replies, only to connections marked inbound
//     meta l4proto { icmp, ipv6-icmp } ct state related ct label 127 counter accept
//                                                ICMP errors about such connections
//     icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }
//         ip6 daddr @nd6 counter accept          only when an IPv6 CIDR is allowed
//     ct state new limit rate 50/second burst 100 packets counter
//         log prefix "nsegress refused" group 28275
//                                                the deny log (see below)
//     counter reject with icmpx admin-prohibited everything else, refused at once (counted)
//   }
//
// Who may be answered. A reply is only legitimate for a connection whose first packet arrived
// on a real interface: conntrack's direction alone can be forged from inside, since a packet
// with a spoofed source sent to the namespace's own address travels over lo and makes the
// spoofed peer the "originator" (raw sockets with CAP_NET_RAW; IPV6_FREEBIND with no
// capability at all; a TCP simultaneous open against a full accept queue). So the inbound
// chain labels a connection (ct label 127) when its first packet comes in on a non-loopback
// interface, and only labelled connections get their replies and related ICMP errors through.
// For TCP the first packet must be a SYN: a connection picked up mid-stream (conntrack's
// nf_conntrack_tcp_loose, after restrict deleted its entry or when conntrack was not yet active
// in the namespace) is never labelled, whoever speaks first, so a connection opened before
// restrict to a peer outside the allow-list cannot continue as a "reply". Connections that
// peers outside the allow-list opened before the first restrict are cut for the same reason
// (nothing can tell them from forged ones); those opened after it survive re-restrict and
// audit -> enforce, since the label lives in the conntrack entry. Independently of that, a
// packet whose source address is not one of the namespace's own (fib saddr type local) is
// dropped before anything else looks at it: nothing legitimate leaves with another host's
// address, and spoofed sources are also how a workload would reflect data off an allowed host
// to a forbidden one. Only packets that start or lack a conntrack entry are checked (new,
// invalid, untracked): an established entry's packets carry the addresses of its tuple, whose
// non-local source can only be sent to the namespace itself -- which is why a packet leaving
// through lo is checked in every state: a genuine packet from another host never passes this
// namespace's output hook, so a non-local source there is a raw socket's forgery, e.g. a spoofed
// "answer" from a resolver's address that matches the names proxy's established upstream flow
// (the reply of a redirected flow leaves the proxy with 127.0.0.1 before NAT rewrites it at
// postrouting; Docker's 127.0.0.11 is local too). The unspecified source (::) is
// let through for duplicate address detection only: neighbour solicitations to @nd6.
// A ct label never collides with the ct mark other software (meshes, kube-proxy) may use.
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
// Optional second nft layer (restrict --netdev-egress), table `netdev nsegress`, in the SAME
// batch as the inet table (one transaction, both families):
//   set allow4, set allow6        copies of the allow-list (a set belongs to one table)
//   set nd6                       where IPv6 neighbour discovery may go: fe80::/10, ff02::/16
//                                 and the namespace's own on-link IPv6 prefixes
//   set allowp4, allowp6, icmp4, icmp6   copies of the port-scoped and echo sets, keyed on the
//                                 frame's raw bytes: the transport header at a fixed offset
//                                 (IPv4 with options and IPv6 with a first extension header are
//                                 dropped before, so it is at ip+20 / ip+40)
//   chain egress_<ifname> { type filter hook egress device "<ifname>" priority filter;
//                           policy drop; ... }   one per non-loopback interface (Linux 5.16+)
// The netdev egress hook runs in dev_queue_xmit for every frame a device sends, including
// frames written by AF_PACKET sockets, which never pass the inet output hook. Its rules read
// the frame itself: the EtherType at link-layer offset 12 (skb->protocol, i.e. `meta protocol`,
// is chosen by a packet socket's sender, so it is never trusted) and the addresses at fixed
// offsets behind it; on devices without an Ethernet header the IP version nibble instead.
// A chain is bound to an interface that exists at restrict time: an interface created later
// is not covered until restrict runs again (status lists such interfaces as uncovered).
//
// Commit and the ruleset generation id: commit() reads the generation with NFT_MSG_GETGEN just
// before sending and puts it in BATCH_BEGIN (NFNL_BATCH_GENID). If any other writer committed
// in between, the kernel refuses the whole batch with ERESTART before looking at it, and commit
// sends it again with the new generation, at most kCommitAttempts times. The policy batch
// depends on what it replaces (read_installed): it is built after the generation is read and
// rebuilt for every retry, so it is never applied on top of a ruleset that changed after we
// last looked.
// Writers of other tables are never touched: only tables named nsegress are in our batches.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/names.hpp"
#include "nsegress/nfnl.hpp"
#include "nsegress/policy.hpp"

struct mnl_socket;
struct nlmsghdr;

namespace nsegress::nft {

inline constexpr const char* kTable = "nsegress";  // family inet
inline constexpr const char* kChain = "output";
inline constexpr const char* kChainInbound = "inbound";  // prerouting: marks inbound connections
inline constexpr std::int32_t kInboundPriority = -150;   // NF_IP_PRI_MANGLE: after conntrack (-200)
// The conntrack label of connections that came from outside (labels are 128 bits per entry).
inline constexpr unsigned kInboundLabel = 127;
inline constexpr const char* kSet4 = "allow4";
inline constexpr const char* kSet6 = "allow6";
inline constexpr const char* kSetPorts4 = "allowp4";  // address . protocol . port
inline constexpr const char* kSetPorts6 = "allowp6";
inline constexpr const char* kSetEcho4 = "icmp4";  // echo-request destinations
inline constexpr const char* kSetEcho6 = "icmp6";
// Names (names.hpp), only in a policy with a name entry:
//   set names4 { type ipv4_addr . inet_proto . inet_service; flags interval,timeout; }
//   set names6 { type ipv6_addr . inet_proto . inet_service; flags interval,timeout; }
//                                     addresses the names proxy learnt from answers, each
//                                     with the slots (names.hpp) of the names they answer
//   chain dns { type nat hook output priority -101; }   ahead of Docker's nat (-100)
//     meta mark != 0x6e730035 udp dport 53 counter redirect to :28275
//     meta mark != 0x6e730035 tcp dport 53 counter redirect to :28275
//   in chain output, after "oif lo accept":
//     ip daddr 127.0.0.1 ct status dnat th dport 28275 counter accept    what chain dns
//     ip6 daddr ::1 ct status dnat th dport 28275 counter accept         redirected (the hook's
//                                     oif is still the first route's device, never lo)
//     meta mark 0x6e730035 udp dport 53 counter accept   the names proxy's own queries
//     meta mark 0x6e730035 tcp dport 53 counter accept
//   and after the port-scoped rules:
//     ip daddr . meta l4proto . th dport @names4 counter ct label set 126 accept
//     ip6 daddr . meta l4proto . th dport @names6 counter ct label set 126 accept
//     ct direction original ct state established ct label 126 counter accept
//                                     a connection opened to a name's address outlives the
//                                     address's expiry; only its original direction, only
//                                     once established (never on a reply-direction test)
inline constexpr const char* kSetNames4 = "names4";
inline constexpr const char* kSetNames6 = "names6";
inline constexpr const char* kChainDns = "dns";
inline constexpr std::int32_t kDnsPriority = -101;  // NF_IP_PRI_NAT_DST - 1
inline constexpr const char* kCommentNames4 = "nsegress: allowed ipv4 names";
inline constexpr const char* kCommentNames6 = "nsegress: allowed ipv6 names";
inline constexpr const char* kCommentNamed = "nsegress: named connections";
inline constexpr const char* kCommentResolver = "nsegress: names proxy queries";
inline constexpr const char* kCommentDnsRedirect = "nsegress: dns to the names proxy";
inline constexpr const char* kCommentRedirected = "nsegress: redirected dns";
// Rule comments: how status finds the counted rules again.
inline constexpr const char* kCommentAllow4 = "nsegress: allowed ipv4";
inline constexpr const char* kCommentAllow6 = "nsegress: allowed ipv6";
inline constexpr const char* kCommentPorts4 = "nsegress: allowed ipv4 ports";
inline constexpr const char* kCommentPorts6 = "nsegress: allowed ipv6 ports";
inline constexpr const char* kCommentEcho = "nsegress: allowed echo";
inline constexpr const char* kCommentDeny = "nsegress: refused";
inline constexpr const char* kCommentAudit = "nsegress: audited";  // audit mode's final rule
inline constexpr const char* kCommentLog = "nsegress: deny log";   // the rate-limited log rule
// Every other path a packet can be accepted or dropped by has a counted, tagged rule too.
inline constexpr const char* kCommentLoopback = "nsegress: loopback";
inline constexpr const char* kCommentReplies = "nsegress: replies";  // to connections from outside
inline constexpr const char* kCommentRelated = "nsegress: related";  // ICMP errors about them
inline constexpr const char* kCommentNd = "nsegress: neighbour discovery";
inline constexpr const char* kCommentDad = "nsegress: duplicate address detection";
inline constexpr const char* kCommentForged = "nsegress: forged source";
inline constexpr const char* kCommentSourceRoute = "nsegress: ip options or routing header";
inline constexpr const char* kCommentInbound = "nsegress: inbound";  // the labelling rules

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

// ---- netdev egress layer (see the top of this file) ----
inline constexpr const char* kNetdevChainPrefix = "egress_";  // + interface name
inline constexpr const char* kSetNd6 = "nd6";                 // in both tables
inline constexpr const char* kSetOwn4 = "own4";  // netdev table: the namespace's own addresses
inline constexpr const char* kSetOwn6 = "own6";
inline constexpr const char* kSetIp6Next =
    "ip6next";  // netdev table: what may follow an IPv6 header

struct NetdevDevice {
    std::string name;
    bool ethernet = true;  // has a 14-byte Ethernet header (ARPHRD_ETHER); else raw IP
};

struct NetdevPlan {
    bool install = false;           // add table netdev nsegress with one chain per device
    bool replace_existing = false;  // a netdev nsegress table exists: delete it in the batch
    std::vector<NetdevDevice> devices;
    AllowList neighbour6;  // destinations neighbour discovery may go to (set nd6, both
                           // tables; empty: link-local and link multicast only)
    AllowList own;         // the namespace's own addresses (sets own4, own6 of the netdev
                           // table: frames with another source are dropped there)
};

// What an earlier run left in the namespace, as far as replacing it goes: read with one dump of
// the chains and one of the sets per family (no elements, no rules), just before compiling.
//   reusable  the table holds our base chains and sets with exactly our hooks and key types:
//             the new policy is written into them (rules flushed and re-added, set elements
//             flushed and re-added; the port sets allowp4/allowp6 are deleted and created anew
//             after the rules that use them are flushed: flushing a pipapo set of 2*10^4
//             elements and adding them back costs seconds). The base chains stay registered
//             throughout, so the switch is one generation flip for the packets: atomic.
//   absent / foreign  "add table; delete table; add table {...}". Deleting a base chain leaves
//             it registered, with no rules and its drop policy, for a moment of the commit
//             (after the generation flip, before its hook is unregistered): an allowed packet
//             can be refused then (test_atomic_traffic.sh caught it). Harmless when there was
//             no policy, and fail-closed otherwise.
enum class Found { absent, reusable, foreign };

// Incremental re-restrict. The contents of the inet table's sets, as one commit wrote them, and
// a 128-bit digest of them. Every policy batch writes a stamp into its final rule's userdata (a
// record of type kStampUdataType beside the comment): the digest and the ruleset generation its
// own commit creates (the genid in BATCH_BEGIN + 1: a commit is accepted only at that genid and
// bumps it by one). A later run that reads the same generation back knows that nothing in the
// namespace's nftables was committed since, so the sets hold exactly what the digest describes;
// the contents themselves come from a state file the committing run left (src/cmd/restrict.cpp),
// trusted only when its digest is the stamp's. Then only the difference is sent. Any other commit
// in between (another tool, a hand edit, the set flushed) moves the generation: the sets are then
// flushed and written whole, as without a stamp. Our sets are static (no timeouts, no datapath
// updates), so nothing changes them without a commit.
struct SetContents {
    std::vector<Range> allow4, allow6, nd6, echo4, echo6;
    std::vector<PortRange> ports4, ports6;
    bool operator==(const SetContents&) const = default;
};
struct Digest {
    std::uint64_t hi = 0, lo = 0;
    bool operator==(const Digest&) const = default;
    std::string hex() const;
};
struct Stamp {
    std::uint32_t genid = 0;  // the generation the stamping commit created
    Digest digest;
};
inline constexpr std::uint8_t kStampUdataType = 0xa7;  // a rule udata type nft ignores
SetContents set_contents(const Policy& policy, const AllowList& nd6);
Digest digest_of(const SetContents& c);
Digest digest_of(const Policy& policy, const AllowList& nd6);  // == digest_of(set_contents(...))
// The stamp as rule userdata bytes and back (nullopt: not a stamp of ours).
std::vector<std::uint8_t> encode_stamp(const Stamp& s);
std::optional<Stamp> decode_stamp(const std::uint8_t* p, std::size_t len);
// The contents as the state file holds them (host byte order: the file never leaves the host),
// and back; nullopt when the bytes are not a whole, well-formed record.
std::string serialize_contents(const SetContents& c);
std::string serialize_contents(const Policy& policy, const AllowList& nd6);
std::optional<SetContents> parse_contents(std::string_view bytes);
// The same from a source read piecewise (a file: never held whole beside what it describes).
// `read(buf, n)` fills exactly n bytes or returns false at the end; `size` is the total.
std::optional<SetContents> parse_contents(std::size_t size,
                                          const std::function<bool(void*, std::size_t)>& read);

struct Installed {
    Found inet = Found::absent;
    bool names = false;  // inet reusable, with the names sets and chain dns of a name policy
    Found netdev = Found::absent;
    std::vector<std::string> netdev_devices;  // netdev reusable: the devices of its chains
    std::optional<Stamp> stamp;               // inet reusable: the stamp of its final rule, if any
    // Set by the caller: the generation the batch will be committed against (0: write no stamp),
    // and, when the stamp proves them (stamp->genid == genid), what the inet sets hold now: the
    // batch then sends only the difference.
    std::uint32_t genid = 0;
    std::optional<SetContents> sets;
};
Installed read_installed(mnl_socket* sock);

// Replace-or-create the whole policy in one transaction, committed at BATCH_END: there is no
// moment with an empty or missing policy. How it replaces depends on `installed` (above); the
// default is the delete-and-create form, always correct. Mode::audit: accept (counted and
// logged) instead of rejecting; see the top of this file. The netdev table is replaced (or
// created) in the same transaction when netdev.install, otherwise deleted when
// netdev.replace_existing.
Batch compile_policy(const Policy& policy, std::uint32_t first_seq, Mode mode = Mode::enforce,
                     const NetdevPlan& netdev = {}, const Installed& installed = {});
// CIDR-only (today's allow-list, no port-scoped entries).
Batch compile_policy(const AllowList& allow, std::uint32_t first_seq, Mode mode = Mode::enforce,
                     const NetdevPlan& netdev = {}, const Installed& installed = {});
// One refresh of a name's addresses (the names proxy, before it relays an answer): for every
// address and slot, "add element; delete element; add element with timeout" in one
// transaction, so that an element that exists gets the new timeout (kernels before 6.x cannot
// update an element's timeout in place) and none is ever missing for a packet.
struct NameElement {
    IpAddr addr;
    NameSlot slot;
    std::uint32_t timeout_s = 0;
};
Batch compile_name_refresh(const std::vector<NameElement>& elements, std::uint32_t first_seq);
// The elements of names4 and names6 with the seconds until they expire (status).
struct NameElementState {
    IpAddr addr;
    NameSlot slot;
    std::uint64_t expires_ms = 0;
};
std::vector<NameElementState> read_name_elements(mnl_socket* sock);
// One element exactly as the kernel holds it (its expiry), nothing when the set has no element
// spanning exactly this slot. No commit: a lookup the names proxy makes before deciding whether
// an answer needs one.
std::optional<NameElementState> read_name_element(mnl_socket* sock, const NameElement& element);

// "add table; delete table": removes the table, and succeeds when it was not there; also the
// netdev table when `netdev_present`.
Batch compile_delete(std::uint32_t first_seq, bool netdev_present = false);
// Where IPv6 neighbour discovery may go (set nd6): the plan's, or link-local and link multicast.
AllowList neighbour_destinations(const NetdevPlan& netdev);
// The netdev part in nft syntax, appended to render_policy() for --dry-run.
std::string render_netdev(const Policy& policy, const NetdevPlan& netdev);
std::string render_netdev(const AllowList& allow, const NetdevPlan& netdev);

// The same policy in nft syntax (an `nft -f` script doing exactly what the batch does).
std::string render_policy(const Policy& policy, Mode mode = Mode::enforce,
                          const NetdevPlan& netdev = {});
std::string render_policy(const AllowList& allow, Mode mode = Mode::enforce,
                          const NetdevPlan& netdev = {});

// The nfnetlink socket (nfnl.hpp).
using MnlSocket = nfnl::Socket;

// nfnl::open(): NETLINK_NETFILTER, close-on-exec, bound, extended ACKs on. Call inside the
// target netns.
MnlSocket open_nfnl_socket();

// Sends the batch in one sendmsg and checks one ACK per acked message. Any error throws
// Error(Exit::failed) naming the message the kernel refused and the kernel's own text.
// BATCH_BEGIN carries the ruleset generation read just before sending; on ERESTART (another
// writer committed in between) the batch is sent again, at most kCommitAttempts times in all.
// Returns the number of attempts it took (1 when nobody interfered).
inline constexpr int kCommitAttempts = 10;
int commit(mnl_socket* sock, const Batch& batch);
// The same for a batch that depends on what is installed: `build` is called after the
// generation is read, on every attempt, so whatever it reads (read_installed) belongs to the
// generation the kernel checks; if anything changed meanwhile, the batch is rebuilt.
int commit(mnl_socket* sock, const std::function<const Batch&()>& build);
// The same, and `build` is told the generation the batch will be committed against.
int commit(mnl_socket* sock, const std::function<const Batch&(std::uint32_t genid)>& build);

// The current ruleset generation id (NFT_MSG_GETGEN).
std::uint32_t read_genid(mnl_socket* sock);

struct Counter {
    std::uint64_t packets = 0;
    std::uint64_t bytes = 0;
};

struct PolicyState {
    bool present = false;          // the table exists
    bool complete = false;         // chain, both sets and the counted rules are all there
    Mode mode = Mode::enforce;     // audit when the final rule is the audit accept
    AllowList allow;               // read back from the kernel's sets (CIDR-only entries)
    std::vector<PortRange> ports;  // elements of allowp4 / allowp6 (none on an older table)
    AllowList echo;                // icmp4 / icmp6
    Policy policy() const { return Policy(allow, ports, echo); }  // the whole policy, normalized
    Counter allowed;        // every allowed-destination rule's counter (all of those below)
    Counter allowed_ports;  // allowp4 + allowp6 rule counters
    Counter allowed_echo;   // icmp4 + icmp6 rule counters
    Counter refused;        // the final rule's counter (in audit mode: would have been refused)
    bool deny_log = false;  // the rate-limited log rule is there (policies before it had none)
    Counter logged;         // its counter: packets handed to the nflog group
    // The other accept and drop paths (zero on a table of an older nsegress, which had none).
    Counter loopback;        // oif lo
    Counter replies;         // replies to connections from outside, to peers outside the allow-list
    Counter related;         // ICMP errors about such connections
    Counter neighbour;       // neighbour discovery (and DAD) to @nd6
    Counter forged;          // dropped: a source address that is not the namespace's
    Counter source_route;    // dropped: IPv4 LSRR/SSRR, IPv6 routing header
    Counter inbound;         // connections labelled as coming from outside
    bool names = false;      // the names sets and chain dns are there (a policy with names)
    Counter allowed_names;   // names4 + names6 rule counters (new connections by name)
    Counter named;           // later packets of connections opened by name
    Counter dns_redirected;  // queries sent to the names proxy
    Counter resolver;        // the names proxy's own queries to resolvers
    bool reply_marking = false;  // the inbound chain and labelled reply rule are there
    std::size_t rules = 0;
};

PolicyState read_policy(mnl_socket* sock);

// Whether `table netdev nsegress` exists.
bool netdev_table_present(mnl_socket* sock);

struct NetdevChainState {
    std::string chain;
    std::string device;  // the interface its egress hook is bound to
    Counter allowed;     // allow4 + allow6 (+ port-scoped and echo) rule counters
    Counter refused;     // every drop rule's counter: forged source, options or extension
                         // headers, and the final drop
};
struct NetdevState {
    bool present = false;
    std::vector<NetdevChainState> chains;
};
NetdevState read_netdev(mnl_socket* sock);

// Every netdev-family base chain on the egress hook, whoever made it (verify judges any
// configuration): table, chain, and each device it is bound to.
struct EgressHook {
    std::string table;
    std::string chain;
    std::string device;
};
std::vector<EgressHook> list_egress_hooks(mnl_socket* sock);

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
    std::string chain;    // output or inbound
    std::string comment;  // the rule's comment, "" when none
    Counter counter;      // its counter expression, zero when none
};
// `out` is empty when the rule is not in inet nsegress / output or inbound.
bool parse_rule_message(const nlmsghdr* nlh, std::optional<RuleSummary>& out);
// Appends the keys of one NEWSETELEM message of a set of family `f` (keys of another length
// are skipped).
bool parse_setelem_message(const nlmsghdr* nlh, Family f, std::vector<ElementKey>& keys);
// The same for allowp4 / allowp6: address . protocol . port keys with their interval ends
// (elements of another shape are skipped).
bool parse_port_setelem_message(const nlmsghdr* nlh, Family f, std::vector<PortRange>& out);
// The key of a port-scoped element as the kernel stores it (each field padded to 4 bytes).
std::vector<std::uint8_t> port_key(const IpAddr& a, IpProto p, std::uint16_t port);

}  // namespace nsegress::nft
