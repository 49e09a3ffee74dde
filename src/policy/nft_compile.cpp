// The nftables batch compiler (pure: it builds netlink messages with libnftnl and sends
// nothing): the policy, a names refresh and the release as one nfnetlink batch each, the
// set contents of an incremental re-restrict with their digest and stamp. See nft.hpp; the
// socket half (commit, dumps, readers) is src/kernel/nft.cpp.
#include "nsegress/nft.hpp"

// glibc first: it tells the uapi headers below not to redefine in_addr and friends.
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#include "policy/nft_detail.hpp"

namespace nsegress::nft {

using namespace detail;

// ---- Shared with the readers and the renderer (nft_detail.hpp) ---------------------------------

namespace detail {

TablePtr make_table() {
    auto t = checked<nftnl_table, TableFree>(nftnl_table_alloc());
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, kTable);
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    return t;
}

SetPtr make_set(const char* name, std::uint32_t id) {
    auto s = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTable);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
    return s;
}

// Whether IPv6 neighbour discovery is needed: some IPv6 destination is allowed at all.
bool needs_nd(const Policy& p) {
    return p.all().has(Family::v6) || !p.scoped(Family::v6).empty() || p.echo().has(Family::v6);
}

std::string netdev_chain_name(const NetdevDevice& d) { return kNetdevChainPrefix + d.name; }

std::vector<std::uint8_t> slot_key(const IpAddr& a, std::uint8_t proto, std::uint16_t port) {
    std::vector<std::uint8_t> k(port_key_len(a.family), 0);
    auto b = a.bytes();
    std::copy(b.begin(), b.begin() + a.size(), k.begin());
    k[a.size()] = proto;
    k[a.size() + 4] = static_cast<std::uint8_t>(port >> 8);
    k[a.size() + 5] = static_cast<std::uint8_t>(port & 0xff);
    return k;
}

}  // namespace detail

namespace {

constexpr std::uint32_t kTypeInteger = 4;
// Set ids of the inet table (the netdev table has its own, below).
constexpr std::uint32_t kSetId4 = 1;
constexpr std::uint32_t kSetId6 = 2;
constexpr std::uint32_t kSetIdNd6 = 3;
constexpr std::uint32_t kSetIdPorts4 = 4;
constexpr std::uint32_t kSetIdPorts6 = 5;
constexpr std::uint32_t kSetIdEcho4 = 6;
constexpr std::uint32_t kSetIdEcho6 = 7;
constexpr std::uint32_t kSetIdNames4 = 8;
constexpr std::uint32_t kSetIdNames6 = 9;
// Registers of nft's concatenations: 32-bit registers, each field padded to 4 bytes.
constexpr std::uint32_t kReg32_00 = 8;

// ---- Batch building ---------------------------------------------------------------------------

// A growable batch. libnftnl writes messages into caller memory without bounds checks, so each
// message gets generous scratch space that is trimmed to the real length afterwards.
class BatchWriter {
public:
    explicit BatchWriter(std::uint32_t seq) : seq_(seq) {}

    template <typename Fill>
    void add(std::uint16_t type, std::uint16_t flags, std::string what, std::size_t reserve,
             Fill fill) {
        std::size_t at = batch_.bytes.size();
        batch_.bytes.resize(at + reserve);
        std::uint32_t seq = seq_++;
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(batch_.bytes.data() + at, type, family, flags | NLM_F_ACK, seq);
        fill(nlh);
        // libnftnl cannot be told the room it has: a message that outgrew its reserve has
        // already written past it. Stop before anything is sent (never a silent overrun).
        if (NLMSG_ALIGN(nlh->nlmsg_len) > reserve) {
            std::fprintf(stderr, "nsegress: internal error: %s outgrew its %zu-byte reserve\n",
                         what.c_str(), reserve);
            std::abort();
        }
        batch_.bytes.resize(at + NLMSG_ALIGN(nlh->nlmsg_len));
        batch_.messages.push_back(BatchMessage{seq, type, label + std::move(what), true});
    }

    // The nfgenmsg family of the messages that follow, and what their descriptions start with
    // (so that an error in the netdev table names it).
    std::uint16_t family = NFPROTO_INET;
    std::string label;
    std::uint32_t next_anonymous_set_id = 100;  // ids of the batch's anonymous sets

    void begin() { frame(true); }
    Batch end() {
        frame(false);
        return std::move(batch_);
    }

private:
    void frame(bool begin) {
        std::size_t at = batch_.bytes.size();
        batch_.bytes.resize(at + MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg)));
        std::uint32_t seq = seq_++;
        nlmsghdr* nlh = begin ? nftnl_batch_begin(batch_.bytes.data() + at, seq)
                              : nftnl_batch_end(batch_.bytes.data() + at, seq);
        batch_.bytes.resize(at + NLMSG_ALIGN(nlh->nlmsg_len));
        batch_.messages.push_back(BatchMessage{seq, 0, begin ? "batch begin" : "batch end", false});
    }

    Batch batch_;
    std::uint32_t seq_;
};

void add_table(BatchWriter& w, std::uint16_t type, const char* what) {
    auto t = make_table();
    w.add(type, type == NFT_MSG_NEWTABLE ? NLM_F_CREATE : 0, what, 512,
          [&](nlmsghdr* nlh) { nftnl_table_nlmsg_build_payload(nlh, t.get()); });
}

// "flush chain": deletes every rule of the chain in the next generation (DELRULE without a
// handle). Sent before the new rules, which it would otherwise delete too.
void flush_chain(BatchWriter& w, std::uint32_t family, const std::string& chain) {
    auto r = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.c_str());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, family);
    w.add(NFT_MSG_DELRULE, 0, fmt::format("flush chain {}", chain), 512,
          [&](nlmsghdr* nlh) { nftnl_rule_nlmsg_build_payload(nlh, r.get()); });
}

void add_element(nftnl_set* s, const IpAddr& key, bool interval_end) {
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    if (!e) throw std::bad_alloc();
    auto b = key.bytes();
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, b.data(), static_cast<std::uint32_t>(key.size()));
    if (interval_end) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    nftnl_set_elem_add(s, e);  // the set owns it now
}

// An interval set of table nsegress in `nfproto` (inet, or netdev for the egress filter), with
// its elements in messages of kElementsPerMessage ranges.
// With `existing`, the set is already there with this shape (read_installed): its elements
// are flushed (DELSETELEM without elements) and the new ones added, in the same transaction.
void add_interval_set(BatchWriter& w, std::uint32_t nfproto, const char* name, std::uint32_t id,
                      Family f, const std::vector<Range>& ranges, bool existing = false) {
    if (existing) {
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        nftnl_set_unset(s.get(), NFTNL_SET_ID);  // by name: the set is not new in this batch
        w.add(NFT_MSG_DELSETELEM, 0, fmt::format("flush set {}", name), 512,
              [&](nlmsghdr* nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, s.get()); });
    } else {
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_INTERVAL);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE,
                          f == Family::v4 ? kTypeIpAddr : kTypeIp6Addr);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, f == Family::v4 ? 4 : 16);
        w.add(NFT_MSG_NEWSET, NLM_F_CREATE, fmt::format("set {}", name), 1024,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
    }
    // Interval sets store [first, last+1): a start key, and an end key flagged INTERVAL_END.
    // A range reaching the top of the address space has no end key (last+1 would wrap).
    const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
    for (std::size_t i = 0; i < ranges.size(); i += kElementsPerMessage) {
        std::size_t n = std::min(kElementsPerMessage, ranges.size() - i);
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        for (std::size_t j = i; j < i + n; ++j) {
            add_element(s.get(), ranges[j].first, false);
            if (ranges[j].last.value != top)
                add_element(s.get(), IpAddr{f, ranges[j].last.value + 1}, true);
        }
        // Per element: nest + key nest + key (<=16) + flags, well under 64 bytes.
        w.add(NFT_MSG_NEWSETELEM, NLM_F_CREATE,
              fmt::format("set {} elements {}-{} (first {})", name, i + 1, i + n, ranges[i].str()),
              4096 + n * 2 * 64, [&](nlmsghdr* nlh) {
                  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
                  // A nest over 64 KiB would wrap nla_len and silently lose elements.
                  if (nlh->nlmsg_len > 65000)
                      throw std::length_error("set element message exceeds a netlink nest");
              });
    }
}

// The elements of `ranges` added to (NEWSETELEM) or deleted from (DELSETELEM) an interval set
// that exists already (incremental re-restrict), in messages of kElementsPerMessage ranges.
void interval_elements(BatchWriter& w, std::uint32_t nfproto, const char* name, Family f,
                       const std::vector<Range>& ranges, std::uint16_t type) {
    const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
    const bool add = type == NFT_MSG_NEWSETELEM;
    for (std::size_t i = 0; i < ranges.size(); i += kElementsPerMessage) {
        std::size_t n = std::min(kElementsPerMessage, ranges.size() - i);
        auto s = make_set(name, 0);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        nftnl_set_unset(s.get(), NFTNL_SET_ID);  // by name: the set is not new in this batch
        for (std::size_t j = i; j < i + n; ++j) {
            add_element(s.get(), ranges[j].first, false);
            if (ranges[j].last.value != top)
                add_element(s.get(), IpAddr{f, ranges[j].last.value + 1}, true);
        }
        w.add(type, add ? NLM_F_CREATE : 0,
              fmt::format("set {} {} elements {}-{} (first {})", name, add ? "add" : "delete",
                          i + 1, i + n, ranges[i].str()),
              4096 + n * 2 * 64, [&](nlmsghdr* nlh) {
                  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
                  if (nlh->nlmsg_len > 65000)
                      throw std::length_error("set element message exceeds a netlink nest");
              });
    }
}

// Incremental: only what differs between what the set holds (`have`) and `want`, both sorted
// and disjoint. Whole ranges: a range that changed is deleted and added again (an element-level
// diff could leave a start key paired with another range's end key mid-transaction). Deletions
// first, so that a range added back with the same start key finds its old one gone.
void interval_set_diff(BatchWriter& w, std::uint32_t nfproto, const char* name, Family f,
                       const std::vector<Range>& have, const std::vector<Range>& want) {
    if (have == want) return;
    std::vector<Range> gone, added;
    std::set_difference(have.begin(), have.end(), want.begin(), want.end(),
                        std::back_inserter(gone));
    std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                        std::back_inserter(added));
    interval_elements(w, nfproto, name, f, gone, NFT_MSG_DELSETELEM);
    interval_elements(w, nfproto, name, f, added, NFT_MSG_NEWSETELEM);
}

void add_set(BatchWriter& w, Family f, const AllowList& allow, bool existing = false) {
    add_interval_set(w, NFPROTO_INET, f == Family::v4 ? kSet4 : kSet6,
                     f == Family::v4 ? kSetId4 : kSetId6, f, allow.ranges(f), existing);
}

// A concatenated interval set `addr . inet_proto . inet_service` (pipapo): every element is
// an address range, a protocol and a port range, each an inclusive [KEY, KEY_END].
// With `existing`, the set is deleted and created again in the same transaction, after the rules
// that use it were flushed (a flush of a large pipapo set followed by the same elements costs
// seconds: 6 s for 2*10^4 elements, against 0.15 s for a new set). The new set is found by the
// new rules through its set id; the chains and their hooks stay.
void add_port_set(BatchWriter& w, std::uint32_t nfproto, const char* name, std::uint32_t id,
                  Family f, const std::vector<PortRange>& elements, bool existing = false) {
    if (existing) {
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        nftnl_set_unset(s.get(), NFTNL_SET_ID);
        w.add(NFT_MSG_DELSET, 0, fmt::format("set {} (replace)", name), 512,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
    }
    {
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_INTERVAL | NFT_SET_CONCAT);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, concat_type(f));
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, port_key_len(f));
        const std::uint8_t fields[3] = {static_cast<std::uint8_t>(f == Family::v4 ? 4 : 16), 1, 2};
        nftnl_set_set_data(s.get(), NFTNL_SET_DESC_CONCAT, fields, sizeof fields);
        w.add(NFT_MSG_NEWSET, NLM_F_CREATE, fmt::format("set {}", name), 1024,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
    }
    for (std::size_t i = 0; i < elements.size(); i += kElementsPerMessage) {
        std::size_t n = std::min(kElementsPerMessage, elements.size() - i);
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, nfproto);
        for (std::size_t j = i; j < i + n; ++j) {
            const PortRange& p = elements[j];
            nftnl_set_elem* e = nftnl_set_elem_alloc();
            if (!e) throw std::bad_alloc();
            auto k = port_key(p.addrs.first, p.proto, p.first);
            auto end = port_key(p.addrs.last, p.proto, p.last);
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, k.data(),
                               static_cast<std::uint32_t>(k.size()));
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, end.data(),
                               static_cast<std::uint32_t>(end.size()));
            nftnl_set_elem_add(s.get(), e);
        }
        w.add(NFT_MSG_NEWSETELEM, NLM_F_CREATE,
              fmt::format("set {} elements {}-{} (first {} . {} . {}-{})", name, i + 1, i + n,
                          elements[i].addrs.str(), proto_name(elements[i].proto), elements[i].first,
                          elements[i].last),
              4096 + n * 128, [&](nlmsghdr* nlh) {
                  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
                  if (nlh->nlmsg_len > 65000)
                      throw std::length_error("set element message exceeds a netlink nest");
              });
    }
}

// The port-scoped and echo sets of a table (inet: ids 4-7; netdev: 14-17).
void add_scoped_sets(BatchWriter& w, std::uint32_t nfproto, std::uint32_t id_base, const Policy& p,
                     bool existing) {
    // The port sets last: replaced in place they are created anew, and `nft list` orders sets by
    // creation; the same order either way keeps --dry-run's listing equal to the installed one.
    add_interval_set(w, nfproto, kSetEcho4, id_base + 2, Family::v4, p.echo().ranges(Family::v4),
                     existing);
    add_interval_set(w, nfproto, kSetEcho6, id_base + 3, Family::v6, p.echo().ranges(Family::v6),
                     existing);
    add_port_set(w, nfproto, kSetPorts4, id_base, Family::v4, p.scoped(Family::v4), existing);
    add_port_set(w, nfproto, kSetPorts6, id_base + 1, Family::v6, p.scoped(Family::v6), existing);
}

void add_base_chain(BatchWriter& w, const char* name, std::uint32_t hook, std::int32_t prio,
                    std::uint32_t policy) {
    auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, hook);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, prio);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, policy);
    w.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fmt::format("chain {}", name), 1024,
          [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
}

void add_chains(BatchWriter& w, Mode mode) {
    // Audit mode lets everything through, the chain policy included (the final rule accepts
    // everything anyway; the policy only matters if someone deletes that rule by hand).
    add_base_chain(w, kChain, NF_INET_LOCAL_OUT, 0,
                   mode == Mode::audit ? NF_ACCEPT : NF_DROP);  // "filter"
    add_base_chain(w, kChainInbound, NF_INET_PRE_ROUTING, kInboundPriority, NF_ACCEPT);
}

// Expression helpers: each appends one expression to a rule, in nft's register conventions.
class RuleBuilder {
public:
    RuleBuilder() : r_(checked<nftnl_rule, RuleFree>(nftnl_rule_alloc())) {
        nftnl_rule_set_str(r_.get(), NFTNL_RULE_TABLE, kTable);
        nftnl_rule_set_str(r_.get(), NFTNL_RULE_CHAIN, kChain);
        nftnl_rule_set_u32(r_.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    }
    // A rule in another chain of a table named kTable (the netdev table's chains).
    RuleBuilder(std::uint32_t family, const std::string& chain) : RuleBuilder() {
        nftnl_rule_set_str(r_.get(), NFTNL_RULE_CHAIN, chain.c_str());
        nftnl_rule_set_u32(r_.get(), NFTNL_RULE_FAMILY, family);
    }
    // Compares raw bytes (network order), e.g. an EtherType.
    RuleBuilder& eq_bytes(std::initializer_list<std::uint8_t> bytes) {
        std::vector<std::uint8_t> v(bytes);
        return cmp(NFT_CMP_EQ, v.data(), static_cast<std::uint32_t>(v.size()));
    }
    // (reg & mask) == value on one byte: the IP version nibble.
    RuleBuilder& masked_eq_u8(std::uint8_t mask, std::uint8_t value) {
        return masked_cmp_u8(mask, NFT_CMP_EQ, value);
    }
    // reg = (reg & mask) ^ 0, over `len` bytes: nft's form of every masked test.
    RuleBuilder& and_mask(const void* mask, std::uint32_t len) {
        static constexpr std::array<std::uint8_t, 16> zero{};
        auto e = expr("bitwise");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_LEN, len);
        nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_MASK, mask, len);
        nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_XOR, zero.data(), len);
        return push(std::move(e));
    }
    RuleBuilder& drop() {
        auto e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, NF_DROP);
        return push(std::move(e));
    }
    RuleBuilder& meta(std::uint32_t key, std::uint32_t reg = NFT_REG_1) {
        auto e = expr("meta");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, reg);
        return push(std::move(e));
    }
    // What nft emits after `meta l4proto` in a concatenation (a no-op on one byte, kept so
    // that `nft list` shows our rule exactly as it shows its own).
    RuleBuilder& hton(std::uint32_t reg, std::uint32_t len, std::uint32_t size) {
        auto e = expr("byteorder");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BYTEORDER_SREG, reg);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BYTEORDER_DREG, reg);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BYTEORDER_OP, NFT_BYTEORDER_HTON);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BYTEORDER_LEN, len);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BYTEORDER_SIZE, size);
        return push(std::move(e));
    }
    RuleBuilder& ct(std::uint32_t key) {
        auto e = expr("ct");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, key);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_DREG, NFT_REG_1);
        return push(std::move(e));
    }
    RuleBuilder& payload(std::uint32_t base, std::uint32_t offset, std::uint32_t len,
                         std::uint32_t reg = NFT_REG_1) {
        auto e = expr("payload");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, reg);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_BASE, base);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_OFFSET, offset);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_LEN, len);
        return push(std::move(e));
    }
    RuleBuilder& cmp(std::uint32_t op, const void* data, std::uint32_t len) {
        auto e = expr("cmp");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_OP, op);
        nftnl_expr_set(e.get(), NFTNL_EXPR_CMP_DATA, data, len);
        return push(std::move(e));
    }
    // (reg & mask) OP value on one byte.
    RuleBuilder& masked_cmp_u8(std::uint8_t mask, std::uint32_t op, std::uint8_t value) {
        return and_mask(&mask, 1).cmp(op, &value, 1);
    }
    // `fib saddr type`: the kernel's address type of the packet's source (RTN_LOCAL: ours).
    RuleBuilder& fib_saddr_type() {
        auto e = expr("fib");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_SADDR);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_DREG, NFT_REG_1);
        return push(std::move(e));
    }
    // `ip option T exists` / `exthdr T exists`: 1 in the register when the header is there.
    RuleBuilder& exthdr_present(std::uint32_t op, std::uint8_t type) {
        auto e = expr("exthdr");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_EXTHDR_DREG, NFT_REG_1);
        nftnl_expr_set_u8(e.get(), NFTNL_EXPR_EXTHDR_TYPE, type);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_EXTHDR_OFFSET, 0);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_EXTHDR_LEN, 1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_EXTHDR_OP, op);
        push(std::move(e));
        return eq_u8(1);
    }
    // `ct label L` (a test) and `ct label set L`. Labels are a 128-bit map; nft keeps bit L in
    // host-order 32-bit words, as the kernel's test_bit() reads them.
    static std::array<std::uint32_t, 4> label_bits(unsigned label) {
        std::array<std::uint32_t, 4> b{};
        b[label / 32] = 1u << (label % 32);
        return b;
    }
    RuleBuilder& has_label(unsigned label) {
        const auto mask = label_bits(label);
        const std::array<std::uint32_t, 4> zero{};
        return ct(NFT_CT_LABELS)
            .and_mask(mask.data(), sizeof mask)
            .cmp(NFT_CMP_NEQ, zero.data(), sizeof zero);
    }
    RuleBuilder& set_label(unsigned label) {
        auto bits = label_bits(label);
        auto imm = expr("immediate");
        nftnl_expr_set_u32(imm.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_1);
        nftnl_expr_set(imm.get(), NFTNL_EXPR_IMM_DATA, bits.data(), sizeof bits);
        push(std::move(imm));
        auto e = expr("ct");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, NFT_CT_LABELS);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_SREG, NFT_REG_1);
        return push(std::move(e));
    }
    RuleBuilder& eq_u8(std::uint8_t v) { return cmp(NFT_CMP_EQ, &v, 1); }
    RuleBuilder& neq_u8(std::uint8_t v) { return cmp(NFT_CMP_NEQ, &v, 1); }
    RuleBuilder& neq_u32(std::uint32_t v) { return cmp(NFT_CMP_NEQ, &v, 4); }  // host order
    RuleBuilder& eq_u32(std::uint32_t v) { return cmp(NFT_CMP_EQ, &v, 4); }    // host order
    RuleBuilder& eq_bytes(const void* data, std::uint32_t len) {
        return cmp(NFT_CMP_EQ, data, len);
    }
    // (reg & mask) ^ 0 != 0: how nft tests bits such as `ct state related`.
    RuleBuilder& has_bits(std::uint32_t mask) {
        const std::uint32_t zero = 0;
        return and_mask(&mask, 4).cmp(NFT_CMP_NEQ, &zero, 4);
    }
    RuleBuilder& lookup(const char* set, std::uint32_t set_id, bool inverted = false) {
        auto e = expr("lookup");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, set);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SET_ID, set_id);
        if (inverted)
            nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);  // "!= @set"
        return push(std::move(e));
    }
    RuleBuilder& not_in(const char* set, std::uint32_t set_id) { return lookup(set, set_id, true); }
    RuleBuilder& counter() { return push(expr("counter")); }
    // limit rate N/second burst B packets: the token bucket holds B packets, refilled at N/s.
    RuleBuilder& limit_per_second(std::uint64_t rate, std::uint32_t burst) {
        auto e = expr("limit");
        nftnl_expr_set_u64(e.get(), NFTNL_EXPR_LIMIT_RATE, rate);
        nftnl_expr_set_u64(e.get(), NFTNL_EXPR_LIMIT_UNIT, 1);  // seconds
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_BURST, burst);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_FLAGS, 0);
        return push(std::move(e));
    }
    // log prefix P group G: a group makes it an nfnetlink_log (NFLOG) target, not the syslog.
    RuleBuilder& log_group(const char* prefix, std::uint16_t group) {
        auto e = expr("log");
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOG_PREFIX, prefix);
        nftnl_expr_set_u16(e.get(), NFTNL_EXPR_LOG_GROUP, group);
        return push(std::move(e));
    }
    RuleBuilder& accept() {
        auto e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT);
        return push(std::move(e));
    }
    // redirect to :PORT (`port` two bytes, network order), as nft compiles it.
    RuleBuilder& redirect_to(const std::uint8_t* port) {
        auto imm = expr("immediate");
        nftnl_expr_set_u32(imm.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_1);
        nftnl_expr_set(imm.get(), NFTNL_EXPR_IMM_DATA, port, 2);
        push(std::move(imm));
        auto e = expr("redir");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
        return push(std::move(e));
    }
    RuleBuilder& reject_admin_prohibited() {
        auto e = expr("reject");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
        nftnl_expr_set_u8(e.get(), NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
        return push(std::move(e));
    }
    // The comment, and with `stamp` (a whole encoded record, encode_stamp) the re-restrict stamp.
    RuleBuilder& comment(const char* text, const std::vector<std::uint8_t>* stamp = nullptr) {
        auto u = checked<nftnl_udata_buf, UdataFree>(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
        if (!nftnl_udata_put_strz(u.get(), NFTNL_UDATA_RULE_COMMENT, text))
            throw std::length_error("rule comment too long");
        if (stamp && !nftnl_udata_put(u.get(), kStampUdataType,
                                      static_cast<std::uint32_t>(stamp->size()), stamp->data()))
            throw std::length_error("rule stamp too long");
        nftnl_rule_set_data(r_.get(), NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u.get()),
                            nftnl_udata_buf_len(u.get()));
        return *this;
    }
    void emit(BatchWriter& w, std::string what) {
        w.add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, "rule " + std::move(what), 2048,
              [&](nlmsghdr* nlh) { nftnl_rule_nlmsg_build_payload(nlh, r_.get()); });
    }

private:
    static ExprPtr expr(const char* name) {
        return checked<nftnl_expr, ExprFree>(nftnl_expr_alloc(name));
    }
    RuleBuilder& push(ExprPtr e) {
        nftnl_rule_add_expr(r_.get(), e.release());  // the rule owns it now
        return *this;
    }
    RulePtr r_;
};

constexpr std::uint32_t kCtStateRelated = 1u << (IP_CT_RELATED + 1);  // NF_CT_STATE_BIT
constexpr std::uint32_t kCtStateNew = 1u << (IP_CT_NEW + 1);
constexpr std::uint8_t kCtDirReply = 1;  // IP_CT_DIR_REPLY (kernel-internal enum)

constexpr std::uint32_t kCtStateInvalid = 1u << 0;    // NF_CT_STATE_INVALID_BIT
constexpr std::uint32_t kCtStateUntracked = 1u << 6;  // NF_CT_STATE_UNTRACKED_BIT
constexpr std::uint8_t kTcpFlagSyn = 0x02, kTcpFlagAck = 0x10;
constexpr std::uint32_t kLoopbackIfindex = 1;  // lo is 1 in every netns
constexpr std::uint32_t kRtnLocal = 2;         // RTN_LOCAL
constexpr std::uint8_t kIpv6Routing = 43;      // NEXTHDR_ROUTING
constexpr std::uint8_t kNdRouterSolicit = 133, kNdNeighbourSolicit = 135, kNdNeighbourAdvert = 136;

// The inbound chain: label the connections whose first packet came in from a real interface
// (see nft.hpp). TCP only counts from a SYN without ACK: never a connection picked up mid-stream.
void add_inbound_rules(BatchWriter& w) {
    RuleBuilder(NFPROTO_INET, kChainInbound)
        .meta(NFT_META_IIF)
        .neq_u32(kLoopbackIfindex)
        .ct(NFT_CT_STATE)
        .has_bits(kCtStateNew)
        .meta(NFT_META_L4PROTO)
        .eq_u8(IPPROTO_TCP)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1)
        .masked_cmp_u8(kTcpFlagSyn | kTcpFlagAck, NFT_CMP_EQ, kTcpFlagSyn)
        .counter()
        .set_label(kInboundLabel)
        .comment(kCommentInbound)
        .emit(w, "inbound tcp syn: ct label set");
    RuleBuilder(NFPROTO_INET, kChainInbound)
        .meta(NFT_META_IIF)
        .neq_u32(kLoopbackIfindex)
        .ct(NFT_CT_STATE)
        .has_bits(kCtStateNew)
        .meta(NFT_META_L4PROTO)
        .neq_u8(IPPROTO_TCP)
        .counter()
        .set_label(kInboundLabel)
        .comment(kCommentInbound)
        .emit(w, "inbound other: ct label set");
}

// The solicited-node multicast prefix ff02::1:ff00:0/104, the only destination of a duplicate
// address detection probe: its first 13 bytes, compared as nft compares a byte-aligned prefix.
constexpr std::array<std::uint8_t, 13> kSolicitedNode104{0xff, 0x02, 0, 0, 0,    0,   0,
                                                         0,    0,    0, 0, 0x01, 0xff};

// The port-scoped and echo rules (inet chain), as nft itself compiles
// `ip daddr . meta l4proto . th dport @allowp4` and `icmp type echo-request ip daddr @icmp4`.
void add_scoped_rules(BatchWriter& w) {
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .meta(NFT_META_L4PROTO, kReg32_00 + 1)
        .hton(kReg32_00 + 1, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 2)
        .lookup(kSetPorts4, kSetIdPorts4)
        .counter()
        .accept()
        .comment(kCommentPorts4)
        .emit(w, "ip daddr . meta l4proto . th dport @allowp4 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .meta(NFT_META_L4PROTO, NFT_REG_2)
        .hton(NFT_REG_2, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 5)
        .lookup(kSetPorts6, kSetIdPorts6)
        .counter()
        .accept()
        .comment(kCommentPorts6)
        .emit(w, "ip6 daddr . meta l4proto . th dport @allowp6 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .meta(NFT_META_L4PROTO)
        .eq_u8(IPPROTO_ICMP)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1)
        .eq_u8(8)  // echo-request
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .lookup(kSetEcho4, kSetIdEcho4)
        .counter()
        .accept()
        .comment(kCommentEcho)
        .emit(w, "icmp type echo-request ip daddr @icmp4 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .meta(NFT_META_L4PROTO)
        .eq_u8(IPPROTO_ICMPV6)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1)
        .eq_u8(128)  // echo-request
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .lookup(kSetEcho6, kSetIdEcho6)
        .counter()
        .accept()
        .comment(kCommentEcho)
        .emit(w, "icmpv6 type echo-request ip6 daddr @icmp6 accept");
}

// ---- Names (names.hpp) ------------------------------------------------------------------------

constexpr std::uint32_t kCtStateEstablished = 1u << (IP_CT_ESTABLISHED + 1);
constexpr std::uint8_t kCtDirOriginal = 0;          // IP_CT_DIR_ORIGINAL
constexpr std::uint32_t kCtStatusDstNat = 1u << 5;  // IPS_DST_NAT

SetPtr make_name_set(Family f) {
    auto s = make_set(f == Family::v4 ? kSetNames4 : kSetNames6,
                      f == Family::v4 ? kSetIdNames4 : kSetIdNames6);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, kNameSetFlags);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, concat_type(f));
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, port_key_len(f));
    const std::uint8_t fields[3] = {static_cast<std::uint8_t>(f == Family::v4 ? 4 : 16), 1, 2};
    nftnl_set_set_data(s.get(), NFTNL_SET_DESC_CONCAT, fields, sizeof fields);
    return s;
}

// The name sets: created when missing, kept with their elements when there (a re-restrict keeps
// what the proxy learnt: answers the container holds stay good). No NLM_F_EXCL: an existing set
// of the same shape is no error.
void add_name_sets(BatchWriter& w) {
    for (Family f : {Family::v4, Family::v6}) {
        auto s = make_name_set(f);
        w.add(NFT_MSG_NEWSET, NLM_F_CREATE,
              fmt::format("set {}", f == Family::v4 ? kSetNames4 : kSetNames6), 1024,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
    }
}

// A re-restrict to a policy without names: the chain dns and the name sets go (after the rules
// that use the sets were flushed, earlier in the same batch).
void delete_names(BatchWriter& w) {
    flush_chain(w, NFPROTO_INET, kChainDns);
    auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, kChainDns);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    w.add(NFT_MSG_DELCHAIN, 0, fmt::format("chain {} (no names any more)", kChainDns), 512,
          [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
    for (const char* name : {kSetNames4, kSetNames6}) {
        auto st = make_set(name, 0);
        nftnl_set_unset(st.get(), NFTNL_SET_ID);
        w.add(NFT_MSG_DELSET, 0, fmt::format("set {} (no names any more)", name), 512,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, st.get()); });
    }
}

void add_dns_chain(BatchWriter& w, bool existing) {
    auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, kChainDns);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_LOCAL_OUT);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, kDnsPriority);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "nat");
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    w.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fmt::format("chain {}", kChainDns), 1024,
          [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
    if (existing) flush_chain(w, NFPROTO_INET, kChainDns);
}

void add_dns_rules(BatchWriter& w) {
    const std::array<std::uint8_t, 2> dns_port{0, 53};
    const std::array<std::uint8_t, 2> proxy_port{static_cast<std::uint8_t>(kNamesProxyPort >> 8),
                                                 static_cast<std::uint8_t>(kNamesProxyPort & 0xff)};
    for (std::uint8_t proto : {std::uint8_t{IPPROTO_UDP}, std::uint8_t{IPPROTO_TCP}}) {
        RuleBuilder r(NFPROTO_INET, kChainDns);
        r.meta(NFT_META_MARK)
            .neq_u32(kNamesMark)
            .meta(NFT_META_L4PROTO)
            .eq_u8(proto)
            .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
            .eq_bytes(dns_port.data(), 2)
            .counter()
            .redirect_to(proxy_port.data())
            .comment(kCommentDnsRedirect)
            .emit(w, fmt::format("{} dport 53 redirect to the names proxy",
                                 proto == IPPROTO_UDP ? "udp" : "tcp"));
    }
}

void add_resolver_rules(BatchWriter& w) {
    // Queries the nat chain redirected: the output hook's `oif` is still the device the packet
    // was first routed to (the reroute after nat does not change it), so "oif lo" misses them.
    // Only what our redirect made: conntrack says destination-NATed, to the proxy's address
    // and port on loopback, which routes nowhere but lo.
    const std::array<std::uint8_t, 2> proxy_port{static_cast<std::uint8_t>(kNamesProxyPort >> 8),
                                                 static_cast<std::uint8_t>(kNamesProxyPort & 0xff)};
    const std::array<std::uint8_t, 4> lo4{127, 0, 0, 1};
    std::array<std::uint8_t, 16> lo6{};
    lo6[15] = 1;
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .eq_bytes(lo4.data(), 4)
        .ct(NFT_CT_STATUS)
        .has_bits(kCtStatusDstNat)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
        .eq_bytes(proxy_port.data(), 2)
        .counter()
        .accept()
        .comment(kCommentRedirected)
        .emit(w, "ip daddr 127.0.0.1 ct status dnat th dport names-proxy accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .eq_bytes(lo6.data(), 16)
        .ct(NFT_CT_STATUS)
        .has_bits(kCtStatusDstNat)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
        .eq_bytes(proxy_port.data(), 2)
        .counter()
        .accept()
        .comment(kCommentRedirected)
        .emit(w, "ip6 daddr ::1 ct status dnat th dport names-proxy accept");
    const std::array<std::uint8_t, 2> dns_port{0, 53};
    for (std::uint8_t proto : {std::uint8_t{IPPROTO_UDP}, std::uint8_t{IPPROTO_TCP}})
        RuleBuilder()
            .meta(NFT_META_MARK)
            .eq_u32(kNamesMark)
            .meta(NFT_META_L4PROTO)
            .eq_u8(proto)
            .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
            .eq_bytes(dns_port.data(), 2)
            .counter()
            .accept()
            .comment(kCommentResolver)
            .emit(w, fmt::format("meta mark names-proxy {} dport 53 accept",
                                 proto == IPPROTO_UDP ? "udp" : "tcp"));
}

void add_name_rules(BatchWriter& w) {
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .meta(NFT_META_L4PROTO, kReg32_00 + 1)
        .hton(kReg32_00 + 1, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 2)
        .lookup(kSetNames4, kSetIdNames4)
        .counter()
        .set_label(kNameLabel)
        .accept()
        .comment(kCommentNames4)
        .emit(w, "ip daddr . meta l4proto . th dport @names4 ct label set named accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .meta(NFT_META_L4PROTO, NFT_REG_2)
        .hton(NFT_REG_2, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 5)
        .lookup(kSetNames6, kSetIdNames6)
        .counter()
        .set_label(kNameLabel)
        .accept()
        .comment(kCommentNames6)
        .emit(w, "ip6 daddr . meta l4proto . th dport @names6 ct label set named accept");
    RuleBuilder()
        .ct(NFT_CT_DIRECTION)
        .eq_u8(kCtDirOriginal)
        .ct(NFT_CT_STATE)
        .has_bits(kCtStateEstablished)
        .has_label(kNameLabel)
        .counter()
        .accept()
        .comment(kCommentNamed)
        .emit(w, "ct direction original ct state established ct label named accept");
}

void add_rules(BatchWriter& w, const Policy& policy, Mode mode,
               const std::vector<std::uint8_t>* stamp = nullptr) {
    const bool nd = needs_nd(policy);
    const std::array<std::uint8_t, 16> unspecified{};
    std::array<std::uint8_t, 16> loopback6{};
    loopback6[15] = 1;
    // First what no legitimate packet looks like, in both modes (audit mode would otherwise let
    // a workload plant "inbound" connections that survive the switch to enforce): IPv4 options
    // (LSRR/SSRR, also with a pointer the kernel's own option parser refuses to recognise),
    // IPv6 routing headers, and sources that are not the namespace's.
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 1)
        .masked_cmp_u8(0x0f, NFT_CMP_NEQ, 5)  // ihl
        .counter()
        .drop()
        .comment(kCommentSourceRoute)
        .emit(w, "ip hdrlength != 5 drop");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .exthdr_present(NFT_EXTHDR_OP_IPV6, kIpv6Routing)
        .counter()
        .drop()
        .comment(kCommentSourceRoute)
        .emit(w, "exthdr rt exists drop");
    if (nd) {
        // Duplicate address detection: a solicitation from :: (no address yet), to the
        // solicited-node multicast group only, ICMPv6 straight behind the header.
        RuleBuilder()
            .meta(NFT_META_NFPROTO)
            .eq_u8(NFPROTO_IPV6)
            .payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16)
            .eq_bytes(unspecified.data(), 16)  // ipv6hdr.saddr
            .payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 1)
            .eq_u8(IPPROTO_ICMPV6)  // ipv6hdr.nexthdr
            .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1)
            .eq_u8(kNdNeighbourSolicit)
            .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, kSolicitedNode104.size())
            .eq_bytes(kSolicitedNode104.data(), kSolicitedNode104.size())
            .counter()
            .accept()
            .comment(kCommentDad)
            .emit(w, "duplicate address detection accept");
    }
    RuleBuilder()
        .ct(NFT_CT_STATE)
        .has_bits(kCtStateNew | kCtStateInvalid | kCtStateUntracked | kCtStateRelated)
        .fib_saddr_type()
        .neq_u32(kRtnLocal)
        .counter()
        .drop()
        .comment(kCommentForged)
        .emit(w, "fib saddr type != local drop");
    // Loopback addresses are local, but never a source beyond lo.
    const std::uint8_t net127 = 127;
    RuleBuilder()
        .meta(NFT_META_OIF)
        .neq_u32(kLoopbackIfindex)
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 1)
        .eq_bytes(&net127, 1)
        .counter()
        .drop()
        .comment(kCommentForged)
        .emit(w, "oif != lo ip saddr 127.0.0.0/8 drop");
    RuleBuilder()
        .meta(NFT_META_OIF)
        .neq_u32(kLoopbackIfindex)
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16)
        .eq_bytes(loopback6.data(), 16)
        .counter()
        .drop()
        .comment(kCommentForged)
        .emit(w, "oif != lo ip6 saddr ::1 drop");
    // Whatever leaves through lo with a source that is not ours is forged too, whatever its
    // conntrack state: a genuine answer from another host never passes this namespace's output
    // hook, so a spoofed "answer" that matches one of our established flows (a resolver's, the
    // names proxy's upstream socket) is dropped here instead of being delivered to the socket.
    RuleBuilder()
        .meta(NFT_META_OIF)
        .eq_u32(kLoopbackIfindex)
        .fib_saddr_type()
        .neq_u32(kRtnLocal)
        .counter()
        .drop()
        .comment(kCommentForged)
        .emit(w, "oif lo fib saddr type != local drop");
    RuleBuilder()
        .meta(NFT_META_OIF)
        .eq_u32(kLoopbackIfindex)
        .counter()
        .accept()
        .comment(kCommentLoopback)
        .emit(w, "oif lo accept");
    if (policy.has_names()) add_resolver_rules(w);
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)  // iphdr.daddr
        .lookup(kSet4, kSetId4)
        .counter()
        .accept()
        .comment(kCommentAllow4)
        .emit(w, "ip daddr @allow4 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO)
        .eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)  // ipv6hdr.daddr
        .lookup(kSet6, kSetId6)
        .counter()
        .accept()
        .comment(kCommentAllow6)
        .emit(w, "ip6 daddr @allow6 accept");
    add_scoped_rules(w);
    if (policy.has_names()) add_name_rules(w);
    // After the allow-list: these counters are what got out to peers outside it.
    RuleBuilder()
        .ct(NFT_CT_DIRECTION)
        .eq_u8(kCtDirReply)
        .has_label(kInboundLabel)
        .counter()
        .accept()
        .comment(kCommentReplies)
        .emit(w, "ct direction reply ct label inbound accept");
    for (std::uint8_t proto : {std::uint8_t{IPPROTO_ICMP}, std::uint8_t{IPPROTO_ICMPV6}})
        RuleBuilder()
            .meta(NFT_META_L4PROTO)
            .eq_u8(proto)
            .ct(NFT_CT_STATE)
            .has_bits(kCtStateRelated)
            .has_label(kInboundLabel)
            .counter()
            .accept()
            .comment(kCommentRelated)
            .emit(w, fmt::format("{} related (inbound) accept",
                                 proto == IPPROTO_ICMP ? "icmp" : "icmpv6"));
    if (nd) {
        // Without neighbour discovery no IPv6 packet leaves, allowed or not; but only towards the
        // link (nd6): an ND message to a far address would be routed on, carrying data with it.
        for (std::uint8_t type : {kNdRouterSolicit, kNdNeighbourSolicit, kNdNeighbourAdvert}) {
            RuleBuilder()
                .meta(NFT_META_L4PROTO)
                .eq_u8(IPPROTO_ICMPV6)
                .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1)
                .eq_u8(type)
                .meta(NFT_META_NFPROTO)
                .eq_u8(NFPROTO_IPV6)
                .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
                .lookup(kSetNd6, kSetIdNd6)
                .counter()
                .accept()
                .comment(kCommentNd)
                .emit(w, fmt::format("icmpv6 type {} to @nd6 accept", type));
        }
    }
    // The deny log, a rule of its own: the limit must not sit on the verdict rule, or packets
    // over the limit would skip the reject and fall through to the chain policy.
    RuleBuilder()
        .ct(NFT_CT_STATE)
        .has_bits(kCtStateNew)
        .limit_per_second(kLogRatePerSecond, kLogBurst)
        .counter()
        .log_group(mode == Mode::audit ? kLogPrefixAudit : kLogPrefixEnforce, kNflogGroup)
        .comment(kCommentLog)
        .emit(w, "deny log");
    if (mode == Mode::audit)
        RuleBuilder().counter().accept().comment(kCommentAudit, stamp).emit(w, "audit accept");
    else
        RuleBuilder()
            .counter()
            .reject_admin_prohibited()
            .comment(kCommentDeny, stamp)
            .emit(w, "reject with icmpx admin-prohibited");
}

// ---- The netdev egress table (restrict --netdev-egress) ---------------------------------------
// Kept apart from the inet policy above: its own sets, chains and rules, same table name.

// Set ids are per transaction; the kernel matches them per table on recent kernels, but older
// ones matched the id alone, so the netdev sets never reuse the inet sets' ids.
constexpr std::uint32_t kNetdevSetId4 = 11;
constexpr std::uint32_t kNetdevSetId6 = 12;
constexpr std::uint32_t kNetdevSetIdNd6 = 13;
constexpr std::uint32_t kNetdevSetIdOwn4 = 14;
constexpr std::uint32_t kNetdevSetIdOwn6 = 15;
constexpr std::uint32_t kNetdevSetIdIp6Next = 16;

// The set of kIp6NextKeys (ip6next, nft_detail.hpp): a plain set of one-byte keys.
void add_byte_set(BatchWriter& w, const char* name, std::uint32_t id,
                  const std::vector<std::uint8_t>& keys, bool existing) {
    auto s = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTable);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_NETDEV);
    if (existing) {
        w.add(NFT_MSG_DELSETELEM, 0, fmt::format("flush set {}", name), 512,
              [&](nlmsghdr* nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, s.get()); });
    } else {
        nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, 1);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, kTypeInteger);
        w.add(NFT_MSG_NEWSET, NLM_F_CREATE, fmt::format("set {}", name), 1024,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
        nftnl_set_unset(s.get(), NFTNL_SET_KEY_LEN);
        nftnl_set_unset(s.get(), NFTNL_SET_KEY_TYPE);
    }
    for (std::uint8_t k : keys) {
        nftnl_set_elem* e = nftnl_set_elem_alloc();
        if (!e) throw std::bad_alloc();
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &k, 1);
        nftnl_set_elem_add(s.get(), e);
    }
    w.add(NFT_MSG_NEWSETELEM, NLM_F_CREATE, fmt::format("set {} elements", name), 2048,
          [&](nlmsghdr* nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, s.get()); });
}
constexpr std::uint32_t kNetdevSetIdScoped = 20;  // allowp4, allowp6, icmp4, icmp6: 20-23

// Where the fields a rule reads sit in the frame. Ethernet devices: behind the 14-byte header,
// addressed from the link-layer header (the MAC header is reset to the frame start in
// dev_queue_xmit, for stack and packet-socket frames alike). Other devices carry bare IP.
struct FrameLayout {
    std::uint32_t base;  // NFT_PAYLOAD_LL_HEADER or NFT_PAYLOAD_NETWORK_HEADER
    std::uint32_t ip;    // offset of the IP header from base
    bool ethernet;
};

// "This frame is IPv4 / IPv6": the EtherType in the frame (never skb->protocol, which a packet
// socket's sender chooses), or the version nibble where there is no Ethernet header.
RuleBuilder& frame_is(RuleBuilder& r, const FrameLayout& l, Family f) {
    if (l.ethernet) {
        r.payload(NFT_PAYLOAD_LL_HEADER, 12, 2);
        return f == Family::v4 ? r.eq_bytes({0x08, 0x00}) : r.eq_bytes({0x86, 0xdd});
    }
    r.payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 1);
    return r.masked_eq_u8(0xf0, f == Family::v4 ? 0x40 : 0x60);
}

void add_netdev_chain(BatchWriter& w, const NetdevDevice& dev, const Policy& policy,
                      bool existing) {
    const std::string chain = netdev_chain_name(dev);
    {
        auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.c_str());
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_NETDEV);
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_NETDEV_EGRESS);
        nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, 0);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_DEV, dev.name.c_str());
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_DROP);
        w.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE,
              fmt::format("chain {} (egress hook of '{}')", chain, dev.name), 1024,
              [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
    }
    if (existing) flush_chain(w, NFPROTO_NETDEV, chain);
    const FrameLayout l{dev.ethernet ? NFT_PAYLOAD_LL_HEADER : NFT_PAYLOAD_NETWORK_HEADER,
                        dev.ethernet ? 14u : 0u, dev.ethernet};
    auto rule = [&] { return RuleBuilder(NFPROTO_NETDEV, chain); };
    auto what = [&](const char* text) { return fmt::format("{}: {}", chain, text); };

    // What no legitimate frame looks like first (see the inet chain), read from the frame's own
    // bytes as everywhere here: IPv4 with any option at all (IHL != 5), IPv6 with anything but a
    // transport header behind the fixed header (a routing header may hide behind any other).
    {
        auto r = rule();
        frame_is(r, l, Family::v4)
            .payload(l.base, l.ip, 1)
            .masked_cmp_u8(0x0f, NFT_CMP_NEQ, 5)
            .counter()
            .drop()
            .comment(kCommentSourceRoute)
            .emit(w, what("ip options drop"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6)
            .payload(l.base, l.ip + 6, 1)
            .not_in(kSetIp6Next, kNetdevSetIdIp6Next)
            .counter()
            .drop()
            .comment(kCommentSourceRoute)
            .emit(w, what("ip6 extension headers drop"));
    }
    if (needs_nd(policy)) {
        // Duplicate address detection, the one frame with a source that is not ours (::).
        const std::array<std::uint8_t, 16> unspecified{};
        auto r = rule();
        frame_is(r, l, Family::v6)
            .payload(l.base, l.ip + 8, 16)
            .eq_bytes(unspecified.data(), 16)
            .payload(l.base, l.ip + 6, 1)
            .eq_u8(IPPROTO_ICMPV6)
            .payload(l.base, l.ip + 40, 1)
            .eq_u8(kNdNeighbourSolicit)
            .payload(l.base, l.ip + 24, kSolicitedNode104.size())
            .eq_bytes(kSolicitedNode104.data(), kSolicitedNode104.size())
            .counter()
            .accept()
            .comment(kCommentDad)
            .emit(w, what("duplicate address detection accept"));
    }
    // Only the namespace's own source addresses: a packet socket can write any, e.g. a forbidden
    // host's, to have an allowed host answer it there.
    {
        auto r = rule();
        frame_is(r, l, Family::v4)
            .payload(l.base, l.ip + 12, 4)
            .not_in(kSetOwn4, kNetdevSetIdOwn4)  // iphdr.saddr
            .counter()
            .drop()
            .comment(kCommentForged)
            .emit(w, what("ip saddr != @own4 drop"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6)
            .payload(l.base, l.ip + 8, 16)
            .not_in(kSetOwn6, kNetdevSetIdOwn6)  // ipv6hdr.saddr
            .counter()
            .drop()
            .comment(kCommentForged)
            .emit(w, what("ip6 saddr != @own6 drop"));
    }
    // No `ct direction reply accept` here, unlike the inet chain: the kernel refuses the ct
    // expression in the netdev family (nf_ct_netns_get: EPROTO), and nothing else a packet
    // socket cannot forge marks a reply (skb->mark can be set with CAP_NET_RAW). So replies to
    // peers outside the allow-list are dropped at this layer, as the route set already does.
    {
        auto r = rule();
        frame_is(r, l, Family::v4)
            .payload(l.base, l.ip + 16, 4)  // iphdr.daddr
            .lookup(kSet4, kNetdevSetId4)
            .counter()
            .accept()
            .comment(kCommentAllow4)
            .emit(w, what("ip daddr @allow4 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6)
            .payload(l.base, l.ip + 24, 16)  // ipv6hdr.daddr
            .lookup(kSet6, kNetdevSetId6)
            .counter()
            .accept()
            .comment(kCommentAllow6)
            .emit(w, what("ip6 daddr @allow6 accept"));
    }
    // Port-scoped entries and echo: the frame's own protocol byte and transport header, at a
    // fixed offset (IPv4 options and IPv6 extension headers that could move it are dropped
    // above; any other next header is no protocol of the grammar, so it does not match).
    {
        auto r = rule();
        frame_is(r, l, Family::v4)
            .payload(l.base, l.ip + 16, 4)                 // iphdr.daddr
            .payload(l.base, l.ip + 9, 1, kReg32_00 + 1)   // iphdr.protocol
            .payload(l.base, l.ip + 22, 2, kReg32_00 + 2)  // dest port
            .lookup(kSetPorts4, kNetdevSetIdScoped)
            .counter()
            .accept()
            .comment(kCommentPorts4)
            .emit(w, what("ip daddr . protocol . dport @allowp4 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6)
            .payload(l.base, l.ip + 24, 16)                // ipv6hdr.daddr
            .payload(l.base, l.ip + 6, 1, NFT_REG_2)       // ipv6hdr.nexthdr
            .payload(l.base, l.ip + 42, 2, kReg32_00 + 5)  // dest port
            .lookup(kSetPorts6, kNetdevSetIdScoped + 1)
            .counter()
            .accept()
            .comment(kCommentPorts6)
            .emit(w, what("ip6 daddr . nexthdr . dport @allowp6 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v4)
            .payload(l.base, l.ip + 9, 1)
            .eq_u8(IPPROTO_ICMP)
            .payload(l.base, l.ip + 20, 1)
            .eq_u8(8)
            .payload(l.base, l.ip + 16, 4)
            .lookup(kSetEcho4, kNetdevSetIdScoped + 2)
            .counter()
            .accept()
            .comment(kCommentEcho)
            .emit(w, what("icmp echo-request @icmp4 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6)
            .payload(l.base, l.ip + 6, 1)
            .eq_u8(IPPROTO_ICMPV6)
            .payload(l.base, l.ip + 40, 1)
            .eq_u8(128)
            .payload(l.base, l.ip + 24, 16)
            .lookup(kSetEcho6, kNetdevSetIdScoped + 3)
            .counter()
            .accept()
            .comment(kCommentEcho)
            .emit(w, what("icmpv6 echo-request @icmp6 accept"));
    }
    if (l.ethernet)  // address resolution: the link must keep working (not routed beyond it)
        rule()
            .payload(NFT_PAYLOAD_LL_HEADER, 12, 2)
            .eq_bytes({0x08, 0x06})
            .accept()
            .emit(w, what("arp accept"));
    if (needs_nd(policy)) {
        // Neighbour discovery, but only towards the link (nd6): an ICMPv6 type 135 to a far
        // address would otherwise be routed onwards by the next hop, carrying data with it.
        for (std::uint8_t type : {133, 135, 136}) {
            auto r = rule();
            frame_is(r, l, Family::v6)
                .payload(l.base, l.ip + 6, 1)
                .eq_u8(IPPROTO_ICMPV6)  // nexthdr
                .payload(l.base, l.ip + 40, 1)
                .eq_u8(type)  // icmp6_type
                .payload(l.base, l.ip + 24, 16)
                .lookup(kSetNd6, kNetdevSetIdNd6)
                .accept()
                .emit(w, what(fmt::format("icmpv6 type {} to @nd6 accept", type).c_str()));
        }
    }
    rule().counter().drop().comment(kCommentDeny).emit(w, what("drop"));
}

void add_netdev(BatchWriter& w, const Policy& policy, const NetdevPlan& plan,
                const Installed& installed) {
    const AllowList& allow = policy.all();
    if (!plan.install && !plan.replace_existing) return;
    w.family = NFPROTO_NETDEV;
    w.label = "netdev ";
    if (plan.install && installed.netdev == Found::reusable) {
        // In place (see Installed): chains of devices still there keep their hooks.
        add_table(w, NFT_MSG_NEWTABLE, "table netdev nsegress (kept)");
        // The rules go before the sets they use are replaced (add_port_set).
        for (const auto& dev : installed.netdev_devices)
            flush_chain(w, NFPROTO_NETDEV, kNetdevChainPrefix + dev);
        add_interval_set(w, NFPROTO_NETDEV, kSet4, kNetdevSetId4, Family::v4,
                         allow.ranges(Family::v4), true);
        add_interval_set(w, NFPROTO_NETDEV, kSet6, kNetdevSetId6, Family::v6,
                         allow.ranges(Family::v6), true);
        add_interval_set(w, NFPROTO_NETDEV, kSetNd6, kNetdevSetIdNd6, Family::v6,
                         plan.neighbour6.ranges(Family::v6), true);
        add_interval_set(w, NFPROTO_NETDEV, kSetOwn4, kNetdevSetIdOwn4, Family::v4,
                         plan.own.ranges(Family::v4), true);
        add_interval_set(w, NFPROTO_NETDEV, kSetOwn6, kNetdevSetIdOwn6, Family::v6,
                         plan.own.ranges(Family::v6), true);
        add_byte_set(w, kSetIp6Next, kNetdevSetIdIp6Next, kIp6NextKeys, true);
        add_scoped_sets(w, NFPROTO_NETDEV, kNetdevSetIdScoped, policy, true);
        auto had = [&](const std::string& dev) {
            return std::find(installed.netdev_devices.begin(), installed.netdev_devices.end(),
                             dev) != installed.netdev_devices.end();
        };
        for (const auto& d : plan.devices) add_netdev_chain(w, d, policy, had(d.name));
        for (const auto& dev : installed.netdev_devices) {
            if (std::any_of(plan.devices.begin(), plan.devices.end(),
                            [&](const NetdevDevice& d) { return d.name == dev; }))
                continue;
            // A device that is gone (or no longer filtered): its chain goes, rules first.
            const std::string chain = kNetdevChainPrefix + dev;
            flush_chain(w, NFPROTO_NETDEV, chain);
            auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
            nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
            nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.c_str());
            nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_NETDEV);
            w.add(NFT_MSG_DELCHAIN, 0, fmt::format("chain {} (stale)", chain), 512,
                  [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
        }
    } else {
        // Same shape as the inet table: ensure, delete, (re)create; all inside the one batch.
        add_table(w, NFT_MSG_NEWTABLE, "table netdev nsegress (ensure)");
        add_table(
            w, NFT_MSG_DELTABLE,
            plan.install ? "table netdev nsegress (replace)" : "table netdev nsegress (delete)");
        if (plan.install) {
            add_table(w, NFT_MSG_NEWTABLE, "table netdev nsegress");
            add_interval_set(w, NFPROTO_NETDEV, kSet4, kNetdevSetId4, Family::v4,
                             allow.ranges(Family::v4));
            add_interval_set(w, NFPROTO_NETDEV, kSet6, kNetdevSetId6, Family::v6,
                             allow.ranges(Family::v6));
            add_interval_set(w, NFPROTO_NETDEV, kSetNd6, kNetdevSetIdNd6, Family::v6,
                             plan.neighbour6.ranges(Family::v6));
            add_interval_set(w, NFPROTO_NETDEV, kSetOwn4, kNetdevSetIdOwn4, Family::v4,
                             plan.own.ranges(Family::v4));
            add_interval_set(w, NFPROTO_NETDEV, kSetOwn6, kNetdevSetIdOwn6, Family::v6,
                             plan.own.ranges(Family::v6));
            add_byte_set(w, kSetIp6Next, kNetdevSetIdIp6Next, kIp6NextKeys, false);
            add_scoped_sets(w, NFPROTO_NETDEV, kNetdevSetIdScoped, policy, false);
            for (const auto& d : plan.devices) add_netdev_chain(w, d, policy, false);
        }
    }
    w.family = NFPROTO_INET;
    w.label.clear();
}
}  // namespace

// ---- Public API -------------------------------------------------------------------------------

const char* mode_name(Mode m) { return m == Mode::audit ? "audit" : "enforce"; }

// ---- Incremental re-restrict: set contents, digest, stamp ---------------------------------------

SetContents set_contents(const Policy& policy, const AllowList& nd6) {
    SetContents c;
    c.allow4 = policy.all().ranges(Family::v4);
    c.allow6 = policy.all().ranges(Family::v6);
    c.nd6 = nd6.ranges(Family::v6);
    c.echo4 = policy.echo().ranges(Family::v4);
    c.echo6 = policy.echo().ranges(Family::v6);
    c.ports4 = policy.scoped(Family::v4);
    c.ports6 = policy.scoped(Family::v6);
    return c;
}

namespace {

// Two independent 64-bit hashes over the same words (FNV-1a-like and a splitmix64 chain): a check
// against a state file that does not belong to the stamp, not a cryptographic seal (only root
// writes either).
struct Hasher {
    std::uint64_t a = 0xcbf29ce484222325ull, b = 0x9e3779b97f4a7c15ull;
    void word(std::uint64_t v) {
        a = (a ^ v) * 0x100000001b3ull;  // FNV-1a, a word at a time
        a ^= a >> 29;
        std::uint64_t z = (b += v + 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        b = z ^ (z >> 31);
    }
    void addr(const IpAddr& x) {
        word(static_cast<std::uint64_t>(x.value >> 64));
        word(static_cast<std::uint64_t>(x.value));
    }
    void ranges(std::uint64_t tag, const std::vector<Range>& rs) {
        word(tag);
        word(rs.size());
        for (const auto& r : rs) {
            addr(r.first);
            addr(r.last);
        }
    }
    void ports(std::uint64_t tag, const std::vector<PortRange>& ps) {
        word(tag);
        word(ps.size());
        for (const auto& p : ps) {
            addr(p.addrs.first);
            addr(p.addrs.last);
            word((std::uint64_t{static_cast<std::uint8_t>(p.proto)} << 32) |
                 (std::uint64_t{p.first} << 16) | p.last);
        }
    }
};

constexpr std::uint32_t kStampMagic = 0x4e534731;  // "NSG1": the layout below
constexpr std::size_t kStampLen = 4 + 4 + 16;      // magic, genid, digest (big-endian)

// The contents of a Policy as it stands, without copying its lists.
struct ContentsView {
    const std::vector<Range>&allow4, &allow6, &nd6, &echo4, &echo6;
    const std::vector<PortRange>&ports4, &ports6;
};
ContentsView view_of(const Policy& p, const AllowList& nd6) {
    return ContentsView{p.all().ranges(Family::v4),  p.all().ranges(Family::v6),
                        nd6.ranges(Family::v6),      p.echo().ranges(Family::v4),
                        p.echo().ranges(Family::v6), p.scoped(Family::v4),
                        p.scoped(Family::v6)};
}

template <typename C>
Digest digest_impl(const C& c) {
    Hasher h;
    h.ranges(1, c.allow4);
    h.ranges(2, c.allow6);
    h.ranges(3, c.nd6);
    h.ranges(4, c.echo4);
    h.ranges(5, c.echo6);
    h.ports(6, c.ports4);
    h.ports(7, c.ports6);
    return Digest{h.a, h.b};
}

}  // namespace

Digest digest_of(const SetContents& c) { return digest_impl(c); }
Digest digest_of(const Policy& policy, const AllowList& nd6) {
    return digest_impl(view_of(policy, nd6));
}

std::string Digest::hex() const { return fmt::format("{:016x}{:016x}", hi, lo); }

std::vector<std::uint8_t> encode_stamp(const Stamp& st) {
    std::vector<std::uint8_t> out;
    auto put = [&](std::uint64_t v, int bytes) {
        for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    };
    put(kStampMagic, 4);
    put(st.genid, 4);
    put(st.digest.hi, 8);
    put(st.digest.lo, 8);
    return out;
}

namespace {
constexpr std::string_view kContentsMagic{"NSGSETS1", 8};
struct PackedRange {
    u128 first, last;
};
struct PackedPort {
    u128 first, last;
    std::uint16_t pfirst, plast;
    std::uint8_t proto;
};
}  // namespace

template <typename C>
std::string serialize_impl(const C& c) {
    std::string out(kContentsMagic);
    auto count = [&](std::uint64_t n) { out.append(reinterpret_cast<const char*>(&n), sizeof n); };
    auto ranges = [&](const std::vector<Range>& rs) {
        count(rs.size());
        for (const auto& r : rs) {
            PackedRange p{r.first.value, r.last.value};
            out.append(reinterpret_cast<const char*>(&p), sizeof p);
        }
    };
    auto ports = [&](const std::vector<PortRange>& ps) {
        count(ps.size());
        for (const auto& r : ps) {
            PackedPort p{};  // zeroed: the padding is written too
            p.first = r.addrs.first.value;
            p.last = r.addrs.last.value;
            p.pfirst = r.first;
            p.plast = r.last;
            p.proto = static_cast<std::uint8_t>(r.proto);
            out.append(reinterpret_cast<const char*>(&p), sizeof p);
        }
    };
    ranges(c.allow4);
    ranges(c.allow6);
    ranges(c.nd6);
    ranges(c.echo4);
    ranges(c.echo6);
    ports(c.ports4);
    ports(c.ports6);
    return out;
}

std::string serialize_contents(const SetContents& c) { return serialize_impl(c); }
std::string serialize_contents(const Policy& policy, const AllowList& nd6) {
    return serialize_impl(view_of(policy, nd6));
}

std::optional<SetContents> parse_contents(std::string_view b) {
    std::size_t at = 0;
    return parse_contents(b.size(), [&](void* out, std::size_t n) {
        if (b.size() - at < n) return false;
        std::memcpy(out, b.data() + at, n);
        at += n;
        return true;
    });
}

std::optional<SetContents> parse_contents(std::size_t size,
                                          const std::function<bool(void*, std::size_t)>& read) {
    char magic[8];
    if (size < sizeof magic || !read(magic, sizeof magic) ||
        std::string_view(magic, sizeof magic) != kContentsMagic)
        return std::nullopt;
    std::size_t left = size - sizeof magic;
    auto count = [&](std::size_t elem) -> std::optional<std::uint64_t> {
        std::uint64_t n = 0;
        if (left < sizeof n || !read(&n, sizeof n)) return std::nullopt;
        left -= sizeof n;
        if (n > left / elem) return std::nullopt;  // more than the rest could hold
        return n;
    };
    auto ranges = [&](Family f, std::vector<Range>& out) {
        auto n = count(sizeof(PackedRange));
        if (!n) return false;
        out.reserve(*n);
        for (std::uint64_t i = 0; i < *n; ++i) {
            PackedRange p;
            if (!read(&p, sizeof p)) return false;
            left -= sizeof p;
            out.push_back(Range{IpAddr{f, p.first}, IpAddr{f, p.last}});
        }
        return true;
    };
    auto ports = [&](Family f, std::vector<PortRange>& out) {
        auto n = count(sizeof(PackedPort));
        if (!n) return false;
        out.reserve(*n);
        for (std::uint64_t i = 0; i < *n; ++i) {
            PackedPort p;
            if (!read(&p, sizeof p)) return false;
            left -= sizeof p;
            out.push_back(PortRange{Range{IpAddr{f, p.first}, IpAddr{f, p.last}},
                                    static_cast<IpProto>(p.proto), p.pfirst, p.plast});
        }
        return true;
    };
    SetContents c;
    if (!ranges(Family::v4, c.allow4) || !ranges(Family::v6, c.allow6) ||
        !ranges(Family::v6, c.nd6) || !ranges(Family::v4, c.echo4) ||
        !ranges(Family::v6, c.echo6) || !ports(Family::v4, c.ports4) ||
        !ports(Family::v6, c.ports6) || left != 0)
        return std::nullopt;
    return c;
}

std::optional<Stamp> decode_stamp(const std::uint8_t* p, std::size_t len) {
    if (!p || len != kStampLen) return std::nullopt;
    auto get = [&](std::size_t at, int bytes) {
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i) v = (v << 8) | p[at + i];
        return v;
    };
    if (get(0, 4) != kStampMagic) return std::nullopt;
    return Stamp{static_cast<std::uint32_t>(get(4, 4)), Digest{get(8, 8), get(16, 8)}};
}

AllowList neighbour_destinations(const NetdevPlan& netdev) {
    if (!netdev.neighbour6.empty()) return netdev.neighbour6;
    AllowList link;
    link.add(parse_cidr("fe80::/10"));
    link.add(parse_cidr("ff02::/16"));
    return link;
}

Batch compile_policy(const AllowList& allow, std::uint32_t first_seq, Mode mode,
                     const NetdevPlan& netdev, const Installed& installed) {
    return compile_policy(Policy(allow), first_seq, mode, netdev, installed);
}

Batch compile_policy(const Policy& policy, std::uint32_t first_seq, Mode mode,
                     const NetdevPlan& netdev, const Installed& installed) {
    const AllowList& allow = policy.all();
    BatchWriter w(first_seq);
    w.begin();
    const AllowList nd6 = neighbour_destinations(netdev);
    auto add_nd6 = [&](bool existing) {
        add_interval_set(w, NFPROTO_INET, kSetNd6, kSetIdNd6, Family::v6, nd6.ranges(Family::v6),
                         existing);
    };
    const ContentsView want = view_of(policy, nd6);
    std::vector<std::uint8_t> stamp;
    if (installed.genid != 0) {
        std::uint32_t next = installed.genid + 1;
        if (next == 0) next = 1;  // the kernel skips 0 when the counter wraps
        stamp = encode_stamp(Stamp{next, digest_impl(want)});
    }
    if (installed.inet == Found::reusable && installed.sets) {
        // In place, incrementally: the sets hold installed.sets (proven by the stamp), so only
        // the difference goes; unchanged sets get no message at all. The port sets, when either
        // changed, are created anew as below (a pipapo set is rebuilt per commit anyway).
        const SetContents& have = *installed.sets;
        add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress (kept)");
        add_chains(w, mode);
        flush_chain(w, NFPROTO_INET, kChain);
        flush_chain(w, NFPROTO_INET, kChainInbound);
        interval_set_diff(w, NFPROTO_INET, kSet4, Family::v4, have.allow4, want.allow4);
        interval_set_diff(w, NFPROTO_INET, kSet6, Family::v6, have.allow6, want.allow6);
        interval_set_diff(w, NFPROTO_INET, kSetNd6, Family::v6, have.nd6, want.nd6);
        interval_set_diff(w, NFPROTO_INET, kSetEcho4, Family::v4, have.echo4, want.echo4);
        interval_set_diff(w, NFPROTO_INET, kSetEcho6, Family::v6, have.echo6, want.echo6);
        if (have.ports4 != want.ports4 || have.ports6 != want.ports6) {
            add_port_set(w, NFPROTO_INET, kSetPorts4, kSetIdPorts4, Family::v4, want.ports4, true);
            add_port_set(w, NFPROTO_INET, kSetPorts6, kSetIdPorts6, Family::v6, want.ports6, true);
        }
        // Names are not in the stamp's contents: their sets are kept with what the proxy
        // learnt, and the chain dns rewritten like the others.
        if (policy.has_names()) {
            add_name_sets(w);
            add_dns_chain(w, installed.names);
        } else if (installed.names) {
            delete_names(w);
        }
    } else if (installed.inet == Found::reusable) {
        // In place (see Installed): the chains keep their hooks; a policy change (enforce <->
        // audit) is applied at commit, and the final rule is a catch-all either way.
        add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress (kept)");
        add_chains(w, mode);
        flush_chain(w, NFPROTO_INET, kChain);
        flush_chain(w, NFPROTO_INET, kChainInbound);
        add_set(w, Family::v4, allow, true);
        add_set(w, Family::v6, allow, true);
        add_nd6(true);
        add_scoped_sets(w, NFPROTO_INET, kSetIdPorts4, policy, true);
        if (policy.has_names()) {
            add_name_sets(w);
            add_dns_chain(w, installed.names);
        } else if (installed.names) {
            delete_names(w);
        }
    } else {
        add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress (ensure)");
        add_table(w, NFT_MSG_DELTABLE, "table inet nsegress (replace)");
        add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress");
        add_set(w, Family::v4, allow);
        add_set(w, Family::v6, allow);
        add_nd6(false);
        add_scoped_sets(w, NFPROTO_INET, kSetIdPorts4, policy, false);
        if (policy.has_names()) add_name_sets(w);
        add_chains(w, mode);
        if (policy.has_names()) add_dns_chain(w, false);
    }
    add_inbound_rules(w);
    add_rules(w, policy, mode, stamp.empty() ? nullptr : &stamp);
    if (policy.has_names()) add_dns_rules(w);
    add_netdev(w, policy, netdev, installed);
    return w.end();
}

Batch compile_name_refresh(const std::vector<NameElement>& elements, std::uint32_t first_seq) {
    BatchWriter w(first_seq);
    w.begin();
    for (Family f : {Family::v4, Family::v6}) {
        std::vector<const NameElement*> mine;
        for (const auto& e : elements)
            if (e.addr.family == f) mine.push_back(&e);
        const char* name = f == Family::v4 ? kSetNames4 : kSetNames6;
        for (std::size_t i = 0; i < mine.size(); i += kElementsPerMessage / 2) {
            const std::size_t n = std::min(kElementsPerMessage / 2, mine.size() - i);
            // add (ensure), delete, add with the new timeout: one transaction.
            for (std::uint16_t type :
                 {NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM}) {
                auto s = make_set(name, 0);
                nftnl_set_unset(s.get(), NFTNL_SET_ID);
                for (std::size_t j = i; j < i + n; ++j) {
                    const NameElement& e = *mine[j];
                    nftnl_set_elem* el = nftnl_set_elem_alloc();
                    if (!el) throw std::bad_alloc();
                    auto k = slot_key(e.addr, e.slot.proto_first, e.slot.port_first);
                    auto end = slot_key(e.addr, e.slot.proto_last, e.slot.port_last);
                    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, k.data(),
                                       static_cast<std::uint32_t>(k.size()));
                    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY_END, end.data(),
                                       static_cast<std::uint32_t>(end.size()));
                    if (type == NFT_MSG_NEWSETELEM)
                        nftnl_set_elem_set_u64(el, NFTNL_SET_ELEM_TIMEOUT,
                                               std::uint64_t{e.timeout_s} * 1000);
                    nftnl_set_elem_add(s.get(), el);
                }
                w.add(type, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0,
                      fmt::format("set {} {} {} elements (first {})", name,
                                  type == NFT_MSG_NEWSETELEM ? "add" : "delete", n,
                                  mine[i]->addr.str()),
                      4096 + n * 160,
                      [&](nlmsghdr* nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, s.get()); });
            }
        }
    }
    return w.end();
}

Batch compile_delete(std::uint32_t first_seq, bool netdev_present) {
    BatchWriter w(first_seq);
    w.begin();
    add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress (ensure)");
    add_table(w, NFT_MSG_DELTABLE, "table inet nsegress (delete)");
    NetdevPlan plan;
    plan.replace_existing = netdev_present;
    add_netdev(w, Policy{}, plan, Installed{});
    return w.end();
}

std::vector<std::uint8_t> port_key(const IpAddr& a, IpProto p, std::uint16_t port) {
    std::vector<std::uint8_t> k(port_key_len(a.family), 0);
    auto b = a.bytes();
    std::copy(b.begin(), b.begin() + a.size(), k.begin());
    k[a.size()] = static_cast<std::uint8_t>(p);
    k[a.size() + 4] = static_cast<std::uint8_t>(port >> 8);
    k[a.size() + 5] = static_cast<std::uint8_t>(port & 0xff);
    return k;
}

}  // namespace nsegress::nft
