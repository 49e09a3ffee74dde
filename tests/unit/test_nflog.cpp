// The deny log's pure parts: the packet header parser, the nfnetlink_log message parser, the
// bind request, and the loss counter. No socket, no kernel: messages are built here the way
// nfnetlink_log builds them (net/netfilter/nfnetlink_log.c), with libmnl.
#include <doctest/doctest.h>

#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netfilter.h>

#include <cstring>
#include <random>

#include "nsegress/nflog.hpp"

using namespace nsegress;
using nflog::PacketInfo;
using Bytes = std::vector<std::uint8_t>;

namespace {

void put16(Bytes& b, std::size_t off, std::uint16_t v) {
    b[off] = static_cast<std::uint8_t>(v >> 8);
    b[off + 1] = static_cast<std::uint8_t>(v);
}

void put_addr(Bytes& b, std::size_t off, const char* ip) {
    auto a = parse_ip(ip).bytes();
    std::memcpy(b.data() + off, a.data(), parse_ip(ip).size());
}

// An IPv4 header (no checksum: nobody checks it here) followed by `l4`.
Bytes ipv4(std::uint8_t proto, const char* src, const char* dst, const Bytes& l4,
           std::uint8_t ihl_words = 5, std::uint16_t frag = 0) {
    Bytes b(ihl_words * 4u, 0);
    b[0] = static_cast<std::uint8_t>(0x40 | ihl_words);
    put16(b, 2, static_cast<std::uint16_t>(b.size() + l4.size()));
    put16(b, 6, frag);
    b[8] = 64;
    b[9] = proto;
    put_addr(b, 12, src);
    put_addr(b, 16, dst);
    for (std::size_t i = 20; i < b.size(); ++i) b[i] = 1;  // IP options: NOPs
    b.insert(b.end(), l4.begin(), l4.end());
    return b;
}

// An IPv6 header; `ext` is the extension header chain (already linked), `first` its type.
Bytes ipv6(std::uint8_t first, const char* src, const char* dst, const Bytes& rest) {
    Bytes b(40, 0);
    b[0] = 0x60;
    put16(b, 4, static_cast<std::uint16_t>(rest.size()));
    b[6] = first;
    b[7] = 64;
    put_addr(b, 8, src);
    put_addr(b, 24, dst);
    b.insert(b.end(), rest.begin(), rest.end());
    return b;
}

Bytes ports(std::uint16_t sport, std::uint16_t dport, std::size_t total) {
    Bytes b(total, 0);
    put16(b, 0, sport);
    put16(b, 2, dport);
    return b;
}

Bytes icmp(std::uint8_t type, std::uint8_t code) {
    Bytes b(8, 0);
    b[0] = type;
    b[1] = code;
    return b;
}

PacketInfo parsed(const Bytes& b) {
    auto p = nflog::parse_ip_packet(b);
    REQUIRE(p);
    return *p;
}

// One NFULNL_MSG_PACKET, laid out like nfnetlink_log's __build_packet_message.
struct LogMsg {
    std::uint16_t group = 28275;
    std::uint8_t family = AF_INET;
    std::string prefix = "nsegress refused";
    std::optional<std::uint32_t> uid, gid, seq;
    Bytes payload;
};

void append_msg(Bytes& buf, const LogMsg& m) {
    std::size_t at = buf.size();
    buf.resize(at + 4096);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data() + at);
    nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
    auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    g->nfgen_family = m.family;
    g->version = NFNETLINK_V0;
    g->res_id = htons(m.group);
    nfulnl_msg_packet_hdr hdr{htons(m.family == AF_INET ? 0x0800 : 0x86dd), NF_INET_LOCAL_OUT, 0};
    mnl_attr_put(nlh, NFULA_PACKET_HDR, sizeof hdr, &hdr);
    mnl_attr_put_u32(nlh, NFULA_IFINDEX_OUTDEV, htonl(2));
    if (!m.prefix.empty()) mnl_attr_put_strz(nlh, NFULA_PREFIX, m.prefix.c_str());
    if (m.uid) mnl_attr_put_u32(nlh, NFULA_UID, htonl(*m.uid));
    if (m.gid) mnl_attr_put_u32(nlh, NFULA_GID, htonl(*m.gid));
    if (m.seq) mnl_attr_put_u32(nlh, NFULA_SEQ, htonl(*m.seq));
    mnl_attr_put(nlh, NFULA_PAYLOAD, m.payload.size(), m.payload.data());
    buf.resize(at + MNL_ALIGN(nlh->nlmsg_len));
}

std::vector<std::uint8_t> msgs(const std::vector<LogMsg>& list) {
    Bytes buf;
    for (const auto& m : list) append_msg(buf, m);
    return buf;
}

}  // namespace

TEST_CASE("IPv4: TCP, UDP and ICMP give the destination, port or type") {
    auto tcp = parsed(ipv4(IPPROTO_TCP, "172.31.0.2", "198.51.100.10", ports(40000, 8080, 20)));
    CHECK(tcp.family == Family::v4);
    CHECK(tcp.src.str() == "172.31.0.2");
    CHECK(tcp.dst.str() == "198.51.100.10");
    CHECK(tcp.protocol == IPPROTO_TCP);
    CHECK(tcp.sport == 40000);
    CHECK(tcp.dport == 8080);
    CHECK_FALSE(tcp.icmp_type);
    CHECK_FALSE(tcp.truncated);

    auto udp = parsed(ipv4(IPPROTO_UDP, "10.0.0.1", "10.0.0.2", ports(5353, 53, 8)));
    CHECK(udp.dport == 53);
    CHECK(nflog::protocol_name(udp.protocol) == "udp");

    auto echo = parsed(ipv4(IPPROTO_ICMP, "10.0.0.1", "10.0.0.2", icmp(8, 0)));
    CHECK(echo.icmp_type == 8);
    CHECK(echo.icmp_code == 0);
    CHECK_FALSE(echo.dport);
    CHECK(nflog::icmp_type_name(Family::v4, 8) == "echo-request");

    auto sctp = parsed(ipv4(IPPROTO_SCTP, "10.0.0.1", "10.0.0.2", ports(1, 3868, 12)));
    CHECK(sctp.dport == 3868);
    auto gre = parsed(ipv4(IPPROTO_GRE, "10.0.0.1", "10.0.0.2", Bytes(4, 0)));
    CHECK(nflog::protocol_name(gre.protocol) == "gre");
    CHECK_FALSE(gre.dport);
    CHECK(nflog::protocol_name(253) == "proto-253");
}

TEST_CASE("IPv4: options are skipped, later fragments have no ports") {
    auto opts = parsed(ipv4(IPPROTO_TCP, "10.0.0.1", "10.0.0.2", ports(1, 443, 20), 8));
    CHECK(opts.dport == 443);
    auto frag =
        parsed(ipv4(IPPROTO_UDP, "10.0.0.1", "10.0.0.2", ports(1, 53, 8), 5, 185));  // offset 185*8
    CHECK(frag.fragment);
    CHECK_FALSE(frag.dport);
    CHECK(frag.dst.str() == "10.0.0.2");
    auto first =
        parsed(ipv4(IPPROTO_UDP, "10.0.0.1", "10.0.0.2", ports(1, 53, 8), 5, 0x2000));  // MF only
    CHECK_FALSE(first.fragment);
    CHECK(first.dport == 53);
}

TEST_CASE("IPv6: TCP, UDP, ICMPv6, and extension headers walked to the transport header") {
    auto tcp = parsed(ipv6(IPPROTO_TCP, "fd00:31::2", "2001:db8:2::10", ports(40000, 8080, 20)));
    CHECK(tcp.family == Family::v6);
    CHECK(tcp.dst.str() == "2001:db8:2::10");
    CHECK(tcp.src.str() == "fd00:31::2");
    CHECK(tcp.dport == 8080);

    auto echo = parsed(ipv6(IPPROTO_ICMPV6, "fd00:31::2", "2001:db8:2::10", icmp(128, 0)));
    CHECK(echo.protocol == IPPROTO_ICMPV6);
    CHECK(echo.icmp_type == 128);
    CHECK(nflog::icmp_type_name(Family::v6, 128) == "echo-request");
    CHECK(nflog::protocol_name(echo.protocol) == "icmpv6");

    // hop-by-hop (8 bytes) -> destination options (16 bytes) -> fragment (first) -> UDP
    Bytes chain;
    Bytes hbh(8, 0);
    hbh[0] = IPPROTO_DSTOPTS;
    hbh[1] = 0;
    Bytes dst(16, 0);
    dst[0] = IPPROTO_FRAGMENT;
    dst[1] = 1;
    Bytes frag(8, 0);
    frag[0] = IPPROTO_UDP;
    put16(frag, 2, 0x0001);  // offset 0, more fragments
    for (auto* part : {&hbh, &dst, &frag}) chain.insert(chain.end(), part->begin(), part->end());
    Bytes udp = ports(1234, 53, 8);
    chain.insert(chain.end(), udp.begin(), udp.end());
    auto walked = parsed(ipv6(IPPROTO_HOPOPTS, "::1", "2001:db8::53", chain));
    CHECK(walked.protocol == IPPROTO_UDP);
    CHECK(walked.dport == 53);
    CHECK_FALSE(walked.fragment);

    Bytes later = frag;
    put16(later, 2, 0x0100);  // offset 32: no transport header in this one
    auto f = parsed(ipv6(IPPROTO_FRAGMENT, "::1", "2001:db8::53", later));
    CHECK(f.fragment);
    CHECK(f.protocol == IPPROTO_UDP);
    CHECK_FALSE(f.dport);

    auto esp = parsed(ipv6(IPPROTO_ESP, "::1", "2001:db8::1", Bytes(16, 0xaa)));
    CHECK(esp.protocol == IPPROTO_ESP);
    CHECK_FALSE(esp.dport);
}

TEST_CASE("truncated packets: every prefix parses safely, and says what it lacks") {
    std::vector<Bytes> packets{
        ipv4(IPPROTO_TCP, "10.0.0.1", "10.0.0.2", ports(1, 80, 20), 15),
        ipv4(IPPROTO_ICMP, "10.0.0.1", "10.0.0.2", icmp(8, 0)),
        ipv6(IPPROTO_TCP, "fd00::1", "fd00::2", ports(1, 80, 20)),
        ipv6(IPPROTO_HOPOPTS, "fd00::1", "fd00::2",
             [] {
                 Bytes b(8, 0);
                 b[0] = IPPROTO_UDP;
                 Bytes u = ports(7, 9, 8);
                 b.insert(b.end(), u.begin(), u.end());
                 return b;
             }()),
    };
    for (const auto& full : packets) {
        auto whole = parsed(full);
        for (std::size_t n = 0; n <= full.size(); ++n) {
            CAPTURE(n);
            Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
            auto p = nflog::parse_ip_packet(cut);
            std::size_t ip_len = whole.family == Family::v4 ? 20 : 40;
            if (n < ip_len) {
                CHECK_FALSE(p);
                continue;
            }
            REQUIRE(p);
            CHECK(p->dst == whole.dst);
            if (p->dport || p->icmp_type) {
                CHECK(p->dport == whole.dport);
                CHECK(p->icmp_type == whole.icmp_type);
                CHECK_FALSE(p->truncated);
            } else {
                CHECK(p->truncated);
            }
        }
        CHECK_FALSE(nflog::parse_ip_packet(std::span<const std::uint8_t>()));
    }
}

TEST_CASE("garbage: wrong versions, bad header lengths, random bytes never crash the parsers") {
    Bytes v5 = ipv4(IPPROTO_TCP, "10.0.0.1", "10.0.0.2", ports(1, 80, 20));
    v5[0] = 0x55;
    CHECK_FALSE(nflog::parse_ip_packet(v5));
    Bytes ihl = ipv4(IPPROTO_TCP, "10.0.0.1", "10.0.0.2", ports(1, 80, 20));
    ihl[0] = 0x44;  // IHL 4 < 5
    CHECK_FALSE(nflog::parse_ip_packet(ihl));
    Bytes huge = ipv4(IPPROTO_TCP, "10.0.0.1", "10.0.0.2", {});
    huge[0] = 0x4f;  // IHL 15: 60 bytes claimed, 20 present
    auto h = nflog::parse_ip_packet(huge);
    REQUIRE(h);
    CHECK(h->truncated);
    // An extension header claiming 2 KiB.
    Bytes ext(8, 0);
    ext[0] = IPPROTO_TCP;
    ext[1] = 255;
    auto e = nflog::parse_ip_packet(ipv6(IPPROTO_DSTOPTS, "::1", "::2", ext));
    REQUIRE(e);
    CHECK(e->truncated);
    // A loop of 100 hop-by-hop headers: bounded.
    Bytes loop;
    for (int i = 0; i < 100; ++i) loop.insert(loop.end(), {IPPROTO_HOPOPTS, 0, 0, 0, 0, 0, 0, 0});
    CHECK(nflog::parse_ip_packet(ipv6(IPPROTO_HOPOPTS, "::1", "::2", loop)));

    std::mt19937 rng(28275);
    for (int i = 0; i < 20000; ++i) {
        Bytes b(rng() % 200);
        for (auto& x : b) x = static_cast<std::uint8_t>(rng());
        if (!b.empty() && i % 2)
            b[0] = static_cast<std::uint8_t>((i % 4 == 1 ? 0x40 : 0x60) | (b[0] & 0x0f));
        (void)nflog::parse_ip_packet(b);
        (void)nflog::parse_buffer(b);
    }
}

TEST_CASE("log messages: the fields nfnetlink_log sends come back") {
    LogMsg m;
    m.uid = 1234;
    m.gid = 1235;
    m.seq = 7;
    m.payload = ipv4(IPPROTO_TCP, "172.31.0.2", "198.51.100.10", ports(40000, 8080, 20));
    LogMsg a = m;
    a.prefix = "nsegress audit";
    a.family = AF_INET6;
    a.uid.reset();
    a.gid.reset();
    a.seq = 8;
    a.payload = ipv6(IPPROTO_UDP, "fd00:31::2", "2001:db8:2::10", ports(1, 9999, 8));
    Bytes buf = msgs({m, a});
    // nfnetlink_log ends a multi-message skb with NLMSG_DONE.
    std::size_t at = buf.size();
    buf.resize(at + 64);
    nlmsghdr* done = mnl_nlmsg_put_header(buf.data() + at);
    done->nlmsg_type = NLMSG_DONE;
    buf.resize(at + done->nlmsg_len);

    auto items = nflog::parse_buffer(buf);
    REQUIRE(items.size() == 2);
    REQUIRE(items[0].kind == nflog::Item::packet);
    const auto& e = items[0].event;
    CHECK(e.group == 28275);
    CHECK(e.hook == NF_INET_LOCAL_OUT);
    CHECK(e.prefix == "nsegress refused");
    CHECK(nflog::mode_of_prefix(e.prefix) == nft::Mode::enforce);
    CHECK(e.uid == 1234u);
    CHECK(e.gid == 1235u);
    CHECK(e.seq == 7u);
    CHECK(e.outdev == 2u);
    REQUIRE(e.packet);
    CHECK(e.packet->dst.str() == "198.51.100.10");
    CHECK(e.packet->dport == 8080);
    const auto& f = items[1].event;
    CHECK(nflog::mode_of_prefix(f.prefix) == nft::Mode::audit);
    CHECK_FALSE(f.uid);
    REQUIRE(f.packet);
    CHECK(f.packet->dst.str() == "2001:db8:2::10");
    CHECK(f.packet->dport == 9999);
    CHECK_FALSE(nflog::mode_of_prefix("nsegress"));
    CHECK_FALSE(nflog::mode_of_prefix(""));
}

TEST_CASE("log messages: truncated and corrupted buffers are safe") {
    LogMsg m;
    m.seq = 1;
    m.uid = 0;
    m.payload = ipv4(IPPROTO_ICMP, "172.31.0.2", "198.51.100.10", icmp(8, 0));
    Bytes buf = msgs({m, m});
    for (std::size_t n = 0; n <= buf.size(); ++n) {
        CAPTURE(n);
        Bytes cut(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
        auto items = nflog::parse_buffer(cut);
        for (const auto& it : items)
            if (it.kind == nflog::Item::packet && it.event.packet)
                CHECK(it.event.packet->dst.str() == "198.51.100.10");
    }
    // A header claiming more than the buffer holds: one malformed item, nothing read past it.
    Bytes lie = buf;
    reinterpret_cast<nlmsghdr*>(lie.data())->nlmsg_len = 60000;
    auto items = nflog::parse_buffer(lie);
    REQUIRE(items.size() == 1);
    CHECK(items[0].kind == nflog::Item::malformed);
    // Attribute lengths corrupted at every position: never a crash, at most a skipped field.
    std::mt19937 rng(7);
    for (int i = 0; i < 5000; ++i) {
        Bytes c = buf;
        for (int k = 0; k < 3; ++k) c[rng() % c.size()] = static_cast<std::uint8_t>(rng());
        (void)nflog::parse_buffer(c);
    }
    // An unaligned view (a fuzzer's slice) parses like the aligned one.
    Bytes shifted(buf.size() + 1);
    std::memcpy(shifted.data() + 1, buf.data(), buf.size());
    auto again = nflog::parse_buffer(std::span<const std::uint8_t>(shifted.data() + 1, buf.size()));
    REQUIRE(again.size() == 2);
    CHECK(again[1].event.seq == 1u);
}

TEST_CASE("ACKs and errors of config requests are told apart") {
    Bytes buf(256);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = NLMSG_ERROR;
    nlh->nlmsg_seq = 42;
    auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    err->error = -EBUSY;
    buf.resize(nlh->nlmsg_len);
    auto items = nflog::parse_buffer(buf);
    REQUIRE(items.size() == 1);
    CHECK(items[0].kind == nflog::Item::error);
    CHECK(items[0].error_code == EBUSY);
    CHECK(items[0].seq == 42u);
    err->error = 0;
    CHECK(nflog::parse_buffer(buf)[0].kind == nflog::Item::ack);
}

TEST_CASE("the bind request: group, copy mode and range, queue threshold, sequence numbers") {
    auto req = nflog::build_bind_request(28275, 9);
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(req.data());
    REQUIRE(mnl_nlmsg_ok(nlh, static_cast<int>(req.size())));
    CHECK(nlh->nlmsg_len == req.size());
    CHECK(nlh->nlmsg_type == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG));
    CHECK(nlh->nlmsg_flags == (NLM_F_REQUEST | NLM_F_ACK));
    CHECK(nlh->nlmsg_seq == 9u);
    const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
    CHECK(ntohs(g->res_id) == 28275);
    CHECK(g->version == NFNETLINK_V0);
    const nlattr* tb[NFULA_CFG_MAX + 1] = {};
    auto cb = [](const nlattr* a, void* data) -> int {
        auto** t = static_cast<const nlattr**>(data);
        if (mnl_attr_get_type(a) <= NFULA_CFG_MAX) t[mnl_attr_get_type(a)] = a;
        return MNL_CB_OK;
    };
    REQUIRE(mnl_attr_parse(nlh, sizeof(nfgenmsg), cb, tb) == MNL_CB_OK);
    REQUIRE(tb[NFULA_CFG_CMD]);
    CHECK(static_cast<const nfulnl_msg_config_cmd*>(mnl_attr_get_payload(tb[NFULA_CFG_CMD]))
              ->command == NFULNL_CFG_CMD_BIND);
    REQUIRE(tb[NFULA_CFG_MODE]);
    REQUIRE(mnl_attr_get_payload_len(tb[NFULA_CFG_MODE]) == sizeof(nfulnl_msg_config_mode));
    nfulnl_msg_config_mode mode;
    std::memcpy(&mode, mnl_attr_get_payload(tb[NFULA_CFG_MODE]), sizeof mode);
    CHECK(mode.copy_mode == NFULNL_COPY_PACKET);
    CHECK(ntohl(mode.copy_range) == nflog::kCopyRange);
    REQUIRE(tb[NFULA_CFG_QTHRESH]);
    CHECK(ntohl(mnl_attr_get_u32(tb[NFULA_CFG_QTHRESH])) == 1u);
    REQUIRE(tb[NFULA_CFG_FLAGS]);
    CHECK(ntohs(mnl_attr_get_u16(tb[NFULA_CFG_FLAGS])) == NFULNL_CFG_F_SEQ);
}

TEST_CASE("loss counter: gaps in the per-group sequence are what was lost") {
    nflog::LossCounter c;
    CHECK(c.observe(0) == 0);
    CHECK(c.observe(1) == 0);
    CHECK(c.observe(5) == 3);  // 2, 3, 4
    CHECK(c.observe(6) == 0);
    CHECK(c.lost() == 3);
    CHECK(c.observe(6) == 0);  // a repeat is not a loss
    CHECK(c.observe(3) == 0);  // nor is going back
    CHECK(c.lost() == 3);

    nflog::LossCounter late;  // the first message already has seq 10: ten were lost before it
    CHECK(late.observe(10) == 10);
    nflog::LossCounter wrap;
    wrap.observe(0);
    CHECK(wrap.observe(0xfffffffeu) == 0);  // "more than 2^31 ahead" is a step back, not a loss
    CHECK(wrap.observe(0xffffffffu) == 0);
    CHECK(wrap.observe(1) == 1);  // the counter wrapped; 0 was lost
    CHECK(wrap.lost() == 1);
}
