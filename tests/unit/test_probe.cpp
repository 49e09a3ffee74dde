// Unit tests for the pure half of the probe: ICMP/ICMPv6 building, parsing and matching, and
// the result vocabulary. No sockets, no root.
#include <doctest/doctest.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/icmp.hpp"
#include "nsegress/probe.hpp"

using nsegress::Expect;
using nsegress::Family;
using nsegress::IpAddr;
using nsegress::Outcome;
using nsegress::ProbeResult;
namespace icmp = nsegress::icmp;

namespace {

using Bytes = std::vector<std::uint8_t>;

IpAddr ip(const char* s) {
    auto a = IpAddr::parse(s);
    if (!a) throw std::invalid_argument(s);
    return *a;
}

void put16(Bytes& b, std::size_t at, std::uint16_t v) {
    b[at] = static_cast<std::uint8_t>(v >> 8);
    b[at + 1] = static_cast<std::uint8_t>(v & 0xff);
}

std::uint16_t get16(const Bytes& b, std::size_t at) {
    return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

void append(Bytes& to, const Bytes& from) { to.insert(to.end(), from.begin(), from.end()); }

// A minimal IPv4 header (20 bytes, no options) carrying ICMP.
Bytes ipv4_header(const char* src, const char* dst, std::size_t payload_len) {
    Bytes h(20, 0);
    h[0] = 0x45;
    put16(h, 2, static_cast<std::uint16_t>(20 + payload_len));
    h[8] = 64;  // TTL
    h[9] = 1;   // ICMP
    auto s = ip(src).bytes();
    auto d = ip(dst).bytes();
    std::copy(s.begin(), s.begin() + 4, h.begin() + 12);
    std::copy(d.begin(), d.begin() + 4, h.begin() + 16);
    put16(h, 10, icmp::checksum(h));
    return h;
}

// A minimal IPv6 header (40 bytes) with the given next header.
Bytes ipv6_header(const char* src, const char* dst, std::size_t payload_len,
                  std::uint8_t next = 58) {
    Bytes h(40, 0);
    h[0] = 0x60;
    put16(h, 4, static_cast<std::uint16_t>(payload_len));
    h[6] = next;
    h[7] = 64;
    auto s = ip(src).bytes();
    auto d = ip(dst).bytes();
    std::copy(s.begin(), s.end(), h.begin() + 8);
    std::copy(d.begin(), d.end(), h.begin() + 24);
    return h;
}

// An ICMP message of `type`/`code` with 4 bytes of `rest` and a body; v4 checksum filled in.
Bytes icmp_message(Family f, std::uint8_t type, std::uint8_t code, std::uint32_t rest,
                   const Bytes& body) {
    Bytes m(8, 0);
    m[0] = type;
    m[1] = code;
    put16(m, 4, static_cast<std::uint16_t>(rest >> 16));
    put16(m, 6, static_cast<std::uint16_t>(rest & 0xffff));
    append(m, body);
    if (f == Family::v4) put16(m, 2, icmp::checksum(m));
    return m;
}

// The datagram a v4 raw socket returns for an echo reply from `src`.
Bytes v4_echo_reply(const char* src, const char* dst, std::uint16_t id, std::uint16_t seq) {
    Bytes m = icmp_message(Family::v4, icmp::v4_echo_reply, 0, (std::uint32_t{id} << 16) | seq,
                           Bytes{1, 2, 3, 4});
    Bytes p = ipv4_header(src, dst, m.size());
    append(p, m);
    return p;
}

// The datagram a v4 raw socket returns for an ICMP error sent by `router` to `me`, quoting our
// echo request (id/seq) to `target` -- as the kernel quotes it: IP header + first 8 bytes.
Bytes v4_error(const char* router, const char* me, const char* target, std::uint8_t type,
               std::uint8_t code, std::uint16_t id, std::uint16_t seq) {
    Bytes echo = icmp::build_echo_request(Family::v4, id, seq, Bytes(16, 0xab));
    Bytes quoted = ipv4_header(me, target, echo.size());
    quoted.insert(quoted.end(), echo.begin(), echo.begin() + 8);
    Bytes m = icmp_message(Family::v4, type, code, 0, quoted);
    Bytes p = ipv4_header(router, me, m.size());
    append(p, m);
    return p;
}

// The ICMPv6 message a v6 raw socket returns for an error quoting our echo to `target`.
Bytes v6_error(const char* me, const char* target, std::uint8_t type, std::uint8_t code,
               std::uint32_t rest, std::uint16_t id, std::uint16_t seq) {
    Bytes echo = icmp::build_echo_request(Family::v6, id, seq, Bytes(16, 0xcd));
    Bytes quoted = ipv6_header(me, target, echo.size());
    append(quoted, echo);
    return icmp_message(Family::v6, type, code, rest, quoted);
}

}  // namespace

TEST_CASE("the Internet checksum") {
    // RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2, so the checksum is 220d.
    Bytes rfc{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    CHECK(icmp::checksum(rfc) == 0x220d);
    // An odd length is padded with a zero byte.
    CHECK(icmp::checksum(Bytes{0x01}) == static_cast<std::uint16_t>(~0x0100));
    CHECK(icmp::checksum(Bytes{}) == 0xffff);
}

TEST_CASE("building an IPv4 echo request") {
    Bytes payload{'h', 'e', 'l', 'l', 'o'};
    Bytes m = icmp::build_echo_request(Family::v4, 0xbeef, 7, payload);
    REQUIRE(m.size() == 8 + payload.size());
    CHECK(m[0] == 8);
    CHECK(m[1] == 0);
    CHECK(get16(m, 4) == 0xbeef);
    CHECK(get16(m, 6) == 7);
    CHECK(Bytes(m.begin() + 8, m.end()) == payload);
    CHECK(get16(m, 2) != 0);
    // Correct checksum: summing the whole message, checksum field included, gives zero.
    CHECK(icmp::checksum(m) == 0);

    // Known bytes: type 8, id 1, seq 1, no payload -> 0x0800 + 0x0001 + 0x0001 = 0x0802.
    Bytes known = icmp::build_echo_request(Family::v4, 1, 1, {});
    CHECK(get16(known, 2) == static_cast<std::uint16_t>(~0x0802));
}

TEST_CASE("building an IPv6 echo request leaves the checksum to the kernel") {
    Bytes m = icmp::build_echo_request(Family::v6, 0x1234, 0xffff, Bytes(16, 0x5a));
    REQUIRE(m.size() == 24);
    CHECK(m[0] == 128);
    CHECK(m[1] == 0);
    CHECK(get16(m, 2) == 0);
    CHECK(get16(m, 4) == 0x1234);
    CHECK(get16(m, 6) == 0xffff);
}

TEST_CASE("parsing an IPv4 echo reply") {
    Bytes p = v4_echo_reply("10.99.0.2", "10.99.0.1", 0x4242, 3);
    auto m = icmp::parse_ipv4(p);
    REQUIRE(m);
    CHECK(m->kind == icmp::Kind::echo_reply);
    CHECK(m->family == Family::v4);
    CHECK(m->id == 0x4242);
    CHECK(m->seq == 3);
    CHECK_FALSE(m->quoted_dst);
    CHECK(icmp::parse(Family::v4, p));

    SUBCASE("matches only the target, with our identifier") {
        CHECK(icmp::concerns(*m, ip("10.99.0.2"), ip("10.99.0.2"), 0x4242));
        CHECK_FALSE(icmp::concerns(*m, ip("10.99.0.2"), ip("10.99.0.2"), 0x4243));
        // Same identifier but from another host: someone else's reply.
        CHECK_FALSE(icmp::concerns(*m, ip("10.99.0.3"), ip("10.99.0.2"), 0x4242));
        CHECK_FALSE(icmp::concerns(*m, ip("10.99.0.2"), ip("10.99.0.3"), 0x4242));
        CHECK_FALSE(icmp::concerns(*m, ip("fd00::2"), ip("fd00::2"), 0x4242));
    }
    SUBCASE("a corrupted checksum is dropped") {
        p.back() ^= 0xff;
        CHECK_FALSE(icmp::parse_ipv4(p));
    }
    SUBCASE("truncated packets are dropped") {
        CHECK_FALSE(icmp::parse_ipv4(Bytes(p.begin(), p.begin() + 20)));
        CHECK_FALSE(icmp::parse_ipv4(Bytes(p.begin(), p.begin() + 10)));
        CHECK_FALSE(icmp::parse_ipv4(Bytes{}));
    }
    SUBCASE("not IPv4 or not ICMP") {
        Bytes q = p;
        q[9] = 17;  // UDP
        CHECK_FALSE(icmp::parse_ipv4(q));
        q = p;
        q[0] = 0x65;
        CHECK_FALSE(icmp::parse_ipv4(q));
    }
}

TEST_CASE("an IPv4 header with options is skipped by its IHL") {
    Bytes m = icmp_message(Family::v4, icmp::v4_echo_reply, 0, (7u << 16) | 9u, {});
    Bytes h = ipv4_header("10.99.0.2", "10.99.0.1", m.size());
    h[0] = 0x46;                             // 24-byte header
    h.insert(h.begin() + 20, {1, 1, 1, 0});  // NOP NOP NOP EOL
    put16(h, 2, static_cast<std::uint16_t>(24 + m.size()));
    append(h, m);
    auto r = icmp::parse_ipv4(h);
    REQUIRE(r);
    CHECK(r->id == 7);
    CHECK(r->seq == 9);
}

TEST_CASE("echo requests and other ICMP types are not answers") {
    Bytes echo = icmp::build_echo_request(Family::v4, 5, 1, Bytes{1, 2});
    Bytes p = ipv4_header("10.99.0.1", "10.99.0.2", echo.size());
    append(p, echo);
    CHECK_FALSE(icmp::parse_ipv4(p));  // our own request, looped back to a local target

    Bytes redirect = icmp_message(Family::v4, 5, 1, 0, Bytes(28, 0));
    Bytes q = ipv4_header("10.99.0.254", "10.99.0.1", redirect.size());
    append(q, redirect);
    CHECK_FALSE(icmp::parse_ipv4(q));

    CHECK_FALSE(icmp::parse_icmpv6(icmp::build_echo_request(Family::v6, 5, 1, {})));
    CHECK_FALSE(icmp::parse_icmpv6(icmp_message(Family::v6, 135, 0, 0, Bytes(16, 0))));  // NS
}

TEST_CASE("parsing an IPv4 destination unreachable quoting our echo") {
    Bytes p = v4_error("172.31.0.1", "10.99.0.1", "198.51.100.7", 3, 13, 0x1111, 2);
    auto m = icmp::parse_ipv4(p);
    REQUIRE(m);
    CHECK(m->kind == icmp::Kind::error);
    CHECK(m->type == 3);
    CHECK(m->code == 13);
    CHECK(m->id == 0x1111);
    CHECK(m->seq == 2);
    REQUIRE(m->quoted_dst);
    CHECK(*m->quoted_dst == ip("198.51.100.7"));
    CHECK(icmp::describe_error(*m) == "destination unreachable (code 13, admin prohibited)");

    // An error comes from a router, not from the target: it matches on the quoted destination.
    CHECK(icmp::concerns(*m, ip("172.31.0.1"), ip("198.51.100.7"), 0x1111));
    // Someone else's echo (other identifier) or an echo to another destination.
    CHECK_FALSE(icmp::concerns(*m, ip("172.31.0.1"), ip("198.51.100.7"), 0x1112));
    CHECK_FALSE(icmp::concerns(*m, ip("172.31.0.1"), ip("198.51.100.8"), 0x1111));
    CHECK_FALSE(icmp::concerns(*m, ip("172.31.0.1"), ip("172.31.0.1"), 0x1111));
}

TEST_CASE("IPv4 errors that do not quote an echo request are ignored") {
    SUBCASE("quoting a UDP datagram") {
        Bytes quoted = ipv4_header("10.99.0.1", "198.51.100.7", 8);
        quoted[9] = 17;
        quoted.resize(28, 0);
        Bytes m = icmp_message(Family::v4, 3, 3, 0, quoted);
        Bytes p = ipv4_header("198.51.100.7", "10.99.0.1", m.size());
        append(p, m);
        CHECK_FALSE(icmp::parse_ipv4(p));
    }
    SUBCASE("quoting an echo reply (someone answering our host, not our probe)") {
        Bytes reply = icmp_message(Family::v4, 0, 0, 0x00010001, {});
        Bytes quoted = ipv4_header("10.99.0.1", "198.51.100.7", reply.size());
        append(quoted, reply);
        Bytes m = icmp_message(Family::v4, 3, 1, 0, quoted);
        Bytes p = ipv4_header("172.31.0.1", "10.99.0.1", m.size());
        append(p, m);
        CHECK_FALSE(icmp::parse_ipv4(p));
    }
    SUBCASE("quote shorter than IP header + 8 bytes") {
        Bytes p = v4_error("172.31.0.1", "10.99.0.1", "198.51.100.7", 3, 1, 1, 1);
        // Cut the quoted echo header to 4 bytes; fix lengths and checksum to keep it valid.
        p.resize(p.size() - 4);
        put16(p, 2, static_cast<std::uint16_t>(p.size()));
        Bytes msg(p.begin() + 20, p.end());
        put16(msg, 2, 0);
        put16(msg, 2, icmp::checksum(msg));
        std::copy(msg.begin(), msg.end(), p.begin() + 20);
        CHECK_FALSE(icmp::parse_ipv4(p));
    }
    SUBCASE("quoting a non-first fragment") {
        Bytes p = v4_error("172.31.0.1", "10.99.0.1", "198.51.100.7", 3, 1, 1, 1);
        Bytes msg(p.begin() + 20, p.end());
        put16(msg, 8 + 6, 0x0010);  // quoted fragment offset 16*8
        put16(msg, 2, 0);
        put16(msg, 2, icmp::checksum(msg));
        std::copy(msg.begin(), msg.end(), p.begin() + 20);
        CHECK_FALSE(icmp::parse_ipv4(p));
    }
}

TEST_CASE("other IPv4 error types") {
    auto te = icmp::parse_ipv4(v4_error("10.0.0.254", "10.99.0.1", "198.51.100.7", 11, 0, 9, 1));
    REQUIRE(te);
    CHECK(te->kind == icmp::Kind::error);
    CHECK(icmp::describe_error(*te) == "time exceeded (code 0, ttl exceeded in transit)");

    auto pp = icmp::parse_ipv4(v4_error("10.0.0.254", "10.99.0.1", "198.51.100.7", 12, 0, 9, 1));
    REQUIRE(pp);
    CHECK(icmp::describe_error(*pp) == "parameter problem (code 0, pointer indicates the error)");

    auto hu = icmp::parse_ipv4(v4_error("10.99.0.1", "10.99.0.1", "10.99.0.9", 3, 1, 9, 1));
    REQUIRE(hu);
    CHECK(icmp::describe_error(*hu) == "destination unreachable (code 1, host unreachable)");

    auto odd = icmp::parse_ipv4(v4_error("10.0.0.254", "10.99.0.1", "198.51.100.7", 3, 99, 9, 1));
    REQUIRE(odd);
    CHECK(icmp::describe_error(*odd) == "destination unreachable (code 99)");
}

TEST_CASE("parsing an ICMPv6 echo reply") {
    Bytes r =
        icmp_message(Family::v6, icmp::v6_echo_reply, 0, (0xabcdu << 16) | 0x0102u, Bytes(16, 0));
    auto m = icmp::parse_icmpv6(r);
    REQUIRE(m);
    CHECK(m->kind == icmp::Kind::echo_reply);
    CHECK(m->family == Family::v6);
    CHECK(m->id == 0xabcd);
    CHECK(m->seq == 0x0102);
    CHECK(icmp::parse(Family::v6, r));
    CHECK(icmp::concerns(*m, ip("fd00:99::2"), ip("fd00:99::2"), 0xabcd));
    CHECK_FALSE(icmp::concerns(*m, ip("fd00:99::3"), ip("fd00:99::2"), 0xabcd));
    CHECK_FALSE(icmp::concerns(*m, ip("fd00:99::2"), ip("fd00:99::2"), 0xabce));
    CHECK_FALSE(icmp::parse_icmpv6(Bytes(r.begin(), r.begin() + 7)));
}

TEST_CASE("parsing ICMPv6 errors quoting our echo") {
    SUBCASE("destination unreachable, admin prohibited") {
        auto m = icmp::parse_icmpv6(v6_error("fd00:99::1", "2001:db8::7", 1, 1, 0, 0x2222, 5));
        REQUIRE(m);
        CHECK(m->kind == icmp::Kind::error);
        CHECK(m->id == 0x2222);
        CHECK(m->seq == 5);
        REQUIRE(m->quoted_dst);
        CHECK(*m->quoted_dst == ip("2001:db8::7"));
        CHECK(icmp::describe_error(*m) == "destination unreachable (code 1, admin prohibited)");
        CHECK(icmp::concerns(*m, ip("fd00:99::fe"), ip("2001:db8::7"), 0x2222));
        CHECK_FALSE(icmp::concerns(*m, ip("fd00:99::fe"), ip("2001:db8::7"), 0x2223));
        CHECK_FALSE(icmp::concerns(*m, ip("fd00:99::fe"), ip("2001:db8::8"), 0x2222));
        // An IPv4 target never matches an IPv6 message.
        CHECK_FALSE(icmp::concerns(*m, ip("10.0.0.1"), ip("10.0.0.1"), 0x2222));
    }
    SUBCASE("address unreachable (neighbour discovery failed)") {
        auto m = icmp::parse_icmpv6(v6_error("fd00:99::1", "fd00:99::9", 1, 3, 0, 1, 1));
        REQUIRE(m);
        CHECK(icmp::describe_error(*m) == "destination unreachable (code 3, address unreachable)");
    }
    SUBCASE("packet too big carries the MTU") {
        auto m = icmp::parse_icmpv6(v6_error("fd00:99::1", "2001:db8::7", 2, 0, 1280, 1, 1));
        REQUIRE(m);
        CHECK(m->info == 1280);
        CHECK(icmp::describe_error(*m) == "packet too big (mtu 1280)");
    }
    SUBCASE("time exceeded and parameter problem") {
        auto te = icmp::parse_icmpv6(v6_error("fd00:99::1", "2001:db8::7", 3, 0, 0, 1, 1));
        REQUIRE(te);
        CHECK(icmp::describe_error(*te) == "time exceeded (code 0, hop limit exceeded in transit)");
        auto pp = icmp::parse_icmpv6(v6_error("fd00:99::1", "2001:db8::7", 4, 1, 40, 1, 1));
        REQUIRE(pp);
        CHECK(icmp::describe_error(*pp) == "parameter problem (code 1, unrecognized next header)");
    }
    SUBCASE("an extension header before the quoted echo is skipped") {
        Bytes echo = icmp::build_echo_request(Family::v6, 0x3333, 4, {});
        Bytes quoted = ipv6_header("fd00:99::1", "2001:db8::7", 8 + echo.size(), 60);
        Bytes dstopts{58, 0, 1, 4, 0, 0, 0, 0};  // next=ICMPv6, 8 bytes, PadN
        append(quoted, dstopts);
        append(quoted, echo);
        auto m = icmp::parse_icmpv6(icmp_message(Family::v6, 1, 0, 0, quoted));
        REQUIRE(m);
        CHECK(m->id == 0x3333);
        CHECK(m->seq == 4);
    }
    SUBCASE("quoting something other than an echo request") {
        Bytes quoted = ipv6_header("fd00:99::1", "2001:db8::7", 8, 17);
        quoted.resize(48, 0);
        CHECK_FALSE(icmp::parse_icmpv6(icmp_message(Family::v6, 1, 4, 0, quoted)));

        Bytes reply = icmp_message(Family::v6, icmp::v6_echo_reply, 0, 0x00010001, {});
        Bytes q2 = ipv6_header("fd00:99::1", "2001:db8::7", reply.size());
        append(q2, reply);
        CHECK_FALSE(icmp::parse_icmpv6(icmp_message(Family::v6, 1, 0, 0, q2)));
    }
    SUBCASE("a truncated quote") {
        Bytes e = v6_error("fd00:99::1", "2001:db8::7", 1, 0, 0, 1, 1);
        e.resize(8 + 40 + 4);
        CHECK_FALSE(icmp::parse_icmpv6(e));
    }
}

TEST_CASE("expectation and outcome names") {
    CHECK(std::string(nsegress::expect_name(Expect::reach)) == "reach");
    CHECK(std::string(nsegress::expect_name(Expect::block)) == "block");
    CHECK(std::string(nsegress::outcome_name(Outcome::reachable)) == "reachable");
    CHECK(std::string(nsegress::outcome_name(Outcome::refused_policy)) == "refused-policy");
    CHECK(std::string(nsegress::outcome_name(Outcome::refused_route)) == "refused-route");
    CHECK(std::string(nsegress::outcome_name(Outcome::unreachable)) == "unreachable");
    CHECK(std::string(nsegress::outcome_name(Outcome::timeout)) == "timeout");
    CHECK(std::string(nsegress::outcome_name(Outcome::error)) == "error");
}

TEST_CASE("ProbeResult::ok") {
    ProbeResult r;
    auto ok_for = [&](Expect e, Outcome o) {
        r.expect = e;
        r.outcome = o;
        return r.ok();
    };
    CHECK(ok_for(Expect::reach, Outcome::reachable));
    CHECK_FALSE(ok_for(Expect::reach, Outcome::refused_policy));
    CHECK_FALSE(ok_for(Expect::reach, Outcome::refused_route));
    CHECK_FALSE(ok_for(Expect::reach, Outcome::unreachable));
    CHECK_FALSE(ok_for(Expect::reach, Outcome::timeout));
    CHECK_FALSE(ok_for(Expect::reach, Outcome::error));

    CHECK(ok_for(Expect::block, Outcome::refused_policy));
    CHECK(ok_for(Expect::block, Outcome::refused_route));
    CHECK_FALSE(ok_for(Expect::block, Outcome::reachable));
    // Neither proves a block: the far side refused, or packets were lost.
    CHECK_FALSE(ok_for(Expect::block, Outcome::unreachable));
    CHECK_FALSE(ok_for(Expect::block, Outcome::timeout));
    CHECK_FALSE(ok_for(Expect::block, Outcome::error));

    CHECK(ProbeResult{}.outcome == Outcome::error);
    CHECK_FALSE(ProbeResult{}.ok());
}

TEST_CASE("run_probes with no targets or bad options") {
    nsegress::ProbeSockets none;
    nsegress::ProbeOptions opt;
    CHECK(nsegress::run_probes(none, {}, opt).empty());
    opt.count = 0;
    CHECK_THROWS(nsegress::run_probes(none, {}, opt));
}

TEST_CASE("run_probes reports a family without a socket as an error, without waiting") {
    nsegress::ProbeSockets none;  // no sockets at all: nothing is sent, nothing needs root
    std::vector<nsegress::ProbeTarget> targets{{ip("10.99.0.2"), Expect::reach},
                                               {ip("fd00:99::2"), Expect::block}};
    auto res = nsegress::run_probes(none, targets, nsegress::ProbeOptions{});
    REQUIRE(res.size() == 2);
    CHECK(res[0].target == ip("10.99.0.2"));
    CHECK(res[0].outcome == Outcome::error);
    CHECK(res[0].detail == "no IPv4 socket");
    CHECK(res[1].expect == Expect::block);
    CHECK(res[1].outcome == Outcome::error);
    CHECK(res[1].detail == "no IPv6 socket");
    CHECK(res[1].sent == 0);
    CHECK_FALSE(res[1].ok());
}
