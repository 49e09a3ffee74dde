// The socket half of the nftables code (see nft.hpp): the NETLINK_NETFILTER socket, commit
// with the ruleset generation id and extended ACKs, dumps with the interrupted-dump retry, and
// the readers (read_policy, read_installed, read_netdev, list_egress_hooks, the name sets).
// What it sends is built in src/policy (nft_compile.cpp), what it reads is parsed there
// (nft_parse.cpp).
#include "nsegress/nft.hpp"

// glibc first: it tells the uapi headers below not to redefine in_addr and friends.
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "nsegress/error.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/testpoint.hpp"
#include "policy/nft_detail.hpp"

namespace nsegress::nft {

using namespace detail;

namespace {

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
        if (type == NLMSGERR_ATTR_MSG && plen > 0)
            text = std::string(payload, strnlen(payload, plen));
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

// Runs a request (a dump, or a get answered by one message and the ACK) and hands every reply
// message to cb: nfnl::request.
int dump(mnl_socket* sock, nlmsghdr* req, const nfnl::ReplyFn& cb) {
    return nfnl::request(sock, req, cb);
}

}  // namespace

static std::vector<NameElementState> read_name_elements_once(mnl_socket* sock) {
    std::vector<NameElementState> out;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    for (Family f : {Family::v4, Family::v6}) {
        const char* name = f == Family::v4 ? kSetNames4 : kSetNames6;
        auto s = make_set(name, 0);
        nftnl_set_unset(s.get(), NFTNL_SET_ID);
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
        nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
        int err =
            dump(sock, nlh, [&](const nlmsghdr* m) { return parse_name_elements(m, f, out); });
        if (err == -ENOENT) continue;
        if (err < 0) throw_errno(fmt::format("dump set {} of table inet nsegress", name), -err);
    }
    return out;
}

std::optional<NameElementState> read_name_element(mnl_socket* sock, const NameElement& want) {
    const Family f = want.addr.family;
    const char* name = f == Family::v4 ? kSetNames4 : kSetNames6;
    auto s = make_set(name, 0);
    nftnl_set_unset(s.get(), NFTNL_SET_ID);
    nftnl_set_elem* el = nftnl_set_elem_alloc();
    if (!el) throw std::bad_alloc();
    auto k = slot_key(want.addr, want.slot.proto_first, want.slot.port_first);
    auto end = slot_key(want.addr, want.slot.proto_last, want.slot.port_last);
    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, k.data(), static_cast<std::uint32_t>(k.size()));
    nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY_END, end.data(),
                       static_cast<std::uint32_t>(end.size()));
    nftnl_set_elem_add(s.get(), el);
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_ACK, 0);
    nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
    std::vector<NameElementState> got;
    int err = dump(sock, nlh, [&](const nlmsghdr* m) { return parse_name_elements(m, f, got); });
    if (err == -ENOENT) return std::nullopt;
    if (err < 0)
        throw_errno(fmt::format("get an element of set {} of table inet nsegress", name), -err);
    // The kernel answers with the element that holds the key; it is this one only when it
    // spans exactly the slot.
    for (const auto& st : got)
        if (st.addr == want.addr && st.slot == want.slot) return st;
    return std::nullopt;
}

MnlSocket open_nfnl_socket() { return nfnl::open(); }

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
            std::string msg =
                fmt::format("kernel refused {}: {}", what, std::strerror(-err->error));
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
        throw_failed(
            fmt::format("nftables batch: {} of {} messages acknowledged; the kernel "
                        "did not confirm the commit",
                        acks, acks_expected));
    return true;
}

}  // namespace

std::uint32_t read_genid(mnl_socket* sock) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, 0);
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
            if (read_genid(sock) == before && attempt > testing::g_hooks.changed_reads)
                return result;
        } catch (const Error& e) {
            if (e.sys_errno() != EINTR) throw;
        }
        if (attempt == kCommitAttempts)
            throw Error(
                Exit::failed,
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
    throw Error(
        Exit::failed,
        fmt::format("nftables batch: the ruleset changed under us {} times in a row (another "
                    "writer commits continuously, ERESTART); nothing was changed",
                    kCommitAttempts),
        ERESTART);
}

static PolicyState read_policy_once(mnl_socket* sock) {
    PolicyState st;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);

    // Does the table exist? (A rule dump of a missing table is not reliably ENOENT.)
    {
        auto t = make_table();
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, 0);
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
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, 0);
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
            if (rule->comment == kCommentLoopback)
                add(st.loopback, rule->counter);
            else if (rule->comment == kCommentReplies) {
                saw_replies = true;
                add(st.replies, rule->counter);
            } else if (rule->comment == kCommentRelated)
                add(st.related, rule->counter);
            else if (rule->comment == kCommentNd || rule->comment == kCommentDad)
                add(st.neighbour, rule->counter);
            else if (rule->comment == kCommentForged)
                add(st.forged, rule->counter);
            else if (rule->comment == kCommentSourceRoute)
                add(st.source_route, rule->counter);
            else if (rule->comment == kCommentResolver)
                add(st.resolver, rule->counter);
            else if (rule->comment == kCommentNamed)
                add(st.named, rule->counter);
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
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
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
            const char* name = ports ? (f == Family::v4 ? kSetPorts4 : kSetPorts6)
                                     : (f == Family::v4 ? kSetEcho4 : kSetEcho6);
            auto s = make_set(name, 0);
            nftnl_set_unset(s.get(), NFTNL_SET_ID);
            nlmsghdr* nlh =
                nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
            nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
            std::vector<ElementKey> keys;
            int err = dump(sock, nlh, [&](const nlmsghdr* m) {
                bool ok = ports ? parse_port_setelem_message(m, f, st.ports)
                                : parse_setelem_message(m, f, keys);
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
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    auto t = make_table();
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETTABLE, family, NLM_F_ACK, 0);
    nftnl_table_nlmsg_build_payload(nlh, t.get());
    int err = dump(sock, nlh, [](const nlmsghdr*) { return MNL_CB_OK; });
    // EAFNOSUPPORT: a kernel without the netdev family cannot have such a table.
    if (err == -ENOENT || err == -EAFNOSUPPORT) return false;
    if (err < 0)
        throw_errno(
            fmt::format("get table {} nsegress", family == NFPROTO_NETDEV ? "netdev" : "inet"),
            -err);
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

// The chains of table nsegress in `family` (one dump, no rules); none when there is no table.
std::vector<ChainShape> dump_chains(mnl_socket* sock, std::uint32_t family) {
    std::vector<ChainShape> chains;
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    {
        auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETCHAIN, family, NLM_F_DUMP, 0);
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
            throw_errno(fmt::format("dump chains of table {} nsegress",
                                    family == NFPROTO_NETDEV ? "netdev" : "inet"),
                        -err);
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
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETSET, family, NLM_F_DUMP, 0);
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
            throw_errno(fmt::format("dump sets of table {} nsegress",
                                    family == NFPROTO_NETDEV ? "netdev" : "inet"),
                        -err);
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
        return s.name == (f == Family::v4 ? kSetNames4 : kSetNames6) &&
               s.key_type == concat_type(f) && s.key_len == port_key_len(f) &&
               s.flags == kNameSetFlags;
    });
}

// The port-scoped and echo sets, all four with our shapes.
bool has_scoped_sets(const std::vector<SetShape>& sets) {
    return has_port_set(sets, kSetPorts4, Family::v4) &&
           has_port_set(sets, kSetPorts6, Family::v6) && has_set(sets, kSetEcho4, Family::v4) &&
           has_set(sets, kSetEcho6, Family::v6);
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
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, 0);
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

static Installed read_installed_once(mnl_socket* sock) {
    Installed in;
    if (table_present(sock, NFPROTO_INET)) {
        auto chains = dump_chains(sock, NFPROTO_INET);
        auto sets = dump_sets(sock, NFPROTO_INET);
        auto has_chain = [&](const char* name, std::uint32_t hook, std::int32_t prio) {
            return std::any_of(chains.begin(), chains.end(), [&](const ChainShape& c) {
                return c.name == name && c.base && c.hook == hook && c.prio == prio &&
                       c.type == "filter";
            });
        };
        // A table of an older nsegress (no inbound chain, no nd6) is replaced whole.
        in.inet = has_chain(kChain, NF_INET_LOCAL_OUT, 0) &&
                          has_chain(kChainInbound, NF_INET_PRE_ROUTING, kInboundPriority) &&
                          has_set(sets, kSet4, Family::v4) && has_set(sets, kSet6, Family::v6) &&
                          has_set(sets, kSetNd6, Family::v6) && has_scoped_sets(sets)
                      ? Found::reusable
                      : Found::foreign;
        // Names: both sets and the nat chain with our shapes, or none of them.
        const bool dns = std::any_of(chains.begin(), chains.end(),
                                     [](const ChainShape& c) { return c.name == kChainDns; });
        const bool dns_ours = std::any_of(chains.begin(), chains.end(), [](const ChainShape& c) {
            return c.name == kChainDns && c.base && c.hook == NF_INET_LOCAL_OUT &&
                   c.prio == kDnsPriority && c.type == "nat";
        });
        const int name_sets =
            static_cast<int>(std::count_if(sets.begin(), sets.end(), [](const SetShape& x) {
                return x.name == kSetNames4 || x.name == kSetNames6;
            }));
        const bool name_sets_ours =
            has_name_set(sets, Family::v4) && has_name_set(sets, Family::v6);
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
        bool ok = has_set(sets, kSet4, Family::v4) && has_set(sets, kSet6, Family::v6) &&
                  has_set(sets, kSetNd6, Family::v6) && has_set(sets, kSetOwn4, Family::v4) &&
                  has_set(sets, kSetOwn6, Family::v6) &&
                  std::any_of(sets.begin(), sets.end(),
                              [](const SetShape& x) { return x.name == kSetIp6Next; }) &&
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
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    std::map<std::string, NetdevChainState> chains;
    for (auto& c : dump_chains(sock, NFPROTO_NETDEV))
        chains[c.name] = NetdevChainState{c.name, c.device, {}, {}};
    {
        auto r = checked<nftnl_rule, RuleFree>(nftnl_rule_alloc());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
        nlmsghdr* nlh =
            nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETRULE, NFPROTO_NETDEV, NLM_F_DUMP, 0);
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
            if (comment == kCommentAllow4 || comment == kCommentAllow6 ||
                comment == kCommentPorts4 || comment == kCommentPorts6 || comment == kCommentEcho) {
                it->second.allowed.packets += c.packets;
                it->second.allowed.bytes += c.bytes;
            } else if (comment == kCommentDeny || comment == kCommentForged ||
                       comment == kCommentSourceRoute) {
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
    std::vector<char> req(MNL_SOCKET_BUFFER_SIZE);
    std::vector<EgressHook> out;
    auto c = checked<nftnl_chain, ChainFree>(nftnl_chain_alloc());
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(req.data(), NFT_MSG_GETCHAIN, NFPROTO_NETDEV, NLM_F_DUMP, 0);
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

Installed read_installed(mnl_socket* sock) {
    return consistent_read(sock, "read what an earlier run installed", read_installed_once);
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
