#include "nsegress/handle.hpp"
#include "nsegress/foreign.hpp"

#include <fmt/format.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cerrno>
#include <memory>
#include <sstream>

#include "nsegress/error.hpp"
#include "nsegress/nfnl.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

namespace {

const char* family_of(std::uint32_t f) {
    switch (f) {
        case NFPROTO_INET:
            return "inet";
        case NFPROTO_IPV4:
            return "ip";
        case NFPROTO_IPV6:
            return "ip6";
        case NFPROTO_NETDEV:
            return "netdev";
        case NFPROTO_BRIDGE:
            return "bridge";
        case NFPROTO_ARP:
            return "arp";
        default:
            return "?";
    }
}

using ChainFree = CFree<nftnl_chain_free>;

// One dump of every chain; false when a commit interrupted it (read again).
bool dump_once(mnl_socket* sock, std::vector<ForeignHook>& out) {
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    std::unique_ptr<nftnl_chain, ChainFree> c(nftnl_chain_alloc());
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP, 0);
    nftnl_chain_nlmsg_build_payload(nlh, c.get());
    auto cb = [&out](const nlmsghdr* m) -> int {
        auto* v = &out;
        std::unique_ptr<nftnl_chain, ChainFree> ch(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(m, ch.get()) < 0) return MNL_CB_ERROR;
        if (!nftnl_chain_is_set(ch.get(), NFTNL_CHAIN_HOOKNUM))
            return MNL_CB_OK;  // not a base chain
        std::uint32_t fam = nftnl_chain_get_u32(ch.get(), NFTNL_CHAIN_FAMILY);
        std::uint32_t hook = nftnl_chain_get_u32(ch.get(), NFTNL_CHAIN_HOOKNUM);
        ForeignHook h;
        h.family = family_of(fam);
        h.table = printable(nftnl_chain_get_str(ch.get(), NFTNL_CHAIN_TABLE), 128);
        h.chain = printable(nftnl_chain_get_str(ch.get(), NFTNL_CHAIN_NAME), 128);
        if (h.table == "nsegress" && (fam == NFPROTO_INET || fam == NFPROTO_NETDEV))
            return MNL_CB_OK;
        if (fam == NFPROTO_NETDEV) {
            if (hook != NF_NETDEV_EGRESS) return MNL_CB_OK;
            h.hook = "egress";
            if (nftnl_chain_is_set(ch.get(), NFTNL_CHAIN_DEV))
                h.device = printable(nftnl_chain_get_str(ch.get(), NFTNL_CHAIN_DEV), 64);
        } else if (fam == NFPROTO_INET || fam == NFPROTO_IPV4 || fam == NFPROTO_IPV6) {
            if (hook == NF_INET_LOCAL_OUT)
                h.hook = "output";
            else if (hook == NF_INET_POST_ROUTING)
                h.hook = "postrouting";
            else
                return MNL_CB_OK;
        } else {
            return MNL_CB_OK;
        }
        h.priority = static_cast<int>(nftnl_chain_get_s32(ch.get(), NFTNL_CHAIN_PRIO));
        if (nftnl_chain_is_set(ch.get(), NFTNL_CHAIN_POLICY))
            h.policy =
                nftnl_chain_get_u32(ch.get(), NFTNL_CHAIN_POLICY) == NF_DROP ? "drop" : "accept";
        v->push_back(std::move(h));
        return MNL_CB_OK;
    };
    const int err = nfnl::request(sock, nlh, cb);
    if (err == -EINTR) return false;  // interrupted by a commit: read again
    if (err == -ENOENT || err == -EAFNOSUPPORT) return true;
    if (err < 0) throw_errno("dump nftables chains", -err);
    return true;
}

}  // namespace

std::vector<ForeignHook> foreign_output_hooks(mnl_socket* nfnl) {
    for (int i = 0; i < 5; ++i) {
        std::vector<ForeignHook> out;
        if (dump_once(nfnl, out)) return out;
    }
    throw_failed("dump nftables chains: interrupted by commits five times in a row");
}

std::vector<std::string> legacy_iptables_tables() {
    std::vector<std::string> out;
    for (auto [file, tool] : {std::pair{"/proc/thread-self/net/ip_tables_names", "iptables"},
                              std::pair{"/proc/thread-self/net/ip6_tables_names", "ip6tables"}}) {
        auto text = read_text_file(file);
        if (!text) continue;
        std::istringstream in(*text);
        std::string t;
        while (in >> t) out.push_back(fmt::format("{} (legacy) table {}", tool, printable(t, 64)));
    }
    return out;
}

}  // namespace nsegress
