// Private to the nftables code: what the batch compiler (src/policy/nft_compile.cpp), the
// renderer (nft_render.cpp), the parsers of kernel messages (nft_parse.cpp) and the socket half
// (src/kernel/nft.cpp) share. Not part of the interface (include/nsegress/nft.hpp): nothing
// outside those files includes it.
#pragma once

// glibc first: it tells the uapi headers below not to redefine in_addr and friends.
#include <netinet/in.h>

#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter/nf_tables.h>

#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "nsegress/handle.hpp"
#include "nsegress/nft.hpp"

namespace nsegress::nft::detail {

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
inline constexpr std::uint32_t kTypeIpAddr = 7;
inline constexpr std::uint32_t kTypeIp6Addr = 8;
// nft's datatypes of a concatenation key: each subtype shifted in by 6 bits (TYPE_BITS).
inline constexpr std::uint32_t kTypeInetProto = 12;
inline constexpr std::uint32_t kTypeInetService = 13;
constexpr std::uint32_t concat_type(Family f) {
    return (((f == Family::v4 ? kTypeIpAddr : kTypeIp6Addr) << 6 | kTypeInetProto) << 6) |
           kTypeInetService;
}
constexpr std::uint32_t port_key_len(Family f) { return f == Family::v4 ? 12 : 24; }
// The key flags of the name sets (names4, names6).
inline constexpr std::uint32_t kNameSetFlags = NFT_SET_INTERVAL | NFT_SET_CONCAT | NFT_SET_TIMEOUT;
// What may follow an IPv6 header directly in a frame leaving the namespace: a transport header.
// Any extension header (hop-by-hop, routing, fragment, destination options, AH, mobility, ...)
// could carry or hide a routing header behind it, which an allowed router would honour.
inline const std::vector<std::uint8_t> kIp6NextKeys{IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6,
                                                    IPPROTO_SCTP};

// ---- Shared with the readers and the renderer (defined in nft_compile.cpp) -------------------

// A table / set object of table nsegress (family inet; a set by name and id).
TablePtr make_table();
SetPtr make_set(const char* name, std::uint32_t id);
// The key of a name-set element: address . protocol . port, each field padded to 4 bytes.
std::vector<std::uint8_t> slot_key(const IpAddr& a, std::uint8_t proto, std::uint16_t port);
// Whether IPv6 neighbour discovery is needed: some IPv6 destination is allowed at all.
bool needs_nd(const Policy& p);
// The netdev chain of a device: kNetdevChainPrefix + its name.
std::string netdev_chain_name(const NetdevDevice& d);

// ---- Parsers of what the kernel sends (defined in nft_parse.cpp) ------------------------------

// The comment a rule carries in its userdata; "" if none.
std::string rule_comment(const nftnl_rule* rule);
// The re-restrict stamp in a rule's userdata (a record of type kStampUdataType), if any.
std::optional<Stamp> rule_stamp(const nftnl_rule* rule);
// The rule's counter expression (zero when it has none).
Counter rule_counter(nftnl_rule* rule);
// The name-set elements of one GETSETELEM reply (dump or single), appended to `out`: MNL_CB_OK,
// or MNL_CB_ERROR when libnftnl cannot parse the message.
int parse_name_elements(const nlmsghdr* m, Family f, std::vector<NameElementState>& out);
// The devices a netdev base chain is bound to.
std::vector<std::string> chain_devices(const nftnl_chain* chain);

}  // namespace nsegress::nft::detail
