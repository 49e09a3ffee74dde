#include "nsegress/inspect.hpp"

#include <fmt/format.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <tuple>

#include "nsegress/error.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/restrict_plan.hpp"

static_assert(nsegress::kAddressScopeHost == RT_SCOPE_HOST);

namespace nsegress {

namespace {

[[noreturn]] void throw_nl(const std::string& what, int nlerr) {
    throw Error(Exit::failed, what + ": " + nl_geterror(nlerr));
}

std::optional<IpAddr> to_ip(nl_addr* a) {
    if (!a) return std::nullopt;
    int fam = nl_addr_get_family(a);
    unsigned len = nl_addr_get_len(a);
    if (fam == AF_INET && len == 4)
        return IpAddr::from_bytes(Family::v4, nl_addr_get_binary_addr(a));
    if (fam == AF_INET6 && len == 16)
        return IpAddr::from_bytes(Family::v6, nl_addr_get_binary_addr(a));
    return std::nullopt;
}

// Default routes come back as a zero-length address with prefix 0.
Cidr to_dst(nl_addr* a, Family f) {
    Cidr c{IpAddr{f, 0}, 0};
    if (!a) return c;
    if (auto ip = to_ip(a)) c.addr = *ip;
    c.prefix = nl_addr_get_prefixlen(a);
    return c;
}

// One message of a dump, into plain structs. Libnl's own parsers do the attribute work: the
// route parser directly, links, addresses and rules through nl_msg_parse (the parser of the
// cache type that owns the message type). Returns 0 or a negative libnl error.
struct ObjectCtx {
    Snapshot* snap;
    int type;  // RTM_NEWLINK, RTM_NEWADDR or RTM_NEWRULE
    int err;   // set when the object is malformed
};

void take_object(nl_object* o, void* arg) {
    auto* c = static_cast<ObjectCtx*>(arg);
    Snapshot& snap = *c->snap;
    if (c->type == RTM_NEWLINK) {
        auto* l = reinterpret_cast<rtnl_link*>(o);
        Link link;
        link.ifindex = rtnl_link_get_ifindex(l);
        if (const char* n = rtnl_link_get_name(l)) link.name = n;
        unsigned flags = rtnl_link_get_flags(l);
        link.up = flags & IFF_UP;
        link.loopback = flags & IFF_LOOPBACK;
        if (const char* k = rtnl_link_get_type(l)) link.kind = k;
        link.mtu = rtnl_link_get_mtu(l);
        link.arptype = rtnl_link_get_arptype(l);
        snap.links.push_back(std::move(link));
    } else if (c->type == RTM_NEWADDR) {
        auto* a = reinterpret_cast<rtnl_addr*>(o);
        auto ip = to_ip(rtnl_addr_get_local(a));
        if (!ip) return;
        if (static_cast<unsigned>(rtnl_addr_get_prefixlen(a)) > bits_of(ip->family)) {
            c->err = -NLE_INVAL;  // no kernel sends this: refuse to reason about it
            return;
        }
        snap.addresses.push_back(Address{rtnl_addr_get_ifindex(a), *ip,
                                         static_cast<unsigned>(rtnl_addr_get_prefixlen(a)),
                                         rtnl_addr_get_scope(a)});
    } else if (c->type == RTM_NEWRULE) {
        auto* r = reinterpret_cast<rtnl_rule*>(o);
        int fam = rtnl_rule_get_family(r);
        if (fam != AF_INET && fam != AF_INET6) return;
        Rule rule;
        rule.family = fam == AF_INET ? Family::v4 : Family::v6;
        rule.priority = rtnl_rule_get_prio(r);
        rule.table = rtnl_rule_get_table(r);
        rule.action = rtnl_rule_get_action(r);
        std::uint8_t proto = 0;
        if (rtnl_rule_get_protocol(r, &proto) == 0) rule.protocol = proto;
        rule.has_selector = rtnl_rule_get_src(r) || rtnl_rule_get_dst(r) || rtnl_rule_get_iif(r) ||
                            rtnl_rule_get_oif(r) || rtnl_rule_get_mark(r) != 0;
        snap.rules.push_back(rule);
    }
}

// libnl's route parser trusts some lengths that the kernel always gets right: a nexthop with
// rtnh_len 0 in RTA_MULTIPATH makes it allocate forever, a short RTA_VIA makes it copy a
// negative size. Bytes handed to parse_rtnl_messages() need not come from a kernel, so the
// address-carrying attributes are checked here first (as the kernel writes them).
bool route_attrs_well_formed(const nlattr* attrs, int len, std::uint8_t family, int depth);

bool addr_attr_ok(const nlattr* a, std::uint8_t family) {
    int n = nla_len(a);
    if (family != AF_INET && family != AF_INET6) return nla_type(a) != RTA_VIA || n >= 2;
    switch (nla_type(a)) {
        case RTA_DST:
        case RTA_SRC:
        case RTA_GATEWAY:
        case RTA_PREFSRC:
            return n == (family == AF_INET6 ? 16 : 4);
        case RTA_VIA:
            return n == 2 + 4 || n == 2 + 16;
        default:
            return true;
    }
}

bool multipath_well_formed(const nlattr* mp, std::uint8_t family, int depth) {
    const char* p = static_cast<const char*>(nla_data(mp));
    std::size_t left = static_cast<std::size_t>(std::max(nla_len(mp), 0));
    while (left >= sizeof(rtnexthop)) {
        rtnexthop nh;
        std::memcpy(&nh, p, sizeof nh);
        if (nh.rtnh_len < sizeof(rtnexthop) || nh.rtnh_len > left) return false;
        if (!route_attrs_well_formed(reinterpret_cast<const nlattr*>(p + RTNH_LENGTH(0)),
                                     nh.rtnh_len - RTNH_LENGTH(0), family, depth + 1))
            return false;
        std::size_t step = RTNH_ALIGN(nh.rtnh_len);
        if (step >= left) break;
        p += step;
        left -= step;
    }
    return true;
}

bool route_attrs_well_formed(const nlattr* attrs, int len, std::uint8_t family, int depth) {
    const nlattr* a = nullptr;
    int rem = 0;
    nla_for_each_attr(a, attrs, len, rem) {
        if (!addr_attr_ok(a, family)) return false;
        if (nla_type(a) == RTA_MULTIPATH && (depth > 0 || !multipath_well_formed(a, family, depth)))
            return false;
    }
    return true;
}

bool route_well_formed(nlmsghdr* hdr) {
    if (hdr->nlmsg_len < static_cast<std::uint32_t>(nlmsg_size(sizeof(rtmsg))))
        return true;  // rtnl_route_parse refuses it
    // Every family: libnl parses the route before we look at its family.
    const auto* rtm = static_cast<const rtmsg*>(nlmsg_data(hdr));
    return route_attrs_well_formed(nlmsg_attrdata(hdr, sizeof(rtmsg)),
                                   nlmsg_attrlen(hdr, sizeof(rtmsg)), rtm->rtm_family, 0);
}

// A route of snap.compact_table straight from the message, without libnl (which allocates an
// object, addresses and nexthops per route). 1: taken, 0: another table's, <0: malformed.
int take_table_route(const nlmsghdr* hdr, Snapshot& snap) {
    const auto* rtm = static_cast<const rtmsg*>(nlmsg_data(hdr));
    std::uint32_t table = rtm->rtm_table;
    TableRoute r;
    const void* dst = nullptr;
    int dst_len = 0;
    nlattr* a;
    int rem;
    nla_for_each_attr(a, nlmsg_attrdata(hdr, sizeof(rtmsg)), nlmsg_attrlen(hdr, sizeof(rtmsg)),
                      rem) {
        switch (nla_type(a)) {
            case RTA_TABLE:
                if (nla_len(a) >= 4) table = nla_get_u32(a);
                break;
            case RTA_DST:
                dst = nla_data(a);
                dst_len = nla_len(a);
                break;
            case RTA_PRIORITY:
                if (nla_len(a) >= 4) r.metric = nla_get_u32(a);
                break;
            case RTA_GATEWAY:
            case RTA_VIA:
            case RTA_PREFSRC:
            case RTA_MULTIPATH:
            case RTA_NH_ID:
                r.nexthop = true;
                break;
            default:
                break;
        }
    }
    if (table != snap.compact_table) return 0;
    if (rtm->rtm_flags & RTM_F_CLONED) return 1;  // cache entries, not routes
    if (rtm->rtm_family != AF_INET && rtm->rtm_family != AF_INET6) return 1;
    r.family = rtm->rtm_family == AF_INET ? Family::v4 : Family::v6;
    const unsigned bytes = r.family == Family::v4 ? 4 : 16;
    if (rtm->rtm_dst_len > bits_of(r.family)) return -NLE_INVAL;
    r.prefix = rtm->rtm_dst_len;
    if (dst) {
        if (static_cast<unsigned>(dst_len) != bytes) return -NLE_INVAL;
        r.dst = IpAddr::from_bytes(r.family, dst).value;
    } else if (r.prefix != 0) {
        return -NLE_INVAL;
    }
    unsigned host_bits = bits_of(r.family) - r.prefix;
    u128 host_mask = host_bits == 0 ? 0 : host_bits >= 128 ? ~u128{0} : (u128{1} << host_bits) - 1;
    if (r.dst & host_mask) return -NLE_INVAL;
    r.type = rtm->rtm_type;
    r.protocol = rtm->rtm_protocol;
    r.scope = rtm->rtm_scope;
    snap.table_routes.push_back(r);
    return 1;
}

int parse_message(nl_msg* msg, Snapshot& snap) {
    nlmsghdr* hdr = nlmsg_hdr(msg);
    switch (hdr->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_NEWADDR:
        case RTM_NEWRULE: {
            ObjectCtx ctx{&snap, hdr->nlmsg_type, 0};
            int err = nl_msg_parse(msg, take_object, &ctx);
            return err < 0 ? err : ctx.err;
        }
        case RTM_NEWROUTE: {
            // No nl_cache for routes: a route set can hold as many routes as the allow-list
            // has CIDRs, and libnl's cache hashing degrades badly at 10^5 objects.
            if (!route_well_formed(hdr)) return -NLE_INVAL;
            if (snap.compact_table != 0) {
                int taken = take_table_route(hdr, snap);
                if (taken != 0) return taken < 0 ? taken : 0;
            }
            rtnl_route* r = nullptr;
            if (int err = rtnl_route_parse(hdr, &r); err < 0) return err;
            std::unique_ptr<rtnl_route, void (*)(rtnl_route*)> owner(r, rtnl_route_put);
            int fam = rtnl_route_get_family(r);
            if (fam != AF_INET && fam != AF_INET6) return 0;
            if (rtnl_route_get_flags(r) & RTM_F_CLONED) return 0;  // cache entries, not routes
            Route route;
            route.family = fam == AF_INET ? Family::v4 : Family::v6;
            route.dst = to_dst(rtnl_route_get_dst(r), route.family);
            // A prefix longer than the family, or a destination of the other family: no kernel
            // sends it, and the prefix arithmetic downstream assumes neither.
            if (route.dst.addr.family != route.family || route.dst.prefix > bits_of(route.family))
                return -NLE_INVAL;
            unsigned host_bits = bits_of(route.family) - route.dst.prefix;
            u128 host_mask = host_bits == 0     ? 0
                             : host_bits >= 128 ? ~u128{0}
                                                : (u128{1} << host_bits) - 1;
            if (route.dst.addr.value & host_mask) return -NLE_INVAL;  // the kernel masks them
            route.table = rtnl_route_get_table(r);
            route.type = rtnl_route_get_type(r);
            route.protocol = rtnl_route_get_protocol(r);
            route.scope = rtnl_route_get_scope(r);
            route.metric = rtnl_route_get_priority(r);
            route.prefsrc = to_ip(rtnl_route_get_pref_src(r));
            int nnh = rtnl_route_get_nnexthops(r);
            route.multipath = nnh > 1;
            if (nnh > 0) {
                rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
                route.oif = rtnl_route_nh_get_ifindex(nh);
                route.gateway = to_ip(rtnl_route_nh_get_gateway(nh));
                route.onlink = rtnl_route_nh_get_flags(nh) & RTNH_F_ONLINK;
            }
            snap.routes.push_back(std::move(route));
            return 0;
        }
        default:
            return 0;  // not asked for
    }
}

void sort_snapshot(Snapshot& snap) {
    std::stable_sort(snap.links.begin(), snap.links.end(),
                     [](const Link& a, const Link& b) { return a.ifindex < b.ifindex; });
    std::stable_sort(snap.rules.begin(), snap.rules.end(), [](const Rule& a, const Rule& b) {
        return std::tie(a.family, a.priority) < std::tie(b.family, b.priority);
    });
}

// One dump over the socket, every reply message through parse_message(). False when a change
// in the namespace interrupted it (NLM_F_DUMP_INTR: libnl reads the dump to its end and reports
// NLE_DUMP_INTR), so that what it added mixes two states.
template <typename Header>
bool dump(nl_sock* sock, int type, const Header& header, const char* what, Snapshot& snap) {
    struct Ctx {
        Snapshot* snap;
        int err;
    } ctx{&snap, 0};
    auto on_msg = [](nl_msg* msg, void* arg) -> int {
        auto* c = static_cast<Ctx*>(arg);
        if (int err = parse_message(msg, *c->snap); err < 0) {
            c->err = err;
            return NL_STOP;
        }
        return NL_OK;
    };
    std::unique_ptr<nl_cb, void (*)(nl_cb*)> cb(nl_cb_alloc(NL_CB_DEFAULT), nl_cb_put);
    if (!cb) throw std::bad_alloc();
    nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, on_msg, &ctx);
    if (int err =
            nl_send_simple(sock, type, NLM_F_DUMP, const_cast<Header*>(&header), sizeof header);
        err < 0)
        throw_nl(std::string("dump ") + what, err);
    int err = nl_recvmsgs(sock, cb.get());
    if (ctx.err < 0) throw_nl(std::string("parse ") + what, ctx.err);
    if (err == -NLE_DUMP_INTR) return false;
    if (err < 0) throw_nl(std::string("dump ") + what, err);
    return true;
}

}  // namespace

void NlSockDeleter::operator()(nl_sock* s) const { nl_socket_free(s); }

NlSock open_rtnl_socket() {
    NlSock sock(nl_socket_alloc());
    if (!sock) throw_failed("cannot allocate a netlink socket");
    // libnl opens its socket with SOCK_CLOEXEC (3.2.27+), as every fd of ours must be.
    if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0)
        throw_nl("connect rtnetlink", err);
    return sock;
}

Snapshot inspect(nl_sock* sock, unsigned what, std::uint32_t compact_table) {
    // An interrupted dump is read again, whole (bounded: a namespace that never stops changing
    // is an error, not a loop).
    constexpr int kAttempts = 10;
    for (int attempt = 1; attempt <= kAttempts; ++attempt) {
        Snapshot snap;
        snap.compact_table = compact_table;
        if ((!(what & inspect_links) || dump(sock, RTM_GETLINK, ifinfomsg{}, "links", snap)) &&
            (!(what & inspect_addresses) ||
             dump(sock, RTM_GETADDR, ifaddrmsg{}, "addresses", snap)) &&
            (!(what & inspect_routes) || dump(sock, RTM_GETROUTE, rtmsg{}, "routes", snap)) &&
            (!(what & inspect_rules) || dump(sock, RTM_GETRULE, fib_rule_hdr{}, "rules", snap))) {
            sort_snapshot(snap);
            return snap;
        }
    }
    throw_failed(
        fmt::format("read the namespace's links, addresses, routes and rules: every one of {} "
                    "dumps in a row was interrupted by a change",
                    kAttempts));
}

void parse_rtnl_messages(std::span<const std::uint8_t> bytes, Snapshot& snap) {
    if (bytes.size() > static_cast<std::size_t>(INT_MAX))
        throw_failed("rtnetlink messages: too large");
    // A receive buffer is 4-byte aligned; give the copy the same alignment for the headers.
    std::vector<std::uint32_t> buf((bytes.size() + 3) / 4);
    if (!bytes.empty()) std::memcpy(buf.data(), bytes.data(), bytes.size());
    auto* hdr = reinterpret_cast<nlmsghdr*>(buf.data());
    int left = static_cast<int>(bytes.size());
    for (; nlmsg_ok(hdr, left); hdr = nlmsg_next(hdr, &left)) {
        if (hdr->nlmsg_type == NLMSG_DONE) continue;  // the end of one dump; another may follow
        if (hdr->nlmsg_type == NLMSG_ERROR) throw_failed("rtnetlink dump: error message");
        auto msg = make_handle<nl_msg, nlmsg_free>(nlmsg_convert(hdr));
        nlmsg_set_proto(msg.get(), NETLINK_ROUTE);
        if (int err = parse_message(msg.get(), snap); err < 0)
            throw_nl("parse rtnetlink message", err);
    }
    sort_snapshot(snap);
}

const Link* Snapshot::link(int ifindex) const {
    for (const auto& l : links)
        if (l.ifindex == ifindex) return &l;
    return nullptr;
}

std::string Snapshot::link_name(int ifindex) const {
    if (const Link* l = link(ifindex)) return l->name;
    return "if" + std::to_string(ifindex);
}

const Route* Snapshot::default_route(Family f) const {
    const Route* best = nullptr;
    for (const auto& r : routes) {
        if (r.family != f || r.table != RT_TABLE_MAIN || !r.is_default() || r.type != RTN_UNICAST)
            continue;
        if (!best || r.metric < best->metric) best = &r;
    }
    return best;
}

bool Snapshot::is_local_address(const IpAddr& a) const {
    return std::any_of(addresses.begin(), addresses.end(),
                       [&](const Address& x) { return x.addr == a; });
}

std::string route_type_name(std::uint8_t type) {
    switch (type) {
        case RTN_UNICAST:
            return "unicast";
        case RTN_LOCAL:
            return "local";
        case RTN_BROADCAST:
            return "broadcast";
        case RTN_ANYCAST:
            return "anycast";
        case RTN_MULTICAST:
            return "multicast";
        case RTN_BLACKHOLE:
            return "blackhole";
        case RTN_UNREACHABLE:
            return "unreachable";
        case RTN_PROHIBIT:
            return "prohibit";
        case RTN_THROW:
            return "throw";
        default:
            return std::to_string(type);
    }
}

std::string table_name(std::uint32_t table) {
    switch (table) {
        case RT_TABLE_MAIN:
            return "main";
        case RT_TABLE_LOCAL:
            return "local";
        case RT_TABLE_DEFAULT:
            return "default";
        default:
            return std::to_string(table);
    }
}

std::string format_route(const Route& r, const Snapshot& s) {
    std::string out;
    if (r.type != RTN_UNICAST) out += route_type_name(r.type) + " ";
    out += r.is_default() ? std::string("default") : r.dst.str();
    if (r.gateway) out += " via " + r.gateway->str();
    if (r.oif) out += " dev " + s.link_name(r.oif);
    if (r.table != RT_TABLE_MAIN) out += " table " + table_name(r.table);
    if (r.prefsrc) out += " src " + r.prefsrc->str();
    if (r.metric) out += " metric " + std::to_string(r.metric);
    if (r.onlink) out += " onlink";
    return out;
}

std::string format_rule(const Rule& r) {
    std::string out = std::to_string(r.priority) + ": from all ";
    switch (r.action) {
        case FR_ACT_TO_TBL:
            out += "lookup " + table_name(r.table);
            break;
        case FR_ACT_UNREACHABLE:
            out += "unreachable";
            break;
        case FR_ACT_PROHIBIT:
            out += "prohibit";
            break;
        case FR_ACT_BLACKHOLE:
            out += "blackhole";
            break;
        default:
            out += "action " + std::to_string(r.action);
            break;
    }
    if (r.protocol) out += " proto " + std::to_string(r.protocol);
    return out;
}

}  // namespace nsegress
