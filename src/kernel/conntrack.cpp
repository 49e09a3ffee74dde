#include "nsegress/conntrack.hpp"

#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "nsegress/error.hpp"
#include "nsegress/nfnl.hpp"

namespace nsegress {

namespace {

// libmnl's iteration macros assign void* and do not compile as C++; these are the same loops.
template <typename Fn>
void for_each_attr(const void* start, std::size_t len, Fn fn) {
    auto* a = static_cast<const nlattr*>(start);
    int left = static_cast<int>(len);
    while (mnl_attr_ok(a, left)) {
        fn(a);
        left -= static_cast<int>(MNL_ALIGN(a->nla_len));
        a = mnl_attr_next(a);
    }
}
template <typename Fn>
void for_each_nested(const nlattr* nest, Fn fn) {
    for_each_attr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), fn);
}

// One conntrack entry as needed to delete it again: the raw original-tuple attribute (sent
// back verbatim, so every protocol detail matches) and the zone, if any.
struct Entry {
    FlowTuple orig;
    std::vector<char> tuple_attr;
    std::vector<char> zone_attr;
};

std::optional<FlowTuple> parse_tuple_ip(const nlattr* tuple) {
    FlowTuple t;
    bool src = false, dst = false;
    const nlattr* ip = nullptr;
    for_each_nested(tuple, [&](const nlattr* a) {
        if (mnl_attr_get_type(a) == CTA_TUPLE_IP) ip = a;
    });
    if (!ip) return std::nullopt;
    for_each_nested(ip, [&](const nlattr* a) {
        std::uint16_t type = mnl_attr_get_type(a);
        std::uint16_t len = mnl_attr_get_payload_len(a);
        const void* p = mnl_attr_get_payload(a);
        if ((type == CTA_IP_V4_SRC || type == CTA_IP_V4_DST) && len == 4) {
            (type == CTA_IP_V4_SRC ? t.src : t.dst) = IpAddr::from_bytes(Family::v4, p);
            (type == CTA_IP_V4_SRC ? src : dst) = true;
        } else if ((type == CTA_IP_V6_SRC || type == CTA_IP_V6_DST) && len == 16) {
            (type == CTA_IP_V6_SRC ? t.src : t.dst) = IpAddr::from_bytes(Family::v6, p);
            (type == CTA_IP_V6_SRC ? src : dst) = true;
        }
    });
    if (!src || !dst) return std::nullopt;
    return t;
}

std::vector<char> copy_attr(const nlattr* a) {
    const char* p = reinterpret_cast<const char*>(a);
    return std::vector<char>(p, p + a->nla_len);
}

// How many conntrack entries the namespace holds (ctnetlink's global stats, a per-netns count
// that includes entries not yet confirmed), or nothing when the kernel cannot say.
std::optional<std::uint32_t> count_entries(mnl_socket* sock, std::vector<char>& buf) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    std::optional<std::uint32_t> count;
    const int err = nfnl::request(sock, nlh, [&](const nlmsghdr* m) -> int {
        const char* start =
            static_cast<const char*>(mnl_nlmsg_get_payload_offset(m, sizeof(nfgenmsg)));
        const char* end = reinterpret_cast<const char*>(m) + m->nlmsg_len;  // not the aligned tail
        for_each_attr(start, static_cast<std::size_t>(end - start), [&](const nlattr* a) {
            if (mnl_attr_get_type(a) == CTA_STATS_GLOBAL_ENTRIES &&
                mnl_attr_get_payload_len(a) == 4)
                count = ntohl(mnl_attr_get_u32(a));
        });
        return MNL_CB_OK;
    });
    if (err < 0) return std::nullopt;
    return count;
}

// One message of a conntrack dump: its original tuple and what it takes to delete it again.
bool parse_entry(const nlmsghdr* m, Entry& e) {
    if (m->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg))) return false;
    const nlattr* orig = nullptr;
    const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(m, sizeof(nfgenmsg)));
    const char* end = reinterpret_cast<const char*>(m) + m->nlmsg_len;  // not the aligned tail
    for_each_attr(start, static_cast<std::size_t>(end - start), [&](const nlattr* a) {
        if (mnl_attr_get_type(a) == CTA_TUPLE_ORIG) orig = a;
        if (mnl_attr_get_type(a) == CTA_ZONE) e.zone_attr = copy_attr(a);
    });
    if (!orig) return false;
    auto t = parse_tuple_ip(orig);
    if (!t) return false;
    e.orig = *t;
    e.tuple_attr = copy_attr(orig);
    return true;
}

}  // namespace

std::optional<FlowTuple> parse_conntrack_message(const nlmsghdr* nlh) {
    Entry e;
    if (!parse_entry(nlh, e)) return std::nullopt;
    return e.orig;
}

bool is_forbidden_flow(const FlowTuple& orig, const AllowList& allow,
                       const std::vector<IpAddr>& local_addresses) {
    auto is_local = [&](const IpAddr& a) {
        return std::find(local_addresses.begin(), local_addresses.end(), a) !=
               local_addresses.end();
    };
    if (!is_local(orig.src)) return false;  // inbound or forwarded: not ours to judge
    if (is_local(orig.dst)) return false;   // loopback traffic stays allowed
    return !allow.contains(orig.dst);
}

std::size_t drop_forbidden_flows(mnl_socket* sock, const AllowList& allow,
                                 const std::vector<IpAddr>& local_addresses) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE * 4);

    // A dump walks the kernel's whole conntrack hash table, which is shared by every namespace
    // (2^18 buckets here: about 3 ms of CPU), even when this namespace has no entry at all, as a
    // freshly created container's namespace has not. The policy is committed before we are
    // called, so an entry allocated after this count went through it: none to drop.
    if (auto n = count_entries(sock, buf); n && *n == 0) return 0;

    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = AF_UNSPEC;  // both families
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    std::vector<Entry> doomed;
    int err = nfnl::request(sock, nlh, [&](const nlmsghdr* m) -> int {
        Entry e;
        if (parse_entry(m, e) && is_forbidden_flow(e.orig, allow, local_addresses))
            doomed.push_back(std::move(e));
        return MNL_CB_OK;
    });
    // No conntrack module/state in this namespace yet: nothing to drop.
    if (err == -ENOENT || err == -EOPNOTSUPP || err == -EPROTONOSUPPORT) return 0;
    if (err < 0) throw_errno("read conntrack table", -err);

    std::size_t dropped = 0;
    for (const auto& e : doomed) {
        nlmsghdr* del = mnl_nlmsg_put_header(buf.data());
        del->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
        del->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(del, sizeof(nfgenmsg)));
        g->nfgen_family = static_cast<std::uint8_t>(to_af(e.orig.dst.family));
        g->version = NFNETLINK_V0;
        g->res_id = 0;
        for (const auto* attr : {&e.tuple_attr, &e.zone_attr}) {
            if (attr->empty()) continue;
            std::memcpy(static_cast<char*>(mnl_nlmsg_get_payload_tail(del)), attr->data(),
                        attr->size());
            del->nlmsg_len += MNL_ALIGN(attr->size());
        }
        err = nfnl::request(sock, del);
        if (err == 0)
            ++dropped;
        else if (err != -ENOENT)  // ENOENT: the flow ended meanwhile, which is what we wanted
            throw_errno("delete conntrack entry " + e.orig.src.str() + " -> " + e.orig.dst.str(),
                        -err);
    }
    return dropped;
}

}  // namespace nsegress
