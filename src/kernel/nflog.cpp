#include "nsegress/nflog.hpp"

// glibc first: it tells the uapi headers below not to redefine in_addr and friends.
#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "nsegress/error.hpp"
#include "nsegress/nfnl.hpp"

namespace nsegress::nflog {

namespace {

std::uint16_t be16_at(std::span<const std::uint8_t> d, std::size_t off) {
    return static_cast<std::uint16_t>((d[off] << 8) | d[off + 1]);
}

// Transport protocols whose first four bytes are the source and destination ports.
bool has_ports(std::uint8_t proto) {
    return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
           proto == IPPROTO_SCTP || proto == IPPROTO_DCCP;
}

void parse_transport(std::span<const std::uint8_t> d, std::size_t off, PacketInfo& p) {
    bool icmp = (p.family == Family::v4 && p.protocol == IPPROTO_ICMP) ||
                (p.family == Family::v6 && p.protocol == IPPROTO_ICMPV6);
    if (has_ports(p.protocol)) {
        if (off + 4 > d.size()) {
            p.truncated = true;
            return;
        }
        p.sport = be16_at(d, off);
        p.dport = be16_at(d, off + 2);
    } else if (icmp) {
        if (off + 2 > d.size()) {
            p.truncated = true;
            return;
        }
        p.icmp_type = d[off];
        p.icmp_code = d[off + 1];
    }
}

std::optional<PacketInfo> parse_v4(std::span<const std::uint8_t> d) {
    if (d.size() < 20) return std::nullopt;
    std::size_t ihl = static_cast<std::size_t>(d[0] & 0x0f) * 4;
    if (ihl < 20) return std::nullopt;
    PacketInfo p;
    p.family = Family::v4;
    p.protocol = d[9];
    p.src = IpAddr::from_bytes(Family::v4, d.data() + 12);
    p.dst = IpAddr::from_bytes(Family::v4, d.data() + 16);
    if ((be16_at(d, 6) & 0x1fff) != 0) {  // fragment offset: only the first has the ports
        p.fragment = true;
        return p;
    }
    if (ihl > d.size()) {  // the copy ends inside the options
        p.truncated = true;
        return p;
    }
    parse_transport(d, ihl, p);
    return p;
}

std::optional<PacketInfo> parse_v6(std::span<const std::uint8_t> d) {
    if (d.size() < 40) return std::nullopt;
    PacketInfo p;
    p.family = Family::v6;
    p.src = IpAddr::from_bytes(Family::v6, d.data() + 8);
    p.dst = IpAddr::from_bytes(Family::v6, d.data() + 24);
    std::uint8_t next = d[6];
    std::size_t off = 40;
    // Extension headers. Bounded: a chain longer than this is not something a socket sends.
    for (int hops = 0; hops < 16; ++hops) {
        if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
            next == IPPROTO_AH) {
            if (off + 2 > d.size()) {
                p.protocol = next;
                p.truncated = true;
                return p;
            }
            std::size_t len = next == IPPROTO_AH ? (static_cast<std::size_t>(d[off + 1]) + 2) * 4
                                                 : (static_cast<std::size_t>(d[off + 1]) + 1) * 8;
            next = d[off];
            off += len;
            continue;
        }
        if (next == IPPROTO_FRAGMENT) {
            if (off + 8 > d.size()) {
                p.protocol = next;
                p.truncated = true;
                return p;
            }
            std::uint8_t inner = d[off];
            bool later =
                (be16_at(d, off + 2) & 0xfff8) != 0;  // offset in 8-byte units, top 13 bits
            next = inner;
            off += 8;
            if (later) {
                p.protocol = next;
                p.fragment = true;
                return p;
            }
            continue;
        }
        break;
    }
    p.protocol = next;
    if (off > d.size()) {
        p.truncated = true;
        return p;
    }
    parse_transport(d, off, p);
    return p;
}

// Validates an attribute's payload length before anyone reads it.
bool payload_at_least(const nlattr* a, std::size_t n) { return mnl_attr_get_payload_len(a) >= n; }

std::optional<std::uint32_t> be32_attr(const nlattr* a) {
    if (mnl_attr_get_payload_len(a) != 4) return std::nullopt;
    std::uint32_t v;
    std::memcpy(&v, mnl_attr_get_payload(a), 4);
    return ntohl(v);
}

Item parse_packet_message(const nlmsghdr* nlh) {
    Item item;
    item.kind = Item::packet;
    LogEvent& ev = item.event;
    if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg))) {
        item.kind = Item::malformed;
        return item;
    }
    const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
    ev.group = ntohs(g->res_id);
    // Walked by hand with libmnl's bounds checks (mnl_attr_ok), not mnl_attr_parse: an
    // attribute we do not know, or of a wrong length, is skipped rather than fatal.
    const auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
    // The message's own bytes end at nlmsg_len; libmnl's payload tail is nlmsg_len aligned up,
    // up to 3 bytes past a last message that is not padded (the fuzzer found the overread).
    int left = static_cast<int>(reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len -
                                reinterpret_cast<const char*>(a));
    for (; mnl_attr_ok(a, left); a = mnl_attr_next(a)) {
        left -= static_cast<int>(MNL_ALIGN(a->nla_len));
        switch (mnl_attr_get_type(a)) {
            case NFULA_PACKET_HDR:
                if (payload_at_least(a, sizeof(nfulnl_msg_packet_hdr)))
                    ev.hook =
                        static_cast<const nfulnl_msg_packet_hdr*>(mnl_attr_get_payload(a))->hook;
                break;
            case NFULA_PREFIX: {
                const char* s = static_cast<const char*>(mnl_attr_get_payload(a));
                ev.prefix.assign(s, strnlen(s, mnl_attr_get_payload_len(a)));
                break;
            }
            case NFULA_UID:
                ev.uid = be32_attr(a);
                break;
            case NFULA_GID:
                ev.gid = be32_attr(a);
                break;
            case NFULA_SEQ:
                ev.seq = be32_attr(a);
                break;
            case NFULA_IFINDEX_OUTDEV:
                ev.outdev = be32_attr(a);
                break;
            case NFULA_PAYLOAD: {
                std::span<const std::uint8_t> bytes(
                    static_cast<const std::uint8_t*>(mnl_attr_get_payload(a)),
                    mnl_attr_get_payload_len(a));
                ev.payload_len = bytes.size();
                ev.packet = parse_ip_packet(bytes);
                break;
            }
            default:
                break;
        }
    }
    return item;
}

}  // namespace

std::optional<PacketInfo> parse_ip_packet(std::span<const std::uint8_t> data) {
    if (data.empty()) return std::nullopt;
    switch (data[0] >> 4) {
        case 4:
            return parse_v4(data);
        case 6:
            return parse_v6(data);
        default:
            return std::nullopt;
    }
}

std::string protocol_name(std::uint8_t protocol) {
    switch (protocol) {
        case IPPROTO_ICMP:
            return "icmp";
        case IPPROTO_IGMP:
            return "igmp";
        case IPPROTO_TCP:
            return "tcp";
        case IPPROTO_UDP:
            return "udp";
        case IPPROTO_DCCP:
            return "dccp";
        case IPPROTO_IPV6:
            return "ipv6";
        case IPPROTO_GRE:
            return "gre";
        case IPPROTO_ESP:
            return "esp";
        case IPPROTO_AH:
            return "ah";
        case IPPROTO_ICMPV6:
            return "icmpv6";
        case IPPROTO_SCTP:
            return "sctp";
        case IPPROTO_UDPLITE:
            return "udplite";
        default:
            return fmt::format("proto-{}", protocol);
    }
}

std::string icmp_type_name(Family f, std::uint8_t type) {
    // nft's names, so that what watch prints can be typed into an nft rule.
    if (f == Family::v4) {
        switch (type) {
            case 0:
                return "echo-reply";
            case 3:
                return "destination-unreachable";
            case 5:
                return "redirect";
            case 8:
                return "echo-request";
            case 11:
                return "time-exceeded";
            case 12:
                return "parameter-problem";
            case 13:
                return "timestamp-request";
            case 14:
                return "timestamp-reply";
            default:
                break;
        }
    } else {
        switch (type) {
            case 1:
                return "destination-unreachable";
            case 2:
                return "packet-too-big";
            case 3:
                return "time-exceeded";
            case 4:
                return "parameter-problem";
            case 128:
                return "echo-request";
            case 129:
                return "echo-reply";
            case 130:
                return "mld-listener-query";
            case 131:
                return "mld-listener-report";
            case 133:
                return "nd-router-solicit";
            case 134:
                return "nd-router-advert";
            case 135:
                return "nd-neighbor-solicit";
            case 136:
                return "nd-neighbor-advert";
            case 137:
                return "nd-redirect";
            case 143:
                return "mld2-listener-report";
            default:
                break;
        }
    }
    return fmt::format("type-{}", type);
}

std::optional<nft::Mode> mode_of_prefix(const std::string& prefix) {
    if (prefix == nft::kLogPrefixEnforce) return nft::Mode::enforce;
    if (prefix == nft::kLogPrefixAudit) return nft::Mode::audit;
    return std::nullopt;
}

std::vector<Item> parse_buffer(std::span<const std::uint8_t> buffer) {
    std::vector<Item> out;
    // Netlink headers are read in place, which needs 4-byte alignment: a receive buffer from
    // the allocator has it; anything else (a fuzzer's slice) is copied first.
    std::vector<std::uint32_t> aligned;
    const void* base = buffer.data();
    if (reinterpret_cast<std::uintptr_t>(base) % alignof(nlmsghdr) != 0) {
        aligned.resize((buffer.size() + 3) / 4);
        if (!buffer.empty()) std::memcpy(aligned.data(), buffer.data(), buffer.size());
        base = aligned.data();
    }
    const auto* nlh = static_cast<const nlmsghdr*>(base);
    int left = static_cast<int>(std::min<std::size_t>(buffer.size(), 1u << 30));
    // A header and the length it states must fit in what is left. mnl_nlmsg_ok alone is not
    // enough for hostile input: it compares the length as an int, so one of 2^31 or more
    // passes and then wraps `left` in mnl_nlmsg_next (found by the garbage test).
    while (left > 0) {
        if (!mnl_nlmsg_ok(nlh, left) || nlh->nlmsg_len > static_cast<std::uint32_t>(left)) {
            Item bad;
            bad.kind = Item::malformed;
            out.push_back(bad);
            break;
        }
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            Item it;
            it.seq = nlh->nlmsg_seq;
            if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(int)) {
                it.kind = Item::malformed;
            } else {
                int err;
                std::memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof err);
                it.kind = err == 0 ? Item::ack : Item::error;
                // Negated errno from the kernel; INT_MIN (never an errno) has no negation.
                it.error_code = err == std::numeric_limits<int>::min()
                                    ? std::numeric_limits<int>::max()
                                    : (err < 0 ? -err : err);
            }
            out.push_back(it);
        } else if (nlh->nlmsg_type == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)) {
            out.push_back(parse_packet_message(nlh));
        } else if (nlh->nlmsg_type != NLMSG_DONE && nlh->nlmsg_type != NLMSG_NOOP) {
            out.push_back(Item{});  // other
        }
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    return out;
}

std::vector<std::uint8_t> build_bind_request(std::uint16_t group, std::uint32_t netlink_seq) {
    std::vector<std::uint8_t> buf(512);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = netlink_seq;
    auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    g->nfgen_family = AF_UNSPEC;  // the group serves every family the rule logs
    g->version = NFNETLINK_V0;
    g->res_id = htons(group);
    nfulnl_msg_config_cmd cmd{NFULNL_CFG_CMD_BIND};
    mnl_attr_put(nlh, NFULA_CFG_CMD, sizeof cmd, &cmd);
    nfulnl_msg_config_mode mode{};
    mode.copy_range = htonl(kCopyRange);
    mode.copy_mode = NFULNL_COPY_PACKET;
    mnl_attr_put(nlh, NFULA_CFG_MODE, sizeof mode, &mode);
    mnl_attr_put_u32(nlh, NFULA_CFG_QTHRESH, htonl(1));
    mnl_attr_put_u16(nlh, NFULA_CFG_FLAGS, htons(NFULNL_CFG_F_SEQ));
    buf.resize(nlh->nlmsg_len);
    return buf;
}

std::uint64_t LossCounter::observe(std::uint32_t seq) {
    // A fresh instance starts at 0, so a first message with seq 5 means 5 were lost before it.
    std::uint32_t expected = next_.value_or(0);
    next_ = seq + 1;
    std::uint32_t gap = seq - expected;           // modulo 2^32: the counter wraps
    if (gap == 0 || gap > 0x7fffffffu) return 0;  // in order, or a repeat/reordering: no loss
    lost_ += gap;
    return gap;
}

Socket Socket::open() {
    Socket s;
    // Non-blocking: the log is a stream of events read as they come (watch polls the fd).
    s.sock_ = nfnl::open(SOCK_NONBLOCK);
    return s;
}

int Socket::fd() const { return mnl_socket_get_fd(sock_.get()); }

void Socket::set_receive_buffer(int bytes) {
    // FORCE needs CAP_NET_ADMIN (which watch has) and goes past net.core.rmem_max.
    if (setsockopt(fd(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0 &&
        setsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) != 0)
        throw_errno(fmt::format("set the receive buffer of the nflog socket to {} bytes", bytes),
                    errno);
}

void Socket::bind_group(std::uint16_t group, const std::string& where) {
    const std::uint32_t seq = nfnl::next_seq();
    auto req = build_bind_request(group, seq);
    std::string what = fmt::format("bind nflog group {} in {}", group, where);
    if (mnl_socket_sendto(sock_.get(), req.data(), req.size()) < 0) throw_errno(what, errno);
    // The ACK is queued inside sendmsg(); wait a little anyway in case the kernel is busy.
    std::vector<std::uint8_t> buf(1 << 16);
    for (int tries = 0; tries < 50; ++tries) {
        ssize_t n = ::recv(fd(), buf.data(), buf.size(), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                pollfd p{fd(), POLLIN, 0};
                ::poll(&p, 1, 100);
                continue;
            }
            throw_errno(what + ": receive the answer", errno);
        }
        std::span<const std::uint8_t> got(buf.data(), static_cast<std::size_t>(n));
        bool answered = false;
        for (const auto& it : parse_buffer(got)) {
            if ((it.kind == Item::ack || it.kind == Item::error) && it.seq == seq) {
                answered = true;
                if (it.kind == Item::error) {
                    if (it.error_code == EBUSY || it.error_code == EPERM)
                        throw Error(
                            Exit::failed,
                            fmt::format("{}: the group is already bound by another listener in "
                                        "that namespace (another nsegress watch?)",
                                        what),
                            it.error_code);
                    throw_errno(what, it.error_code);
                }
            }
        }
        if (!answered)
            pending_.emplace_back(got.begin(), got.end());  // a packet already
        else
            return;
    }
    throw_failed(what + ": the kernel did not answer");
}

std::vector<std::uint8_t> Socket::receive(bool& overrun) {
    overrun = false;
    if (!pending_.empty()) {
        auto out = std::move(pending_.front());
        pending_.erase(pending_.begin());
        return out;
    }
    std::vector<std::uint8_t> buf(1 << 16);
    while (true) {
        ssize_t n = ::recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT);
        if (n >= 0) {
            buf.resize(static_cast<std::size_t>(n));
            return buf;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return {};
        if (errno == ENOBUFS) {  // the kernel dropped messages: say so, the socket is fine
            overrun = true;
            return {};
        }
        throw_errno("receive from the nflog socket", errno);
    }
}

}  // namespace nsegress::nflog
