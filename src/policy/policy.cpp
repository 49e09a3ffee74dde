#include "nsegress/policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <tuple>

#include "nsegress/error.hpp"
#include "nsegress/names.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

namespace {

constexpr const char* kBlanks = " \t\r\n";

std::string_view trim(std::string_view s) {
    auto b = s.find_first_not_of(kBlanks);
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(kBlanks);
    return s.substr(b, e - b + 1);
}

// A decimal port 1-65535; `why` says what is wrong otherwise.
bool parse_port(std::string_view text, std::uint16_t& out, std::string& why) {
    if (text.empty()) {
        why = "a port is missing";
        return false;
    }
    if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        why = fmt::format("port {} is not a number", quote(text));
        return false;
    }
    unsigned long v = text.size() > 6 ? 1000000 : std::stoul(std::string(text));
    if (v == 0) {
        why = "port 0 is not a port (ports are 1-65535)";
        return false;
    }
    if (v > 65535) {
        why = fmt::format("port {} exceeds 65535", quote(text));
        return false;
    }
    out = static_cast<std::uint16_t>(v);
    return true;
}

// Sorted by first address and merged: overlapping and adjacent ranges become one.
std::vector<Range> merged(std::vector<Range> rs) {
    if (rs.empty()) return rs;
    const Family f = rs.front().first.family;
    return AllowList::from_ranges(std::move(rs)).ranges(f);
}

// One family and protocol: the port ranges split into disjoint segments at every boundary, the
// address ranges of the items covering a segment merged, equal neighbouring segments joined.
void segment(std::vector<PortRange> items, IpProto p, std::vector<PortRange>& out) {
    if (items.empty()) return;
    std::vector<std::uint32_t> bounds;
    for (const auto& it : items) {
        bounds.push_back(it.first);
        bounds.push_back(std::uint32_t{it.last} + 1);
    }
    std::sort(bounds.begin(), bounds.end());
    bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
    std::sort(items.begin(), items.end(),
              [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
    std::vector<std::size_t> active;
    std::size_t next = 0;
    std::vector<Range> pending;
    std::uint32_t pending_first = 0, pending_last = 0;
    auto flush = [&] {
        for (const auto& r : pending)
            out.push_back(PortRange{r, p, static_cast<std::uint16_t>(pending_first),
                                    static_cast<std::uint16_t>(pending_last)});
        pending.clear();
    };
    for (std::size_t i = 0; i + 1 < bounds.size(); ++i) {
        const std::uint32_t lo = bounds[i], hi = bounds[i + 1] - 1;
        while (next < items.size() && items[next].first <= lo) active.push_back(next++);
        std::erase_if(active, [&](std::size_t a) { return items[a].last < lo; });
        std::vector<Range> rs;
        rs.reserve(active.size());
        for (std::size_t a : active) rs.push_back(items[a].addrs);
        rs = merged(std::move(rs));
        if (!pending.empty() && pending_last + 1 == lo && rs == pending) {
            pending_last = hi;
            continue;
        }
        flush();
        pending = std::move(rs);
        pending_first = lo;
        pending_last = hi;
    }
    flush();
}

// Display order: tcp, udp, sctp, then the echo protocols.
int proto_rank(IpProto p) {
    switch (p) {
        case IpProto::tcp:
            return 0;
        case IpProto::udp:
            return 1;
        case IpProto::sctp:
            return 2;
        case IpProto::icmp:
            return 3;
        case IpProto::icmpv6:
            return 4;
    }
    return 5;
}

bool spec_less(const PortSpec& a, const PortSpec& b) {
    if (a.proto != b.proto) return proto_rank(a.proto) < proto_rank(b.proto);
    return std::tie(a.first, a.last) < std::tie(b.first, b.last);
}

}  // namespace

const char* proto_name(IpProto p) {
    switch (p) {
        case IpProto::tcp:
            return "tcp";
        case IpProto::udp:
            return "udp";
        case IpProto::sctp:
            return "sctp";
        case IpProto::icmp:
            return "icmp";
        case IpProto::icmpv6:
            return "icmpv6";
    }
    return "?";
}

bool proto_has_ports(IpProto p) {
    return p == IpProto::tcp || p == IpProto::udp || p == IpProto::sctp;
}

std::string PortSpec::str() const {
    if (!proto_has_ports(proto) || any_port()) return proto_name(proto);
    if (first == last) return fmt::format("{}/{}", proto_name(proto), first);
    return fmt::format("{}/{}-{}", proto_name(proto), first, last);
}

std::string AllowEntry::str() const {
    std::string s = is_name() ? name : dest.str();
    for (const auto& p : ports) s += " " + p.str();
    return s;
}

AllowEntry parse_allow_entry(std::string_view text) {
    const std::string_view entry = trim(text);
    auto bad = [&](const std::string& why) -> AllowEntry {
        throw_usage(fmt::format("invalid allow entry {}: {}", quote(entry), why));
    };
    if (entry.empty()) return bad("empty");
    if (entry.find(',') != std::string_view::npos)
        return bad(
            "a comma-separated list: give one entry per --allow (one per line in an allow-file)");
    std::vector<std::string_view> words;
    for (std::string_view rest = entry; !rest.empty();) {
        auto b = rest.find_first_not_of(kBlanks);
        if (b == std::string_view::npos) break;
        rest = rest.substr(b);
        auto e = rest.find_first_of(kBlanks);
        words.push_back(rest.substr(0, e));
        rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e);
    }
    AllowEntry out;
    if (looks_like_name(words.front())) {
        std::string why;
        auto n = parse_name_pattern(words.front(), why);
        if (!n) return bad(why);
        out.name = std::move(*n);
    } else {
        try {
            out.dest = parse_cidr(words.front());
        } catch (const Error& e) {
            return bad(e.what());
        }
    }
    const Family f = out.dest.addr.family;
    for (std::size_t i = 1; i < words.size(); ++i) {
        const std::string_view w = words[i];
        const auto slash = w.find('/');
        const std::string_view name = w.substr(0, slash);
        PortSpec ps;
        if (name == "tcp")
            ps.proto = IpProto::tcp;
        else if (name == "udp")
            ps.proto = IpProto::udp;
        else if (name == "sctp")
            ps.proto = IpProto::sctp;
        else if (name == "icmp")
            ps.proto = IpProto::icmp;
        else if (name == "icmpv6")
            ps.proto = IpProto::icmpv6;
        else
            return bad(
                fmt::format("unknown protocol {} (tcp, udp, sctp, icmp or icmpv6)", quote(name)));
        if (out.is_name() && !proto_has_ports(ps.proto))
            return bad(fmt::format("{} with a name: echo requests are allowed by address only",
                                   proto_name(ps.proto)));
        if (ps.proto == IpProto::icmp && f == Family::v6)
            return bad("icmp is IPv4's echo: use icmpv6 for an IPv6 destination");
        if (ps.proto == IpProto::icmpv6 && f == Family::v4)
            return bad("icmpv6 is IPv6's echo: use icmp for an IPv4 destination");
        if (slash != std::string_view::npos) {
            if (!proto_has_ports(ps.proto))
                return bad(fmt::format("{} takes no port (it allows echo requests only)",
                                       proto_name(ps.proto)));
            const std::string_view ports = w.substr(slash + 1);
            const auto dash = ports.find('-');
            std::string why;
            if (!parse_port(ports.substr(0, dash), ps.first, why)) return bad(why);
            ps.last = ps.first;
            if (dash != std::string_view::npos) {
                if (!parse_port(ports.substr(dash + 1), ps.last, why)) return bad(why);
                if (ps.last < ps.first)
                    return bad(fmt::format("port range {} is inverted (write {}-{})", quote(ports),
                                           ps.last, ps.first));
            }
        }
        out.ports.push_back(ps);
    }
    std::sort(out.ports.begin(), out.ports.end(), spec_less);
    out.ports.erase(std::unique(out.ports.begin(), out.ports.end()), out.ports.end());
    return out;
}

std::vector<AllowEntry> parse_allow_entries(std::string_view text, const std::string& source) {
    std::vector<AllowEntry> out;
    // Sized once (a line is at most one entry): a 10^5-line file grows no vector by doubling.
    out.reserve(static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
    for_each_allow_line(text, source,
                        [&](std::string_view line) { out.push_back(parse_allow_entry(line)); });
    return out;
}

std::vector<AllowEntry> read_allow_entries_file(const std::string& path) {
    return parse_allow_entries(read_allow_file_text(path), path);
}

std::vector<AllowEntry> parse_allow_entry_list(std::string_view text, const std::string& what) {
    std::vector<AllowEntry> out;
    while (true) {
        auto comma = text.find(',');
        auto item = trim(text.substr(0, comma));
        const std::string where = what + ": item " + std::to_string(out.size() + 1);
        if (item.empty()) throw_usage(where + ": empty");
        out.push_back(in_context(where, [&] { return parse_allow_entry(item); }));
        if (comma == std::string_view::npos) break;
        text = text.substr(comma + 1);
    }
    return out;
}

bool covers(const AllowList& list, const Range& r) {
    const auto& rs = list.ranges(r.first.family);
    auto it = std::lower_bound(rs.begin(), rs.end(), r.first, [](const Range& x, const IpAddr& v) {
        return x.last.value < v.value;
    });
    return it != rs.end() && it->first.value <= r.first.value && it->last.value >= r.last.value;
}

Policy::Policy(const std::vector<AllowEntry>& entries) {
    // The CIDR-only entries straight into the list, sized exactly (10^5 of them: no copy of
    // them first, no growth by doubling).
    auto cidr_only = [](const AllowEntry& e) { return !e.is_name() && e.ports.empty(); };
    std::size_t n4 = 0, n6 = 0;
    for (const auto& e : entries)
        if (cidr_only(e)) ++(e.dest.addr.family == Family::v4 ? n4 : n6);
    all_ = AllowList::from_each(n4, n6, [&](const auto& add) {
        for (const auto& e : entries)
            if (cidr_only(e)) add(e.dest);
    });
    std::vector<PortRange> raw;
    std::vector<Range> echo;
    std::vector<AllowEntry> names;
    for (const auto& e : entries) {
        if (e.is_name()) {
            names.push_back(e);
            continue;
        }
        if (e.ports.empty()) continue;  // in all_ already
        const Range r{e.dest.first(), e.dest.last()};
        for (const auto& p : e.ports) {
            if (proto_has_ports(p.proto))
                raw.push_back(PortRange{r, p.proto, p.first, p.last});
            else
                echo.push_back(r);
        }
    }
    normalize(std::move(raw), std::move(echo));
    set_names(std::move(names));
}

void Policy::set_names(std::vector<AllowEntry> names) {
    // One entry per name: an entry without ports allows all traffic and absorbs the others.
    std::map<std::string, std::optional<std::vector<PortSpec>>> by_name;
    for (auto& e : names) {
        // (No ports: nullopt, "all traffic"; an empty vector would read as "nothing".)
        auto [it, fresh] = by_name.try_emplace(
            e.name, e.ports.empty() ? std::nullopt : std::optional<std::vector<PortSpec>>(e.ports));
        if (fresh) continue;
        if (!it->second || e.ports.empty()) {
            it->second.reset();
            continue;
        }
        it->second->insert(it->second->end(), e.ports.begin(), e.ports.end());
    }
    names_.clear();
    for (auto& [name, ports] : by_name) {
        AllowEntry e;
        e.name = name;
        if (ports) {
            e.ports = std::move(*ports);
            std::sort(e.ports.begin(), e.ports.end(), spec_less);
            e.ports.erase(std::unique(e.ports.begin(), e.ports.end()), e.ports.end());
            if (e.ports.empty()) continue;
        }
        names_.push_back(std::move(e));
    }
}

Policy::Policy(AllowList all, std::vector<PortRange> scoped, const AllowList& echo)
    : all_(std::move(all)) {
    std::vector<Range> e = echo.ranges(Family::v4);
    e.insert(e.end(), echo.ranges(Family::v6).begin(), echo.ranges(Family::v6).end());
    normalize(std::move(scoped), std::move(e));
}

void Policy::normalize(std::vector<PortRange> raw, std::vector<Range> echo) {
    // An entry without ports absorbs what it covers.
    std::erase_if(echo, [&](const Range& r) { return covers(all_, r); });
    echo_ = AllowList::from_ranges(std::move(echo));
    std::erase_if(raw, [&](const PortRange& p) { return covers(all_, p.addrs); });
    for (Family f : {Family::v4, Family::v6}) {
        auto& out = f == Family::v4 ? scoped4_ : scoped6_;
        out.clear();
        for (IpProto p : kPortProtos) {
            std::vector<PortRange> items;
            for (const auto& x : raw)
                if (x.proto == p && x.addrs.first.family == f) items.push_back(x);
            segment(std::move(items), p, out);
        }
    }
}

AllowList Policy::destinations() const {
    if (!has_ports()) return all_;
    std::vector<Range> rs;
    for (Family f : {Family::v4, Family::v6}) {
        rs.insert(rs.end(), all_.ranges(f).begin(), all_.ranges(f).end());
        rs.insert(rs.end(), echo_.ranges(f).begin(), echo_.ranges(f).end());
        for (const auto& p : scoped(f)) rs.push_back(p.addrs);
    }
    return AllowList::from_ranges(std::move(rs));
}

bool Policy::allows(const IpAddr& a, IpProto p, std::uint16_t port) const {
    if (all_.contains(a)) return true;
    if (!proto_has_ports(p))
        return (p == IpProto::icmp) == (a.family == Family::v4) && echo_.contains(a);
    for (const auto& x : scoped(a.family))
        if (x.proto == p && port >= x.first && port <= x.last && a.value >= x.addrs.first.value &&
            a.value <= x.addrs.last.value)
            return true;
    return false;
}

std::vector<std::string> Policy::entries() const {
    std::vector<std::string> out;
    for (Family f : {Family::v4, Family::v6})
        for (const auto& r : all_.ranges(f))
            for (const auto& c : r.to_cidrs()) out.push_back(c.str());
    std::map<Cidr, std::vector<PortSpec>> by_dest;
    for (Family f : {Family::v4, Family::v6}) {
        for (const auto& x : scoped(f))
            for (const auto& c : x.addrs.to_cidrs())
                by_dest[c].push_back(PortSpec{x.proto, x.first, x.last});
        for (const auto& r : echo_.ranges(f))
            for (const auto& c : r.to_cidrs())
                by_dest[c].push_back(PortSpec{f == Family::v4 ? IpProto::icmp : IpProto::icmpv6});
    }
    for (auto& [dest, specs] : by_dest) {
        // Port segments of one protocol that meet are one range again (the set's elements are
        // split wherever any destination's ranges start or end).
        std::sort(specs.begin(), specs.end(), spec_less);
        std::vector<PortSpec> joined;
        for (const auto& sp : specs) {
            if (!joined.empty() && joined.back().proto == sp.proto && proto_has_ports(sp.proto) &&
                std::uint32_t{joined.back().last} + 1 >= sp.first) {
                joined.back().last = std::max(joined.back().last, sp.last);
                continue;
            }
            if (!joined.empty() && joined.back() == sp) continue;
            joined.push_back(sp);
        }
        out.push_back(AllowEntry{dest, joined}.str());
    }
    for (const auto& n : names_) out.push_back(n.str());
    return out;
}

std::optional<PortProbe> port_outside(const Policy& p) {
    for (Family f : {Family::v4, Family::v6}) {
        for (const auto& x : p.scoped(f)) {
            const IpAddr a = x.addrs.first;
            // Ports nobody should be using first (discard, then the top of the range), then any.
            for (std::uint32_t port : {9u, 65535u, 65534u})
                if (!p.allows(a, IpProto::udp, static_cast<std::uint16_t>(port)))
                    return PortProbe{a, static_cast<std::uint16_t>(port)};
            for (std::uint32_t port = 1; port <= 65535; ++port)
                if (!p.allows(a, IpProto::udp, static_cast<std::uint16_t>(port)))
                    return PortProbe{a, static_cast<std::uint16_t>(port)};
        }
    }
    return std::nullopt;
}

namespace {

// A policy as boxes: an address range and what it allows there (every protocol, echo requests,
// or one protocol on a port range).
struct Box {
    Range addrs;
    enum Kind { all, echo, ports } kind = all;
    IpProto proto = IpProto::tcp;
    std::uint16_t first = 1, last = 65535;
};

std::vector<Box> boxes_of(const Policy& p) {
    std::vector<Box> out;
    for (Family f : {Family::v4, Family::v6}) {
        for (const auto& r : p.all().ranges(f)) out.push_back(Box{r, Box::all});
        for (const auto& r : p.echo().ranges(f)) out.push_back(Box{r, Box::echo});
        for (const auto& x : p.scoped(f))
            out.push_back(Box{x.addrs, Box::ports, x.proto, x.first, x.last});
    }
    return out;
}

}  // namespace

std::vector<AllowEntry> intersect_allow(const std::vector<AllowEntry>& a,
                                        const std::vector<AllowEntry>& b) {
    const Policy pa(a), pb(b);
    std::vector<Cidr> all;
    // CIDR-only with CIDR-only: both sorted and disjoint, one sweep (large lists stay fast).
    for (Family f : {Family::v4, Family::v6}) {
        const auto& x = pa.all().ranges(f);
        const auto& y = pb.all().ranges(f);
        std::size_t i = 0, j = 0;
        while (i < x.size() && j < y.size()) {
            IpAddr first = std::max(x[i].first, y[j].first);
            IpAddr last = std::min(x[i].last, y[j].last);
            if (first <= last) {
                auto cover = Range{first, last}.to_cidrs();
                all.insert(all.end(), cover.begin(), cover.end());
            }
            if (x[i].last < y[j].last)
                ++i;
            else
                ++j;
        }
    }
    std::vector<AllowEntry> out;
    out.reserve(all.size());
    for (const auto& c : all) out.emplace_back(c);
    // Names: a name both lists hold (the same pattern), with the ports both allow.
    for (const auto& x : pa.names()) {
        for (const auto& y : pb.names()) {
            if (x.name != y.name) continue;
            AllowEntry e;
            e.name = x.name;
            if (x.ports.empty() || y.ports.empty()) {
                e.ports = x.ports.empty() ? y.ports : x.ports;
            } else {
                for (const auto& p : x.ports)
                    for (const auto& q : y.ports) {
                        if (p.proto != q.proto) continue;
                        const auto first = std::max(p.first, q.first),
                                   last = std::min(p.last, q.last);
                        if (first <= last) e.ports.push_back(PortSpec{p.proto, first, last});
                    }
                if (e.ports.empty()) continue;
            }
            out.push_back(std::move(e));
        }
    }
    // Everything else pairwise: the port-scoped and echo parts are short.
    const auto ba = boxes_of(pa), bb = boxes_of(pb);
    auto emit = [&](const Range& r, const PortSpec& spec) {
        for (const auto& c : r.to_cidrs()) out.emplace_back(c, std::vector<PortSpec>{spec});
    };
    for (const auto& x : ba) {
        for (const auto& y : bb) {
            if (x.kind == Box::all && y.kind == Box::all) continue;  // done above
            if (x.addrs.first.family != y.addrs.first.family) continue;
            const u128 lo = std::max(x.addrs.first.value, y.addrs.first.value);
            const u128 hi = std::min(x.addrs.last.value, y.addrs.last.value);
            if (lo > hi) continue;
            const Range r{IpAddr{x.addrs.first.family, lo}, IpAddr{x.addrs.first.family, hi}};
            const IpProto echo = r.first.family == Family::v4 ? IpProto::icmp : IpProto::icmpv6;
            const Box& narrow = x.kind == Box::all ? y : x;  // the other one when one allows all
            const Box& other = x.kind == Box::all ? x : y;
            if (other.kind == Box::all) {
                emit(r, narrow.kind == Box::echo
                            ? PortSpec{echo}
                            : PortSpec{narrow.proto, narrow.first, narrow.last});
            } else if (x.kind == Box::echo && y.kind == Box::echo) {
                emit(r, PortSpec{echo});
            } else if (x.kind == Box::ports && y.kind == Box::ports && x.proto == y.proto) {
                const auto first = std::max(x.first, y.first), last = std::min(x.last, y.last);
                if (first <= last) emit(r, PortSpec{x.proto, first, last});
            }
        }
    }
    return out;
}

}  // namespace nsegress
