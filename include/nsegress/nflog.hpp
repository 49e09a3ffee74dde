// The deny log, read through nfnetlink_log (NFLOG) from inside the target namespace.
//
// The policy's log rule (nft.hpp) hands the first packet of each refused (or, in audit mode,
// would-be-refused) flow to nflog group kNflogGroup of the namespace. A NETLINK_NETFILTER socket
// opened inside that namespace binds the group and receives one NFULNL_MSG_PACKET per logged
// packet, carrying the first bytes of the packet (from the network header on), the log prefix
// (which says the mode), the sending socket's uid/gid (the kernel adds NFULA_UID/NFULA_GID on
// its own whenever the packet belongs to a socket with an open file; there is no flag for it;
// the ids are mapped into the user namespace of the *listening* socket, i.e. as the host sees
// them), and a per-group sequence number whose gaps count what a socket overrun (ENOBUFS) lost.
//
// Layers, as elsewhere: building the config request and parsing what the kernel sends are pure
// functions over bytes (unit-tested and fuzzed: the input comes from the kernel, but a parser of
// packet bytes must never trust lengths); the socket is a thin RAII wrapper.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/nft.hpp"

namespace nsegress::nflog {

// Bytes of each packet copied to us: enough for an IPv6 header, a few extension headers and the
// TCP/UDP ports or ICMP type. Nothing of the payload proper is ever needed (or wanted).
inline constexpr std::uint32_t kCopyRange = 128;

// ---- Packet headers ---------------------------------------------------------------------------

// What the first bytes of a logged packet say. Everything past the IP header is optional: the
// copy may be truncated, a fragment has no transport header, an unknown protocol has no ports.
struct PacketInfo {
    Family family = Family::v4;
    IpAddr src, dst;
    std::uint8_t protocol = 0;  // IPPROTO_* of the transport header (after IPv6 ext headers)
    std::optional<std::uint16_t> sport, dport;         // TCP, UDP, UDP-Lite, SCTP, DCCP
    std::optional<std::uint8_t> icmp_type, icmp_code;  // ICMP / ICMPv6
    bool fragment = false;                             // a non-first fragment: no transport header
    bool truncated = false;                            // the copy ended before the transport fields
};

// Parses an IPv4 or IPv6 packet starting at its network header. nullopt when the bytes are not
// a plausible IP packet (too short for the IP header, wrong version, IHL < 5, ...). Never reads
// past data.size(); any input is safe.
std::optional<PacketInfo> parse_ip_packet(std::span<const std::uint8_t> data);

// "tcp", "udp", "icmp", "icmpv6", "sctp", ... or "proto-N".
std::string protocol_name(std::uint8_t protocol);
// "echo-request", "dest-unreachable", ... or "type-N".
std::string icmp_type_name(Family f, std::uint8_t type);

// ---- Log messages -----------------------------------------------------------------------------

struct LogEvent {
    std::uint16_t group = 0;
    std::uint8_t hook = 0;                  // NF_INET_LOCAL_OUT for the policy's rule
    std::string prefix;                     // "nsegress refused" / "nsegress audit" / other
    std::optional<std::uint32_t> uid, gid;  // of the sending socket, as the host sees it
    std::optional<std::uint32_t> seq;       // per-group sequence number (NFULNL_CFG_F_SEQ)
    std::optional<std::uint32_t> outdev;    // ifindex the packet was routed to
    std::optional<PacketInfo> packet;       // nullopt: no payload, or not a parsable IP packet
    std::size_t payload_len = 0;            // bytes copied
};

// Which mode the log prefix names (nullopt: not one of ours, e.g. someone else's rule).
std::optional<nft::Mode> mode_of_prefix(const std::string& prefix);

// One item of a receive buffer: a packet, an error/ACK answer to a config request, or
// something else (skipped, but counted, so garbage is visible in tests).
struct Item {
    enum Kind { packet, ack, error, other, malformed } kind = other;
    LogEvent event;         // kind == packet
    std::uint32_t seq = 0;  // netlink sequence number (ack/error)
    int error_code = 0;     // kind == error: positive errno
};

// Splits a buffer received from the socket into messages and parses each. Stops at the first
// message whose header does not fit (reported as one `malformed` item). Pure; any input is safe.
std::vector<Item> parse_buffer(std::span<const std::uint8_t> buffer);

// The config request that binds `group`: one message, NFULNL_CFG_CMD_BIND with copy mode packet
// (kCopyRange bytes), the sequence-number flag (NFULNL_CFG_F_SEQ), and a queue threshold of 1
// (deliver each packet at once instead of batching up to 100 packets or one second). NLM_F_ACK
// is set: the kernel answers with an ACK or an error (EPERM or EBUSY when another socket holds
// the group). Closing the socket unbinds (the kernel drops a closed socket's instances).
std::vector<std::uint8_t> build_bind_request(std::uint16_t group, std::uint32_t netlink_seq);

// Counts messages lost between the ones received, from the gaps in their per-group sequence
// numbers (the kernel increments it for every packet it logs, delivered or not).
class LossCounter {
public:
    // Returns how many were lost right before this one.
    std::uint64_t observe(std::uint32_t seq);
    std::uint64_t lost() const { return lost_; }

private:
    std::optional<std::uint32_t> next_;
    std::uint64_t lost_ = 0;
};

// ---- The socket -------------------------------------------------------------------------------

// A NETLINK_NETFILTER socket for the log. Open it inside the target namespace (Netns::run_inside):
// the group it binds is that namespace's.
class Socket {
public:
    static Socket open();  // close-on-exec, non-blocking, bound; call inside the target netns
    int fd() const;
    // Binds the group and waits for the kernel's answer. Error(Exit::failed) names the group and
    // why: EBUSY/EPERM means another listener holds it in this namespace.
    void bind_group(std::uint16_t group, const std::string& where);
    // SO_RCVBUF(FORCE): room for bursts while we print (a message costs about 1 KiB there).
    void set_receive_buffer(int bytes);
    // One non-blocking read. Returns the bytes (empty when nothing is queued); `overrun` is set
    // when the kernel reported ENOBUFS (messages were dropped; the read is not an error).
    std::vector<std::uint8_t> receive(bool& overrun);

private:
    nft::MnlSocket sock_;
    std::vector<std::vector<std::uint8_t>> pending_;  // packets that arrived before the bind ACK
};

}  // namespace nsegress::nflog
