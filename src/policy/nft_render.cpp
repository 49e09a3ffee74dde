// The policy in nft syntax (--dry-run): an `nft -f` script doing exactly what the batch of
// nft_compile.cpp does, for the inet table and the netdev table. Pure text; see nft.hpp.
#include "nsegress/nft.hpp"

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "policy/nft_detail.hpp"

namespace nsegress::nft {

using namespace detail;

std::string render_netdev(const AllowList& allow, const NetdevPlan& netdev) {
    return render_netdev(Policy(allow), netdev);
}

std::string render_netdev(const Policy& policy, const NetdevPlan& netdev) {
    const AllowList& allow = policy.all();
    std::ostringstream out;
    if (!netdev.install) {
        if (netdev.replace_existing) out << "table netdev nsegress\ndelete table netdev nsegress\n";
        return out.str();
    }
    // The rules read raw payload (see add_netdev_chain), and nft only looks raw payload up in
    // sets declared with `typeof` the same payload, whose elements are then plain integers:
    // the addresses in hex, each range preceded by a comment in the usual notation.
    auto hex = [](const IpAddr& a) {
        if (a.family == Family::v4)
            return fmt::format("0x{:08x}", static_cast<std::uint32_t>(a.value));
        return fmt::format("0x{:016x}{:016x}", static_cast<std::uint64_t>(a.value >> 64),
                           static_cast<std::uint64_t>(a.value));
    };
    auto set = [&](const char* name, const char* type_of, const std::vector<Range>& rs) {
        out << "\tset " << name << " {\n\t\ttypeof " << type_of << "\n\t\tflags interval\n";
        if (!rs.empty()) {
            out << "\t\telements = {\n";
            for (std::size_t i = 0; i < rs.size(); ++i) {
                out << "\t\t\t# " << rs[i].str() << "\n\t\t\t" << hex(rs[i].first);
                if (rs[i].last != rs[i].first) out << "-" << hex(rs[i].last);
                out << (i + 1 < rs.size() ? ",\n" : "\n");
            }
            out << "\t\t}\n";
        }
        out << "\t}\n\n";
    };
    out << "table netdev nsegress\n"
           "delete table netdev nsegress\n"
           "table netdev nsegress {\n";
    set(kSet4, "@ll,240,32", allow.ranges(Family::v4));
    set(kSet6, "@ll,304,128", allow.ranges(Family::v6));
    set(kSetNd6, "@ll,304,128", netdev.neighbour6.ranges(Family::v6));
    set(kSetOwn4, "@ll,208,32", netdev.own.ranges(Family::v4));
    set(kSetOwn6, "@ll,176,128", netdev.own.ranges(Family::v6));
    out << "\tset " << kSetIp6Next << " {\n\t\ttypeof @ll,160,8\n\t\telements = { ";
    for (std::size_t i = 0; i < kIp6NextKeys.size(); ++i)
        out << (i ? ", " : "") << static_cast<int>(kIp6NextKeys[i]);
    out << " }\n\t}\n\n";
    // Port-scoped elements: address . protocol . port, each a hex range.
    auto port_set = [&](const char* name, const char* type_of, Family f) {
        const auto& els = policy.scoped(f);
        out << "\tset " << name << " {\n\t\ttypeof " << type_of << "\n\t\tflags interval\n";
        if (!els.empty()) {
            out << "\t\telements = {\n";
            for (std::size_t i = 0; i < els.size(); ++i) {
                const auto& e = els[i];
                out << "\t\t\t# " << e.addrs.str() << " "
                    << PortSpec{e.proto, e.first, e.last}.str() << "\n\t\t\t" << hex(e.addrs.first)
                    << "-" << hex(e.addrs.last) << " . "
                    << fmt::format("0x{:02x}", static_cast<unsigned>(e.proto)) << " . "
                    << fmt::format("0x{:04x}-0x{:04x}", e.first, e.last)
                    << (i + 1 < els.size() ? ",\n" : "\n");
            }
            out << "\t\t}\n";
        }
        out << "\t}\n\n";
    };
    set(kSetEcho4, "@ll,240,32", policy.echo().ranges(Family::v4));
    set(kSetEcho6, "@ll,304,128", policy.echo().ranges(Family::v6));
    port_set(kSetPorts4, "@ll,240,32 . @ll,184,8 . @ll,288,16", Family::v4);
    port_set(kSetPorts6, "@ll,304,128 . @ll,160,8 . @ll,432,16", Family::v6);
    for (const auto& d : netdev.devices) {
        // Raw payload expressions: `ether type` / `ip daddr` would let nft add a `meta
        // protocol` dependency, which a packet socket's sender controls.
        std::string v4 = d.ethernet ? "@ll,96,16 0x0800" : "@nh,0,4 4";
        std::string v6 = d.ethernet ? "@ll,96,16 0x86dd" : "@nh,0,4 6";
        std::string b = d.ethernet ? "@ll" : "@nh";
        unsigned ip = d.ethernet ? 14 * 8 : 0;
        out << "\tchain " << netdev_chain_name(d) << " {\n"
            << "\t\ttype filter hook egress device \"" << d.name
            << "\" priority filter; policy drop;\n"
            << "\t\t" << v4 << " " << b << "," << ip + 4 << ",4 != 5 counter drop comment \""
            << kCommentSourceRoute << "\"\n";
        out << "\t\t" << v6 << " " << b << "," << ip + 48 << ",8 != @" << kSetIp6Next
            << " counter drop comment \"" << kCommentSourceRoute << "\"\n";
        if (needs_nd(policy))
            out << "\t\t" << v6 << " " << b << "," << ip + 64 << ",128 0 " << b << "," << ip + 48
                << ",8 58 " << b << "," << ip + 320 << ",8 135 " << b << "," << ip + 192
                << ",104 0xff0200000000000000000001ff counter accept comment \"" << kCommentDad
                << "\"\n";
        out << "\t\t" << v4 << " " << b << "," << ip + 96 << ",32 != @own4 counter drop comment \""
            << kCommentForged << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 64 << ",128 != @own6 counter drop comment \""
            << kCommentForged << "\"\n";
        out << "\t\t" << v4 << " " << b << "," << ip + 128
            << ",32 @allow4 counter accept comment \"" << kCommentAllow4 << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 192
            << ",128 @allow6 counter accept comment \"" << kCommentAllow6 << "\"\n";
        out << "\t\t" << v4 << " " << b << "," << ip + 128 << ",32 . " << b << "," << ip + 72
            << ",8 . " << b << "," << ip + 176 << ",16 @allowp4 counter accept comment \""
            << kCommentPorts4 << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 192 << ",128 . " << b << "," << ip + 48
            << ",8 . " << b << "," << ip + 336 << ",16 @allowp6 counter accept comment \""
            << kCommentPorts6 << "\"\n"
            << "\t\t" << v4 << " " << b << "," << ip + 72 << ",8 1 " << b << "," << ip + 160
            << ",8 8 " << b << "," << ip + 128 << ",32 @icmp4 counter accept comment \""
            << kCommentEcho << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 48 << ",8 58 " << b << "," << ip + 320
            << ",8 128 " << b << "," << ip + 192 << ",128 @icmp6 counter accept comment \""
            << kCommentEcho << "\"\n";
        if (d.ethernet) out << "\t\t@ll,96,16 0x0806 accept\n";
        if (needs_nd(policy))
            for (int type : {133, 135, 136})
                out << "\t\t" << v6 << " " << b << "," << ip + 48 << ",8 58 " << b << ","
                    << ip + 320 << ",8 " << type << " " << b << "," << ip + 192
                    << ",128 @nd6 accept\n";
        out << "\t\tcounter drop comment \"" << kCommentDeny << "\"\n\t}\n";
    }
    out << "}\n";
    return out.str();
}

std::string render_policy(const AllowList& allow, Mode mode, const NetdevPlan& netdev) {
    return render_policy(Policy(allow), mode, netdev);
}

std::string render_policy(const Policy& policy, Mode mode, const NetdevPlan& netdev) {
    const AllowList& allow = policy.all();
    std::ostringstream out;
    auto set = [&](const char* name, const char* type, const std::vector<Range>& rs) {
        out << "\tset " << name << " {\n\t\ttype " << type << "\n\t\tflags interval\n";
        if (!rs.empty()) {
            out << "\t\telements = { ";
            for (std::size_t i = 0; i < rs.size(); ++i)
                out << (i ? ",\n\t\t\t     " : "") << rs[i].str();
            out << " }\n";
        }
        out << "\t}\n\n";
    };
    auto comment = [](const char* c) { return fmt::format(" comment \"{}\"\n", c); };
    out << "table inet nsegress\n"
           "delete table inet nsegress\n"
           "table inet nsegress {\n";
    set(kSet4, "ipv4_addr", allow.ranges(Family::v4));
    set(kSet6, "ipv6_addr", allow.ranges(Family::v6));
    set(kSetNd6, "ipv6_addr", neighbour_destinations(netdev).ranges(Family::v6));
    auto port_set = [&](const char* name, const char* type, Family f) {
        const auto& els = policy.scoped(f);
        out << "\tset " << name << " {\n\t\ttype " << type << "\n\t\tflags interval\n";
        if (!els.empty()) {
            out << "\t\telements = { ";
            for (std::size_t i = 0; i < els.size(); ++i) {
                const auto& e = els[i];
                out << (i ? ",\n\t\t\t     " : "") << e.addrs.str() << " . " << proto_name(e.proto)
                    << " . " << e.first;
                if (e.last != e.first) out << "-" << e.last;
            }
            out << " }\n";
        }
        out << "\t}\n\n";
    };
    set(kSetEcho4, "ipv4_addr", policy.echo().ranges(Family::v4));
    set(kSetEcho6, "ipv6_addr", policy.echo().ranges(Family::v6));
    port_set(kSetPorts4, "ipv4_addr . inet_proto . inet_service", Family::v4);
    port_set(kSetPorts6, "ipv6_addr . inet_proto . inet_service", Family::v6);
    const bool names = policy.has_names();
    if (names)
        for (const char* n : {kSetNames4, kSetNames6})
            out << "\tset " << n << " {\n\t\ttype " << (n == kSetNames4 ? "ipv4_addr" : "ipv6_addr")
                << " . inet_proto . inet_service\n\t\tflags interval,timeout\n\t}\n\n";
    const bool nd = needs_nd(policy);
    out << "\tchain output {\n"
        << "\t\ttype filter hook output priority filter; policy "
        << (mode == Mode::audit ? "accept" : "drop") << ";\n";
    out << "\t\tip hdrlength != 5 counter drop" << comment(kCommentSourceRoute)
        << "\t\texthdr rt exists counter drop" << comment(kCommentSourceRoute);
    if (nd)
        out << "\t\tip6 saddr :: ip6 nexthdr ipv6-icmp icmpv6 type nd-neighbor-solicit ip6 daddr "
               "ff02::1:ff00:0/104 "
               "counter accept"
            << comment(kCommentDad);
    out << "\t\tct state new,invalid,untracked,related fib saddr type != local counter drop"
        << comment(kCommentForged) << "\t\toif != \"lo\" ip saddr 127.0.0.0/8 counter drop"
        << comment(kCommentForged) << "\t\toif != \"lo\" ip6 saddr ::1 counter drop"
        << comment(kCommentForged) << "\t\toif \"lo\" fib saddr type != local counter drop"
        << comment(kCommentForged) << "\t\toif \"lo\" counter accept" << comment(kCommentLoopback);
    if (names)
        out << "\t\tip daddr 127.0.0.1 ct status dnat th dport " << kNamesProxyPort
            << " counter accept" << comment(kCommentRedirected)
            << "\t\tip6 daddr ::1 ct status dnat th dport " << kNamesProxyPort << " counter accept"
            << comment(kCommentRedirected);
    if (names)
        for (const char* p : {"udp", "tcp"})
            out << "\t\tmeta mark " << fmt::format("{:#x}", kNamesMark) << " " << p
                << " dport 53 counter accept" << comment(kCommentResolver);
    out << "\t\tip daddr @allow4 counter accept" << comment(kCommentAllow4)
        << "\t\tip6 daddr @allow6 counter accept" << comment(kCommentAllow6)
        << "\t\tip daddr . meta l4proto . th dport @allowp4 counter accept"
        << comment(kCommentPorts4)
        << "\t\tip6 daddr . meta l4proto . th dport @allowp6 counter accept"
        << comment(kCommentPorts6) << "\t\ticmp type echo-request ip daddr @icmp4 counter accept"
        << comment(kCommentEcho) << "\t\ticmpv6 type echo-request ip6 daddr @icmp6 counter accept"
        << comment(kCommentEcho);
    if (names)
        out << "\t\tip daddr . meta l4proto . th dport @names4 counter ct label set " << kNameLabel
            << " accept" << comment(kCommentNames4)
            << "\t\tip6 daddr . meta l4proto . th dport @names6 counter ct label set " << kNameLabel
            << " accept" << comment(kCommentNames6)
            << "\t\tct direction original ct state established ct label " << kNameLabel
            << " counter accept" << comment(kCommentNamed);
    out << "\t\tct direction reply ct label " << kInboundLabel << " counter accept"
        << comment(kCommentReplies) << "\t\tmeta l4proto icmp ct state related ct label "
        << kInboundLabel << " counter accept" << comment(kCommentRelated)
        << "\t\tmeta l4proto ipv6-icmp ct state related ct label " << kInboundLabel
        << " counter accept" << comment(kCommentRelated);
    if (nd)
        for (const char* type : {"nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert"})
            out << "\t\tmeta l4proto ipv6-icmp icmpv6 type " << type
                << " ip6 daddr @nd6 counter accept" << comment(kCommentNd);
    out << "\t\tct state new limit rate " << kLogRatePerSecond << "/second burst " << kLogBurst
        << " packets counter log prefix \""
        << (mode == Mode::audit ? kLogPrefixAudit : kLogPrefixEnforce) << "\" group " << kNflogGroup
        << comment(kCommentLog);
    if (mode == Mode::audit)
        out << "\t\tcounter accept" << comment(kCommentAudit);
    else
        out << "\t\tcounter reject with icmpx admin-prohibited" << comment(kCommentDeny);
    out << "\t}\n\n";
    out << "\tchain " << kChainInbound << " {\n"
        << "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        << "\t\tiif != \"lo\" ct state new tcp flags & (syn | ack) == syn counter ct label set "
        << kInboundLabel << comment(kCommentInbound)
        << "\t\tiif != \"lo\" ct state new meta l4proto != tcp counter ct label set "
        << kInboundLabel << comment(kCommentInbound) << "\t}\n";
    if (names) {
        out << "\n\tchain " << kChainDns << " {\n\t\ttype nat hook output priority " << kDnsPriority
            << "; policy accept;\n";
        for (const char* p : {"udp", "tcp"})
            out << "\t\tmeta mark != " << fmt::format("{:#x}", kNamesMark) << " " << p
                << " dport 53 counter redirect to :" << kNamesProxyPort
                << comment(kCommentDnsRedirect);
        out << "\t}\n";
    }
    out << "}\n";

    return out.str();
}

}  // namespace nsegress::nft
