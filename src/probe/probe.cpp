#include "nsegress/probe.hpp"

#include <arpa/inet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <unordered_map>

#include "nsegress/error.hpp"
#include "nsegress/icmp.hpp"

namespace nsegress {

// ---------------------------------------------------------------------------------------------
// Pure packet work
// ---------------------------------------------------------------------------------------------

namespace icmp {

namespace {

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }

std::uint32_t be32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           std::uint32_t{p[3]};
}

void put16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v & 0xff);
}

bool is_v4_error(std::uint8_t type) {
    return type == v4_dest_unreach || type == v4_time_exceeded || type == v4_param_problem;
}

bool is_v6_error(std::uint8_t type) {
    return type == v6_dest_unreach || type == v6_packet_too_big || type == v6_time_exceeded ||
           type == v6_param_problem;
}

const char* v4_unreach_code(std::uint8_t code) {
    switch (code) {
        case 0:
            return "net unreachable";
        case 1:
            return "host unreachable";
        case 2:
            return "protocol unreachable";
        case 3:
            return "port unreachable";
        case 4:
            return "fragmentation needed";
        case 5:
            return "source route failed";
        case 6:
            return "net unknown";
        case 7:
            return "host unknown";
        case 8:
            return "source host isolated";
        case 9:
            return "net prohibited";
        case 10:
            return "host prohibited";
        case 11:
            return "net unreachable for TOS";
        case 12:
            return "host unreachable for TOS";
        case 13:
            return "admin prohibited";
        case 14:
            return "host precedence violation";
        case 15:
            return "precedence cutoff";
        default:
            return nullptr;
    }
}

const char* v6_unreach_code(std::uint8_t code) {
    switch (code) {
        case 0:
            return "no route";
        case 1:
            return "admin prohibited";
        case 2:
            return "beyond scope of source address";
        case 3:
            return "address unreachable";
        case 4:
            return "port unreachable";
        case 5:
            return "source address failed policy";
        case 6:
            return "reject route";
        default:
            return nullptr;
    }
}

const char* time_exceeded_code(std::uint8_t code) {
    switch (code) {
        case 0:
            return "hop limit exceeded in transit";
        case 1:
            return "fragment reassembly time exceeded";
        default:
            return nullptr;
    }
}

const char* v4_param_code(std::uint8_t code) {
    switch (code) {
        case 0:
            return "pointer indicates the error";
        case 1:
            return "missing a required option";
        case 2:
            return "bad length";
        default:
            return nullptr;
    }
}

const char* v6_param_code(std::uint8_t code) {
    switch (code) {
        case 0:
            return "erroneous header field";
        case 1:
            return "unrecognized next header";
        case 2:
            return "unrecognized IPv6 option";
        default:
            return nullptr;
    }
}

std::string with_code(const char* what, std::uint8_t code, const char* name) {
    std::string s = std::string(what) + " (code " + std::to_string(code);
    if (name) s += std::string(", ") + name;
    return s + ")";
}

}  // namespace

std::uint16_t checksum(std::span<const std::uint8_t> data) {
    // 64-bit accumulator: no folding needed inside the loop for any realistic length.
    std::uint64_t sum = 0;
    std::size_t i = 0;
    for (; i + 1 < data.size(); i += 2) sum += (std::uint32_t{data[i]} << 8) | data[i + 1];
    if (i < data.size()) sum += std::uint32_t{data[i]} << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

std::vector<std::uint8_t> build_echo_request(Family family, std::uint16_t id, std::uint16_t seq,
                                             std::span<const std::uint8_t> payload) {
    std::vector<std::uint8_t> msg(8 + payload.size(), 0);
    msg[0] = family == Family::v4 ? v4_echo_request : v6_echo_request;
    msg[1] = 0;
    put16(&msg[4], id);
    put16(&msg[6], seq);
    std::copy(payload.begin(), payload.end(), msg.begin() + 8);
    if (family == Family::v4) put16(&msg[2], checksum(msg));
    return msg;
}

std::optional<Message> parse_ipv4(std::span<const std::uint8_t> packet) {
    const std::uint8_t* p = packet.data();
    std::size_t len = packet.size();
    if (len < 20 || (p[0] >> 4) != 4) return std::nullopt;
    std::size_t ihl = std::size_t{p[0] & 0x0fu} * 4;
    if (ihl < 20 || ihl > len || p[9] != IPPROTO_ICMP) return std::nullopt;
    // Trust the datagram's own length over the read size when it is shorter (padding).
    std::size_t total = be16(p + 2);
    if (total >= ihl && total < len) len = total;

    std::span<const std::uint8_t> msg(p + ihl, len - ihl);
    if (msg.size() < 8 || checksum(msg) != 0) return std::nullopt;

    Message m;
    m.family = Family::v4;
    m.type = msg[0];
    m.code = msg[1];
    if (m.type == v4_echo_reply) {
        m.kind = Kind::echo_reply;
        m.id = be16(&msg[4]);
        m.seq = be16(&msg[6]);
        return m;
    }
    if (!is_v4_error(m.type)) return std::nullopt;

    // An ICMPv4 error quotes the offending datagram's IP header and at least its first 8
    // payload bytes (RFC 792) -- exactly the echo header, which carries id and seq.
    m.kind = Kind::error;
    m.info = be32(&msg[4]);
    const std::uint8_t* q = msg.data() + 8;
    std::size_t qlen = msg.size() - 8;
    if (qlen < 20 || (q[0] >> 4) != 4) return std::nullopt;
    std::size_t qihl = std::size_t{q[0] & 0x0fu} * 4;
    if (qihl < 20 || qlen < qihl + 8 || q[9] != IPPROTO_ICMP) return std::nullopt;
    // A non-first fragment does not start with the ICMP header.
    if ((be16(q + 6) & 0x1fff) != 0) return std::nullopt;
    const std::uint8_t* qe = q + qihl;
    if (qe[0] != v4_echo_request) return std::nullopt;
    m.id = be16(qe + 4);
    m.seq = be16(qe + 6);
    m.quoted_dst = IpAddr::from_bytes(Family::v4, q + 16);
    return m;
}

std::optional<Message> parse_icmpv6(std::span<const std::uint8_t> message) {
    const std::uint8_t* p = message.data();
    std::size_t len = message.size();
    if (len < 8) return std::nullopt;

    Message m;
    m.family = Family::v6;
    m.type = p[0];
    m.code = p[1];
    if (m.type == v6_echo_reply) {
        m.kind = Kind::echo_reply;
        m.id = be16(p + 4);
        m.seq = be16(p + 6);
        return m;
    }
    if (!is_v6_error(m.type)) return std::nullopt;

    // An ICMPv6 error quotes as much of the offending packet as fits (RFC 4443): the fixed
    // header, any extension headers, then our echo header.
    m.kind = Kind::error;
    m.info = be32(p + 4);
    const std::uint8_t* q = p + 8;
    std::size_t qlen = len - 8;
    if (qlen < 40 || (q[0] >> 4) != 6) return std::nullopt;
    std::uint8_t next = q[6];
    std::size_t off = 40;
    for (int hops = 0; hops < 8; ++hops) {
        if (next == 0 || next == 43 || next == 60) {  // hop-by-hop, routing, destination opts
            if (off + 2 > qlen) return std::nullopt;
            next = q[off];
            off += (std::size_t{q[off + 1]} + 1) * 8;
        } else if (next == 44) {  // fragment header: only the first fragment has our header
            if (off + 8 > qlen) return std::nullopt;
            if ((be16(q + off + 2) & 0xfff8) != 0) return std::nullopt;
            next = q[off];
            off += 8;
        } else {
            break;
        }
    }
    if (next != IPPROTO_ICMPV6 || off + 8 > qlen) return std::nullopt;
    const std::uint8_t* qe = q + off;
    if (qe[0] != v6_echo_request) return std::nullopt;
    m.id = be16(qe + 4);
    m.seq = be16(qe + 6);
    m.quoted_dst = IpAddr::from_bytes(Family::v6, q + 24);
    return m;
}

std::optional<Message> parse(Family family, std::span<const std::uint8_t> data) {
    return family == Family::v4 ? parse_ipv4(data) : parse_icmpv6(data);
}

bool concerns(const Message& m, const IpAddr& from, const IpAddr& target, std::uint16_t id) {
    if (m.family != target.family || m.id != id) return false;
    if (m.kind == Kind::echo_reply) return from == target;
    return m.quoted_dst && *m.quoted_dst == target;
}

std::string describe_error(const Message& m) {
    if (m.family == Family::v4) {
        switch (m.type) {
            case v4_dest_unreach:
                if (m.code == 4)  // the next-hop MTU sits in the low half of the info word
                    return "destination unreachable (code 4, fragmentation needed, mtu " +
                           std::to_string(m.info & 0xffff) + ")";
                return with_code("destination unreachable", m.code, v4_unreach_code(m.code));
            case v4_time_exceeded:
                return with_code(
                    "time exceeded", m.code,
                    m.code == 0 ? "ttl exceeded in transit" : time_exceeded_code(m.code));
            case v4_param_problem:
                return with_code("parameter problem", m.code, v4_param_code(m.code));
            default:
                return with_code(("ICMP type " + std::to_string(m.type)).c_str(), m.code, nullptr);
        }
    }
    switch (m.type) {
        case v6_dest_unreach:
            return with_code("destination unreachable", m.code, v6_unreach_code(m.code));
        case v6_packet_too_big:
            return "packet too big (mtu " + std::to_string(m.info) + ")";
        case v6_time_exceeded:
            return with_code("time exceeded", m.code, time_exceeded_code(m.code));
        case v6_param_problem:
            return with_code("parameter problem", m.code, v6_param_code(m.code));
        default:
            return with_code(("ICMPv6 type " + std::to_string(m.type)).c_str(), m.code, nullptr);
    }
}

}  // namespace icmp

// ---------------------------------------------------------------------------------------------
// Names and verdicts
// ---------------------------------------------------------------------------------------------

const char* expect_name(Expect e) {
    switch (e) {
        case Expect::reach:
            return "reach";
        case Expect::block:
            return "block";
        case Expect::audit:
            return "audit";
    }
    return "?";
}

const char* outcome_name(Outcome o) {
    switch (o) {
        case Outcome::reachable:
            return "reachable";
        case Outcome::refused_policy:
            return "refused-policy";
        case Outcome::refused_route:
            return "refused-route";
        case Outcome::unreachable:
            return "unreachable";
        case Outcome::timeout:
            return "timeout";
        case Outcome::error:
            return "error";
    }
    return "?";
}

bool ProbeResult::ok() const {
    if (expect == Expect::reach) return outcome == Outcome::reachable;
    // Audit mode lets a forbidden echo out: it holds when nothing in the namespace refused it,
    // whatever the far side does with it (reply, ICMP error, or silence).
    if (expect == Expect::audit)
        return outcome == Outcome::reachable || outcome == Outcome::unreachable ||
               outcome == Outcome::timeout;
    // Only a local refusal proves a block: unreachable/timeout could be the far side or loss.
    return outcome == Outcome::refused_policy || outcome == Outcome::refused_route;
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

namespace {

// From <linux/icmp.h>, which cannot be included next to the glibc network headers (it pulls
// in <linux/if.h> and <linux/in6.h>).
constexpr int kIcmpFilter = 1;  // ICMP_FILTER, at level SOL_RAW
struct IcmpFilter {
    std::uint32_t data;  // bit n set = drop ICMP type n (types 0..31 only)
};

// Echoes to unresolved neighbours wait in the ARP/ND queue for up to ~3 s and stay charged to
// our send buffer meanwhile; raw sockets then fail sendto() with ENOBUFS (not EAGAIN). The
// default buffer (~212 KiB) holds only ~500 such echoes, so a long target list could starve
// later targets. SO_SNDBUFFORCE (CAP_NET_ADMIN, which we hold) lifts the wmem_max cap; this
// is only an upper bound, memory is used only while packets are queued.
constexpr int kSendBuffer = 4 << 20;

void enlarge_send_buffer(int fd) {
    int size = kSendBuffer;
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);  // best effort
}

Fd open_raw(int af, int proto) {
    // Non-blocking: run_probes() drains the sockets from a poll() loop and must never stall
    // in recvfrom()/sendto() past its deadlines.
    int fd = ::socket(af, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, proto);
    if (fd < 0) {
        // The family is compiled out or disabled (ipv6.disable=1): not an error, the probe
        // reports targets of that family as unprobeable.
        if (errno == EAFNOSUPPORT) return Fd();
        throw_errno("open ICMP socket", errno);
    }
    enlarge_send_buffer(fd);
    return Fd(fd);
}

}  // namespace

ProbeSockets open_probe_sockets() {
    ProbeSockets s;
    s.v4 = open_raw(AF_INET, IPPROTO_ICMP);
    s.v6 = open_raw(AF_INET6, IPPROTO_ICMPV6);
    prepare_probe_sockets(s);
    return s;
}

void prepare_probe_sockets(ProbeSockets& s) {
    for (Fd* fd : {&s.v4, &s.v6}) {
        if (!*fd) continue;
        int fl = ::fcntl(fd->get(), F_GETFL);
        if (fl >= 0) ::fcntl(fd->get(), F_SETFL, fl | O_NONBLOCK);
        ::fcntl(fd->get(), F_SETFD, FD_CLOEXEC);
        enlarge_send_buffer(fd->get());
    }
    if (s.v4) {
        // A raw ICMP socket receives a copy of every ICMP message of the namespace (including
        // echo requests others or we ourselves send to local addresses). Let the kernel keep
        // only what we can use, so a busy namespace does not fill our receive buffer.
        IcmpFilter f{~((1u << icmp::v4_echo_reply) | (1u << icmp::v4_dest_unreach) |
                       (1u << icmp::v4_time_exceeded) | (1u << icmp::v4_param_problem))};
        if (::setsockopt(s.v4.get(), SOL_RAW, kIcmpFilter, &f, sizeof f) != 0)
            throw_errno("set ICMP_FILTER", errno);
    }
    if (s.v6) {
        // The same for ICMPv6, where the filter matters more: every neighbour discovery and
        // MLD message would otherwise land here too.
        icmp6_filter f;
        ICMP6_FILTER_SETBLOCKALL(&f);
        ICMP6_FILTER_SETPASS(icmp::v6_echo_reply, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_dest_unreach, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_packet_too_big, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_time_exceeded, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_param_problem, &f);
        if (::setsockopt(s.v6.get(), IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f) != 0)
            throw_errno("set ICMP6_FILTER", errno);
    }
}

// ---------------------------------------------------------------------------------------------
// The probe loop
// ---------------------------------------------------------------------------------------------

namespace {

using Ns = std::int64_t;  // CLOCK_MONOTONIC nanoseconds
constexpr Ns kMs = 1'000'000;

Ns now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return Ns{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// How long to back off when the socket's send buffer is full. The buffer drains as fast as
// the devices take packets, or as ARP/ND resolve (unresolved packets are charged to us).
constexpr Ns kSendRetry = 10 * kMs;

// The per-call part of the echo identifiers: the pid keeps concurrent nsegress runs apart, the
// random part keeps consecutive runs of one process apart.
std::uint16_t id_base() {
    std::uint16_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r))
        r = static_cast<std::uint16_t>(now_ns());
    return static_cast<std::uint16_t>(static_cast<std::uint16_t>(::getpid()) ^ r);
}

enum class EchoState : std::uint8_t { unsent, pending, replied, errored };

struct TargetState {
    ProbeResult* result = nullptr;
    int fd = -1;
    sockaddr_storage sa{};
    socklen_t salen = 0;
    std::uint16_t id = 0;
    int next_seq = 1;         // the next sequence number to send; > count when all are sent
    Ns next_send = 0;         // when it is due
    Ns send_retry_until = 0;  // give up retrying a full send buffer after this (0 = none)
    Ns deadline = 0;          // after the last send: when to stop waiting
    std::vector<Ns> sent_at;  // per seq - 1
    std::vector<EchoState> echo;
    std::optional<std::string> icmp_error;  // the first error quoting our echo, described
    std::optional<std::string> send_error;  // a sendto failure after some replies came
    bool decided = false;
};

class Prober {
public:
    Prober(const ProbeSockets& sockets, const std::vector<ProbeTarget>& targets,
           const ProbeOptions& options)
        : sockets_(sockets), options_(options), results_(targets.size()), states_(targets.size()) {
        std::uint16_t base = id_base();
        for (std::size_t i = 0; i < targets.size(); ++i) {
            results_[i].target = targets[i].addr;
            results_[i].expect = targets[i].expect;
            TargetState& t = states_[i];
            t.result = &results_[i];
            // Distinct per target, so that two targets sharing an address (or one target
            // answering for another) are still told apart; wraps only past 65536 targets.
            t.id = static_cast<std::uint16_t>(base + i);
            by_id_.emplace(t.id, i);
        }
    }

    std::vector<ProbeResult> run() {
        Ns start = now_ns();
        for (TargetState& t : states_) setup(t, start);
        while (true) {
            Ns now = now_ns();
            for (TargetState& t : states_) {
                if (t.decided) continue;
                // interval 0 sends the whole burst in this pass
                while (!t.decided && t.next_seq <= options_.count && t.next_send <= now) {
                    send_one(t, now);
                    now = now_ns();
                }
                if (!t.decided && t.next_seq > options_.count && t.deadline <= now) finalize(t);
            }
            if (std::all_of(states_.begin(), states_.end(),
                            [](const TargetState& t) { return t.decided; }))
                break;
            wait_and_receive(now);
        }
        return std::move(results_);
    }

private:
    void decide(TargetState& t, Outcome o, std::string detail) {
        t.result->outcome = o;
        t.result->detail = std::move(detail);
        t.decided = true;
    }

    void setup(TargetState& t, Ns start) {
        const IpAddr& a = t.result->target;
        auto bytes = a.bytes();
        if (a.family == Family::v4) {
            if (!sockets_.v4) return decide(t, Outcome::error, "no IPv4 socket");
            auto* sin = reinterpret_cast<sockaddr_in*>(&t.sa);
            sin->sin_family = AF_INET;
            std::memcpy(&sin->sin_addr, bytes.data(), 4);
            t.salen = sizeof(sockaddr_in);
            t.fd = sockets_.v4.get();
        } else {
            if (!sockets_.v6) return decide(t, Outcome::error, "no IPv6 socket");
            // Without a scope id the kernel refuses a link-local destination with EINVAL,
            // which would be misread as a routing refusal, i.e. as a proven block.
            if (bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80)
                return decide(t, Outcome::error,
                              "link-local IPv6 target needs an interface scope (unsupported)");
            auto* sin6 = reinterpret_cast<sockaddr_in6*>(&t.sa);
            sin6->sin6_family = AF_INET6;
            std::memcpy(&sin6->sin6_addr, bytes.data(), 16);
            t.salen = sizeof(sockaddr_in6);
            t.fd = sockets_.v6.get();
        }
        t.sent_at.assign(static_cast<std::size_t>(options_.count), 0);
        t.echo.assign(static_cast<std::size_t>(options_.count), EchoState::unsent);
        t.next_send = start;
    }

    // A sendto() failure ends the target: the kernel refused it before it left.
    void send_failed(TargetState& t, Outcome o, std::string detail) {
        if (t.result->received > 0) {
            // Some echoes were answered before the refusal (the rules changed under us):
            // it did reach, and the refusal is told in the detail.
            t.send_error = std::move(detail);
            return finalize(t);
        }
        decide(t, o, std::move(detail));
    }

    void send_one(TargetState& t, Ns now) {
        auto seq = static_cast<std::uint16_t>(t.next_seq);
        // The payload is a send timestamp and a tag, which makes our echoes recognizable in
        // a capture; matching itself relies on identifier, sequence and addresses.
        std::uint8_t payload[16];
        for (int i = 0; i < 8; ++i) payload[i] = static_cast<std::uint8_t>(now >> (56 - 8 * i));
        std::memcpy(payload + 8, "nsegress", 8);
        auto msg = icmp::build_echo_request(t.result->target.family, t.id, seq, payload);

        ssize_t rc;
        do {
            rc = ::sendto(t.fd, msg.data(), msg.size(), 0, reinterpret_cast<const sockaddr*>(&t.sa),
                          t.salen);
        } while (rc < 0 && errno == EINTR);
        if (rc >= 0) {
            t.sent_at[seq - 1] = now;
            t.echo[seq - 1] = EchoState::pending;
            ++t.result->sent;
            ++t.next_seq;
            t.send_retry_until = 0;
            t.next_send = now + Ns{options_.interval_ms} * kMs;
            if (t.next_seq > options_.count) t.deadline = now + Ns{options_.timeout_ms} * kMs;
            return;
        }

        int err = errno;
        std::string text = std::string("sendto: ") + std::strerror(err);
        switch (err) {
            case EPERM:
                // A netfilter DROP or REJECT in OUTPUT makes the hook return NF_DROP, which
                // ip_local_out()/ip6_local_out() turn into -EPERM for the sender. A REJECT
                // may also loop an ICMP error back to us; the EPERM is decisive already.
                return send_failed(t, Outcome::refused_policy,
                                   text + " (netfilter refused it in OUTPUT)");
            case ENETUNREACH:   // no route, or an "unreachable" route/rule
            case EHOSTUNREACH:  // an "unreachable" route (IPv4)
            case EACCES:        // a "prohibit" route/rule (or broadcast without SO_BROADCAST)
            case EINVAL:        // a "blackhole" route/rule
                return send_failed(t, Outcome::refused_route,
                                   text + " (the routing decision refused it)");
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
            case ENOBUFS:
                // The send buffer is full (raw sockets say ENOBUFS, see kSendBuffer); not a
                // verdict. Retry shortly, but bounded.
                if (t.send_retry_until == 0)
                    t.send_retry_until = now + Ns{options_.timeout_ms} * kMs;
                if (now < t.send_retry_until) {
                    t.next_send = now + kSendRetry;
                    return;
                }
                return send_failed(t, Outcome::error,
                                   text + " (send buffer still full after " +
                                       std::to_string(options_.timeout_ms) + " ms)");
            default:
                return send_failed(t, Outcome::error, text);
        }
    }

    void finalize(TargetState& t) {
        ProbeResult& r = *t.result;
        if (r.received > 0) {
            r.outcome = Outcome::reachable;
            r.detail = std::to_string(r.received) + "/" + std::to_string(r.sent) +
                       " echo replies from " + r.target.str();
            if (t.send_error) r.detail += "; then " + *t.send_error;
        } else if (t.icmp_error) {
            r.outcome = Outcome::unreachable;
            r.detail = *t.icmp_error;
        } else {
            r.outcome = Outcome::timeout;
            r.detail = "no answer to " + std::to_string(r.sent) + " echo request" +
                       (r.sent == 1 ? "" : "s") + " within " + std::to_string(options_.timeout_ms) +
                       " ms";
        }
        t.decided = true;
    }

    bool wants(Family f) const {
        return std::any_of(states_.begin(), states_.end(), [f](const TargetState& t) {
            return !t.decided && t.result->target.family == f;
        });
    }

    void wait_and_receive(Ns now) {
        Ns wake = INT64_MAX;
        for (const TargetState& t : states_) {
            if (t.decided) continue;
            wake = std::min(wake, t.next_seq <= options_.count ? t.next_send : t.deadline);
        }
        int timeout_ms = 0;
        if (wake > now) {
            Ns ms = (wake - now + kMs - 1) / kMs;  // round up: never wake before it is due
            timeout_ms = static_cast<int>(std::min<Ns>(ms, INT_MAX));
        }

        pollfd fds[2];
        Family fams[2];
        nfds_t n = 0;
        if (sockets_.v4 && wants(Family::v4)) {
            fds[n] = {sockets_.v4.get(), POLLIN, 0};
            fams[n++] = Family::v4;
        }
        if (sockets_.v6 && wants(Family::v6)) {
            fds[n] = {sockets_.v6.get(), POLLIN, 0};
            fams[n++] = Family::v6;
        }
        int rc = ::poll(fds, n, timeout_ms);
        if (rc < 0) {
            if (errno == EINTR) return;
            fail_all(std::string("poll: ") + std::strerror(errno));
            return;
        }
        for (nfds_t i = 0; i < n; ++i)
            if (fds[i].revents != 0) drain(fds[i].fd, fams[i]);
    }

    // Ends every open target with an error: we can no longer tell what happens to them.
    void fail_all(const std::string& why, std::optional<Family> only = std::nullopt) {
        for (TargetState& t : states_)
            if (!t.decided && (!only || t.result->target.family == *only))
                decide(t, Outcome::error, why);
    }

    void drain(int fd, Family fam) {
        // Bounded per wake-up so that a flood of foreign ICMP cannot starve the send
        // schedule and deadline checks in run().
        for (int i = 0; i < 256; ++i) {
            sockaddr_storage from{};
            socklen_t fromlen = sizeof from;
            ssize_t len = ::recvfrom(fd, buf_.data(), buf_.size(), 0,
                                     reinterpret_cast<sockaddr*>(&from), &fromlen);
            Ns at = now_ns();
            if (len < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                fail_all(std::string("recvfrom: ") + std::strerror(errno), fam);
                return;
            }
            std::optional<IpAddr> src;
            if (fam == Family::v4 && from.ss_family == AF_INET)
                src = IpAddr::from_bytes(Family::v4,
                                         &reinterpret_cast<const sockaddr_in*>(&from)->sin_addr);
            else if (fam == Family::v6 && from.ss_family == AF_INET6)
                src = IpAddr::from_bytes(Family::v6,
                                         &reinterpret_cast<const sockaddr_in6*>(&from)->sin6_addr);
            if (!src) continue;
            auto m = icmp::parse(
                fam, std::span<const std::uint8_t>(buf_.data(), static_cast<std::size_t>(len)));
            if (m) handle(*m, *src, at);
        }
    }

    void handle(const icmp::Message& m, const IpAddr& from, Ns at) {
        auto [lo, hi] = by_id_.equal_range(m.id);
        for (auto it = lo; it != hi; ++it) {
            TargetState& t = states_[it->second];
            if (t.decided || !icmp::concerns(m, from, t.result->target, t.id)) continue;
            if (m.seq < 1 || m.seq >= t.next_seq) continue;  // not one we have sent
            std::size_t k = m.seq - 1u;
            if (m.kind == icmp::Kind::echo_reply) {
                if (t.echo[k] == EchoState::replied) continue;  // a duplicate
                t.echo[k] = EchoState::replied;
                ++t.result->received;
                double rtt = static_cast<double>(at - t.sent_at[k]) / 1e6;
                if (!t.result->rtt_ms || rtt < *t.result->rtt_ms) t.result->rtt_ms = rtt;
            } else {
                if (t.echo[k] != EchoState::pending) continue;
                t.echo[k] = EchoState::errored;
                if (!t.icmp_error) t.icmp_error = icmp::describe_error(m) + " from " + from.str();
            }
            // Decided once every echo is sent and each has been answered one way or another.
            if (t.next_seq > options_.count &&
                std::none_of(t.echo.begin(), t.echo.end(),
                             [](EchoState s) { return s == EchoState::pending; }))
                finalize(t);
            return;
        }
    }

    const ProbeSockets& sockets_;
    const ProbeOptions& options_;
    std::vector<ProbeResult> results_;
    std::vector<TargetState> states_;
    std::unordered_multimap<std::uint16_t, std::size_t> by_id_;
    std::vector<std::uint8_t> buf_ = std::vector<std::uint8_t>(65536);
};

}  // namespace

std::vector<ProbeResult> run_probes(const ProbeSockets& sockets,
                                    const std::vector<ProbeTarget>& targets,
                                    const ProbeOptions& options) {
    // Sequence numbers are 16 bits and start at 1; these are caller bugs, not probe outcomes.
    if (options.count < 1 || options.count > 65535)
        throw_usage("probe count must be between 1 and 65535");
    if (options.timeout_ms < 0) throw_usage("probe timeout must not be negative");
    if (options.interval_ms < 0) throw_usage("probe interval must not be negative");
    if (targets.empty()) return {};
    return Prober(sockets, targets, options).run();
}

}  // namespace nsegress
