// Parsers of what the kernel sends back (pure: bytes in, values out; no socket): rules, set
// elements and chains of nftables dump replies, for the readers of src/kernel/nft.cpp and for
// the unit tests and fuzzers (whoever else can write nftables could have written these bytes).
#include "nsegress/nft.hpp"

// glibc first: it tells the uapi headers below not to redefine in_addr and friends.
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/nft_detail.hpp"

namespace nsegress::nft {

using namespace detail;

// ---- Shared with the readers (nft_detail.hpp) --------------------------------------------------

namespace detail {

// The comment a rule carries in its userdata (how status finds our counted rules); "" if none.
// Userdata is opaque bytes to the kernel, written by whoever wrote the rule: walk its
// type-length-value records here, bounded by the buffer. nftnl_udata_parse() trusts each
// record's length and would read past the end.
std::string rule_comment(const nftnl_rule* rule) {
    std::string comment;
    std::uint32_t ulen = 0;
    const auto* p =
        static_cast<const std::uint8_t*>(nftnl_rule_get_data(rule, NFTNL_RULE_USERDATA, &ulen));
    if (!p) return comment;
    std::size_t left = ulen;
    while (left >= 2) {
        std::uint8_t type = p[0];
        std::size_t len = std::min<std::size_t>(p[1], left - 2);
        const char* value = reinterpret_cast<const char*>(p + 2);
        if (type == NFTNL_UDATA_RULE_COMMENT) comment = std::string(value, strnlen(value, len));
        p += 2 + len;
        left -= 2 + len;
    }
    return comment;
}

// The re-restrict stamp in a rule's userdata (a record of type kStampUdataType), if any.
std::optional<Stamp> rule_stamp(const nftnl_rule* rule) {
    std::uint32_t ulen = 0;
    const auto* p =
        static_cast<const std::uint8_t*>(nftnl_rule_get_data(rule, NFTNL_RULE_USERDATA, &ulen));
    if (!p) return std::nullopt;
    std::size_t left = ulen;
    while (left >= 2) {
        std::uint8_t type = p[0];
        std::size_t len = std::min<std::size_t>(p[1], left - 2);
        if (type == kStampUdataType) return decode_stamp(p + 2, len);
        p += 2 + len;
        left -= 2 + len;
    }
    return std::nullopt;
}

// The rule's counter expression (zero when it has none).
Counter rule_counter(nftnl_rule* rule) {
    Counter c;
    std::unique_ptr<nftnl_expr_iter, void (*)(nftnl_expr_iter*)> it(nftnl_expr_iter_create(rule),
                                                                    nftnl_expr_iter_destroy);
    if (!it) throw std::bad_alloc();
    for (nftnl_expr* e = nftnl_expr_iter_next(it.get()); e; e = nftnl_expr_iter_next(it.get())) {
        const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
        if (name && std::strcmp(name, "counter") == 0) {
            c.packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
            c.bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
        }
    }
    return c;
}

// The name-set elements of one GETSETELEM reply (dump or single).
int parse_name_elements(const nlmsghdr* m, Family f, std::vector<NameElementState>& out) {
    const std::size_t alen = f == Family::v4 ? 4 : 16;
    auto got = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    if (nftnl_set_elems_nlmsg_parse(m, got.get()) < 0) return MNL_CB_ERROR;
    std::unique_ptr<nftnl_set_elems_iter, void (*)(nftnl_set_elems_iter*)> it(
        nftnl_set_elems_iter_create(got.get()), nftnl_set_elems_iter_destroy);
    if (!it) throw std::bad_alloc();
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e;
         e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t klen = 0, elen = 0;
        const auto* k =
            static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen));
        const auto* ke =
            static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &elen));
        if (!k || !ke || klen != port_key_len(f) || elen != klen) continue;
        u128 v = 0;
        for (std::size_t i = 0; i < alen; ++i) v = (v << 8) | u128{k[i]};
        NameElementState st;
        st.addr = IpAddr{f, v};
        st.slot.proto_first = k[alen];
        st.slot.proto_last = ke[alen];
        st.slot.port_first = static_cast<std::uint16_t>(k[alen + 4] << 8 | k[alen + 5]);
        st.slot.port_last = static_cast<std::uint16_t>(ke[alen + 4] << 8 | ke[alen + 5]);
        if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION))
            st.expires_ms = nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION);
        out.push_back(st);
    }
    return MNL_CB_OK;
}

// The devices a netdev base chain is bound to. The kernel reports a single device as
// NFTA_HOOK_DEV, or as a one-element NFTA_HOOK_DEVS list on some versions.
std::vector<std::string> chain_devices(const nftnl_chain* chain) {
    std::vector<std::string> out;
    if (nftnl_chain_is_set(chain, NFTNL_CHAIN_DEV)) {
        out.emplace_back(nftnl_chain_get_str(chain, NFTNL_CHAIN_DEV));
    } else if (nftnl_chain_is_set(chain, NFTNL_CHAIN_DEVICES)) {
        const auto* devs =
            static_cast<const char* const*>(nftnl_chain_get(chain, NFTNL_CHAIN_DEVICES));
        for (std::size_t i = 0; devs && devs[i]; ++i) out.emplace_back(devs[i]);
    }
    return out;
}

}  // namespace detail

// ---- Public API -------------------------------------------------------------------------------

std::vector<Range> elements_to_ranges(Family f, std::vector<ElementKey> elements) {
    std::sort(elements.begin(), elements.end(), [](const ElementKey& a, const ElementKey& b) {
        if (a.key.value != b.key.value) return a.key.value < b.key.value;
        return a.interval_end && !b.interval_end;  // an end closes before a start opens
    });
    const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
    std::vector<Range> out;
    std::optional<IpAddr> open;
    for (const auto& e : elements) {
        if (e.interval_end) {
            if (open && e.key.value > open->value)
                out.push_back(Range{*open, IpAddr{f, e.key.value - 1}});
            open.reset();
        } else {
            // Two starts in a row (not what the kernel sends for a set of ours, but anyone with
            // CAP_NET_ADMIN in the namespace can write this table): close the open range first;
            // a repeated start is the same start.
            if (open && e.key.value == open->value) continue;
            if (open) out.push_back(Range{*open, IpAddr{f, e.key.value - 1}});
            open = e.key;
        }
    }
    if (open) out.push_back(Range{*open, IpAddr{f, top}});
    return out;
}

bool parse_rule_message(const nlmsghdr* nlh, std::optional<RuleSummary>& out) {
    out.reset();
    auto rule = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
    if (nftnl_rule_nlmsg_parse(nlh, rule.get()) < 0) return false;
    const char* table = nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE);
    const char* chain = nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN);
    if (nftnl_rule_get_u32(rule.get(), NFTNL_RULE_FAMILY) != NFPROTO_INET || !table ||
        std::strcmp(table, kTable) != 0 || !chain ||
        (std::strcmp(chain, kChain) != 0 && std::strcmp(chain, kChainInbound) != 0 &&
         std::strcmp(chain, kChainDns) != 0))
        return true;
    RuleSummary r;
    r.chain = chain;
    r.comment = rule_comment(rule.get());
    r.counter = rule_counter(rule.get());
    out = std::move(r);
    return true;
}

bool parse_port_setelem_message(const nlmsghdr* nlh, Family f, std::vector<PortRange>& out) {
    auto got = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    if (nftnl_set_elems_nlmsg_parse(nlh, got.get()) < 0) return false;
    std::unique_ptr<nftnl_set_elems_iter, void (*)(nftnl_set_elems_iter*)> it(
        nftnl_set_elems_iter_create(got.get()), nftnl_set_elems_iter_destroy);
    if (!it) throw std::bad_alloc();
    const std::size_t alen = f == Family::v4 ? 4 : 16;
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e;
         e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t len = 0, end_len = 0;
        const auto* key =
            static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
        const auto* end = static_cast<const std::uint8_t*>(
            nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &end_len));
        if (!key || len != port_key_len(f)) continue;
        if (!end || end_len != len) end = key;  // a single value
        const std::uint8_t proto = key[alen];
        if (end[alen] != proto) continue;  // a protocol range: not something we write
        PortRange p;
        if (proto == IPPROTO_TCP)
            p.proto = IpProto::tcp;
        else if (proto == IPPROTO_UDP)
            p.proto = IpProto::udp;
        else if (proto == IPPROTO_SCTP)
            p.proto = IpProto::sctp;
        else
            continue;
        p.addrs = Range{IpAddr::from_bytes(f, key), IpAddr::from_bytes(f, end)};
        p.first = static_cast<std::uint16_t>(key[alen + 4] << 8 | key[alen + 5]);
        p.last = static_cast<std::uint16_t>(end[alen + 4] << 8 | end[alen + 5]);
        if (p.addrs.last.value < p.addrs.first.value || p.last < p.first) continue;
        out.push_back(p);
    }
    return true;
}

bool parse_setelem_message(const nlmsghdr* nlh, Family f, std::vector<ElementKey>& keys) {
    auto got = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    if (nftnl_set_elems_nlmsg_parse(nlh, got.get()) < 0) return false;
    std::unique_ptr<nftnl_set_elems_iter, void (*)(nftnl_set_elems_iter*)> it(
        nftnl_set_elems_iter_create(got.get()), nftnl_set_elems_iter_destroy);
    if (!it) throw std::bad_alloc();
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e;
         e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t len = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
        if (!key || len != (f == Family::v4 ? 4u : 16u)) continue;
        bool end = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
                   (nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & NFT_SET_ELEM_INTERVAL_END);
        keys.push_back(ElementKey{IpAddr::from_bytes(f, key), end});
    }
    return true;
}

}  // namespace nsegress::nft
