// Allow-list entries with ports and protocols, and the normalized policy they make.
//
// The grammar (the same wherever a policy is written: --allow, --allow-file, the OCI
// annotation io.nsegress.allow, CNI "allow", verify --allow, watch --summary):
//
//   ENTRY    = DEST { SP PORTSPEC }       no PORTSPEC: all traffic to DEST
//   DEST     = CIDR | IP | NAME | "*." NAME
//   NAME     = a DNS name of two or more labels (letters, digits, '-', '_'), case-insensitive;
//              "*.example.com" is exactly one more label under example.com
//   PORTSPEC = PROTO [ "/" PORT [ "-" PORT ] ]
//   PROTO    = tcp | udp | sctp | icmp | icmpv6
//
// `tcp` alone is any TCP port; `icmp` (IPv4) and `icmpv6` (IPv6) mean echo requests only and
// take no port, and are not taken with a NAME (a name's addresses are only learnt from DNS
// answers; names.hpp). Pure: no I/O except read_allow_entries_file().
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nsegress/cidr.hpp"

namespace nsegress {

enum class IpProto : std::uint8_t { icmp = 1, tcp = 6, udp = 17, icmpv6 = 58, sctp = 132 };
const char* proto_name(IpProto p);  // "tcp", ...
bool proto_has_ports(IpProto p);    // tcp, udp, sctp
inline constexpr IpProto kPortProtos[] = {IpProto::tcp, IpProto::udp, IpProto::sctp};

struct PortSpec {
    IpProto proto = IpProto::tcp;
    // Ports [first, last]; "tcp" alone is 1-65535 (port 0 is no port: a packet to it is refused
    // like any other not allowed). icmp/icmpv6: unused.
    std::uint16_t first = 1;
    std::uint16_t last = 65535;
    bool any_port() const { return first == 1 && last == 65535; }
    std::string str() const;  // "tcp", "tcp/443", "tcp/8000-8100", "icmp"
    auto operator<=>(const PortSpec&) const = default;
};

struct AllowEntry {
    AllowEntry() = default;
    // A bare CIDR is an entry without ports (all traffic to it), as before the grammar had ports.
    AllowEntry(Cidr d, std::vector<PortSpec> p = {}) : dest(d), ports(std::move(p)) {}
    Cidr dest;         // unused when `name` is set
    std::string name;  // a DNS name entry ("api.example.com", "*.example.com"), lower case
    std::vector<PortSpec> ports;  // empty: all traffic to dest
    bool is_name() const { return !name.empty(); }
    std::string str() const;  // the entry in the grammar
    auto operator<=>(const AllowEntry&) const = default;
};

// One entry. Throws Error(Exit::usage) with one line naming the entry and what is wrong.
AllowEntry parse_allow_entry(std::string_view text);

// One entry per line; '#' starts a comment; blank lines are ignored. Errors name the source and
// line number ("allow.txt:3: invalid allow entry ...").
std::vector<AllowEntry> parse_allow_entries(std::string_view text, const std::string& source);
std::vector<AllowEntry> read_allow_entries_file(
    const std::string& path);  // Exit::usage when unreadable
// Entries separated by commas (the OCI annotation: entries contain spaces). Empty items are an
// error; `what` prefixes every message ("annotation io.nsegress.allow").
std::vector<AllowEntry> parse_allow_entry_list(std::string_view text, const std::string& what);

// One element of a port-scoped set: every address of `addrs`, protocol `proto`, destination
// ports [first, last]. Elements of a normalized Policy never overlap.
struct PortRange {
    Range addrs;
    IpProto proto = IpProto::tcp;
    std::uint16_t first = 0, last = 65535;
    auto operator<=>(const PortRange&) const = default;
};

// The normalized policy:
//   all()          CIDR-only entries (today's allow-list: sets allow4/allow6), unchanged
//   scoped(f)      port-scoped entries (sets allowp4/allowp6): per protocol, the port ranges are
//                  split into disjoint segments and the address ranges merged per segment, then
//                  equal neighbouring segments joined; nothing that all() covers
//   echo()         icmp / icmpv6 echo destinations (sets icmp4/icmp6), nothing all() covers
class Policy {
public:
    Policy() = default;
    explicit Policy(const std::vector<AllowEntry>& entries);
    // From parts (what status reads back from the kernel's sets): normalized the same way.
    Policy(AllowList all, std::vector<PortRange> scoped, const AllowList& echo);
    explicit Policy(AllowList all) : all_(std::move(all)) {}

    const AllowList& all() const { return all_; }
    const std::vector<PortRange>& scoped(Family f) const {
        return f == Family::v4 ? scoped4_ : scoped6_;
    }
    const AllowList& echo() const { return echo_; }
    // Name entries (names.hpp), one per name, ports merged, sorted by name.
    const std::vector<AllowEntry>& names() const { return names_; }
    bool has_names() const { return !names_.empty(); }
    // Replaces the name entries (status: the policy read back from the kernel has none).
    void set_names(std::vector<AllowEntry> names);
    bool has_ports() const { return !scoped4_.empty() || !scoped6_.empty() || !echo_.empty(); }
    // Every destination some entry names (the route set admits these; ports are nft's job).
    AllowList destinations() const;
    // Whether a packet to `a` with protocol p and destination port `port` is allowed.
    bool allows(const IpAddr& a, IpProto p, std::uint16_t port) const;
    bool echo_allowed(const IpAddr& a) const { return all_.contains(a) || echo_.contains(a); }
    // The policy as entries in the grammar, CIDR-only ones first (what status and --dry-run show).
    std::vector<std::string> entries() const;
    bool operator==(const Policy& o) const {
        return all_ == o.all_ && scoped4_ == o.scoped4_ && scoped6_ == o.scoped6_ &&
               echo_ == o.echo_ && names_ == o.names_;
    }

private:
    void normalize(std::vector<PortRange> raw, std::vector<Range> echo);
    AllowList all_;
    std::vector<PortRange> scoped4_, scoped6_;
    AllowList echo_;
    std::vector<AllowEntry> names_;
};

// Whether `list` holds every address of `r`.
bool covers(const AllowList& list, const Range& r);

// For verify: an address some port-scoped entry allows, and a UDP port the policy does not allow
// there (another port of the same protocol, or UDP when only other protocols are allowed);
// nothing when no entry has ports, or when every UDP port of each such address is allowed.
struct PortProbe {
    IpAddr addr;
    std::uint16_t port = 0;
};
std::optional<PortProbe> port_outside(const Policy& p);

// What both allow-lists allow (address, protocol and port), as entries (exact: address ranges
// and port ranges intersected, then covered by prefixes). The runtime wrapper's annotation may
// only narrow the installer's list with it.
std::vector<AllowEntry> intersect_allow(const std::vector<AllowEntry>& a,
                                        const std::vector<AllowEntry>& b);

// What a policy asks for, whichever way it came in (the command line and allow-files, OCI hook
// arguments and annotations, CNI netconf, the runtime wrapper's runtimeArgs): each parser fills
// this one type, and restrict, the hook, CNI and `policy_drift` take it as it is. A new policy
// field goes here, into its parsers, and into its use -- nowhere else. (The probe targets travel
// with it: they are how the caller wants the policy proven.)
struct PolicySpec {
    std::vector<AllowEntry> allow;  // parsed; may be empty (refuse everything)
    std::vector<IpAddr> probe_reach;
    std::vector<IpAddr> probe_block;
    // The resolvers the names proxy may ask (names_proxy.hpp): only with a name entry. Empty:
    // the nameservers of the container's resolv.conf, read at restrict time.
    std::vector<IpAddr> resolvers;
    bool route_set = true;
    // Audit mode: the same policy, but what it would refuse is accepted, counted and logged
    // (nft.hpp). The route set is not installed (a previous one is removed: it would refuse),
    // conntrack entries are left alone, and probe-block targets are probed with Expect::audit
    // (they must get out, not be refused).
    bool audit = false;
    bool netdev_egress = false;  // also filter every interface's netdev egress hook
};

}  // namespace nsegress
