#include "nsegress/names_proxy.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "nsegress/conntrack.hpp"
#include "nsegress/error.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/names.hpp"
#include "nsegress/nfnl.hpp"
#include "nsegress/nft.hpp"

namespace nsegress {

namespace {

using json = nlohmann::json;
constexpr const char* kRunDir = "/run/nsegress";

std::string base_path(NsId id) {
    return fmt::format("{}/names-{}-{}", kRunDir, static_cast<unsigned long>(id.dev),
                       static_cast<unsigned long>(id.ino));
}

void ensure_run_dir() {
    if (::mkdir(kRunDir, 0700) != 0 && errno != EEXIST)
        throw_errno(std::string("create '") + kRunDir + "'", errno);
}

// Writes `text` to `path` atomically (temporary file, rename).
void write_file(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    {
        Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) throw_errno("write '" + tmp + "'", errno);
        if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
            throw_errno("write '" + tmp + "'", errno);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename '" + tmp + "'", errno);
}

// ---- the running proxy ------------------------------------------------------------------------

struct Proxy {
    std::vector<AllowEntry> names;
    NsId netns;
    std::string netns_path;
    std::optional<pid_t> pid;
    std::string log_path;
    bool audit = false;  // audit mode: other names are answered too (logged as would-be-refused)
    std::vector<IpAddr> resolvers;  // the trusted resolvers (names_proxy.hpp), in order

    std::mutex nft_mu;  // one commit at a time on the shared socket
    nft::MnlSocket nfnl;

    std::mutex log_mu;
    std::atomic<int> inflight{0};
};

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

const char* qtype_name(std::uint16_t t) {
    switch (t) {
        case 1:
            return "A";
        case 28:
            return "AAAA";
        case 5:
            return "CNAME";
        case 16:
            return "TXT";
        case 15:
            return "MX";
        case 2:
            return "NS";
        case 12:
            return "PTR";
        case 33:
            return "SRV";
        case 65:
            return "HTTPS";
        case 64:
            return "SVCB";
        case 255:
            return "ANY";
        default:
            return nullptr;
    }
}

std::string qtype_text(std::uint16_t t) {
    const char* n = qtype_name(t);
    return n ? n : fmt::format("TYPE{}", t);
}

void log_line(Proxy& p, const json& j) {
    std::lock_guard lock(p.log_mu);
    struct stat st {};
    // Bounded: at 4 MiB the log starts over (watch reads it as it goes).
    const bool big = ::stat(p.log_path.c_str(), &st) == 0 && st.st_size > (4 << 20);
    Fd fd(::open(p.log_path.c_str(),
                 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (big ? O_TRUNC : 0),
                 0600));
    if (!fd) return;
    json line = j;
    line["time"] = static_cast<std::int64_t>(::time(nullptr));
    const std::string text = line.dump(-1, ' ', true, json::error_handler_t::replace) + "\n";
    (void)!::write(fd.get(), text.data(), text.size());
}

// Sequence numbers reserved for one refresh batch (three messages per 256 elements and family).
constexpr std::uint32_t kRefreshSeqs = 1u << 12;

// A conntrack socket for one request of one query's thread; its wait for the kernel is bounded.
nfnl::Socket conntrack_socket() {
    nfnl::Socket s = nfnl::open();
    const timeval limit{2, 0};
    ::setsockopt(mnl_socket_get_fd(s.get()), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    return s;
}

// The original destination of a redirected UDP query: conntrack's entry whose reply tuple is
// (proxy address, proxy port) -> (client address, client port).
std::optional<IpAddr> udp_original_destination(const sockaddr_storage& client, Family f) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = f == Family::v4 ? AF_INET : AF_INET6;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    nlattr* tuple = mnl_attr_nest_start(nlh, CTA_TUPLE_REPLY);
    nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    std::uint16_t client_port = 0;
    if (f == Family::v4) {
        const auto& c = reinterpret_cast<const sockaddr_in&>(client);
        mnl_attr_put_u32(nlh, CTA_IP_V4_SRC, htonl(INADDR_LOOPBACK));
        mnl_attr_put_u32(nlh, CTA_IP_V4_DST, c.sin_addr.s_addr);
        client_port = c.sin_port;
    } else {
        const auto& c = reinterpret_cast<const sockaddr_in6&>(client);
        mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, &in6addr_loopback);
        mnl_attr_put(nlh, CTA_IP_V6_DST, 16, &c.sin6_addr);
        client_port = c.sin6_port;
    }
    mnl_attr_nest_end(nlh, ip);
    nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_UDP);
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(kNamesProxyPort));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, client_port);
    mnl_attr_nest_end(nlh, proto);
    mnl_attr_nest_end(nlh, tuple);

    std::optional<IpAddr> out;
    try {
        auto sock = conntrack_socket();
        nfnl::request(sock.get(), nlh, [&](const nlmsghdr* m) {
            if ((m->nlmsg_type & 0xff) == IPCTNL_MSG_CT_NEW)
                if (auto t = parse_conntrack_message(m)) out = t->dst;
            return MNL_CB_OK;
        });
    } catch (const Error&) {
        // no socket: the original destination is not known (the trusted resolvers are asked)
    }
    return out;
}

// Forgets the conntrack entry of one of our finished UDP exchanges (original tuple local ->
// server:53). Left in place it would outlive the socket by the UDP timeout (30 s and more), and
// a query of the container that happened to get the same source port afterwards would belong to
// it: not new, so never redirected, and refused by the policy (an occasional EPERM on a query).
void forget_udp_flow(const sockaddr_storage& local, const IpAddr& server) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    const bool v4 = server.family == Family::v4;
    nfg->nfgen_family = v4 ? AF_INET : AF_INET6;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    auto b = server.bytes();
    nlattr* tuple = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
    nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    std::uint16_t port = 0;
    if (v4) {
        const auto& l = reinterpret_cast<const sockaddr_in&>(local);
        mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, &l.sin_addr);
        mnl_attr_put(nlh, CTA_IP_V4_DST, 4, b.data());
        port = l.sin_port;
    } else {
        const auto& l = reinterpret_cast<const sockaddr_in6&>(local);
        mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, &l.sin6_addr);
        mnl_attr_put(nlh, CTA_IP_V6_DST, 16, b.data());
        port = l.sin6_port;
    }
    mnl_attr_nest_end(nlh, ip);
    nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_UDP);
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, port);
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(53));
    mnl_attr_nest_end(nlh, proto);
    mnl_attr_nest_end(nlh, tuple);
    try {
        auto sock = conntrack_socket();
        (void)nfnl::request(sock.get(), nlh);  // ENOENT (already gone) is fine
    } catch (const Error&) {
    }
}

// One exchange with the resolver at `server` port 53 over UDP or TCP, from a socket marked as
// the proxy's (the only packets to port 53 the policy lets out). Empty: no answer in time.
// `reachable`: false when no socket could be opened or connected towards it (no route of that
// family, no IPv6): then the next trusted resolver may be tried.
std::vector<std::uint8_t> ask_resolver(const IpAddr& server, bool tcp,
                                       const std::vector<std::uint8_t>& query, bool& reachable) {
    reachable = false;
    const int af = server.family == Family::v4 ? AF_INET : AF_INET6;
    Fd fd(::socket(af, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0));
    if (!fd) return {};
    const int mark = static_cast<int>(kNamesMark);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) return {};
    timeval tv{4, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_storage sa{};
    socklen_t len = 0;
    auto b = server.bytes();
    if (af == AF_INET) {
        auto& s = reinterpret_cast<sockaddr_in&>(sa);
        s.sin_family = AF_INET;
        s.sin_port = htons(53);
        std::memcpy(&s.sin_addr, b.data(), 4);
        len = sizeof s;
    } else {
        auto& s = reinterpret_cast<sockaddr_in6&>(sa);
        s.sin6_family = AF_INET6;
        s.sin6_port = htons(53);
        std::memcpy(&s.sin6_addr, b.data(), 16);
        len = sizeof s;
    }
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0) {
        // A TCP connection that was refused or timed out did reach for the server.
        reachable = tcp && (errno == ECONNREFUSED || errno == ETIMEDOUT || errno == EINPROGRESS);
        return {};
    }
    reachable = true;
    std::vector<std::uint8_t> out;
    if (!tcp) {
        if (::send(fd.get(), query.data(), query.size(), 0) != static_cast<ssize_t>(query.size()))
            return {};
        for (int i = 0; i < 8; ++i) {
            // The datagram's size first (MSG_PEEK | MSG_TRUNC), then a buffer of that size: no
            // 64 KiB buffer per query in flight (the proxy's memory, README "Performance").
            const ssize_t size = ::recv(fd.get(), nullptr, 0, MSG_PEEK | MSG_TRUNC);
            if (size < 0) {
                out.clear();
                break;
            }
            out.resize(static_cast<std::size_t>(size));
            const ssize_t n = ::recv(fd.get(), out.data(), out.size(), 0);
            if (n < 0) {
                out.clear();
                break;
            }
            // A datagram with another id is not ours (a late answer); wait for ours.
            if (n >= 2 && query.size() >= 2 && out[0] == query[0] && out[1] == query[1]) {
                out.resize(static_cast<std::size_t>(n));
                break;
            }
            if (i == 7) out.clear();
        }
        // While our socket is open no other socket gets its port: forget the flow before closing.
        sockaddr_storage local{};
        socklen_t llen = sizeof local;
        if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &llen) == 0)
            forget_udp_flow(local, server);
        return out;
    }
    std::vector<std::uint8_t> msg{static_cast<std::uint8_t>(query.size() >> 8),
                                  static_cast<std::uint8_t>(query.size())};
    msg.insert(msg.end(), query.begin(), query.end());
    if (::send(fd.get(), msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
        return {};
    auto read_all = [&](std::uint8_t* p, std::size_t n) {
        while (n > 0) {
            const ssize_t r = ::recv(fd.get(), p, n, 0);
            if (r <= 0) return false;
            p += r;
            n -= static_cast<std::size_t>(r);
        }
        return true;
    };
    std::uint8_t hdr[2];
    if (!read_all(hdr, 2)) return {};
    out.resize(be16(hdr));
    if (!read_all(out.data(), out.size())) return {};
    return out;
}

// The proxy's nfnetlink socket: every wait for the kernel is bounded, so that an answer that
// never comes (a lost reply, an ACK dropped on a full buffer) cannot wedge every query behind
// nft_mu; the request fails instead, the answer is not relayed (fail closed), the socket is
// opened afresh for the next one.
nft::MnlSocket open_proxy_nfnl() {
    nft::MnlSocket s = nfnl::open();
    const timeval limit{5, 0};
    if (::setsockopt(mnl_socket_get_fd(s.get()), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) !=
        0)
        throw_errno("set the receive timeout of the nfnetlink socket", errno);
    return s;
}

// Makes sure the name sets hold the addresses, for what the name's entries allow, at least as
// long as the answer may be cached, before it is relayed. What the kernel already holds long
// enough (one GETSETELEM each, no commit) is left alone; the rest is refreshed in one commit
// whose ACK is awaited. The kernel, not this process's memory, is asked: a re-restrict or an
// operator may have changed the sets. A refresh never shortens an element: it is refreshed only
// when it expires before name_timeout() would. False: not added (the answer must not be
// relayed).
bool allow_addresses(Proxy& p, const DnsQuestion& q, const std::vector<AnswerAddress>& addrs,
                     std::string& why) {
    const auto slots = name_slots(p.names, q.qname);
    if (slots.empty() || addrs.empty()) return true;
    std::lock_guard lock(p.nft_mu);
    try {
        if (!p.nfnl) p.nfnl = open_proxy_nfnl();
        std::vector<nft::NameElement> els;
        for (const auto& a : addrs)
            for (const auto& s : slots) {
                nft::NameElement e{a.addr, s, name_timeout(a.ttl)};
                const auto held = nft::read_name_element(p.nfnl.get(), e);
                if (held && name_element_covers(held->expires_ms, a.ttl)) continue;
                els.push_back(e);
            }
        if (els.empty()) return true;
        // A refresh is a few messages; its sequence numbers come from the process's one source.
        nft::Batch b = nft::compile_name_refresh(els, nfnl::next_seq(kRefreshSeqs));
        nft::commit(p.nfnl.get(), b);
        return true;
    } catch (const std::exception& e) {
        why = e.what();
        p.nfnl.reset();  // a fresh socket next time
        return false;
    }
}

bool name_allowed(const Proxy& p, const std::string& qname) {
    return std::any_of(p.names.begin(), p.names.end(),
                       [&](const AllowEntry& e) { return name_matches(e.name, qname); });
}

// A fresh query id from the kernel's random pool: nothing of the client's message, not even its
// id, reaches a resolver, and a forger does not know the id of the query it would answer.
std::uint16_t random_id() {
    std::uint16_t id = 0;
    while (::getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id))
        if (errno != EINTR) throw_errno("getrandom", errno);
    return id;
}

// One question, whatever the transport: the reply to send back (empty: none). `original`: where
// the client addressed it (conntrack); only used to pick that resolver when it is a trusted one.
std::vector<std::uint8_t> answer(Proxy& p, const std::vector<std::uint8_t>& query,
                                 const std::optional<IpAddr>& original, bool tcp,
                                 const std::string& client) {
    auto q = parse_dns_query(query.data(), query.size());
    if (!q) {
        log_line(
            p, {{"client", client}, {"verdict", "malformed"}, {"transport", tcp ? "tcp" : "udp"}});
        return dns_error_reply(query.data(), query.size(), 1);  // FORMERR
    }
    json line{{"client", client},
              {"name", q->qname},
              {"type", qtype_text(q->qtype)},
              {"transport", tcp ? "tcp" : "udp"}};
    if (original) line["addressed_to"] = original->str();
    const bool allowed = name_allowed(p, q->qname);
    if (!allowed && !p.audit) {
        line["verdict"] = "refused";
        log_line(p, line);
        return dns_error_reply(query.data(), query.size(), 5);  // REFUSED
    }
    // The query that goes out is ours: a fresh id, the one question, nothing else.
    DnsQuestion asked = *q;
    asked.id = random_id();
    const auto fwd = dns_forward_query(asked, asked.id);
    if (fwd.empty()) {
        // A label with a dot, NUL or another byte no name has: refused in both modes, never
        // rewritten into the name it looks like.
        line["verdict"] = "refused";
        line["error"] = "the name holds a byte no host name has";
        log_line(p, line);
        return dns_error_reply(query.data(), query.size(), 5);
    }
    const auto candidates = upstream_candidates(p.resolvers, original);
    if (candidates.empty()) {
        line["verdict"] = "servfail";
        line["error"] = "no trusted resolver (give --resolver, or a nameserver in resolv.conf)";
        log_line(p, line);
        return dns_error_reply(query.data(), query.size(), 2);
    }
    std::vector<std::uint8_t> resp;
    bool reached = false;
    for (const auto& r : candidates) {
        line["resolver"] = r.str();
        resp = ask_resolver(r, tcp, fwd, reached);
        if (reached) break;  // the first one we can reach answers (or not): no second opinion
    }
    if (resp.empty()) {
        line["verdict"] = "servfail";
        line["error"] =
            reached ? "no answer from the resolver" : "no trusted resolver is reachable";
        log_line(p, line);
        return dns_error_reply(query.data(), query.size(), 2);
    }
    auto addrs = dns_answer_addresses(resp.data(), resp.size(), asked);
    if (!addrs) {
        // Not an answer to our question: never relayed (its addresses were not added).
        line["verdict"] = "servfail";
        line["error"] = "the resolver's message does not answer the question";
        log_line(p, line);
        return dns_error_reply(query.data(), query.size(), 2);
    }
    if (!allowed) {  // audit mode: answered, nothing added
        line["verdict"] = "would-be-refused";
        log_line(p, line);
        return dns_with_id(std::move(resp), q->id);
    }
    std::string why;
    if (!allow_addresses(p, *q, *addrs, why)) {
        line["verdict"] = "servfail";
        line["error"] = "adding the addresses failed: " + why;
        log_line(p, line);
        return dns_error_reply(query.data(), query.size(), 2);
    }
    json a = json::array();
    for (const auto& x : *addrs)
        a.push_back({{"address", x.addr.str()}, {"ttl", x.ttl}, {"timeout", name_timeout(x.ttl)}});
    line["verdict"] = "allowed";
    line["addresses"] = a;
    log_line(p, line);
    return dns_with_id(std::move(resp), q->id);
}

std::string sockaddr_text(const sockaddr_storage& sa) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (sa.ss_family == AF_INET)
        ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(sa).sin_addr, buf, sizeof buf);
    else if (sa.ss_family == AF_INET6)
        ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(sa).sin6_addr, buf,
                    sizeof buf);
    return buf;
}

std::optional<IpAddr> tcp_original_destination(int fd, Family f) {
    sockaddr_storage sa{};
    socklen_t len = sizeof sa;
    const int rc = f == Family::v4 ? ::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len)
                                   : ::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sa, &len);
    if (rc != 0) return std::nullopt;
    try {
        return parse_ip(sockaddr_text(sa));
    } catch (const Error&) {
        return std::nullopt;
    }
}

void serve_tcp(Proxy& p, Fd conn, Family f) {
    timeval tv{10, 0};
    ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(conn.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    ::getpeername(conn.get(), reinterpret_cast<sockaddr*>(&peer), &plen);
    const auto resolver = tcp_original_destination(conn.get(), f);
    auto read_all = [&](std::uint8_t* b, std::size_t n) {
        while (n > 0) {
            const ssize_t r = ::recv(conn.get(), b, n, 0);
            if (r <= 0) return false;
            b += r;
            n -= static_cast<std::size_t>(r);
        }
        return true;
    };
    for (int i = 0; i < 100; ++i) {
        std::uint8_t hdr[2];
        if (!read_all(hdr, 2)) return;
        std::vector<std::uint8_t> q(be16(hdr));
        if (q.empty() || !read_all(q.data(), q.size())) return;
        auto r = answer(p, q, resolver, true, sockaddr_text(peer));
        if (r.empty()) return;
        std::vector<std::uint8_t> msg{static_cast<std::uint8_t>(r.size() >> 8),
                                      static_cast<std::uint8_t>(r.size())};
        msg.insert(msg.end(), r.begin(), r.end());
        if (::send(conn.get(), msg.data(), msg.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(msg.size()))
            return;
    }
}

Fd listen_on(Family f, bool tcp) {
    const int af = f == Family::v4 ? AF_INET : AF_INET6;
    Fd fd(::socket(af, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket", errno);
    int on = 1;
    if (tcp) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_storage sa{};
    socklen_t len = 0;
    if (af == AF_INET) {
        auto& s = reinterpret_cast<sockaddr_in&>(sa);
        s.sin_family = AF_INET;
        s.sin_port = htons(kNamesProxyPort);
        s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof s;
    } else {
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
        auto& s = reinterpret_cast<sockaddr_in6&>(sa);
        s.sin6_family = AF_INET6;
        s.sin6_port = htons(kNamesProxyPort);
        s.sin6_addr = in6addr_loopback;
        len = sizeof s;
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0)
        throw_errno(
            fmt::format("bind {}:{}", f == Family::v4 ? "127.0.0.1" : "[::1]", kNamesProxyPort),
            errno);
    if (tcp && ::listen(fd.get(), 128) != 0) throw_errno("listen", errno);
    return fd;
}

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

NsId self_netns() {
    struct stat st {};
    if (::stat("/proc/self/ns/net", &st) != 0) throw_errno("stat /proc/self/ns/net", errno);
    return NsId{st.st_dev, st.st_ino};
}

// Why the proxy should stop now, or empty.
std::string gone(const Proxy& p, int pidfd) {
    if (pidfd >= 0) {
        if (pidfd_exited(pidfd)) return fmt::format("process {} has exited", *p.pid);
    } else if (!p.netns_path.empty()) {
        struct stat st {};
        if (::stat(p.netns_path.c_str(), &st) != 0)
            return fmt::format("'{}' is gone", p.netns_path);
        if (st.st_ino != p.netns.ino || st.st_dev != p.netns.dev)
            return fmt::format("'{}' names another namespace", p.netns_path);
    }
    return {};
}

}  // namespace

std::string names_state_path(NsId id) { return base_path(id) + ".json"; }
std::string names_pid_path(NsId id) { return base_path(id) + ".pid"; }
std::string names_log_path(NsId id) { return base_path(id) + ".log"; }

std::optional<pid_t> names_proxy_pid(NsId id) {
    const std::string path = names_pid_path(id);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return std::nullopt;
    // Running = someone holds the lock.
    if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) {
        ::flock(fd.get(), LOCK_UN);
        return std::nullopt;
    }
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    if (n <= 0) return std::nullopt;
    const long v = std::strtol(buf, nullptr, 10);
    if (v <= 1) return std::nullopt;
    return static_cast<pid_t>(v);
}

bool stop_names_proxy(NsId id) {
    // The state first: a supervisor never restarts a proxy that is being stopped.
    ::unlink(names_state_path(id).c_str());
    bool was = false;
    for (int round = 0; round < 2; ++round) {
        auto pid = names_proxy_pid(id);
        if (!pid) break;
        was = true;
        Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0)));
        // The lock holder is the proxy (only it takes that lock); signal through the pidfd
        // so that a pid reused meanwhile is never hit.
        if (!pidfd || !names_proxy_pid(id)) break;
        ::syscall(SYS_pidfd_send_signal, pidfd.get(), round == 0 ? SIGTERM : SIGKILL, nullptr, 0);
        pollfd pf{pidfd.get(), POLLIN, 0};
        ::poll(&pf, 1, 2000);
        if (!names_proxy_pid(id)) break;
    }
    ::unlink(names_state_path(id).c_str());
    ::unlink(names_pid_path(id).c_str());
    ::unlink(names_log_path(id).c_str());
    return was;
}

// The proxy's own executable (src/cli/names_proxy_main.cpp), opened (O_PATH): nsegress-names-proxy
// in this executable's directory, where the build and the package put it. Only a regular file
// (not a symlink) of this executable's owner that no group or other may write, in a directory no
// group or other may write; else none (an invalid Fd), and the proxy runs in this executable, as
// before: the same code, with more memory.
Fd open_proxy_executable() {
    char self[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return {};
    std::string dir(self, static_cast<std::size_t>(n));
    const auto slash = dir.rfind('/');
    if (slash == std::string::npos) return {};
    dir.resize(slash + 1);
    Fd dfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    struct stat ds {
    }, st{}, me{};
    if (!dfd || ::fstat(dfd.get(), &ds) != 0 || (ds.st_mode & (S_IWGRP | S_IWOTH))) return {};
    Fd fd(::openat(dfd.get(), "nsegress-names-proxy", O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd || ::fstat(fd.get(), &st) != 0 || ::stat("/proc/self/exe", &me) != 0) return {};
    if (!S_ISREG(st.st_mode) || st.st_uid != me.st_uid || (st.st_mode & (S_IWGRP | S_IWOTH)) ||
        !(st.st_mode & S_IXUSR) || (st.st_dev == me.st_dev && st.st_ino == me.st_ino))
        return {};
    return fd;
}

void exec_names_proxy(const std::string& state_path, int ready_fd) {
    const Fd helper = open_proxy_executable();
    if (!helper) return;
    const std::string ready = std::to_string(ready_fd);
    const char* argv[] = {"nsegress",   "names-proxy", "--state", state_path.c_str(),
                          "--ready-fd", ready.c_str(), nullptr};
    ::syscall(SYS_execveat, helper.get(), "", const_cast<char* const*>(argv), environ,
              AT_EMPTY_PATH);
}

namespace {

// Starts `nsegress names-proxy --state STATE` detached from the caller (its own session, stdio
// on /dev/null, stderr to the log) and waits until it listens: true then. It is the proxy's own
// executable when there is one (open_proxy_executable), else this one.
bool spawn_proxy(const std::string& state, const std::string& log) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) throw_errno("pipe", errno);
    Fd rd(pipefd[0]), wr(pipefd[1]);
    const std::string ready = std::to_string(wr.get());
    const char* argv[] = {"nsegress",   "names-proxy", "--state", state.c_str(),
                          "--ready-fd", ready.c_str(), nullptr};
    const Fd helper = open_proxy_executable();
    const pid_t child = ::fork();
    if (child < 0) throw_errno("fork", errno);
    if (child == 0) {
        // Only async-signal-safe calls from here to exec.
        ::setsid();
        const pid_t grandchild = ::fork();
        if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
        const int devnull = ::open("/dev/null", O_RDWR);
        const int logfd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
        if (devnull >= 0) {
            ::dup2(devnull, 0);
            ::dup2(devnull, 1);
        }
        ::dup2(logfd >= 0 ? logfd : devnull, 2);
        ::fcntl(wr.get(), F_SETFD, 0);  // the ready pipe survives exec
        if (helper)
            ::syscall(SYS_execveat, helper.get(), "", const_cast<char* const*>(argv), environ,
                      AT_EMPTY_PATH);
        ::execv("/proc/self/exe", const_cast<char* const*>(argv));
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    wr.reset();
    pollfd pf{rd.get(), POLLIN, 0};
    char c = 0;
    return ::poll(&pf, 1, 10000) > 0 && ::read(rd.get(), &c, 1) == 1 && c == '1';
}

}  // namespace

ProxyResolvers choose_proxy_resolvers(const Netns& ns, const std::vector<IpAddr>& from_operator,
                                      bool engine_wrote_it) {
    ProxyResolvers out;
    if (!from_operator.empty()) {
        out.trusted = from_operator;
        out.source = "operator";
        return out;
    }
    out.source = "none";
    if (!ns.pid()) return out;
    // The container's own file, through its root (its mount namespace): read once, now. A
    // FIFO or device there must not block or feed us: a regular file, at most 64 KiB.
    out.resolv_conf = fmt::format("/proc/{}/root/etc/resolv.conf", *ns.pid());
    Fd fd(::open(out.resolv_conf.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return out;
    std::string text(64 << 10, '\0');
    std::size_t got = 0;
    while (got < text.size()) {
        const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    const auto listed = resolv_conf_nameservers(text);
    out.trusted = trusted_resolvers({}, listed, engine_wrote_it);
    for (const auto& a : listed)
        if (std::find(out.trusted.begin(), out.trusted.end(), a) == out.trusted.end())
            out.untrusted.push_back(a);
    out.source = "resolv.conf";
    return out;
}

pid_t start_names_proxy(const Netns& ns, const TargetSpec& target,
                        const std::vector<AllowEntry>& names, bool audit,
                        const ProxyResolvers& resolvers) {
    ensure_run_dir();
    stop_names_proxy(ns.id());
    json st{{"netns_dev", static_cast<std::uint64_t>(ns.id().dev)},
            {"netns_ino", static_cast<std::uint64_t>(ns.id().ino)}};
    if (ns.pid()) st["pid"] = *ns.pid();
    if (target.netns_path) st["netns_path"] = *target.netns_path;
    json n = json::array();
    for (const auto& e : names) n.push_back(e.str());
    st["names"] = n;
    st["audit"] = audit;
    json r = json::array();
    for (const auto& a : resolvers.trusted) r.push_back(a.str());
    st["resolvers"] = r;
    st["resolvers_from"] = resolvers.source;
    const std::string state = names_state_path(ns.id());
    write_file(state, st.dump(2) + "\n");
    const std::string log = names_log_path(ns.id());
    // A supervisor may have seen the new state first and started it: then that one serves.
    if (!spawn_proxy(state, log) && !names_proxy_pid(ns.id()))
        throw_failed(fmt::format("the names proxy for {} did not start (its messages: '{}')",
                                 ns.describe(), log));
    auto pid = names_proxy_pid(ns.id());
    if (!pid)
        throw_failed(fmt::format("the names proxy for {} exited at once (its messages: '{}')",
                                 ns.describe(), log));
    return *pid;
}

int run_names_supervisor(const std::vector<std::string>& only) {
    std::fprintf(stderr, "nsegress names-supervise: watching %s\n",
                 only.empty() ? "/run/nsegress/names-*.json" : "the given state files");
    while (true) {
        ensure_run_dir();
        std::vector<std::string> states;
        for (const auto& s : only)
            if (::access(s.c_str(), F_OK) == 0) states.push_back(s);
        if (only.empty())
            if (CHandle<DIR, ::closedir> d{::opendir(kRunDir)}) {
                while (dirent* e = ::readdir(d.get())) {
                    const std::string n = e->d_name;
                    if (n.starts_with("names-") && n.ends_with(".json"))
                        states.push_back(std::string(kRunDir) + "/" + n);
                }
            }
        for (const auto& state : states) {
            unsigned long dev = 0, ino = 0;
            if (std::sscanf(state.c_str(), "/run/nsegress/names-%lu-%lu.json", &dev, &ino) != 2)
                continue;
            const NsId id{static_cast<dev_t>(dev), static_cast<ino_t>(ino)};
            if (names_proxy_pid(id)) continue;
            // Dead (killed, crashed): start it again. A proxy whose namespace or policy is gone
            // removes the state file itself, so this never loops on a dead container.
            const bool ok = spawn_proxy(state, names_log_path(id));
            std::fprintf(stderr, "nsegress names-supervise: %s the names proxy of %s\n",
                         ok ? "restarted" : "could not restart", state.c_str());
        }
        ::sleep(1);
    }
}

int run_names_proxy(const std::string& state_path, int ready_fd) {
    // Its memory is what one more namespace costs (README, "Performance", target 12). One malloc
    // arena for all threads (a thread's own arena would keep its pages after the thread ends),
    // trimmed when the proxy is idle (below).
    ::mallopt(M_ARENA_MAX, 1);
    // Its name in ps/top (comm): exec'd from a descriptor (open_proxy_executable) it would be
    // the descriptor's number, from /proc/self/exe "exe".
    ::prctl(PR_SET_NAME, "nsegress-names", 0, 0, 0);
    Proxy p;
    json st;
    {
        // read(2), not an ifstream: no iostreams and locales in the proxy (its own executable
        // would load them for this one file).
        Fd fd(::open(state_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("read '" + state_path + "'", errno);
        std::string text;
        char chunk[4096];
        for (;;) {
            const ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("read '" + state_path + "'", errno);
            if (n == 0) break;
            text.append(chunk, static_cast<std::size_t>(n));
        }
        try {
            st = json::parse(text);
        } catch (const std::exception& e) {
            throw_failed(fmt::format("'{}': {}", state_path, e.what()));
        }
    }
    p.netns = NsId{static_cast<dev_t>(st.at("netns_dev").get<std::uint64_t>()),
                   static_cast<ino_t>(st.at("netns_ino").get<std::uint64_t>())};
    if (st.contains("pid")) p.pid = st["pid"].get<pid_t>();
    if (st.contains("netns_path")) p.netns_path = st["netns_path"].get<std::string>();
    for (const auto& n : st.at("names")) p.names.push_back(parse_allow_entry(n.get<std::string>()));
    p.audit = st.value("audit", false);
    // No "resolvers" (a state file of an older version): none is trusted, every allowed name
    // gets SERVFAIL until restrict runs again. Never the container's choice.
    if (auto r = st.find("resolvers"); r != st.end() && r->is_array())
        for (const auto& a : *r) p.resolvers.push_back(parse_ip(a.get<std::string>()));
    p.log_path = names_log_path(p.netns);

    // Enter the namespace: through the container's pidfd, or the --netns path. Whichever way,
    // it must be the namespace the state names (a reused pid, a path that now names another
    // namespace: refused).
    // A namespace that is gone (or is now another one) is not served again: its state goes, so
    // that a supervisor does not try forever.
    auto abandon = [&](const std::string& why) -> int {
        std::fprintf(stderr, "nsegress names-proxy: %s; its state '%s' is removed\n", why.c_str(),
                     state_path.c_str());
        ::unlink(state_path.c_str());
        return static_cast<int>(Exit::failed);
    };
    Fd pidfd;
    if (p.pid) {
        pidfd = Fd(static_cast<int>(::syscall(SYS_pidfd_open, *p.pid, 0)));
        if (!pidfd) return abandon(fmt::format("process {} is gone", *p.pid));
        if (::setns(pidfd.get(), CLONE_NEWNET) != 0)
            throw_errno(fmt::format("setns pid {}", *p.pid), errno);
    } else {
        Fd nsfd(::open(p.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!nsfd) return abandon(fmt::format("'{}' is gone", p.netns_path));
        if (::setns(nsfd.get(), CLONE_NEWNET) != 0)
            throw_errno("setns '" + p.netns_path + "'", errno);
    }
    if (self_netns() != p.netns)
        return abandon("the target is no longer the namespace the names proxy was started for");

    // One proxy per namespace: the pid file's lock.
    const std::string pid_path = names_pid_path(p.netns);
    Fd pidlock(::open(pid_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!pidlock) throw_errno("open '" + pid_path + "'", errno);
    if (::flock(pidlock.get(), LOCK_EX | LOCK_NB) != 0)
        throw_failed("another names proxy serves this namespace");
    const std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(pidlock.get(), 0) != 0 || ::pwrite(pidlock.get(), me.data(), me.size(), 0) < 0)
        throw_errno("write '" + pid_path + "'", errno);

    Fd udp4 = listen_on(Family::v4, false), tcp4 = listen_on(Family::v4, true);
    Fd udp6, tcp6;
    try {
        udp6 = listen_on(Family::v6, false);
        tcp6 = listen_on(Family::v6, true);
    } catch (const Error& e) {
        // A namespace without IPv6 (disabled): IPv4 only.
        std::fprintf(stderr, "nsegress names-proxy: no IPv6 listener: %s\n", e.what());
        udp6.reset();
        tcp6.reset();
    }
    p.nfnl = open_proxy_nfnl();
    ::signal(SIGPIPE, SIG_IGN);
    // SIGTERM/SIGINT: a deliberate stop (release, lab teardown, systemd): leave no state behind.
    // No SA_RESTART, so that poll() returns at once.
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    if (ready_fd >= 0) {
        (void)!::write(ready_fd, "1", 1);
        ::close(ready_fd);
    }
    {
        json r = json::array();
        for (const auto& a : p.resolvers) r.push_back(a.str());
        log_line(p, {{"event", "started"}, {"pid", ::getpid()}, {"resolvers", r}});
    }

    constexpr int kMaxInflight = 256;
    auto last_check = std::chrono::steady_clock::now();
    // One receive buffer for every datagram (this loop is one thread); a query's thread gets a
    // copy of its size.
    // In .bss, not on the heap: only the pages a datagram lands in are ever resident.
    static std::uint8_t rbuf[65536];
    // Something was served since the last trim: once nothing happened for 10 ms and nothing is
    // in flight, the freed heap goes back to the kernel (malloc_trim), so that an idle proxy
    // holds only what it needs, whatever the burst before (its memory is what one more namespace
    // costs the host). Not after each query: trimming there doubled the answer delay (bench/run.sh
    // metric 9), the next query faulting the pages in again.
    bool untrimmed = false;
    while (true) {
        std::vector<pollfd> fds{{udp4.get(), POLLIN, 0}, {tcp4.get(), POLLIN, 0}};
        if (udp6) fds.push_back({udp6.get(), POLLIN, 0});
        if (tcp6) fds.push_back({tcp6.get(), POLLIN, 0});
        if (pidfd) fds.push_back({pidfd.get(), POLLIN, 0});
        const int n = ::poll(fds.data(), fds.size(), untrimmed ? 10 : 1000);
        if (n < 0 && errno != EINTR) throw_errno("poll", errno);
        if (n == 0 && untrimmed && p.inflight.load() == 0) {
            ::malloc_trim(0);
            untrimmed = false;
        }
        const auto now = std::chrono::steady_clock::now();
        if (g_stop || now - last_check >= std::chrono::seconds(1) ||
            (pidfd && (fds.back().revents & POLLIN))) {
            last_check = now;
            untrimmed = true;  // the check's netlink dump allocated too
            std::string why = g_stop ? "stopped by a signal" : gone(p, pidfd.get());
            if (why.empty()) {
                try {
                    std::lock_guard lock(p.nft_mu);
                    if (!p.nfnl) p.nfnl = open_proxy_nfnl();
                    if (!nft::read_installed(p.nfnl.get()).names)
                        why = "the policy has no names any more";
                } catch (const std::exception& e) {
                    p.nfnl.reset();
                }
            }
            if (!why.empty()) {
                // Everything goes: namespace inodes are reused, and a later namespace must not
                // inherit this one's state or log.
                ::unlink(state_path.c_str());
                ::unlink(p.log_path.c_str());
                ::unlink(pid_path.c_str());
                return 0;
            }
        }
        if (n <= 0) continue;
        untrimmed = true;
        for (const auto& f : fds) {
            if (!(f.revents & POLLIN)) continue;
            const bool v4 = f.fd == udp4.get() || f.fd == tcp4.get();
            const Family fam = v4 ? Family::v4 : Family::v6;
            if (f.fd == udp4.get() || (udp6 && f.fd == udp6.get())) {
                sockaddr_storage client{};
                socklen_t clen = sizeof client;
                const ssize_t got = ::recvfrom(f.fd, rbuf, sizeof rbuf, MSG_DONTWAIT,
                                               reinterpret_cast<sockaddr*>(&client), &clen);
                if (got <= 0) continue;
                std::vector<std::uint8_t> buf(rbuf, rbuf + got);
                if (p.inflight.load() >= kMaxInflight)
                    continue;  // overloaded: dropped, the client retries
                ++p.inflight;
                const int sock = f.fd;
                std::thread([&p, sock, client, clen, fam, q = std::move(buf)]() mutable {
                    const auto resolver = udp_original_destination(client, fam);
                    {
                        const auto r = answer(p, q, resolver, false, sockaddr_text(client));
                        if (!r.empty())
                            ::sendto(sock, r.data(), r.size(), 0,
                                     reinterpret_cast<const sockaddr*>(&client), clen);
                    }
                    std::vector<std::uint8_t>().swap(q);
                    --p.inflight;
                }).detach();
            } else if (f.fd == tcp4.get() || (tcp6 && f.fd == tcp6.get())) {
                Fd conn(::accept4(f.fd, nullptr, nullptr, SOCK_CLOEXEC));
                if (!conn) continue;
                if (p.inflight.load() >= kMaxInflight) continue;
                ++p.inflight;
                std::thread([&p, fam, c = std::move(conn)]() mutable {
                    serve_tcp(p, std::move(c), fam);
                    --p.inflight;
                }).detach();
            }
        }
    }
}

NamesInfo read_names_info(NsId id) {
    NamesInfo out;
    out.state = names_state_path(id);
    out.log = names_log_path(id);
    out.pid = names_proxy_pid(id);
    std::ifstream in(out.state);
    if (in) {
        try {
            json st;
            in >> st;
            for (const auto& n : st.at("names")) out.names.push_back(n.get<std::string>());
            if (auto r = st.find("resolvers"); r != st.end() && r->is_array())
                for (const auto& a : *r) out.resolvers.push_back(a.get<std::string>());
            out.resolvers_from = st.value("resolvers_from", "none");
            out.configured = true;
        } catch (const std::exception&) {
        }
    }
    // Only the log of a namespace that has a proxy's state: a log left by a proxy that was
    // killed belongs to a namespace that may be gone, its inode reused.
    std::ifstream lg(out.configured ? out.log : std::string{});
    for (std::string line; lg && std::getline(lg, line);) {
        try {
            auto j = json::parse(line);
            if (j.value("verdict", "") != "allowed") continue;
            auto& v = out.answered[j.value("name", "")];
            for (const auto& a : j.at("addresses")) {
                const std::string addr = a.value("address", "");
                std::erase(v, addr);
                v.push_back(addr);
            }
        } catch (const std::exception&) {
        }
    }
    return out;
}

std::vector<RefusedName> read_refused_names(NsId id) {
    std::vector<RefusedName> out;
    if (::access(names_state_path(id).c_str(), F_OK) != 0) return out;  // see read_names_info
    std::ifstream in(names_log_path(id));
    std::map<std::pair<std::string, std::string>, std::size_t> counts;
    for (std::string line; std::getline(in, line);) {
        try {
            auto j = json::parse(line);
            const std::string v = j.value("verdict", "");
            if (v != "refused" && v != "would-be-refused") continue;
            ++counts[{j.value("name", ""), j.value("type", "")}];
        } catch (const std::exception&) {
        }
    }
    for (auto& [k, c] : counts) out.push_back(RefusedName{k.first, k.second, c});
    return out;
}

}  // namespace nsegress
