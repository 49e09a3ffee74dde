// nftables read-back (`status`, CNI CHECK): GETRULE and GETSETELEM dump replies of table
// inet nsegress, parsed with libnftnl, decoded into ranges and an AllowList.
//
// Structured: the kernel frames these messages (libnftnl exit()s the process on attributes the
// kernel would never send: "kernel ABI is broken"), but their content is chosen by whoever
// wrote the table -- anyone with CAP_NET_ADMIN in the namespace: table, chain and set names,
// rule userdata (opaque bytes to the kernel, up to 256), expressions and their values, element
// keys of another length, flags. So the input describes messages, libnftnl serialises them as
// the kernel would, and our parsers read them back.
#include "fuzz_common.hpp"

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>

#include <memory>

#include "nsegress/nft.hpp"

using namespace nsegress;

namespace {

// The kernel only has names of 1 to 255 bytes without a NUL (libnftnl cannot even parse an
// empty set name back).
std::string pick_name(fuzz::Bytes& in, const char* ours) {
    if (in.u8() % 4) return ours;
    std::string name = in.str(40);
    name = name.substr(0, name.find('\0'));
    return name.empty() ? "x" : name;
}

void add_expr(nftnl_rule* r, fuzz::Bytes& in) {
    static const char* names[] = {"counter", "immediate", "cmp",    "lookup",
                                  "meta",    "payload",   "reject", "ct"};
    nftnl_expr* e = nftnl_expr_alloc(names[in.u8() % 8]);
    if (!e) return;
    const char* n = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
    std::string name = n ? n : "";
    if (name == "counter") {
        nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_PACKETS, in.u64());
        nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_BYTES, in.u64());
    } else if (name == "immediate") {
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        std::uint32_t verdict = in.u32();
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, verdict);
        // The kernel sends a jump or goto with the name of its chain, always; libnftnl builds
        // one without it and then crashes parsing that back (strdup of a wild pointer), which
        // is libnftnl's contract, not input we can ever receive.
        if (verdict == static_cast<std::uint32_t>(NFT_JUMP) ||
            verdict == static_cast<std::uint32_t>(NFT_GOTO))
            nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, pick_name(in, "output").c_str());
    } else if (name == "cmp") {
        auto data = in.blob(16);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, in.u8() % 6);
        if (!data.empty()) nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data.data(), data.size());
    } else if (name == "lookup") {
        nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, pick_name(in, "allow4").c_str());
    } else if (name == "meta") {
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, in.u8());
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
    } else if (name == "payload") {
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, in.u8() % 3);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, in.u8());
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, 1 + in.u8() % 16);
    } else if (name == "reject") {
        nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, in.u8() % 3);
        nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, in.u8());
    } else if (name == "ct") {
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, in.u8());
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
    }
    nftnl_rule_add_expr(r, e);
}

// One NEWRULE message as a GETRULE dump returns it.
void rule_message(fuzz::Bytes& in) {
    std::unique_ptr<nftnl_rule, void (*)(const nftnl_rule*)> r(nftnl_rule_alloc(), nftnl_rule_free);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, pick_name(in, nft::kTable).c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, pick_name(in, nft::kChain).c_str());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY,
                       in.u8() % 8 ? std::uint32_t{NFPROTO_INET} : std::uint32_t{in.u8()});
    nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, in.u64());
    if (in.u8() % 2) {
        // Userdata is opaque to the kernel: any bytes, e.g. a comment TLV without its NUL.
        auto ud = in.blob(255);
        if (!ud.empty())  // (libnftnl exit()s on an empty one)
            nftnl_rule_set_data(r.get(), NFTNL_RULE_USERDATA, ud.data(),
                                static_cast<std::uint32_t>(ud.size()));
    }
    for (int n = in.u8() % 6; n > 0; --n) add_expr(r.get(), in);

    std::vector<std::uint32_t> buf(16384);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(buf.data()), NFT_MSG_NEWRULE,
                                          NFPROTO_INET, NLM_F_MULTI, 1);
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    // An expression without its mandatory attributes does not parse back: the kernel never
    // sends one, and read_policy() turns a refusal into an error. What matters is no crash.
    std::optional<nft::RuleSummary> got;
    if (nft::parse_rule_message(nlh, got) && got)
        fuzz::check(got->comment.size() <= 255, "comment longer than userdata");
}

// One NEWSETELEM message: element keys of any length, any flags.
void setelem_message(fuzz::Bytes& in, std::vector<nft::ElementKey>& keys4,
                     std::vector<nft::ElementKey>& keys6) {
    std::unique_ptr<nftnl_set, void (*)(const nftnl_set*)> s(nftnl_set_alloc(), nftnl_set_free);
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, nft::kTable);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, pick_name(in, nft::kSet4).c_str());
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    for (int n = in.u8() % 16; n > 0; --n) {
        nftnl_set_elem* e = nftnl_set_elem_alloc();
        std::uint8_t shape = in.u8();
        std::vector<std::uint8_t> key;
        if (shape % 4 == 0) {
            key = in.blob(64);  // another length, 1 to 64 bytes as the kernel allows
            if (key.empty()) key.push_back(0);
        } else
            key = [&] {
                std::vector<std::uint8_t> k(shape % 4 == 1 ? 4 : 16);
                for (auto& b : k) b = in.u8();
                return k;
            }();
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key.data(),
                           static_cast<std::uint32_t>(key.size()));
        if (shape & 0x10)
            nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, in.u32());
        else if (shape & 0x20)
            nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        if (shape & 0x40) nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, in.u64());
        nftnl_set_elem_add(s.get(), e);
    }
    std::vector<std::uint32_t> buf(16384);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(buf.data()), NFT_MSG_NEWSETELEM,
                                          NFPROTO_INET, NLM_F_MULTI, 1);
    nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
    // libnftnl numbers the nested elements 1, 2, 3... (the kernel ignores the type on input);
    // the kernel's dump, and libnftnl's parser, have every one as NFTA_LIST_ELEM.
    auto* payload = static_cast<char*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
    int left = static_cast<int>(static_cast<char*>(mnl_nlmsg_get_payload_tail(nlh)) - payload);
    for (auto* a = reinterpret_cast<nlattr*>(payload); mnl_attr_ok(a, left); a = mnl_attr_next(a)) {
        left -= static_cast<int>(MNL_ALIGN(a->nla_len));
        if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
        auto* elems = static_cast<char*>(mnl_attr_get_payload(a));
        int inner = static_cast<int>(mnl_attr_get_payload_len(a));
        for (auto* e = reinterpret_cast<nlattr*>(elems); mnl_attr_ok(e, inner);
             e = mnl_attr_next(e)) {
            inner -= static_cast<int>(MNL_ALIGN(e->nla_len));
            e->nla_type = (e->nla_type & ~NLA_TYPE_MASK) | NFTA_LIST_ELEM;
        }
    }
    fuzz::check(nft::parse_setelem_message(nlh, Family::v4, keys4) &&
                    nft::parse_setelem_message(nlh, Family::v6, keys6),
                "libnftnl refused set elements it serialised itself");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    fuzz::Bytes in(data, size);
    std::vector<nft::ElementKey> keys4, keys6;
    for (int messages = 0; !in.empty() && messages < 16; ++messages) {
        if (in.u8() % 2)
            rule_message(in);
        else
            setelem_message(in, keys4, keys6);
    }
    for (Family f : {Family::v4, Family::v6}) {
        auto ranges = nft::elements_to_ranges(f, f == Family::v4 ? keys4 : keys6);
        AllowList allow;
        for (const auto& r : ranges) {
            fuzz::check(r.first.family == f && r.last.family == f,
                        "decoded range of the other family");
            fuzz::check(r.first.value <= r.last.value, "decoded an inverted range", r.str());
            allow.add(r);
        }
        fuzz::check_normalized(allow);
    }
    return 0;
}
