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
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "nsegress/error.hpp"

namespace nsegress::nft {

namespace {

// ---- RAII for libnftnl objects ---------------------------------------------------------------

struct TableFree { void operator()(nftnl_table* p) const { nftnl_table_free(p); } };
struct ChainFree { void operator()(nftnl_chain* p) const { nftnl_chain_free(p); } };
struct SetFree { void operator()(nftnl_set* p) const { nftnl_set_free(p); } };
struct RuleFree { void operator()(nftnl_rule* p) const { nftnl_rule_free(p); } };
struct ExprFree { void operator()(nftnl_expr* p) const { nftnl_expr_free(p); } };
struct UdataFree { void operator()(nftnl_udata_buf* p) const { nftnl_udata_buf_free(p); } };
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
constexpr std::uint32_t kSetId4 = 1;
constexpr std::uint32_t kSetId6 = 2;

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
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(batch_.bytes.data() + at, type, NFPROTO_INET,
                                              flags | NLM_F_ACK, seq);
        fill(nlh);
        batch_.bytes.resize(at + NLMSG_ALIGN(nlh->nlmsg_len));
        batch_.messages.push_back(BatchMessage{seq, type, std::move(what), true});
    }

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

void add_set(BatchWriter& w, Family f, const AllowList& allow) {
    const char* name = f == Family::v4 ? kSet4 : kSet6;
    std::uint32_t id = f == Family::v4 ? kSetId4 : kSetId6;
    {
        auto s = make_set(name, id);
        nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_INTERVAL);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, f == Family::v4 ? kTypeIpAddr : kTypeIp6Addr);
        nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, f == Family::v4 ? 4 : 16);
        w.add(NFT_MSG_NEWSET, NLM_F_CREATE, fmt::format("set {}", name), 1024,
              [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, s.get()); });
    }
    // Interval sets store [first, last+1): a start key, and an end key flagged INTERVAL_END.
    // A range reaching the top of the address space has no end key (last+1 would wrap).
    const auto& ranges = allow.ranges(f);
    const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
    for (std::size_t i = 0; i < ranges.size(); i += kElementsPerMessage) {
        std::size_t n = std::min(kElementsPerMessage, ranges.size() - i);
        auto s = make_set(name, id);
        for (std::size_t j = i; j < i + n; ++j) {
            add_element(s.get(), ranges[j].first, false);
            if (ranges[j].last.value != top)
                add_element(s.get(), IpAddr{f, ranges[j].last.value + 1}, true);
        }
        // Per element: nest + key nest + key (<=16) + flags, well under 64 bytes.
        w.add(NFT_MSG_NEWSETELEM, NLM_F_CREATE,
              fmt::format("set {} elements {}-{} (first {})", name, i + 1, i + n,
                          ranges[i].str()),
              4096 + n * 2 * 64,
              [&](nlmsghdr* nlh) {
                  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
                  // A nest over 64 KiB would wrap nla_len and silently lose elements.
                  if (nlh->nlmsg_len > 65000)
                      throw std::length_error("set element message exceeds a netlink nest");
              });
    }
}

void add_chain(BatchWriter& w) {
    auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, kChain);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_LOCAL_OUT);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, 0);  // "filter"
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_DROP);
    w.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, "chain output", 1024,
          [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, c.get()); });
}

// Expression helpers: each appends one expression to a rule, in nft's register conventions.
class RuleBuilder {
public:
    RuleBuilder() : r_(checked<nftnl_rule, RuleFree>(nftnl_rule_alloc())) {
        nftnl_rule_set_str(r_.get(), NFTNL_RULE_TABLE, kTable);
        nftnl_rule_set_str(r_.get(), NFTNL_RULE_CHAIN, kChain);
        nftnl_rule_set_u32(r_.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    }
    RuleBuilder& meta(std::uint32_t key) {
        auto e = expr("meta");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, NFT_REG_1);
        return push(std::move(e));
    }
    RuleBuilder& ct(std::uint32_t key) {
        auto e = expr("ct");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, key);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_DREG, NFT_REG_1);
        return push(std::move(e));
    }
    RuleBuilder& payload(std::uint32_t base, std::uint32_t offset, std::uint32_t len) {
        auto e = expr("payload");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
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
    RuleBuilder& eq_u8(std::uint8_t v) { return cmp(NFT_CMP_EQ, &v, 1); }
    RuleBuilder& eq_u32(std::uint32_t v) { return cmp(NFT_CMP_EQ, &v, 4); }  // host order
    // (reg & mask) ^ 0 != 0: how nft tests bits such as `ct state related`.
    RuleBuilder& has_bits(std::uint32_t mask) {
        auto e = expr("bitwise");
        std::uint32_t zero = 0;
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_LEN, 4);
        nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_MASK, &mask, 4);
        nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_XOR, &zero, 4);
        push(std::move(e));
        return cmp(NFT_CMP_NEQ, &zero, 4);
    }
    RuleBuilder& lookup(const char* set, std::uint32_t set_id) {
        auto e = expr("lookup");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, set);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SET_ID, set_id);
        return push(std::move(e));
    }
    RuleBuilder& counter() { return push(expr("counter")); }
    RuleBuilder& accept() {
        auto e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT);
        return push(std::move(e));
    }
    RuleBuilder& reject_admin_prohibited() {
        auto e = expr("reject");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
        nftnl_expr_set_u8(e.get(), NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
        return push(std::move(e));
    }
    RuleBuilder& comment(const char* text) {
        auto u = checked<nftnl_udata_buf, UdataFree>(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
        if (!nftnl_udata_put_strz(u.get(), NFTNL_UDATA_RULE_COMMENT, text))
            throw std::length_error("rule comment too long");
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
constexpr std::uint8_t kCtDirReply = 1;  // IP_CT_DIR_REPLY (kernel-internal enum)

void add_rules(BatchWriter& w, const AllowList& allow) {
    RuleBuilder().meta(NFT_META_OIF).eq_u32(1).accept().emit(w, "oif lo accept");  // lo is 1 in every netns
    RuleBuilder().ct(NFT_CT_DIRECTION).eq_u8(kCtDirReply).accept().emit(w, "ct direction reply accept");
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
    RuleBuilder().meta(NFT_META_L4PROTO).eq_u8(IPPROTO_ICMP).ct(NFT_CT_STATE)
        .has_bits(kCtStateRelated).accept().emit(w, "icmp related accept");
    RuleBuilder().meta(NFT_META_L4PROTO).eq_u8(IPPROTO_ICMPV6).ct(NFT_CT_STATE)
        .has_bits(kCtStateRelated).accept().emit(w, "icmpv6 related accept");
    if (allow.has(Family::v6)) {
        // Without neighbour discovery no IPv6 packet leaves, allowed or not.
        for (std::uint8_t type : {133, 135, 136}) {
            RuleBuilder().meta(NFT_META_L4PROTO).eq_u8(IPPROTO_ICMPV6)
                .payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1).eq_u8(type).accept()
                .emit(w, fmt::format("icmpv6 type {} accept", type));
        }
    }
    RuleBuilder().counter().reject_admin_prohibited().comment(kCommentDeny)
        .emit(w, "reject with icmpx admin-prohibited");
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
    while (true) {
        ssize_t n = mnl_socket_recvfrom(sock, buf.data(), buf.size());
        if (n < 0) return -errno;
        int ret = mnl_cb_run(buf.data(), n, req->nlmsg_seq, portid, trampoline, &ctx);
        if (ret < 0) return -errno;
        if (ret == MNL_CB_STOP) return 0;
    }
}

}  // namespace

// ---- Public API -------------------------------------------------------------------------------

Batch compile_policy(const AllowList& allow, std::uint32_t first_seq) {
    BatchWriter w(first_seq);
    w.begin();
    add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress (ensure)");
    add_table(w, NFT_MSG_DELTABLE, "table inet nsegress (replace)");
    add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress");
    add_set(w, Family::v4, allow);
    add_set(w, Family::v6, allow);
    add_chain(w);
    add_rules(w, allow);
    return w.end();
}

Batch compile_delete(std::uint32_t first_seq) {
    BatchWriter w(first_seq);
    w.begin();
    add_table(w, NFT_MSG_NEWTABLE, "table inet nsegress (ensure)");
    add_table(w, NFT_MSG_DELTABLE, "table inet nsegress (delete)");
    return w.end();
}

std::string render_policy(const AllowList& allow) {
    std::ostringstream out;
    auto elements = [&](Family f) {
        const auto& rs = allow.ranges(f);
        if (rs.empty()) return;
        out << "\t\telements = { ";
        for (std::size_t i = 0; i < rs.size(); ++i) out << (i ? ",\n\t\t\t     " : "") << rs[i].str();
        out << " }\n";
    };
    out << "table inet nsegress\n"
           "delete table inet nsegress\n"
           "table inet nsegress {\n"
           "\tset allow4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n";
    elements(Family::v4);
    out << "\t}\n\n\tset allow6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n";
    elements(Family::v6);
    out << "\t}\n\n"
           "\tchain output {\n"
           "\t\ttype filter hook output priority filter; policy drop;\n"
           "\t\toif \"lo\" accept\n"
           "\t\tct direction reply accept\n"
        << "\t\tip daddr @allow4 counter accept comment \"" << kCommentAllow4 << "\"\n"
        << "\t\tip6 daddr @allow6 counter accept comment \"" << kCommentAllow6 << "\"\n"
        << "\t\tmeta l4proto icmp ct state related accept\n"
           "\t\tmeta l4proto ipv6-icmp ct state related accept\n";
    if (allow.has(Family::v6))
        out << "\t\ticmpv6 type nd-router-solicit accept\n"
               "\t\ticmpv6 type nd-neighbor-solicit accept\n"
               "\t\ticmpv6 type nd-neighbor-advert accept\n";
    out << "\t\tcounter reject with icmpx admin-prohibited comment \"" << kCommentDeny << "\"\n"
        << "\t}\n}\n";
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

void commit(mnl_socket* sock, const Batch& batch) {
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

    if (mnl_socket_sendto(sock, batch.bytes.data(), batch.bytes.size()) < 0)
        throw_errno(fmt::format("send nftables batch ({} bytes)", batch.bytes.size()), errno);

    // nfnetlink processes the whole batch inside sendmsg(): every answer is queued by now, so
    // read without blocking until the queue is empty.
    std::vector<char> buf(1 << 16);
    std::size_t acks = 0;
    std::vector<std::string> errors;
    int fd = mnl_socket_get_fd(sock);
    while (true) {
        ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            throw_errno("receive nftables acknowledgements", errno);
        }
        for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, static_cast<int>(n));
             nlh = mnl_nlmsg_next(nlh, reinterpret_cast<int*>(&n))) {
            if (nlh->nlmsg_type != NLMSG_ERROR) continue;
            const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            auto it = by_seq.find(nlh->nlmsg_seq);
            std::string what = it != by_seq.end() ? it->second->what
                                                  : fmt::format("message seq {}", nlh->nlmsg_seq);
            if (err->error == 0) {
                ++acks;
                continue;
            }
            std::string msg = fmt::format("kernel refused {}: {}", what, std::strerror(-err->error));
            if (auto ext = ext_ack_text(nlh); !ext.empty()) msg += " (" + ext + ")";
            errors.push_back(msg);
        }
    }
    if (!errors.empty()) {
        std::string all = errors.front();
        if (errors.size() > 1) all += fmt::format(" (and {} more)", errors.size() - 1);
        throw Error(Exit::failed, all + "; nothing was changed (the batch is all or nothing)");
    }
    if (acks != acks_expected)
        throw_failed(fmt::format("nftables batch: {} of {} messages acknowledged; the kernel "
                                 "did not confirm the commit", acks, acks_expected));
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
        std::strcmp(table, kTable) != 0 || !chain || std::strcmp(chain, kChain) != 0)
        return true;
    RuleSummary r;
    std::uint32_t ulen = 0;
    if (const void* ud = nftnl_rule_get_data(rule.get(), NFTNL_RULE_USERDATA, &ulen)) {
        // Userdata is opaque bytes to the kernel, written by whoever wrote the rule: walk its
        // type-length-value records here, bounded by the buffer. nftnl_udata_parse() trusts each
        // record's length and would read past the end.
        const auto* p = static_cast<const std::uint8_t*>(ud);
        std::size_t left = ulen;
        while (left >= 2) {
            std::uint8_t type = p[0];
            std::size_t len = std::min<std::size_t>(p[1], left - 2);
            const char* value = reinterpret_cast<const char*>(p + 2);
            if (type == NFTNL_UDATA_RULE_COMMENT) r.comment = std::string(value, strnlen(value, len));
            p += 2 + len;
            left -= 2 + len;
        }
    }
    std::unique_ptr<nftnl_expr_iter, void (*)(nftnl_expr_iter*)> it(nftnl_expr_iter_create(rule.get()),
                                                                   nftnl_expr_iter_destroy);
    if (!it) throw std::bad_alloc();
    for (nftnl_expr* e = nftnl_expr_iter_next(it.get()); e; e = nftnl_expr_iter_next(it.get())) {
        const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
        if (name && std::strcmp(name, "counter") == 0) {
            r.counter.packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
            r.counter.bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
        }
    }
    out = std::move(r);
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

PolicyState read_policy(mnl_socket* sock) {
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
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
        nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, kChain);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_INET,
                                              NLM_F_DUMP, ++seq);
        nftnl_rule_nlmsg_build_payload(nlh, r.get());
        bool saw_allow4 = false, saw_allow6 = false, saw_deny = false;
        int err = dump(sock, nlh, [&](const nlmsghdr* m) {
            std::optional<RuleSummary> rule;
            if (!parse_rule_message(m, rule)) return MNL_CB_ERROR;
            if (!rule) return MNL_CB_OK;
            ++st.rules;
            if (rule->comment == kCommentAllow4 || rule->comment == kCommentAllow6) {
                (rule->comment == kCommentAllow4 ? saw_allow4 : saw_allow6) = true;
                st.allowed.packets += rule->counter.packets;
                st.allowed.bytes += rule->counter.bytes;
            } else if (rule->comment == kCommentDeny) {
                saw_deny = true;
                st.refused = rule->counter;
            }
            return MNL_CB_OK;
        });
        if (err == -ENOENT) return st;  // no chain: incomplete
        if (err < 0) throw_errno("dump rules of table inet nsegress", -err);
        st.complete = saw_allow4 && saw_allow6 && saw_deny;
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
    return st;
}

}  // namespace nsegress::nft
