#include "nsegress/nft.hpp"

// glibc first: it tells the uapi headers below not to redefine in_addr and friends.
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/if_ether.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "nsegress/error.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/testpoint.hpp"

namespace nsegress::nft {

namespace {

// ---- RAII for libnftnl objects ---------------------------------------------------------------

using TableFree = CFree<nftnl_table_free>;
using ChainFree = CFree<nftnl_chain_free>;
using SetFree = CFree<nftnl_set_free>;
using RuleFree = CFree<nftnl_rule_free>;
using ExprFree = CFree<nftnl_expr_free>;
using UdataFree = CFree<nftnl_udata_buf_free>;
using GenFree = CFree<nftnl_gen_free>;
using TablePtr = std::unique_ptr<nftnl_table, TableFree>;
using ChainPtr = std::unique_ptr<nftnl_chain, ChainFree>;
using SetPtr = std::unique_ptr<nftnl_set, SetFree>;
using RulePtr = std::unique_ptr<nftnl_rule, RuleFree>;
using ExprPtr = std::unique_ptr<nftnl_expr, ExprFree>;
using UdataPtr = std::unique_ptr<nftnl_udata_buf, UdataFree>;

template <typename T, typename D>
std::unique_ptr<T, D> checked(T* p) {
    if (!p) throw std::bad_alloc();
    return std::unique_ptr<T, D>(p);
}

// nft's datatype ids, so that `nft list` prints "type ipv4_addr" for our sets.
constexpr std::uint32_t kTypeIpAddr = 7;
constexpr std::uint32_t kTypeIp6Addr = 8;
constexpr std::uint32_t kTypeInteger = 4;
constexpr std::uint32_t kSetId4 = 1;
constexpr std::uint32_t kSetId6 = 2;
constexpr std::uint32_t kSetIdNd6 = 3;
constexpr std::uint32_t kSetIdPorts4 = 4;
constexpr std::uint32_t kSetIdPorts6 = 5;
constexpr std::uint32_t kSetIdEcho4 = 6;
constexpr std::uint32_t kSetIdEcho6 = 7;
constexpr std::uint32_t kSetIdNames4 = 8;
constexpr std::uint32_t kSetIdNames6 = 9;
// nft's datatypes of a concatenation key: each subtype shifted in by 6 bits (TYPE_BITS).
constexpr std::uint32_t kTypeInetProto = 12;
constexpr std::uint32_t kTypeInetService = 13;
constexpr std::uint32_t concat_type(Family f) {
    return (((f == Family::v4 ? kTypeIpAddr : kTypeIp6Addr) << 6 | kTypeInetProto) << 6) | kTypeInetService;
}
constexpr std::uint32_t port_key_len(Family f) { return f == Family::v4 ? 12 : 24; }
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
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(batch_.bytes.data() + at, type, family,
                                              flags | NLM_F_ACK, seq);
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

TablePtr make_table() {
    auto t = checked<nftnl_table, TableFree>(nftnl_table_alloc());
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, kTable);
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    return t;
}

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

SetPtr make_set(const char* name, std::uint32_t id) {
    auto s = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTable);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
    return s;
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
// With `existing`, the set is already there with this shape (probe_installed): its elements
// are flushed (DELSETELEM without elements) and the new ones added, in the same transaction.
void add_interval_set(BatchWriter& w, std::uint32_t nfproto, const char* name, std::uint32_t id, Family f,
                      const std::vector<Range>& ranges, bool existing = false) {
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
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, f == Family::v4 ? kTypeIpAddr : kTypeIp6Addr);
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
    add_interval_set(w, NFPROTO_INET, f == Family::v4 ? kSet4 : kSet6, f == Family::v4 ? kSetId4 : kSetId6, f,
                     allow.ranges(f), existing);
}

// A concatenated interval set `addr . inet_proto . inet_service` (pipapo): every element is
// an address range, a protocol and a port range, each an inclusive [KEY, KEY_END].
// With `existing`, the set is deleted and created again in the same transaction, after the rules
// that use it were flushed (a flush of a large pipapo set followed by the same elements costs
// seconds: 6 s for 2*10^4 elements, against 0.15 s for a new set). The new set is found by the
// new rules through its set id; the chains and their hooks stay.
void add_port_set(BatchWriter& w, std::uint32_t nfproto, const char* name, std::uint32_t id, Family f,
                  const std::vector<PortRange>& elements, bool existing = false) {
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
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, k.data(), static_cast<std::uint32_t>(k.size()));
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, end.data(), static_cast<std::uint32_t>(end.size()));
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
void add_scoped_sets(BatchWriter& w, std::uint32_t nfproto, std::uint32_t id_base, const Policy& p, bool existing) {
    // The port sets last: replaced in place they are created anew, and `nft list` orders sets by
    // creation; the same order either way keeps --dry-run's listing equal to the installed one.
    add_interval_set(w, nfproto, kSetEcho4, id_base + 2, Family::v4, p.echo().ranges(Family::v4), existing);
    add_interval_set(w, nfproto, kSetEcho6, id_base + 3, Family::v6, p.echo().ranges(Family::v6), existing);
    add_port_set(w, nfproto, kSetPorts4, id_base, Family::v4, p.scoped(Family::v4), existing);
    add_port_set(w, nfproto, kSetPorts6, id_base + 1, Family::v6, p.scoped(Family::v6), existing);
}

void add_base_chain(BatchWriter& w, const char* name, std::uint32_t hook, std::int32_t prio, std::uint32_t policy) {
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
    add_base_chain(w, kChain, NF_INET_LOCAL_OUT, 0, mode == Mode::audit ? NF_ACCEPT : NF_DROP);  // "filter"
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
    RuleBuilder& masked_eq_u8(std::uint8_t mask, std::uint8_t value) { return masked_cmp_u8(mask, NFT_CMP_EQ, value); }
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
        return ct(NFT_CT_LABELS).and_mask(mask.data(), sizeof mask).cmp(NFT_CMP_NEQ, zero.data(), sizeof zero);
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
    RuleBuilder& eq_u32(std::uint32_t v) { return cmp(NFT_CMP_EQ, &v, 4); }  // host order
    RuleBuilder& eq_bytes(const void* data, std::uint32_t len) { return cmp(NFT_CMP_EQ, data, len); }
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
        if (inverted) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);  // "!= @set"
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
    static ExprPtr expr(const char* name) { return checked<nftnl_expr, ExprFree>(nftnl_expr_alloc(name)); }
    RuleBuilder& push(ExprPtr e) {
        nftnl_rule_add_expr(r_.get(), e.release());  // the rule owns it now
        return *this;
    }
    RulePtr r_;
};

constexpr std::uint32_t kCtStateRelated = 1u << (IP_CT_RELATED + 1);  // NF_CT_STATE_BIT
constexpr std::uint32_t kCtStateNew = 1u << (IP_CT_NEW + 1);
constexpr std::uint8_t kCtDirReply = 1;  // IP_CT_DIR_REPLY (kernel-internal enum)

constexpr std::uint32_t kCtStateInvalid = 1u << 0;                  // NF_CT_STATE_INVALID_BIT
constexpr std::uint32_t kCtStateUntracked = 1u << 6;                // NF_CT_STATE_UNTRACKED_BIT
constexpr std::uint8_t kTcpFlagSyn = 0x02, kTcpFlagAck = 0x10;
constexpr std::uint32_t kLoopbackIfindex = 1;                       // lo is 1 in every netns
constexpr std::uint32_t kRtnLocal = 2;                              // RTN_LOCAL
constexpr std::uint8_t kIpv6Routing = 43;                           // NEXTHDR_ROUTING
constexpr std::uint8_t kNdRouterSolicit = 133, kNdNeighbourSolicit = 135, kNdNeighbourAdvert = 136;

// The inbound chain: label the connections whose first packet came in from a real interface
// (see nft.hpp). TCP only counts from a SYN without ACK: never a connection picked up mid-stream.
void add_inbound_rules(BatchWriter& w) {
    RuleBuilder(NFPROTO_INET, kChainInbound)
        .meta(NFT_META_IIF).neq_u32(kLoopbackIfindex)
        .ct(NFT_CT_STATE).has_bits(kCtStateNew)
        .meta(NFT_META_L4PROTO).eq_u8(IPPROTO_TCP)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1).masked_cmp_u8(kTcpFlagSyn | kTcpFlagAck, NFT_CMP_EQ, kTcpFlagSyn)
        .counter().set_label(kInboundLabel).comment(kCommentInbound)
        .emit(w, "inbound tcp syn: ct label set");
    RuleBuilder(NFPROTO_INET, kChainInbound)
        .meta(NFT_META_IIF).neq_u32(kLoopbackIfindex)
        .ct(NFT_CT_STATE).has_bits(kCtStateNew)
        .meta(NFT_META_L4PROTO).neq_u8(IPPROTO_TCP)
        .counter().set_label(kInboundLabel).comment(kCommentInbound)
        .emit(w, "inbound other: ct label set");
}

// The solicited-node multicast prefix ff02::1:ff00:0/104, the only destination of a duplicate
// address detection probe: its first 13 bytes, compared as nft compares a byte-aligned prefix.
constexpr std::array<std::uint8_t, 13> kSolicitedNode104{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff};

// Whether IPv6 neighbour discovery is needed: some IPv6 destination is allowed at all.
bool needs_nd(const Policy& p) {
    return p.all().has(Family::v6) || !p.scoped(Family::v6).empty() || p.echo().has(Family::v6);
}

// The port-scoped and echo rules (inet chain), as nft itself compiles
// `ip daddr . meta l4proto . th dport @allowp4` and `icmp type echo-request ip daddr @icmp4`.
void add_scoped_rules(BatchWriter& w) {
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .meta(NFT_META_L4PROTO, kReg32_00 + 1).hton(kReg32_00 + 1, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 2)
        .lookup(kSetPorts4, kSetIdPorts4).counter().accept().comment(kCommentPorts4)
        .emit(w, "ip daddr . meta l4proto . th dport @allowp4 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .meta(NFT_META_L4PROTO, NFT_REG_2).hton(NFT_REG_2, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 5)
        .lookup(kSetPorts6, kSetIdPorts6).counter().accept().comment(kCommentPorts6)
        .emit(w, "ip6 daddr . meta l4proto . th dport @allowp6 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .meta(NFT_META_L4PROTO).eq_u8(IPPROTO_ICMP)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1).eq_u8(8)  // echo-request
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .lookup(kSetEcho4, kSetIdEcho4).counter().accept().comment(kCommentEcho)
        .emit(w, "icmp type echo-request ip daddr @icmp4 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .meta(NFT_META_L4PROTO).eq_u8(IPPROTO_ICMPV6)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1).eq_u8(128)  // echo-request
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .lookup(kSetEcho6, kSetIdEcho6).counter().accept().comment(kCommentEcho)
        .emit(w, "icmpv6 type echo-request ip6 daddr @icmp6 accept");
}

// ---- Names (names.hpp) ------------------------------------------------------------------------

constexpr std::uint32_t kCtStateEstablished = 1u << (IP_CT_ESTABLISHED + 1);
constexpr std::uint8_t kCtDirOriginal = 0;  // IP_CT_DIR_ORIGINAL
constexpr std::uint32_t kCtStatusDstNat = 1u << 5;  // IPS_DST_NAT
constexpr std::uint32_t kNameSetFlags = NFT_SET_INTERVAL | NFT_SET_CONCAT | NFT_SET_TIMEOUT;

SetPtr make_name_set(Family f) {
    auto s = make_set(f == Family::v4 ? kSetNames4 : kSetNames6, f == Family::v4 ? kSetIdNames4 : kSetIdNames6);
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
        w.add(NFT_MSG_NEWSET, NLM_F_CREATE, fmt::format("set {}", f == Family::v4 ? kSetNames4 : kSetNames6), 1024,
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
        r.meta(NFT_META_MARK).neq_u32(kNamesMark)
            .meta(NFT_META_L4PROTO).eq_u8(proto)
            .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).eq_bytes(dns_port.data(), 2)
            .counter().redirect_to(proxy_port.data()).comment(kCommentDnsRedirect)
            .emit(w, fmt::format("{} dport 53 redirect to the names proxy", proto == IPPROTO_UDP ? "udp" : "tcp"));
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
    RuleBuilder().meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4).eq_bytes(lo4.data(), 4)
        .ct(NFT_CT_STATUS).has_bits(kCtStatusDstNat)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).eq_bytes(proxy_port.data(), 2)
        .counter().accept().comment(kCommentRedirected)
        .emit(w, "ip daddr 127.0.0.1 ct status dnat th dport names-proxy accept");
    RuleBuilder().meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16).eq_bytes(lo6.data(), 16)
        .ct(NFT_CT_STATUS).has_bits(kCtStatusDstNat)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).eq_bytes(proxy_port.data(), 2)
        .counter().accept().comment(kCommentRedirected)
        .emit(w, "ip6 daddr ::1 ct status dnat th dport names-proxy accept");
    const std::array<std::uint8_t, 2> dns_port{0, 53};
    for (std::uint8_t proto : {std::uint8_t{IPPROTO_UDP}, std::uint8_t{IPPROTO_TCP}})
        RuleBuilder().meta(NFT_META_MARK).eq_u32(kNamesMark)
            .meta(NFT_META_L4PROTO).eq_u8(proto)
            .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2).eq_bytes(dns_port.data(), 2)
            .counter().accept().comment(kCommentResolver)
            .emit(w, fmt::format("meta mark names-proxy {} dport 53 accept", proto == IPPROTO_UDP ? "udp" : "tcp"));
}

void add_name_rules(BatchWriter& w) {
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        .meta(NFT_META_L4PROTO, kReg32_00 + 1).hton(kReg32_00 + 1, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 2)
        .lookup(kSetNames4, kSetIdNames4).counter().set_label(kNameLabel).accept().comment(kCommentNames4)
        .emit(w, "ip daddr . meta l4proto . th dport @names4 ct label set named accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)
        .meta(NFT_META_L4PROTO, NFT_REG_2).hton(NFT_REG_2, 1, 2)
        .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, kReg32_00 + 5)
        .lookup(kSetNames6, kSetIdNames6).counter().set_label(kNameLabel).accept().comment(kCommentNames6)
        .emit(w, "ip6 daddr . meta l4proto . th dport @names6 ct label set named accept");
    RuleBuilder().ct(NFT_CT_DIRECTION).eq_u8(kCtDirOriginal)
        .ct(NFT_CT_STATE).has_bits(kCtStateEstablished)
        .has_label(kNameLabel).counter().accept().comment(kCommentNamed)
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
    RuleBuilder().meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 1).masked_cmp_u8(0x0f, NFT_CMP_NEQ, 5)  // ihl
        .counter().drop().comment(kCommentSourceRoute).emit(w, "ip hdrlength != 5 drop");
    RuleBuilder().meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .exthdr_present(NFT_EXTHDR_OP_IPV6, kIpv6Routing)
        .counter().drop().comment(kCommentSourceRoute).emit(w, "exthdr rt exists drop");
    if (nd) {
        // Duplicate address detection: a solicitation from :: (no address yet), to the
        // solicited-node multicast group only, ICMPv6 straight behind the header.
        RuleBuilder()
            .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
            .payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16).eq_bytes(unspecified.data(), 16)  // ipv6hdr.saddr
            .payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 1).eq_u8(IPPROTO_ICMPV6)              // ipv6hdr.nexthdr
            .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1).eq_u8(kNdNeighbourSolicit)
            .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, kSolicitedNode104.size())
            .eq_bytes(kSolicitedNode104.data(), kSolicitedNode104.size())
            .counter().accept().comment(kCommentDad).emit(w, "duplicate address detection accept");
    }
    RuleBuilder()
        .ct(NFT_CT_STATE).has_bits(kCtStateNew | kCtStateInvalid | kCtStateUntracked | kCtStateRelated)
        .fib_saddr_type().neq_u32(kRtnLocal)
        .counter().drop().comment(kCommentForged).emit(w, "fib saddr type != local drop");
    // Loopback addresses are local, but never a source beyond lo.
    const std::uint8_t net127 = 127;
    RuleBuilder().meta(NFT_META_OIF).neq_u32(kLoopbackIfindex).meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 1).eq_bytes(&net127, 1)
        .counter().drop().comment(kCommentForged).emit(w, "oif != lo ip saddr 127.0.0.0/8 drop");
    RuleBuilder().meta(NFT_META_OIF).neq_u32(kLoopbackIfindex).meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16).eq_bytes(loopback6.data(), 16)
        .counter().drop().comment(kCommentForged).emit(w, "oif != lo ip6 saddr ::1 drop");
    // Whatever leaves through lo with a source that is not ours is forged too, whatever its
    // conntrack state: a genuine answer from another host never passes this namespace's output
    // hook, so a spoofed "answer" that matches one of our established flows (a resolver's, the
    // names proxy's upstream socket) is dropped here instead of being delivered to the socket.
    RuleBuilder().meta(NFT_META_OIF).eq_u32(kLoopbackIfindex)
        .fib_saddr_type().neq_u32(kRtnLocal)
        .counter().drop().comment(kCommentForged).emit(w, "oif lo fib saddr type != local drop");
    RuleBuilder().meta(NFT_META_OIF).eq_u32(kLoopbackIfindex).counter().accept().comment(kCommentLoopback)
        .emit(w, "oif lo accept");
    if (policy.has_names()) add_resolver_rules(w);
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV4)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)  // iphdr.daddr
        .lookup(kSet4, kSetId4).counter().accept().comment(kCommentAllow4)
        .emit(w, "ip daddr @allow4 accept");
    RuleBuilder()
        .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
        .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16)  // ipv6hdr.daddr
        .lookup(kSet6, kSetId6).counter().accept().comment(kCommentAllow6)
        .emit(w, "ip6 daddr @allow6 accept");
    add_scoped_rules(w);
    if (policy.has_names()) add_name_rules(w);
    // After the allow-list: these counters are what got out to peers outside it.
    RuleBuilder().ct(NFT_CT_DIRECTION).eq_u8(kCtDirReply).has_label(kInboundLabel)
        .counter().accept().comment(kCommentReplies).emit(w, "ct direction reply ct label inbound accept");
    for (std::uint8_t proto : {std::uint8_t{IPPROTO_ICMP}, std::uint8_t{IPPROTO_ICMPV6}})
        RuleBuilder().meta(NFT_META_L4PROTO).eq_u8(proto).ct(NFT_CT_STATE).has_bits(kCtStateRelated)
            .has_label(kInboundLabel).counter().accept().comment(kCommentRelated)
            .emit(w, fmt::format("{} related (inbound) accept", proto == IPPROTO_ICMP ? "icmp" : "icmpv6"));
    if (nd) {
        // Without neighbour discovery no IPv6 packet leaves, allowed or not; but only towards the
        // link (nd6): an ND message to a far address would be routed on, carrying data with it.
        for (std::uint8_t type : {kNdRouterSolicit, kNdNeighbourSolicit, kNdNeighbourAdvert}) {
            RuleBuilder().meta(NFT_META_L4PROTO).eq_u8(IPPROTO_ICMPV6)
                .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1).eq_u8(type)
                .meta(NFT_META_NFPROTO).eq_u8(NFPROTO_IPV6)
                .payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16).lookup(kSetNd6, kSetIdNd6)
                .counter().accept().comment(kCommentNd)
                .emit(w, fmt::format("icmpv6 type {} to @nd6 accept", type));
        }
    }
    // The deny log, a rule of its own: the limit must not sit on the verdict rule, or packets
    // over the limit would skip the reject and fall through to the chain policy.
    RuleBuilder().ct(NFT_CT_STATE).has_bits(kCtStateNew)
        .limit_per_second(kLogRatePerSecond, kLogBurst).counter()
        .log_group(mode == Mode::audit ? kLogPrefixAudit : kLogPrefixEnforce, kNflogGroup)
        .comment(kCommentLog).emit(w, "deny log");
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
// What may follow an IPv6 header directly in a frame leaving the namespace: a transport header.
// Any extension header (hop-by-hop, routing, fragment, destination options, AH, mobility, ...)
// could carry or hide a routing header behind it, which an allowed router would honour.
const std::vector<std::uint8_t> kIp6NextKeys{IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_SCTP};

// The set of those (ip6next): a plain set of one-byte keys.
void add_byte_set(BatchWriter& w, const char* name, std::uint32_t id, const std::vector<std::uint8_t>& keys,
                  bool existing) {
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

std::string netdev_chain_name(const NetdevDevice& d) { return kNetdevChainPrefix + d.name; }

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

void add_netdev_chain(BatchWriter& w, const NetdevDevice& dev, const Policy& policy, bool existing) {
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
        w.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fmt::format("chain {} (egress hook of '{}')", chain, dev.name),
              1024, [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
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
        frame_is(r, l, Family::v4).payload(l.base, l.ip, 1).masked_cmp_u8(0x0f, NFT_CMP_NEQ, 5)
            .counter().drop().comment(kCommentSourceRoute).emit(w, what("ip options drop"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6).payload(l.base, l.ip + 6, 1).not_in(kSetIp6Next, kNetdevSetIdIp6Next)
            .counter().drop().comment(kCommentSourceRoute).emit(w, what("ip6 extension headers drop"));
    }
    if (needs_nd(policy)) {
        // Duplicate address detection, the one frame with a source that is not ours (::).
        const std::array<std::uint8_t, 16> unspecified{};
        auto r = rule();
        frame_is(r, l, Family::v6).payload(l.base, l.ip + 8, 16).eq_bytes(unspecified.data(), 16)
            .payload(l.base, l.ip + 6, 1).eq_u8(IPPROTO_ICMPV6)
            .payload(l.base, l.ip + 40, 1).eq_u8(kNdNeighbourSolicit)
            .payload(l.base, l.ip + 24, kSolicitedNode104.size()).eq_bytes(kSolicitedNode104.data(), kSolicitedNode104.size())
            .counter().accept().comment(kCommentDad).emit(w, what("duplicate address detection accept"));
    }
    // Only the namespace's own source addresses: a packet socket can write any, e.g. a forbidden
    // host's, to have an allowed host answer it there.
    {
        auto r = rule();
        frame_is(r, l, Family::v4).payload(l.base, l.ip + 12, 4).not_in(kSetOwn4, kNetdevSetIdOwn4)  // iphdr.saddr
            .counter().drop().comment(kCommentForged).emit(w, what("ip saddr != @own4 drop"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6).payload(l.base, l.ip + 8, 16).not_in(kSetOwn6, kNetdevSetIdOwn6)  // ipv6hdr.saddr
            .counter().drop().comment(kCommentForged).emit(w, what("ip6 saddr != @own6 drop"));
    }
    // No `ct direction reply accept` here, unlike the inet chain: the kernel refuses the ct
    // expression in the netdev family (nf_ct_netns_get: EPROTO), and nothing else a packet
    // socket cannot forge marks a reply (skb->mark can be set with CAP_NET_RAW). So replies to
    // peers outside the allow-list are dropped at this layer, as the route set already does.
    {
        auto r = rule();
        frame_is(r, l, Family::v4).payload(l.base, l.ip + 16, 4)  // iphdr.daddr
            .lookup(kSet4, kNetdevSetId4).counter().accept().comment(kCommentAllow4)
            .emit(w, what("ip daddr @allow4 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6).payload(l.base, l.ip + 24, 16)  // ipv6hdr.daddr
            .lookup(kSet6, kNetdevSetId6).counter().accept().comment(kCommentAllow6)
            .emit(w, what("ip6 daddr @allow6 accept"));
    }
    // Port-scoped entries and echo: the frame's own protocol byte and transport header, at a
    // fixed offset (IPv4 options and IPv6 extension headers that could move it are dropped
    // above; any other next header is no protocol of the grammar, so it does not match).
    {
        auto r = rule();
        frame_is(r, l, Family::v4).payload(l.base, l.ip + 16, 4)  // iphdr.daddr
            .payload(l.base, l.ip + 9, 1, kReg32_00 + 1)              // iphdr.protocol
            .payload(l.base, l.ip + 22, 2, kReg32_00 + 2)             // dest port
            .lookup(kSetPorts4, kNetdevSetIdScoped).counter().accept().comment(kCommentPorts4)
            .emit(w, what("ip daddr . protocol . dport @allowp4 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6).payload(l.base, l.ip + 24, 16)  // ipv6hdr.daddr
            .payload(l.base, l.ip + 6, 1, NFT_REG_2)                   // ipv6hdr.nexthdr
            .payload(l.base, l.ip + 42, 2, kReg32_00 + 5)              // dest port
            .lookup(kSetPorts6, kNetdevSetIdScoped + 1).counter().accept().comment(kCommentPorts6)
            .emit(w, what("ip6 daddr . nexthdr . dport @allowp6 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v4).payload(l.base, l.ip + 9, 1).eq_u8(IPPROTO_ICMP)
            .payload(l.base, l.ip + 20, 1).eq_u8(8)
            .payload(l.base, l.ip + 16, 4).lookup(kSetEcho4, kNetdevSetIdScoped + 2)
            .counter().accept().comment(kCommentEcho).emit(w, what("icmp echo-request @icmp4 accept"));
    }
    {
        auto r = rule();
        frame_is(r, l, Family::v6).payload(l.base, l.ip + 6, 1).eq_u8(IPPROTO_ICMPV6)
            .payload(l.base, l.ip + 40, 1).eq_u8(128)
            .payload(l.base, l.ip + 24, 16).lookup(kSetEcho6, kNetdevSetIdScoped + 3)
            .counter().accept().comment(kCommentEcho).emit(w, what("icmpv6 echo-request @icmp6 accept"));
    }
    if (l.ethernet)  // address resolution: the link must keep working (not routed beyond it)
        rule().payload(NFT_PAYLOAD_LL_HEADER, 12, 2).eq_bytes({0x08, 0x06}).accept().emit(w, what("arp accept"));
    if (needs_nd(policy)) {
        // Neighbour discovery, but only towards the link (nd6): an ICMPv6 type 135 to a far
        // address would otherwise be routed onwards by the next hop, carrying data with it.
        for (std::uint8_t type : {133, 135, 136}) {
            auto r = rule();
            frame_is(r, l, Family::v6).payload(l.base, l.ip + 6, 1).eq_u8(IPPROTO_ICMPV6)  // nexthdr
                .payload(l.base, l.ip + 40, 1).eq_u8(type)                                   // icmp6_type
                .payload(l.base, l.ip + 24, 16).lookup(kSetNd6, kNetdevSetIdNd6).accept()
                .emit(w, what(fmt::format("icmpv6 type {} to @nd6 accept", type).c_str()));
        }
    }
    rule().counter().drop().comment(kCommentDeny).emit(w, what("drop"));
}

void add_netdev(BatchWriter& w, const Policy& policy, const NetdevPlan& plan, const Installed& installed) {
    const AllowList& allow = policy.all();
    if (!plan.install && !plan.replace_existing) return;
    w.family = NFPROTO_NETDEV;
    w.label = "netdev ";
    if (plan.install && installed.netdev == Found::reusable) {
        // In place (see Installed): chains of devices still there keep their hooks.
        add_table(w, NFT_MSG_NEWTABLE, "table netdev nsegress (kept)");
        // The rules go before the sets they use are replaced (add_port_set).
        for (const auto& dev : installed.netdev_devices) flush_chain(w, NFPROTO_NETDEV, kNetdevChainPrefix + dev);
        add_interval_set(w, NFPROTO_NETDEV, kSet4, kNetdevSetId4, Family::v4, allow.ranges(Family::v4), true);
        add_interval_set(w, NFPROTO_NETDEV, kSet6, kNetdevSetId6, Family::v6, allow.ranges(Family::v6), true);
        add_interval_set(w, NFPROTO_NETDEV, kSetNd6, kNetdevSetIdNd6, Family::v6, plan.neighbour6.ranges(Family::v6),
                         true);
        add_interval_set(w, NFPROTO_NETDEV, kSetOwn4, kNetdevSetIdOwn4, Family::v4, plan.own.ranges(Family::v4), true);
        add_interval_set(w, NFPROTO_NETDEV, kSetOwn6, kNetdevSetIdOwn6, Family::v6, plan.own.ranges(Family::v6), true);
        add_byte_set(w, kSetIp6Next, kNetdevSetIdIp6Next, kIp6NextKeys, true);
        add_scoped_sets(w, NFPROTO_NETDEV, kNetdevSetIdScoped, policy, true);
        auto had = [&](const std::string& dev) {
            return std::find(installed.netdev_devices.begin(), installed.netdev_devices.end(), dev) !=
                   installed.netdev_devices.end();
        };
        for (const auto& d : plan.devices) add_netdev_chain(w, d, policy, had(d.name));
        for (const auto& dev : installed.netdev_devices) {
            if (std::any_of(plan.devices.begin(), plan.devices.end(), [&](const NetdevDevice& d) { return d.name == dev; }))
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
        add_table(w, NFT_MSG_DELTABLE, plan.install ? "table netdev nsegress (replace)" : "table netdev nsegress (delete)");
        if (plan.install) {
            add_table(w, NFT_MSG_NEWTABLE, "table netdev nsegress");
            add_interval_set(w, NFPROTO_NETDEV, kSet4, kNetdevSetId4, Family::v4, allow.ranges(Family::v4));
            add_interval_set(w, NFPROTO_NETDEV, kSet6, kNetdevSetId6, Family::v6, allow.ranges(Family::v6));
            add_interval_set(w, NFPROTO_NETDEV, kSetNd6, kNetdevSetIdNd6, Family::v6, plan.neighbour6.ranges(Family::v6));
            add_interval_set(w, NFPROTO_NETDEV, kSetOwn4, kNetdevSetIdOwn4, Family::v4, plan.own.ranges(Family::v4));
            add_interval_set(w, NFPROTO_NETDEV, kSetOwn6, kNetdevSetIdOwn6, Family::v6, plan.own.ranges(Family::v6));
            add_byte_set(w, kSetIp6Next, kNetdevSetIdIp6Next, kIp6NextKeys, false);
                        add_scoped_sets(w, NFPROTO_NETDEV, kNetdevSetIdScoped, policy, false);
            for (const auto& d : plan.devices) add_netdev_chain(w, d, policy, false);
        }
    }
    w.family = NFPROTO_INET;
    w.label.clear();
}

// ---- Netlink I/O ------------------------------------------------------------------------------

std::string ext_ack_text(const nlmsghdr* nlh) {
    // With NETLINK_CAP_ACK the error message carries only the request's header, then TLVs.
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return {};
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    std::size_t off = sizeof(*err);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += err->msg.nlmsg_len - sizeof(nlmsghdr);
    std::string text;
    const char* base = static_cast<const char*>(mnl_nlmsg_get_payload(nlh));
    std::size_t total = nlh->nlmsg_len - MNL_NLMSG_HDRLEN;
    std::size_t pos = MNL_ALIGN(off);
    while (pos + sizeof(nlattr) <= total) {
        const auto* a = reinterpret_cast<const nlattr*>(base + pos);
        if (a->nla_len < sizeof(nlattr) || pos + a->nla_len > total) break;
        std::uint16_t type = a->nla_type & NLA_TYPE_MASK;
        const char* payload = reinterpret_cast<const char*>(a) + NLA_HDRLEN;
        std::size_t plen = a->nla_len - NLA_HDRLEN;
        if (type == NLMSGERR_ATTR_MSG && plen > 0) text = std::string(payload, strnlen(payload, plen));
        if (type == NLMSGERR_ATTR_OFFS && plen >= 4) {
            std::uint32_t at;
            std::memcpy(&at, payload, 4);
            text += (text.empty() ? "" : ", ") + fmt::format("offending attribute at byte {}", at);
        }
        pos += NLA_ALIGN(a->nla_len);
    }
    return text;
}

void grow_buffer(mnl_socket* sock, int opt_force, int opt, std::size_t want) {
    int fd = mnl_socket_get_fd(sock);
    int cur = 0;
    socklen_t len = sizeof cur;
    getsockopt(fd, SOL_SOCKET, opt, &cur, &len);
    if (static_cast<std::size_t>(cur) >= want) return;
    int v = static_cast<int>(std::min<std::size_t>(want, 1u << 30));
    // FORCE needs CAP_NET_ADMIN (which we have); fall back to the capped variant.
    if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof v) != 0)
        setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
}

// The comment a rule carries in its userdata (how status finds our counted rules); "" if none.
// Userdata is opaque bytes to the kernel, written by whoever wrote the rule: walk its
// type-length-value records here, bounded by the buffer. nftnl_udata_parse() trusts each
// record's length and would read past the end.
std::string rule_comment(const nftnl_rule* rule) {
    std::string comment;
    std::uint32_t ulen = 0;
    const auto* p = static_cast<const std::uint8_t*>(nftnl_rule_get_data(rule, NFTNL_RULE_USERDATA, &ulen));
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

// Runs a dump request and hands every reply message to cb. Returns 0 or a negative errno
// (ENOENT when the table or set does not exist is an answer, not a failure).
template <typename Cb>
int dump(mnl_socket* sock, nlmsghdr* req, Cb cb) {
    if (mnl_socket_sendto(sock, req, req->nlmsg_len) < 0) return -errno;
    std::uint32_t portid = mnl_socket_get_portid(sock);
    std::vector<char> buf(1 << 16);
    struct Ctx { Cb* cb; } ctx{&cb};
    auto trampoline = [](const nlmsghdr* nlh, void* data) -> int {
        return (*static_cast<Ctx*>(data)->cb)(nlh);
    };
    // The end of this dump (or its error) in one receive buffer.
    auto ends_dump = [&](ssize_t n) {
        int left = static_cast<int>(n);
        for (auto* m = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, left);
             m = mnl_nlmsg_next(m, &left))
            if (m->nlmsg_seq == req->nlmsg_seq && (m->nlmsg_type == NLMSG_DONE || m->nlmsg_type == NLMSG_ERROR))
                return true;
        return false;
    };
    while (true) {
        ssize_t n = mnl_socket_recvfrom(sock, buf.data(), buf.size());
        if (n < 0) return -errno;
        int ret = mnl_cb_run(buf.data(), n, req->nlmsg_seq, portid, trampoline, &ctx);
        if (ret < 0 && errno == EINTR) {
            // NLM_F_DUMP_INTR: a commit came in while the kernel was dumping, so what we got
            // mixes two generations. Read the rest away (the socket serves the next request
            // too) and say so; the caller reads again (consistent_read).
            while (!ends_dump(n))
                if ((n = mnl_socket_recvfrom(sock, buf.data(), buf.size())) < 0) return -errno;
            return -EINTR;
        }
        if (ret < 0) return -errno;
        if (ret == MNL_CB_STOP) return 0;
    }
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

Batch compile_policy(const AllowList& allow, std::uint32_t first_seq, Mode mode, const NetdevPlan& netdev,
                     const Installed& installed) {
    return compile_policy(Policy(allow), first_seq, mode, netdev, installed);
}

Batch compile_policy(const Policy& policy, std::uint32_t first_seq, Mode mode, const NetdevPlan& netdev,
                     const Installed& installed) {
    const AllowList& allow = policy.all();
    BatchWriter w(first_seq);
    w.begin();
    const AllowList nd6 = neighbour_destinations(netdev);
    auto add_nd6 = [&](bool existing) {
        add_interval_set(w, NFPROTO_INET, kSetNd6, kSetIdNd6, Family::v6, nd6.ranges(Family::v6), existing);
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

namespace {
std::vector<std::uint8_t> slot_key(const IpAddr& a, std::uint8_t proto, std::uint16_t port) {
    std::vector<std::uint8_t> k(port_key_len(a.family), 0);
    auto b = a.bytes();
    std::copy(b.begin(), b.begin() + a.size(), k.begin());
    k[a.size()] = proto;
    k[a.size() + 4] = static_cast<std::uint8_t>(port >> 8);
    k[a.size() + 5] = static_cast<std::uint8_t>(port & 0xff);
    return k;
}
}  // namespace

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
            for (std::uint16_t type : {NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM}) {
                auto s = make_set(name, 0);
                nftnl_set_unset(s.get(), NFTNL_SET_ID);
                for (std::size_t j = i; j < i + n; ++j) {
                    const NameElement& e = *mine[j];
                    nftnl_set_elem* el = nftnl_set_elem_alloc();
                    if (!el) throw std::bad_alloc();
                    auto k = slot_key(e.addr, e.slot.proto_first, e.slot.port_first);
                    auto end = slot_key(e.addr, e.slot.proto_last, e.slot.port_last);
                    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, k.data(), static_cast<std::uint32_t>(k.size()));
                    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY_END, end.data(), static_cast<std::uint32_t>(end.size()));
                    if (type == NFT_MSG_NEWSETELEM)
                        nftnl_set_elem_set_u64(el, NFTNL_SET_ELEM_TIMEOUT, std::uint64_t{e.timeout_s} * 1000);
                    nftnl_set_elem_add(s.get(), el);
                }
                w.add(type, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0,
                      fmt::format("set {} {} {} elements (first {})", name,
                                  type == NFT_MSG_NEWSETELEM ? "add" : "delete", n, mine[i]->addr.str()),
                      4096 + n * 160, [&](nlmsghdr* nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, s.get()); });
            }
        }
    }
    return w.end();
}

// The name-set elements of one GETSETELEM reply (dump or single).
static int parse_name_elements(const nlmsghdr* m, Family f, std::vector<NameElementState>& out) {
    const std::size_t alen = f == Family::v4 ? 4 : 16;
    auto got = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    if (nftnl_set_elems_nlmsg_parse(m, got.get()) < 0) return MNL_CB_ERROR;
    std::unique_ptr<nftnl_set_elems_iter, void (*)(nftnl_set_elems_iter*)> it(
        nftnl_set_elems_iter_create(got.get()), nftnl_set_elems_iter_destroy);
    if (!it) throw std::bad_alloc();
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e; e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t klen = 0, elen = 0;
        const auto* k = static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen));
        const auto* ke = static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &elen));
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

static std::vector<NameElementState> read_name_elements_once(mnl_socket* sock) {
    static std::uint32_t seq = 0x3c000000;
    std::vector<NameElementState> out;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    for (Family f : {Family::v4, Family::v6}) {
        const char* name = f == Family::v4 ? kSetNames4 : kSetNames6;
        auto s = make_set(name, 0);
        nftnl_set_unset(s.get(), NFTNL_SET_ID);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, ++seq);
        nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
        int err = dump(sock, nlh, [&](const nlmsghdr* m) { return parse_name_elements(m, f, out); });
        if (err == -ENOENT) continue;
        if (err < 0) throw_errno(fmt::format("dump set {} of table inet nsegress", name), -err);
    }
    return out;
}

std::optional<NameElementState> read_name_element(mnl_socket* sock, const NameElement& want) {
    static std::uint32_t seq = 0x3d000000;
    const Family f = want.addr.family;
    const char* name = f == Family::v4 ? kSetNames4 : kSetNames6;
    auto s = make_set(name, 0);
    nftnl_set_unset(s.get(), NFTNL_SET_ID);
    nftnl_set_elem* el = nftnl_set_elem_alloc();
    if (!el) throw std::bad_alloc();
    auto k = slot_key(want.addr, want.slot.proto_first, want.slot.port_first);
    auto end = slot_key(want.addr, want.slot.proto_last, want.slot.port_last);
    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, k.data(), static_cast<std::uint32_t>(k.size()));
    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY_END, end.data(), static_cast<std::uint32_t>(end.size()));
    nftnl_set_elem_add(s.get(), el);
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_ACK, ++seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
    std::vector<NameElementState> got;
    int err = dump(sock, nlh, [&](const nlmsghdr* m) { return parse_name_elements(m, f, got); });
    if (err == -ENOENT) return std::nullopt;
    if (err < 0) throw_errno(fmt::format("get an element of set {} of table inet nsegress", name), -err);
    // The kernel answers with the element that holds the key; it is this one only when it
    // spans exactly the slot.
    for (const auto& st : got)
        if (st.addr == want.addr && st.slot == want.slot) return st;
    return std::nullopt;
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
        if (a.family == Family::v4) return fmt::format("0x{:08x}", static_cast<std::uint32_t>(a.value));
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
    for (std::size_t i = 0; i < kIp6NextKeys.size(); ++i) out << (i ? ", " : "") << static_cast<int>(kIp6NextKeys[i]);
    out << " }\n\t}\n\n";
    // Port-scoped elements: address . protocol . port, each a hex range.
    auto port_set = [&](const char* name, const char* type_of, Family f) {
        const auto& els = policy.scoped(f);
        out << "\tset " << name << " {\n\t\ttypeof " << type_of << "\n\t\tflags interval\n";
        if (!els.empty()) {
            out << "\t\telements = {\n";
            for (std::size_t i = 0; i < els.size(); ++i) {
                const auto& e = els[i];
                out << "\t\t\t# " << e.addrs.str() << " " << PortSpec{e.proto, e.first, e.last}.str() << "\n\t\t\t"
                    << hex(e.addrs.first) << "-" << hex(e.addrs.last) << " . "
                    << fmt::format("0x{:02x}", static_cast<unsigned>(e.proto)) << " . "
                    << fmt::format("0x{:04x}-0x{:04x}", e.first, e.last) << (i + 1 < els.size() ? ",\n" : "\n");
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
            << "\t\ttype filter hook egress device \"" << d.name << "\" priority filter; policy drop;\n"
            << "\t\t" << v4 << " " << b << "," << ip + 4 << ",4 != 5 counter drop comment \"" << kCommentSourceRoute << "\"\n";
        out << "\t\t" << v6 << " " << b << "," << ip + 48 << ",8 != @" << kSetIp6Next << " counter drop comment \""
            << kCommentSourceRoute << "\"\n";
        if (needs_nd(policy))
            out << "\t\t" << v6 << " " << b << "," << ip + 64 << ",128 0 " << b << "," << ip + 48 << ",8 58 " << b << ","
                << ip + 320 << ",8 135 " << b << "," << ip + 192 << ",104 0xff0200000000000000000001ff counter accept comment \""
                << kCommentDad << "\"\n";
        out << "\t\t" << v4 << " " << b << "," << ip + 96 << ",32 != @own4 counter drop comment \"" << kCommentForged << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 64 << ",128 != @own6 counter drop comment \"" << kCommentForged << "\"\n";
        out << "\t\t" << v4 << " " << b << "," << ip + 128 << ",32 @allow4 counter accept comment \"" << kCommentAllow4 << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 192 << ",128 @allow6 counter accept comment \"" << kCommentAllow6 << "\"\n";
        out << "\t\t" << v4 << " " << b << "," << ip + 128 << ",32 . " << b << "," << ip + 72 << ",8 . " << b << ","
            << ip + 176 << ",16 @allowp4 counter accept comment \"" << kCommentPorts4 << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 192 << ",128 . " << b << "," << ip + 48 << ",8 . " << b << ","
            << ip + 336 << ",16 @allowp6 counter accept comment \"" << kCommentPorts6 << "\"\n"
            << "\t\t" << v4 << " " << b << "," << ip + 72 << ",8 1 " << b << "," << ip + 160 << ",8 8 " << b << ","
            << ip + 128 << ",32 @icmp4 counter accept comment \"" << kCommentEcho << "\"\n"
            << "\t\t" << v6 << " " << b << "," << ip + 48 << ",8 58 " << b << "," << ip + 320 << ",8 128 " << b << ","
            << ip + 192 << ",128 @icmp6 counter accept comment \"" << kCommentEcho << "\"\n";
        if (d.ethernet) out << "\t\t@ll,96,16 0x0806 accept\n";
        if (needs_nd(policy))
            for (int type : {133, 135, 136})
                out << "\t\t" << v6 << " " << b << "," << ip + 48 << ",8 58 " << b << "," << ip + 320 << ",8 " << type
                    << " " << b << "," << ip + 192 << ",128 @nd6 accept\n";
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
            for (std::size_t i = 0; i < rs.size(); ++i) out << (i ? ",\n\t\t\t     " : "") << rs[i].str();
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
                out << (i ? ",\n\t\t\t     " : "") << e.addrs.str() << " . " << proto_name(e.proto) << " . " << e.first;
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
        << "\t\ttype filter hook output priority filter; policy " << (mode == Mode::audit ? "accept" : "drop") << ";\n";
    out << "\t\tip hdrlength != 5 counter drop" << comment(kCommentSourceRoute)
        << "\t\texthdr rt exists counter drop" << comment(kCommentSourceRoute);
    if (nd)
        out << "\t\tip6 saddr :: ip6 nexthdr ipv6-icmp icmpv6 type nd-neighbor-solicit ip6 daddr ff02::1:ff00:0/104 "
               "counter accept"
            << comment(kCommentDad);
    out << "\t\tct state new,invalid,untracked,related fib saddr type != local counter drop" << comment(kCommentForged)
        << "\t\toif != \"lo\" ip saddr 127.0.0.0/8 counter drop" << comment(kCommentForged)
        << "\t\toif != \"lo\" ip6 saddr ::1 counter drop" << comment(kCommentForged)
        << "\t\toif \"lo\" fib saddr type != local counter drop" << comment(kCommentForged)
        << "\t\toif \"lo\" counter accept" << comment(kCommentLoopback);
    if (names)
        out << "\t\tip daddr 127.0.0.1 ct status dnat th dport " << kNamesProxyPort << " counter accept"
            << comment(kCommentRedirected) << "\t\tip6 daddr ::1 ct status dnat th dport " << kNamesProxyPort
            << " counter accept" << comment(kCommentRedirected);
    if (names)
        for (const char* p : {"udp", "tcp"})
            out << "\t\tmeta mark " << fmt::format("{:#x}", kNamesMark) << " " << p << " dport 53 counter accept"
                << comment(kCommentResolver);
    out << "\t\tip daddr @allow4 counter accept" << comment(kCommentAllow4)
        << "\t\tip6 daddr @allow6 counter accept" << comment(kCommentAllow6)
        << "\t\tip daddr . meta l4proto . th dport @allowp4 counter accept" << comment(kCommentPorts4)
        << "\t\tip6 daddr . meta l4proto . th dport @allowp6 counter accept" << comment(kCommentPorts6)
        << "\t\ticmp type echo-request ip daddr @icmp4 counter accept" << comment(kCommentEcho)
        << "\t\ticmpv6 type echo-request ip6 daddr @icmp6 counter accept" << comment(kCommentEcho);
    if (names)
        out << "\t\tip daddr . meta l4proto . th dport @names4 counter ct label set " << kNameLabel << " accept"
            << comment(kCommentNames4)
            << "\t\tip6 daddr . meta l4proto . th dport @names6 counter ct label set " << kNameLabel << " accept"
            << comment(kCommentNames6)
            << "\t\tct direction original ct state established ct label " << kNameLabel << " counter accept"
            << comment(kCommentNamed);
    out << "\t\tct direction reply ct label " << kInboundLabel << " counter accept" << comment(kCommentReplies)
        << "\t\tmeta l4proto icmp ct state related ct label " << kInboundLabel << " counter accept"
        << comment(kCommentRelated)
        << "\t\tmeta l4proto ipv6-icmp ct state related ct label " << kInboundLabel << " counter accept"
        << comment(kCommentRelated);
    if (nd)
        for (const char* type : {"nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert"})
            out << "\t\tmeta l4proto ipv6-icmp icmpv6 type " << type << " ip6 daddr @nd6 counter accept"
                << comment(kCommentNd);
    out << "\t\tct state new limit rate " << kLogRatePerSecond << "/second burst " << kLogBurst
        << " packets counter log prefix \"" << (mode == Mode::audit ? kLogPrefixAudit : kLogPrefixEnforce)
        << "\" group " << kNflogGroup << comment(kCommentLog);
    if (mode == Mode::audit)
        out << "\t\tcounter accept" << comment(kCommentAudit);
    else
        out << "\t\tcounter reject with icmpx admin-prohibited" << comment(kCommentDeny);
    out << "\t}\n\n";
    out << "\tchain " << kChainInbound << " {\n"
        << "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        << "\t\tiif != \"lo\" ct state new tcp flags & (syn | ack) == syn counter ct label set " << kInboundLabel
        << comment(kCommentInbound)
        << "\t\tiif != \"lo\" ct state new meta l4proto != tcp counter ct label set " << kInboundLabel
        << comment(kCommentInbound) << "\t}\n";
    if (names) {
        out << "\n\tchain " << kChainDns << " {\n\t\ttype nat hook output priority " << kDnsPriority << "; policy accept;\n";
        for (const char* p : {"udp", "tcp"})
            out << "\t\tmeta mark != " << fmt::format("{:#x}", kNamesMark) << " " << p
                << " dport 53 counter redirect to :" << kNamesProxyPort << comment(kCommentDnsRedirect);
        out << "\t}\n";
    }
    out << "}\n";

    return out.str();
}

void MnlSocketDeleter::operator()(mnl_socket* s) const { mnl_socket_close(s); }

MnlSocket open_nfnl_socket() {
    MnlSocket sock(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC));
    if (!sock) throw_errno("open nfnetlink socket", errno);
    if (mnl_socket_bind(sock.get(), 0, MNL_SOCKET_AUTOPID) < 0)
        throw_errno("bind nfnetlink socket", errno);
    int on = 1;
    // Extended ACKs: the kernel's own words on what it refused. Capped ACKs: do not echo our
    // (possibly megabytes of) request back in every error.
    mnl_socket_setsockopt(sock.get(), NETLINK_EXT_ACK, &on, sizeof on);
    mnl_socket_setsockopt(sock.get(), NETLINK_CAP_ACK, &on, sizeof on);
    return sock;
}

namespace {

// One attempt: BATCH_BEGIN rebuilt with NFNL_BATCH_GENID = genid, the rest of the batch as
// compiled (two iovecs, no copy of a possibly large batch). Returns false when the kernel
// refused the generation (ERESTART): then it looked at nothing and changed nothing.
bool commit_attempt(mnl_socket* sock, const Batch& batch, std::uint32_t genid) {
    std::size_t acks_expected = 0;
    std::map<std::uint32_t, const BatchMessage*> by_seq;
    for (const auto& m : batch.messages) {
        by_seq[m.seq] = &m;
        acks_expected += m.ack;
    }
    // The kernel only takes a batch whole (BATCH_BEGIN..BATCH_END in one skb), so the send
    // buffer must hold it; every ACK must fit in the receive buffer, or we could not tell.
    grow_buffer(sock, SO_SNDBUFFORCE, SO_SNDBUF, batch.bytes.size() + 65536);
    grow_buffer(sock, SO_RCVBUFFORCE, SO_RCVBUF, acks_expected * 1024 + 262144);

    const auto* first = reinterpret_cast<const nlmsghdr*>(batch.bytes.data());
    if (batch.messages.empty() || batch.bytes.size() < sizeof(nlmsghdr) ||
        first->nlmsg_type != NFNL_MSG_BATCH_BEGIN)
        throw std::logic_error("nftables batch does not start with BATCH_BEGIN");
    std::size_t rest = NLMSG_ALIGN(first->nlmsg_len);
    alignas(nlmsghdr) char begin_buf[MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg)) + 64];
    nlmsghdr* begin = nftnl_batch_begin(begin_buf, first->nlmsg_seq);
    mnl_attr_put_u32(begin, NFNL_BATCH_GENID, htonl(genid));
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    iovec iov[2] = {{begin, NLMSG_ALIGN(begin->nlmsg_len)},
                    {const_cast<char*>(batch.bytes.data()) + rest, batch.bytes.size() - rest}};
    msghdr msg{};
    msg.msg_name = &kernel;
    msg.msg_namelen = sizeof kernel;
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    if (::sendmsg(mnl_socket_get_fd(sock), &msg, 0) < 0)
        throw_errno(fmt::format("send nftables batch ({} bytes)", batch.bytes.size()), errno);

    // nfnetlink processes the whole batch inside sendmsg(): every answer is queued by now, so
    // read without blocking until the queue is empty.
    std::vector<char> buf(1 << 16);
    std::size_t acks = 0;
    std::vector<std::string> errors;
    bool restarted = false;
    int fd = mnl_socket_get_fd(sock);
    while (true) {
        ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            throw_errno("receive nftables acknowledgements", errno);
        }
        // libmnl walks with an int: never alias the ssize_t (on big-endian the walk would read
        // its high half and stop after one message).
        int left = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, left);
             nlh = mnl_nlmsg_next(nlh, &left)) {
            if (nlh->nlmsg_type != NLMSG_ERROR) continue;
            const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            auto it = by_seq.find(nlh->nlmsg_seq);
            std::string what = it != by_seq.end() ? it->second->what
                                                  : fmt::format("message seq {}", nlh->nlmsg_seq);
            if (err->error == 0) {
                ++acks;
                continue;
            }
            if (err->error == -ERESTART && nlh->nlmsg_seq == first->nlmsg_seq) {
                restarted = true;
                continue;
            }
            std::string msg = fmt::format("kernel refused {}: {}", what, std::strerror(-err->error));
            if (auto ext = ext_ack_text(nlh); !ext.empty()) msg += " (" + ext + ")";
            errors.push_back(msg);
        }
    }
    if (restarted && errors.empty() && acks == 0) return false;
    if (!errors.empty()) {
        std::string all = errors.front();
        if (errors.size() > 1) all += fmt::format(" (and {} more)", errors.size() - 1);
        throw Error(Exit::failed, all + "; nothing was changed (the batch is all or nothing)");
    }
    if (acks != acks_expected)
        throw_failed(fmt::format("nftables batch: {} of {} messages acknowledged; the kernel "
                                 "did not confirm the commit", acks, acks_expected));
    return true;
}

}  // namespace

std::uint32_t read_genid(mnl_socket* sock) {
    static std::uint32_t seq = 0x40000000;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, ++seq);
    std::optional<std::uint32_t> id;
    int err = dump(sock, nlh, [&](const nlmsghdr* m) {
        auto g = checked<nftnl_gen, GenFree>(nftnl_gen_alloc());
        if (nftnl_gen_nlmsg_parse(m, g.get()) == 0 && nftnl_gen_is_set(g.get(), NFTNL_GEN_ID))
            id = nftnl_gen_get_u32(g.get(), NFTNL_GEN_ID);
        return MNL_CB_OK;
    });
    if (err < 0) throw_errno("read the nftables ruleset generation (NFT_MSG_GETGEN)", -err);
    if (!id) throw_failed("read the nftables ruleset generation: no NFTA_GEN_ID in the answer");
    return *id;
}

namespace {

// A reading made of several dumps describes one state of the ruleset only if no commit came in
// between: the kernel flags a dump that a commit interrupted (NLM_F_DUMP_INTR, EINTR from dump()),
// and a commit between two dumps shows as a new generation. Either way, read again, as nft does
// with its cache. Bounded like commit(): a writer that commits without pause wins, and we say so.
template <typename F>
auto consistent_read(mnl_socket* sock, const char* what, F read) -> decltype(read(sock)) {
    for (int attempt = 1;; ++attempt) {
        const std::uint32_t before = read_genid(sock);
        try {
            auto result = read(sock);
            // Test builds only: pretend a commit came in while we read.
            if (read_genid(sock) == before && attempt > testing::g_hooks.changed_reads) return result;
        } catch (const Error& e) {
            if (e.sys_errno() != EINTR) throw;
        }
        if (attempt == kCommitAttempts)
            throw Error(Exit::failed,
                        fmt::format("{}: the ruleset changed during each of {} reads in a row (another "
                                    "writer commits continuously)",
                                    what, kCommitAttempts),
                        EINTR);
    }
}

}  // namespace

int commit(mnl_socket* sock, const Batch& batch) {
    return commit(sock, [&]() -> const Batch& { return batch; });
}

int commit(mnl_socket* sock, const std::function<const Batch&()>& build) {
    return commit(sock, [&](std::uint32_t) -> const Batch& { return build(); });
}

int commit(mnl_socket* sock, const std::function<const Batch&(std::uint32_t genid)>& build) {
    for (int attempt = 1; attempt <= kCommitAttempts; ++attempt) {
        std::uint32_t genid = read_genid(sock);
        const Batch& batch = build(genid);
        // Test builds only: pretend the ruleset changed between our read and our send.
        if (attempt <= testing::g_hooks.stale_genid_attempts) genid += 0x10000;
        if (commit_attempt(sock, batch, genid)) return attempt;
    }
    throw Error(Exit::failed,
                fmt::format("nftables batch: the ruleset changed under us {} times in a row (another "
                            "writer commits continuously, ERESTART); nothing was changed",
                            kCommitAttempts),
                ERESTART);
}

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

std::vector<std::uint8_t> port_key(const IpAddr& a, IpProto p, std::uint16_t port) {
    std::vector<std::uint8_t> k(port_key_len(a.family), 0);
    auto b = a.bytes();
    std::copy(b.begin(), b.begin() + a.size(), k.begin());
    k[a.size()] = static_cast<std::uint8_t>(p);
    k[a.size() + 4] = static_cast<std::uint8_t>(port >> 8);
    k[a.size() + 5] = static_cast<std::uint8_t>(port & 0xff);
    return k;
}

bool parse_port_setelem_message(const nlmsghdr* nlh, Family f, std::vector<PortRange>& out) {
    auto got = checked<nftnl_set, SetFree>(nftnl_set_alloc());
    if (nftnl_set_elems_nlmsg_parse(nlh, got.get()) < 0) return false;
    std::unique_ptr<nftnl_set_elems_iter, void (*)(nftnl_set_elems_iter*)> it(
        nftnl_set_elems_iter_create(got.get()), nftnl_set_elems_iter_destroy);
    if (!it) throw std::bad_alloc();
    const std::size_t alen = f == Family::v4 ? 4 : 16;
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e; e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t len = 0, end_len = 0;
        const auto* key = static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
        const auto* end = static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &end_len));
        if (!key || len != port_key_len(f)) continue;
        if (!end || end_len != len) end = key;  // a single value
        const std::uint8_t proto = key[alen];
        if (end[alen] != proto) continue;  // a protocol range: not something we write
        PortRange p;
        if (proto == IPPROTO_TCP) p.proto = IpProto::tcp;
        else if (proto == IPPROTO_UDP) p.proto = IpProto::udp;
        else if (proto == IPPROTO_SCTP) p.proto = IpProto::sctp;
        else continue;
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
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e; e = nftnl_set_elems_iter_next(it.get())) {
        std::uint32_t len = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
        if (!key || len != (f == Family::v4 ? 4u : 16u)) continue;
        bool end = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
                   (nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & NFT_SET_ELEM_INTERVAL_END);
        keys.push_back(ElementKey{IpAddr::from_bytes(f, key), end});
    }
    return true;
}

static PolicyState read_policy_once(mnl_socket* sock) {
    PolicyState st;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    static std::uint32_t seq = 1;

    // Does the table exist? (A rule dump of a missing table is not reliably ENOENT.)
    {
        auto t = make_table();
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETTABLE, NFPROTO_INET,
                                              NLM_F_ACK, ++seq);
        nftnl_table_nlmsg_build_payload(nlh, t.get());
        int err = dump(sock, nlh, [](const nlmsghdr*) { return MNL_CB_OK; });
        if (err == -ENOENT) return st;
        if (err < 0) throw_errno("get table inet nsegress", -err);
        st.present = true;
    }

    // Rules of our chain: how many, and the counters of the tagged ones.
    {
        auto r = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);  // both chains
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_INET,
                                              NLM_F_DUMP, ++seq);
        nftnl_rule_nlmsg_build_payload(nlh, r.get());
        bool saw_allow4 = false, saw_allow6 = false, saw_deny = false, saw_audit = false;
        bool saw_inbound = false, saw_replies = false;
        auto add = [](Counter& to, const Counter& c) {
            to.packets += c.packets;
            to.bytes += c.bytes;
        };
        int err = dump(sock, nlh, [&](const nlmsghdr* m) {
            std::optional<RuleSummary> rule;
            if (!parse_rule_message(m, rule)) return MNL_CB_ERROR;
            if (!rule) return MNL_CB_OK;
            if (rule->chain == kChainInbound) {
                if (rule->comment == kCommentInbound) {
                    saw_inbound = true;
                    add(st.inbound, rule->counter);
                }
                return MNL_CB_OK;
            }
            if (rule->chain == kChainDns) {
                if (rule->comment == kCommentDnsRedirect) add(st.dns_redirected, rule->counter);
                return MNL_CB_OK;
            }
            ++st.rules;
            if (rule->comment == kCommentLoopback) add(st.loopback, rule->counter);
            else if (rule->comment == kCommentReplies) {
                saw_replies = true;
                add(st.replies, rule->counter);
            } else if (rule->comment == kCommentRelated) add(st.related, rule->counter);
            else if (rule->comment == kCommentNd || rule->comment == kCommentDad) add(st.neighbour, rule->counter);
            else if (rule->comment == kCommentForged) add(st.forged, rule->counter);
            else if (rule->comment == kCommentSourceRoute) add(st.source_route, rule->counter);
            else if (rule->comment == kCommentResolver) add(st.resolver, rule->counter);
            else if (rule->comment == kCommentNamed) add(st.named, rule->counter);
            else if (rule->comment == kCommentNames4 || rule->comment == kCommentNames6) {
                st.names = true;
                add(st.allowed_names, rule->counter);
                add(st.allowed, rule->counter);
            } else if (rule->comment == kCommentPorts4 || rule->comment == kCommentPorts6) {
                add(st.allowed_ports, rule->counter);
                add(st.allowed, rule->counter);
            } else if (rule->comment == kCommentEcho) {
                add(st.allowed_echo, rule->counter);
                add(st.allowed, rule->counter);
            } else if (rule->comment == kCommentAllow4 || rule->comment == kCommentAllow6) {
                (rule->comment == kCommentAllow4 ? saw_allow4 : saw_allow6) = true;
                st.allowed.packets += rule->counter.packets;
                st.allowed.bytes += rule->counter.bytes;
            } else if (rule->comment == kCommentDeny || rule->comment == kCommentAudit) {
                (rule->comment == kCommentDeny ? saw_deny : saw_audit) = true;
                st.refused = rule->counter;
            } else if (rule->comment == kCommentLog) {
                st.deny_log = true;
                st.logged = rule->counter;
            }
            return MNL_CB_OK;
        });
        if (err == -ENOENT) return st;  // no chain: incomplete
        if (err < 0) throw_errno("dump rules of table inet nsegress", -err);
        // Exactly one final rule: both would mean the table was edited by hand.
        st.complete = saw_allow4 && saw_allow6 && (saw_deny != saw_audit);
        st.mode = saw_audit && !saw_deny ? Mode::audit : Mode::enforce;
        st.reply_marking = saw_inbound && saw_replies;
    }

    for (Family f : {Family::v4, Family::v6}) {
        const char* name = f == Family::v4 ? kSet4 : kSet6;
        auto s = make_set(name, 0);
        nftnl_set_unset(s.get(), NFTNL_SET_ID);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET,
                                              NLM_F_DUMP, ++seq);
        nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
        std::vector<ElementKey> keys;
        int err = dump(sock, nlh, [&](const nlmsghdr* m) {
            return parse_setelem_message(m, f, keys) ? MNL_CB_OK : MNL_CB_ERROR;
        });
        if (err == -ENOENT) {
            st.complete = false;
            continue;
        }
        if (err < 0) throw_errno(fmt::format("dump set {} of table inet nsegress", name), -err);
        for (const auto& r : elements_to_ranges(f, std::move(keys))) st.allow.add(r);
    }
    // The port-scoped and echo sets (absent on a table of an older nsegress: nothing scoped).
    for (Family f : {Family::v4, Family::v6}) {
        for (bool ports : {true, false}) {
            const char* name = ports ? (f == Family::v4 ? kSetPorts4 : kSetPorts6) : (f == Family::v4 ? kSetEcho4 : kSetEcho6);
            auto s = make_set(name, 0);
            nftnl_set_unset(s.get(), NFTNL_SET_ID);
            nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, ++seq);
            nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
            std::vector<ElementKey> keys;
            int err = dump(sock, nlh, [&](const nlmsghdr* m) {
                bool ok = ports ? parse_port_setelem_message(m, f, st.ports) : parse_setelem_message(m, f, keys);
                return ok ? MNL_CB_OK : MNL_CB_ERROR;
            });
            if (err == -ENOENT) continue;
            if (err < 0) throw_errno(fmt::format("dump set {} of table inet nsegress", name), -err);
            for (const auto& r : elements_to_ranges(f, std::move(keys))) st.echo.add(r);
        }
    }
    return st;
}

namespace {

bool table_present(mnl_socket* sock, std::uint32_t family) {
    static std::uint32_t seq = 0x20000000;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    auto t = make_table();
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETTABLE, family, NLM_F_ACK, ++seq);
    nftnl_table_nlmsg_build_payload(nlh, t.get());
    int err = dump(sock, nlh, [](const nlmsghdr*) { return MNL_CB_OK; });
    // EAFNOSUPPORT: a kernel without the netdev family cannot have such a table.
    if (err == -ENOENT || err == -EAFNOSUPPORT) return false;
    if (err < 0)
        throw_errno(fmt::format("get table {} nsegress", family == NFPROTO_NETDEV ? "netdev" : "inet"), -err);
    return true;
}

struct ChainShape {
    std::string name, type, device;  // device: the first one a netdev chain is bound to
    std::uint32_t hook = ~0u;
    std::int32_t prio = 0;
    bool base = false;
    bool single_device = true;
};
struct SetShape {
    std::string name;
    std::uint32_t key_type = 0, key_len = 0, flags = 0;
};

std::uint32_t shape_seq = 0x28000000;

// The devices a netdev base chain is bound to. The kernel reports a single device as
// NFTA_HOOK_DEV, or as a one-element NFTA_HOOK_DEVS list on some versions.
std::vector<std::string> chain_devices(const nftnl_chain* chain) {
    std::vector<std::string> out;
    if (nftnl_chain_is_set(chain, NFTNL_CHAIN_DEV)) {
        out.emplace_back(nftnl_chain_get_str(chain, NFTNL_CHAIN_DEV));
    } else if (nftnl_chain_is_set(chain, NFTNL_CHAIN_DEVICES)) {
        const auto* devs = static_cast<const char* const*>(nftnl_chain_get(chain, NFTNL_CHAIN_DEVICES));
        for (std::size_t i = 0; devs && devs[i]; ++i) out.emplace_back(devs[i]);
    }
    return out;
}

// The chains of table nsegress in `family` (one dump, no rules); none when there is no table.
std::vector<ChainShape> dump_chains(mnl_socket* sock, std::uint32_t family) {
    std::vector<ChainShape> chains;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    {
        auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETCHAIN, family, NLM_F_DUMP, ++shape_seq);
        nftnl_chain_nlmsg_build_payload(nlh, c.get());
        int err = dump(sock, nlh, [&](const nlmsghdr* m) {
            auto chain = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
            if (nftnl_chain_nlmsg_parse(m, chain.get()) < 0) return MNL_CB_ERROR;
            const char* table = nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TABLE);
            const char* name = nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME);
            if (!table || std::strcmp(table, kTable) != 0 || !name) return MNL_CB_OK;
            ChainShape cs;
            cs.name = name;
            cs.base = nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_HOOKNUM);
            if (cs.base) {
                cs.hook = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_HOOKNUM);
                cs.prio = nftnl_chain_get_s32(chain.get(), NFTNL_CHAIN_PRIO);
            }
            if (const char* t = nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TYPE)) cs.type = t;
            const auto devices = chain_devices(chain.get());
            if (!devices.empty()) cs.device = devices[0];
            cs.single_device = devices.size() <= 1;
            chains.push_back(std::move(cs));
            return MNL_CB_OK;
        });
        if (err < 0 && err != -ENOENT)
            throw_errno(fmt::format("dump chains of table {} nsegress", family == NFPROTO_NETDEV ? "netdev" : "inet"), -err);
    }
    return chains;
}

// The sets of table nsegress in `family` (one dump, no elements).
std::vector<SetShape> dump_sets(mnl_socket* sock, std::uint32_t family) {
    std::vector<SetShape> sets;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    {
        auto st = make_set(kSet4, 0);
        nftnl_set_unset(st.get(), NFTNL_SET_NAME);
        nftnl_set_unset(st.get(), NFTNL_SET_ID);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSET, family, NLM_F_DUMP, ++shape_seq);
        nftnl_set_nlmsg_build_payload(nlh, st.get());
        int err = dump(sock, nlh, [&](const nlmsghdr* m) {
            auto set = checked<nftnl_set, SetFree>(nftnl_set_alloc());
            if (nftnl_set_nlmsg_parse(m, set.get()) < 0) return MNL_CB_ERROR;
            const char* table = nftnl_set_get_str(set.get(), NFTNL_SET_TABLE);
            const char* name = nftnl_set_get_str(set.get(), NFTNL_SET_NAME);
            if (!table || std::strcmp(table, kTable) != 0 || !name) return MNL_CB_OK;
            sets.push_back(SetShape{name, nftnl_set_get_u32(set.get(), NFTNL_SET_KEY_TYPE),
                                    nftnl_set_get_u32(set.get(), NFTNL_SET_KEY_LEN),
                                    nftnl_set_get_u32(set.get(), NFTNL_SET_FLAGS)});
            return MNL_CB_OK;
        });
        if (err < 0 && err != -ENOENT)
            throw_errno(fmt::format("dump sets of table {} nsegress", family == NFPROTO_NETDEV ? "netdev" : "inet"), -err);
    }
    return sets;
}

bool has_set(const std::vector<SetShape>& sets, const char* name, Family f) {
    return std::any_of(sets.begin(), sets.end(), [&](const SetShape& s) {
        return s.name == name && s.key_type == (f == Family::v4 ? kTypeIpAddr : kTypeIp6Addr) &&
               s.key_len == (f == Family::v4 ? 4u : 16u) && s.flags == NFT_SET_INTERVAL;
    });
}

bool has_port_set(const std::vector<SetShape>& sets, const char* name, Family f) {
    return std::any_of(sets.begin(), sets.end(), [&](const SetShape& s) {
        return s.name == name && s.key_type == concat_type(f) && s.key_len == port_key_len(f) &&
               s.flags == (NFT_SET_INTERVAL | NFT_SET_CONCAT);
    });
}

bool has_name_set(const std::vector<SetShape>& sets, Family f) {
    return std::any_of(sets.begin(), sets.end(), [&](const SetShape& s) {
        return s.name == (f == Family::v4 ? kSetNames4 : kSetNames6) && s.key_type == concat_type(f) &&
               s.key_len == port_key_len(f) && s.flags == kNameSetFlags;
    });
}

// The port-scoped and echo sets, all four with our shapes.
bool has_scoped_sets(const std::vector<SetShape>& sets) {
    return has_port_set(sets, kSetPorts4, Family::v4) && has_port_set(sets, kSetPorts6, Family::v6) &&
           has_set(sets, kSetEcho4, Family::v4) && has_set(sets, kSetEcho6, Family::v6);
}

}  // namespace

bool netdev_table_present(mnl_socket* sock) { return table_present(sock, NFPROTO_NETDEV); }

namespace {

// The stamp of the output chain's final rule (one dump of that chain's rules, a few dozen);
// nullopt when there is none, or more than one rule carries one (edited by hand).
std::optional<Stamp> read_stamp(mnl_socket* sock) {
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    auto r = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, kChain);
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, ++shape_seq);
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    std::optional<Stamp> found;
    int stamps = 0;
    int err = dump(sock, nlh, [&](const nlmsghdr* m) {
        auto rule = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(m, rule.get()) < 0) return MNL_CB_ERROR;
        const char* table = nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE);
        const char* chain = nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN);
        if (!table || !chain || std::strcmp(table, kTable) != 0 || std::strcmp(chain, kChain) != 0)
            return MNL_CB_OK;
        if (auto st = rule_stamp(rule.get())) {
            found = st;
            ++stamps;
        }
        return MNL_CB_OK;
    });
    if (err == -ENOENT) return std::nullopt;
    if (err < 0) throw_errno("dump rules of chain inet nsegress output", -err);
    return stamps == 1 ? found : std::nullopt;
}

}  // namespace

static Installed probe_installed_once(mnl_socket* sock) {
    Installed in;
    if (table_present(sock, NFPROTO_INET)) {
        auto chains = dump_chains(sock, NFPROTO_INET);
        auto sets = dump_sets(sock, NFPROTO_INET);
        auto has_chain = [&](const char* name, std::uint32_t hook, std::int32_t prio) {
            return std::any_of(chains.begin(), chains.end(), [&](const ChainShape& c) {
                return c.name == name && c.base && c.hook == hook && c.prio == prio && c.type == "filter";
            });
        };
        // A table of an older nsegress (no inbound chain, no nd6) is replaced whole.
        in.inet = has_chain(kChain, NF_INET_LOCAL_OUT, 0) && has_chain(kChainInbound, NF_INET_PRE_ROUTING, kInboundPriority) &&
                          has_set(sets, kSet4, Family::v4) && has_set(sets, kSet6, Family::v6) &&
                          has_set(sets, kSetNd6, Family::v6) && has_scoped_sets(sets)
                      ? Found::reusable
                      : Found::foreign;
        // Names: both sets and the nat chain with our shapes, or none of them.
        const bool dns = std::any_of(chains.begin(), chains.end(), [](const ChainShape& c) { return c.name == kChainDns; });
        const bool dns_ours = std::any_of(chains.begin(), chains.end(), [](const ChainShape& c) {
            return c.name == kChainDns && c.base && c.hook == NF_INET_LOCAL_OUT && c.prio == kDnsPriority && c.type == "nat";
        });
        const int name_sets = static_cast<int>(std::count_if(sets.begin(), sets.end(), [](const SetShape& x) {
            return x.name == kSetNames4 || x.name == kSetNames6;
        }));
        const bool name_sets_ours = has_name_set(sets, Family::v4) && has_name_set(sets, Family::v6);
        if (dns || name_sets > 0) {
            if (dns_ours && name_sets_ours)
                in.names = in.inet == Found::reusable;
            else
                in.inet = Found::foreign;
        }
        if (in.inet == Found::reusable) in.stamp = read_stamp(sock);
    }
    if (table_present(sock, NFPROTO_NETDEV)) {
        auto chains = dump_chains(sock, NFPROTO_NETDEV);
        auto sets = dump_sets(sock, NFPROTO_NETDEV);
        // Reusable only when every chain is one of ours, bound to the device its name says.
        bool ok = has_set(sets, kSet4, Family::v4) && has_set(sets, kSet6, Family::v6) && has_set(sets, kSetNd6, Family::v6) &&
                  has_set(sets, kSetOwn4, Family::v4) && has_set(sets, kSetOwn6, Family::v6) &&
                  std::any_of(sets.begin(), sets.end(), [](const SetShape& x) { return x.name == kSetIp6Next; }) &&
                  has_scoped_sets(sets);
        for (const auto& c : chains) {
            ok = ok && c.base && c.hook == NF_NETDEV_EGRESS && c.prio == 0 && c.type == "filter" &&
                 !c.device.empty() && c.single_device && c.name == kNetdevChainPrefix + c.device;
            if (ok) in.netdev_devices.push_back(c.device);
        }
        in.netdev = ok ? Found::reusable : Found::foreign;
        if (!ok) in.netdev_devices.clear();
    }
    return in;
}

static NetdevState read_netdev_once(mnl_socket* sock) {
    NetdevState st;
    st.present = netdev_table_present(sock);
    if (!st.present) return st;
    static std::uint32_t seq = 0x30000000;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    std::map<std::string, NetdevChainState> chains;
    for (auto& c : dump_chains(sock, NFPROTO_NETDEV)) chains[c.name] = NetdevChainState{c.name, c.device, {}, {}};
    {
        auto r = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_NETDEV, NLM_F_DUMP, ++seq);
        nftnl_rule_nlmsg_build_payload(nlh, r.get());
        int err = dump(sock, nlh, [&](const nlmsghdr* m) {
            auto rule = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
            if (nftnl_rule_nlmsg_parse(m, rule.get()) < 0) return MNL_CB_ERROR;
            const char* table = nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE);
            const char* chain = nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN);
            if (!table || std::strcmp(table, kTable) != 0 || !chain) return MNL_CB_OK;
            auto it = chains.find(chain);
            if (it == chains.end()) return MNL_CB_OK;
            const std::string comment = rule_comment(rule.get());
            const Counter c = rule_counter(rule.get());
            if (comment == kCommentAllow4 || comment == kCommentAllow6 || comment == kCommentPorts4 ||
                comment == kCommentPorts6 || comment == kCommentEcho) {
                it->second.allowed.packets += c.packets;
                it->second.allowed.bytes += c.bytes;
            } else if (comment == kCommentDeny || comment == kCommentForged || comment == kCommentSourceRoute) {
                // Every drop of the chain: the final one and those ahead of the allow-list.
                it->second.refused.packets += c.packets;
                it->second.refused.bytes += c.bytes;
            }
            return MNL_CB_OK;
        });
        if (err < 0 && err != -ENOENT) throw_errno("dump rules of table netdev nsegress", -err);
    }
    for (auto& [name, cs] : chains) st.chains.push_back(cs);
    return st;
}

static std::vector<EgressHook> list_egress_hooks_once(mnl_socket* sock) {
    static std::uint32_t seq = 0x38000000;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    std::vector<EgressHook> out;
    auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETCHAIN, NFPROTO_NETDEV, NLM_F_DUMP, ++seq);
    nftnl_chain_nlmsg_build_payload(nlh, c.get());
    int err = dump(sock, nlh, [&](const nlmsghdr* m) {
        auto chain = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(m, chain.get()) < 0) return MNL_CB_ERROR;
        if (nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_FAMILY) != NFPROTO_NETDEV ||
            !nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_HOOKNUM) ||
            nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_HOOKNUM) != NF_NETDEV_EGRESS)
            return MNL_CB_OK;
        EgressHook h;
        h.table = nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TABLE);
        h.chain = nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME);
        for (auto& d : chain_devices(chain.get())) {
            h.device = std::move(d);
            out.push_back(h);
        }
        return MNL_CB_OK;
    });
    if (err < 0 && err != -ENOENT && err != -EAFNOSUPPORT) throw_errno("dump netdev chains", -err);
    return out;
}

// The readers above, each made one consistent reading.
PolicyState read_policy(mnl_socket* sock) {
    return consistent_read(sock, "read table inet nsegress", read_policy_once);
}

Installed probe_installed(mnl_socket* sock) {
    return consistent_read(sock, "read what an earlier run installed", probe_installed_once);
}

NetdevState read_netdev(mnl_socket* sock) {
    return consistent_read(sock, "read table netdev nsegress", read_netdev_once);
}

std::vector<EgressHook> list_egress_hooks(mnl_socket* sock) {
    return consistent_read(sock, "list the netdev egress hooks", list_egress_hooks_once);
}

std::vector<NameElementState> read_name_elements(mnl_socket* sock) {
    return consistent_read(sock, "read the name sets", read_name_elements_once);
}

}  // namespace nsegress::nft
