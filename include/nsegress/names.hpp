// Allowing by DNS name: the names of a policy, the DNS messages the names proxy judges, and
// the set elements an answer opens.
//
// How it works (docs/design.md, "Names"): a policy with a name entry gets, in table inet
// nsegress, a nat chain `dns` that redirects every UDP and TCP packet to port 53 (whatever the
// resolver, Docker's 127.0.0.11 included) to the names proxy listening on 127.0.0.1 / ::1
// port kNamesProxyPort inside the container's namespace. The proxy answers REFUSED to any
// question for a name no entry allows; it forwards allowed questions, as queries it builds itself,
// to a trusted resolver only (names_proxy.hpp: the operator's, else the container's resolv.conf
// read at restrict; the address the container chose only when it is one of them) from a socket
// marked kNamesMark (the
// only packets to port 53 the output chain accepts and the nat chain leaves alone), and before
// it relays an answer it adds every A/AAAA address at the end of the question's CNAME chain to
// the sets names4/names6 (address . protocol . port, with a timeout) and waits for the
// kernel's ACK. When the answer reaches the container, its addresses are already allowed.
//
// Pure: no I/O. The DNS wire format is read and written with ldns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/policy.hpp"

namespace nsegress {

// The proxy's port on 127.0.0.1 and ::1 in the container's namespace (the nat redirect's target).
inline constexpr std::uint16_t kNamesProxyPort = 28275;
// SO_MARK of the proxy's own queries to resolvers (CAP_NET_ADMIN is needed to set a mark, which
// a container with Docker's default capabilities lacks; one that holds it can remove the policy
// anyway). "ns" then 53.
inline constexpr std::uint32_t kNamesMark = 0x6e730035;
// The conntrack label of connections accepted through a name set: their later packets are
// accepted after the address expired (original direction only).
inline constexpr unsigned kNameLabel = 126;
// Lifetimes of an address learnt from an answer: max(TTL, floor) + grace, at most the cap.
inline constexpr std::uint32_t kNameTtlFloor = 30;   // seconds
inline constexpr std::uint32_t kNameGrace = 60;      // seconds
inline constexpr std::uint32_t kNameTtlCap = 86400;  // seconds

// Whether an allow-entry's DEST is meant as a name (it has a letter or '*' and no ':' or '/'):
// "10.0.0.0/8" and "::1" are addresses, "api.example.com" and "*.example.com" are names.
bool looks_like_name(std::string_view word);
// A name or one-label wildcard, lower case, without a trailing dot; nothing (and `why`) when it
// is not one: labels of 1-63 letters, digits, '-' or '_', not starting or ending with '-', at
// least two labels, at most 253 characters; '*' only as the whole first label.
std::optional<std::string> parse_name_pattern(std::string_view word, std::string& why);
// `qname` lower case without trailing dot. "*.example.com" matches exactly one more label.
bool name_matches(std::string_view pattern, std::string_view qname);

// One element of a name set, apart from its address: protocols [proto_first, proto_last] and
// destination ports [port_first, port_last].
struct NameSlot {
    std::uint8_t proto_first = 0, proto_last = 0;
    std::uint16_t port_first = 0, port_last = 0;
    auto operator<=>(const NameSlot&) const = default;
};
// What the name entries allow an address of `qname`, as slots cut at every port boundary of
// any name entry of the policy, so that two slots (of any two names) are equal or disjoint: the
// kernel refuses overlapping elements in an interval set, and an address can belong to many
// names (a CDN). Empty: no entry matches.
std::vector<NameSlot> name_slots(const std::vector<AllowEntry>& names, std::string_view qname);

// A question the proxy can judge: a query (QR 0, opcode QUERY) with exactly one question.
// A label byte no policy name can hold (a '.', NUL, a control character, a space, anything
// outside printable ASCII) is kept in `qname` as '\' and its decimal value, so that the name
// never matches a pattern and is never forwarded (dns_forward_query refuses it).
struct DnsQuestion {
    std::uint16_t id = 0;
    std::string qname;  // lower case, no trailing dot ("" for the root)
    std::uint16_t qtype = 0;
    bool rd = true;     // recursion desired, as the client set it
    bool edns = false;  // the client's query carried an OPT record
};
std::optional<DnsQuestion> parse_dns_query(const std::uint8_t* data, std::size_t len);
// An answer to `query` with rcode (REFUSED = 5, FORMERR = 1, SERVFAIL = 2): the query's id and
// question, no records. A message too short for a header gets nothing (no reply).
std::vector<std::uint8_t> dns_error_reply(const std::uint8_t* query, std::size_t len,
                                          std::uint8_t rcode);

struct AnswerAddress {
    IpAddr addr;
    std::uint32_t ttl = 0;
    auto operator<=>(const AnswerAddress&) const = default;
};
// The A and AAAA records of the answer section on `q.qname`'s CNAME chain (followed at most 16
// links), or nothing when the message is not a response to `q` (id, question) or is malformed.
std::optional<std::vector<AnswerAddress>> dns_answer_addresses(const std::uint8_t* data,
                                                               std::size_t len,
                                                               const DnsQuestion& q);

// The query the proxy sends to a resolver for `q`, built afresh (nothing of the client's message
// is copied: not its id, its other sections, its EDNS options or trailing bytes): header with
// `id` and RD as the client set it, exactly one question (q.qname, q.qtype, class IN) and, when
// the client used EDNS, an OPT record with no options and a buffer of kForwardEdnsSize. Empty
// when q.qname holds an escaped byte (a dot or NUL inside a label...): such a name is refused,
// never rewritten into a name it is not.
inline constexpr std::uint16_t kForwardEdnsSize = 1232;
std::vector<std::uint8_t> dns_forward_query(const DnsQuestion& q, std::uint16_t id);
// The resolver's response with the client's id put back (the relay of an upstream answer).
std::vector<std::uint8_t> dns_with_id(std::vector<std::uint8_t> msg, std::uint16_t id);

// Trusted resolvers: where the names proxy may send a question (never where the container chose
// to send it, which could be a server of its own). `nameservers` of a resolv.conf text: the
// addresses of its "nameserver" lines, in order, at most 8, duplicates dropped.
std::vector<IpAddr> resolv_conf_nameservers(std::string_view text);
// A loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104): a server there runs in the
// container's own namespace, perhaps the container's own program.
bool is_loopback(const IpAddr& a);
// The resolvers the proxy trusts: the operator's when given (all of them); else the nameservers
// of the container's resolv.conf as the engine wrote it, without loopback ones unless
// `engine_wrote_it` (read before the container's process ran: the hook, the runtime wrapper;
// Docker's 127.0.0.11, which Docker's nat rules send to dockerd).
std::vector<IpAddr> trusted_resolvers(const std::vector<IpAddr>& from_operator,
                                      const std::vector<IpAddr>& from_resolv_conf,
                                      bool engine_wrote_it);
// Where a question addressed to `original` goes: there when it is a trusted resolver, else the
// trusted resolvers in order (the proxy takes the first it can reach); empty: none (SERVFAIL).
std::vector<IpAddr> upstream_candidates(const std::vector<IpAddr>& trusted,
                                        const std::optional<IpAddr>& original);

// A query for `qname` (recursion desired), as the container's resolver library sends one.
std::vector<std::uint8_t> dns_query(std::uint16_t id, const std::string& qname,
                                    std::uint16_t qtype);
// The response code of a response (0 NOERROR, 3 NXDOMAIN, 5 REFUSED, ...), nothing when not one.
std::optional<std::uint8_t> dns_rcode(const std::uint8_t* data, std::size_t len);

// The timeout of an address with this TTL (seconds).
std::uint32_t name_timeout(std::uint32_t ttl);
// Whether an element the kernel holds, expiring in `expires_ms`, already covers an answer with
// this TTL, so that the proxy relays it without a commit: it outlives the client's cache of the
// answer (the TTL, floored and capped as name_timeout does) by at least half the grace.
bool name_element_covers(std::uint64_t expires_ms, std::uint32_t ttl);

}  // namespace nsegress
