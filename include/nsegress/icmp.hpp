// Pure ICMP/ICMPv6 packet building and parsing for the probe, kept apart from the sockets so
// the byte-level work can be unit-tested without root.
//
// Byte layouts are handled by hand (no struct icmphdr / struct ip casts): received buffers
// carry no alignment guarantee, and <linux/icmp.h> and <netinet/ip_icmp.h> cannot be mixed.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"

namespace nsegress::icmp {

// ICMP (RFC 792) types.
inline constexpr std::uint8_t v4_echo_reply = 0;
inline constexpr std::uint8_t v4_dest_unreach = 3;
inline constexpr std::uint8_t v4_echo_request = 8;
inline constexpr std::uint8_t v4_time_exceeded = 11;
inline constexpr std::uint8_t v4_param_problem = 12;

// ICMPv6 (RFC 4443) types.
inline constexpr std::uint8_t v6_dest_unreach = 1;
inline constexpr std::uint8_t v6_packet_too_big = 2;
inline constexpr std::uint8_t v6_time_exceeded = 3;
inline constexpr std::uint8_t v6_param_problem = 4;
inline constexpr std::uint8_t v6_echo_request = 128;
inline constexpr std::uint8_t v6_echo_reply = 129;

// The RFC 1071 Internet checksum of `data`, as the 16-bit value to store big-endian in the
// checksum field. Over a message whose checksum field is already correct it yields 0.
std::uint16_t checksum(std::span<const std::uint8_t> data);

// An echo request message (ICMP header + payload, no IP header). For IPv4 the checksum is
// filled in; for IPv6 it is left zero because the kernel always computes it on raw ICMPv6
// sockets (it needs the pseudo-header, i.e. the source address it picks itself).
std::vector<std::uint8_t> build_echo_request(Family family, std::uint16_t id, std::uint16_t seq,
                                             std::span<const std::uint8_t> payload);

enum class Kind { echo_reply, error };

// A received message that may concern one of our echoes.
struct Message {
    Family family = Family::v4;
    Kind kind = Kind::echo_reply;
    std::uint8_t type = 0;
    std::uint8_t code = 0;
    std::uint16_t id = 0;   // echo reply: its identifier; error: the quoted echo request's
    std::uint16_t seq = 0;  // likewise for the sequence number
    std::optional<IpAddr> quoted_dst;  // error only: where the quoted echo request was going
    std::uint32_t info = 0;  // error only: header bytes 4..7 (MTU for "too big", pointer, ...)
};

// Parses what an AF_INET/IPPROTO_ICMP raw socket returns: the whole IPv4 datagram, header
// included. Returns nullopt unless it is an echo reply, or an error (destination unreachable,
// time exceeded, parameter problem) whose quoted datagram is an ICMP echo request. Messages
// with a bad ICMP checksum are dropped: the kernel hands them to raw sockets unchecked.
std::optional<Message> parse_ipv4(std::span<const std::uint8_t> packet);

// Parses what an AF_INET6/IPPROTO_ICMPV6 raw socket returns: the ICMPv6 message alone (the
// kernel strips the IPv6 header and has already verified the checksum). Same filter as above,
// with "packet too big" as an extra error type.
std::optional<Message> parse_icmpv6(std::span<const std::uint8_t> message);

// Dispatches on the family: parse_ipv4() or parse_icmpv6().
std::optional<Message> parse(Family family, std::span<const std::uint8_t> data);

// Whether `m`, received from `from`, concerns our echo with identifier `id` sent to `target`.
// Raw sockets see every ICMP message of the namespace, so all of this must hold: an echo reply
// has our identifier and comes from the target itself; an error may come from any router on the
// way, but the datagram it quotes was addressed to the target and carries our identifier.
// The sequence number is left to the caller, which knows which echoes it has sent.
bool concerns(const Message& m, const IpAddr& from, const IpAddr& target, std::uint16_t id);

// Human text for an error message, e.g. "destination unreachable (code 13, admin prohibited)"
// or "packet too big (mtu 1280)".
std::string describe_error(const Message& m);

}  // namespace nsegress::icmp
