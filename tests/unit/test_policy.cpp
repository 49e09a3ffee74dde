#include <doctest/doctest.h>

#include "nsegress/error.hpp"
#include "nsegress/policy.hpp"
#include "policy_helpers.hpp"

using namespace nsegress;

namespace {
using test::entry_error;
Policy policy_of(std::initializer_list<const char*> entries) {
    std::vector<AllowEntry> es;
    for (const char* e : entries) es.push_back(parse_allow_entry(e));
    return Policy(es);
}
std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : " | ") + s;
    return out;
}
IpAddr ip(const char* s) { return parse_ip(s); }
}  // namespace

TEST_CASE("allow entries: the grammar's examples parse and print back") {
    CHECK(parse_allow_entry("192.168.1.0/24").str() == "192.168.1.0/24");
    CHECK(parse_allow_entry("192.168.1.0/24").ports.empty());
    CHECK(parse_allow_entry("198.51.100.0/24 tcp/443 tcp/8443 udp/53").str() ==
          "198.51.100.0/24 tcp/443 tcp/8443 udp/53");
    CHECK(parse_allow_entry("2001:db8::/32 tcp/8000-8100").str() == "2001:db8::/32 tcp/8000-8100");
    auto icmp = parse_allow_entry("203.0.113.7 icmp");
    CHECK(icmp.str() == "203.0.113.7/32 icmp");
    CHECK(icmp.ports.at(0).proto == IpProto::icmp);
    auto any = parse_allow_entry("  198.51.100.10\ttcp  ");
    REQUIRE(any.ports.size() == 1);
    CHECK(any.ports[0].any_port());
    CHECK(any.str() == "198.51.100.10/32 tcp");
    CHECK(parse_allow_entry("2001:db8::1 icmpv6 sctp/9").str() == "2001:db8::1/128 sctp/9 icmpv6");
    CHECK(parse_allow_entry("10.0.0.1 tcp/1-65535").str() ==
          "10.0.0.1/32 tcp");  // the same as "tcp"
    CHECK(parse_allow_entry("10.0.0.1 udp/53 udp/53").ports.size() == 1);
}

TEST_CASE("allow entries: one line naming the entry and what is wrong") {
    CHECK(entry_error("10.0.0.1 http").find("unknown protocol 'http'") != std::string::npos);
    CHECK(entry_error("10.0.0.1 http").find("'10.0.0.1 http'") != std::string::npos);
    CHECK(entry_error("10.0.0.1 TCP/80").find("unknown protocol") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/0").find("port 0") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/65536").find("exceeds 65535") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/99999999999999").find("exceeds 65535") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/90-80").find("inverted") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/").find("missing") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/80-").find("missing") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/x").find("not a number") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/-5").find("missing") != std::string::npos);
    CHECK(entry_error("10.0.0.1 icmp/8").find("takes no port") != std::string::npos);
    CHECK(entry_error("2001:db8::1 icmp").find("use icmpv6") != std::string::npos);
    CHECK(entry_error("10.0.0.1 icmpv6").find("use icmp ") != std::string::npos);
    CHECK(entry_error("10.0.0.1,10.0.0.2").find("one entry per --allow") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/80,tcp/443").find("one entry per --allow") !=
          std::string::npos);
    CHECK(entry_error("10.0.0.5/24 tcp").find("host bits") != std::string::npos);
    CHECK(entry_error("tcp/80").find("invalid CIDR") != std::string::npos);
    CHECK(entry_error("").find("empty") != std::string::npos);
    CHECK(entry_error("10.0.0.1 tcp/80\n").empty());  // blanks around an entry are fine
    CHECK(entry_error("10.0.0.1 tcp/80\nx").find("unknown protocol") != std::string::npos);
}

TEST_CASE("allow-file and annotation lists of entries") {
    auto es = parse_allow_entries(
        "# web\n192.168.1.0/24\n\n198.51.100.10 tcp/443 # https\n2001:db8::1 icmpv6\n",
        "web.allow");
    REQUIRE(es.size() == 3);
    CHECK(es[1].str() == "198.51.100.10/32 tcp/443");
    try {
        parse_allow_entries("10.0.0.1\n10.0.0.2 tcp/0\n", "web.allow");
        FAIL("accepted port 0");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).rfind("web.allow:2: invalid allow entry", 0) == 0);
    }
    auto list = parse_allow_entry_list(
        "192.168.1.0/24, 198.51.100.10 tcp/443 udp/53 ,2001:db8::/64", "annotation x");
    REQUIRE(list.size() == 3);
    CHECK(list[1].ports.size() == 2);
    CHECK_THROWS_AS(parse_allow_entry_list("10.0.0.1,,10.0.0.2", "annotation x"), Error);
    CHECK_THROWS_AS(parse_allow_entry_list("10.0.0.1 tcp/0", "annotation x"), Error);
}

TEST_CASE("policy: CIDR-only entries stay today's allow-list; ports are scoped") {
    Policy p =
        policy_of({"192.168.1.0/24", "198.51.100.10 tcp/8080", "2001:db8:2::10 udp/9999 icmpv6"});
    CHECK(p.all() == AllowList({parse_cidr("192.168.1.0/24")}));
    REQUIRE(p.scoped(Family::v4).size() == 1);
    CHECK(p.scoped(Family::v4)[0].proto == IpProto::tcp);
    CHECK(p.scoped(Family::v4)[0].first == 8080);
    CHECK(p.scoped(Family::v4)[0].last == 8080);
    REQUIRE(p.scoped(Family::v6).size() == 1);
    CHECK(p.echo().contains(ip("2001:db8:2::10")));
    CHECK(p.allows(ip("198.51.100.10"), IpProto::tcp, 8080));
    CHECK_FALSE(p.allows(ip("198.51.100.10"), IpProto::tcp, 8081));
    CHECK_FALSE(p.allows(ip("198.51.100.10"), IpProto::udp, 8080));
    CHECK_FALSE(p.allows(ip("198.51.100.11"), IpProto::tcp, 8080));
    CHECK(p.allows(ip("192.168.1.7"), IpProto::sctp, 1));
    CHECK(p.allows(ip("2001:db8:2::10"), IpProto::icmpv6, 0));
    CHECK_FALSE(p.allows(ip("2001:db8:2::10"), IpProto::tcp, 9999));
    CHECK(p.echo_allowed(ip("192.168.1.1")));
    CHECK_FALSE(p.echo_allowed(ip("198.51.100.10")));
    CHECK(joined(p.entries()) ==
          "192.168.1.0/24 | 198.51.100.10/32 tcp/8080 | 2001:db8:2::10/128 udp/9999 icmpv6");
    auto d = p.destinations();
    CHECK(d.contains(ip("198.51.100.10")));
    CHECK(d.contains(ip("2001:db8:2::10")));
    CHECK_FALSE(d.contains(ip("198.51.100.11")));
}

TEST_CASE("policy: an entry without ports absorbs the port-scoped entries it covers") {
    Policy p = policy_of({"198.51.100.10 tcp/443 icmp", "198.51.100.0/24", "2001:db8::1 tcp"});
    CHECK(p.scoped(Family::v4).empty());
    CHECK(p.echo().empty());
    CHECK(p.scoped(Family::v6).size() == 1);
    CHECK(joined(p.entries()) == "198.51.100.0/24 | 2001:db8::1/128 tcp");
    // Order does not matter.
    CHECK(p == policy_of({"2001:db8::1 tcp", "198.51.100.0/24", "198.51.100.10 tcp/443 icmp"}));
}

TEST_CASE("policy: overlapping port-scoped entries become disjoint set elements") {
    Policy p =
        policy_of({"10.0.0.0/24 tcp/80-90", "10.0.0.128/25 tcp/85-100", "10.0.1.0/24 tcp/80-90",
                   "10.0.0.7 udp/53", "10.0.0.8 udp/53", "10.0.0.7 tcp"});
    const auto& el = p.scoped(Family::v4);
    // No two elements overlap in (address, protocol, port).
    for (std::size_t i = 0; i < el.size(); ++i)
        for (std::size_t j = i + 1; j < el.size(); ++j) {
            bool addr = el[i].addrs.first.value <= el[j].addrs.last.value &&
                        el[j].addrs.first.value <= el[i].addrs.last.value;
            bool port = el[i].first <= el[j].last && el[j].first <= el[i].last;
            CAPTURE(i);
            CAPTURE(j);
            CHECK_FALSE((addr && port && el[i].proto == el[j].proto));
        }
    // Exactly the union of what the entries allow, sampled.
    for (unsigned host : {0u, 7u, 100u, 128u, 200u, 255u})
        for (unsigned port : {79u, 80u, 84u, 85u, 90u, 91u, 100u, 101u, 8080u}) {
            IpAddr a{Family::v4, (u128{10} << 24) | host};
            bool want = (port >= 80 && port <= 90) || (host >= 128 && port >= 85 && port <= 100) ||
                        host == 7;
            CAPTURE(host);
            CAPTURE(port);
            CHECK(p.allows(a, IpProto::tcp, static_cast<std::uint16_t>(port)) == want);
        }
    CHECK(p.allows(ip("10.0.1.5"), IpProto::tcp, 80));
    CHECK(p.allows(ip("10.0.0.8"), IpProto::udp, 53));
    CHECK_FALSE(p.allows(ip("10.0.0.9"), IpProto::udp, 53));
    // 10.0.0.0/24 and 10.0.1.0/24 on tcp/80-90 merge into one element (plus 10.0.0.7's any port).
    bool merged = false;
    for (const auto& e : el)
        merged |= e.proto == IpProto::tcp && e.addrs.str() == "10.0.0.0/23" && e.first == 80;
    CHECK(merged);
    // Normalizing the normalized elements again changes nothing (what status reads back).
    Policy again(p.all(), p.scoped(Family::v4), p.echo());
    CHECK(again.scoped(Family::v4) == p.scoped(Family::v4));
}

TEST_CASE("policy: 10^4 port-scoped entries normalize quickly and stay disjoint") {
    std::vector<AllowEntry> es;
    for (unsigned i = 0; i < 10000; ++i) {
        AllowEntry e;
        e.dest = Cidr{IpAddr{Family::v4, (u128{10} << 24) | (i * 7)}, 32};
        e.ports.push_back(PortSpec{IpProto::tcp, static_cast<std::uint16_t>(1 + i % 300),
                                   static_cast<std::uint16_t>(1 + i % 300)});
        e.ports.push_back(PortSpec{IpProto::udp, 53, 53});
        es.push_back(e);
    }
    Policy p(es);
    CHECK(p.scoped(Family::v4).size() > 300);
    CHECK(p.allows(IpAddr{Family::v4, (u128{10} << 24) | 7}, IpProto::tcp, 2));
    CHECK_FALSE(p.allows(IpAddr{Family::v4, (u128{10} << 24) | 7}, IpProto::tcp, 3));
}

#include "nsegress/cni.hpp"
#include "nsegress/hook.hpp"

TEST_CASE("CNI 'allow' and the annotation io.nsegress.allow speak the grammar") {
    auto nc = parse_cni_netconf(
        R"({"cniVersion":"1.0.0","allow":["192.168.1.0/24","198.51.100.10 tcp/443 udp/53","2001:db8::1 icmpv6"]})");
    REQUIRE(nc.allow.size() == 3);
    CHECK(nc.allow[1].str() == "198.51.100.10/32 tcp/443 udp/53");
    try {
        parse_cni_netconf(R"({"cniVersion":"1.0.0","allow":["198.51.100.10 tcp/0"]})");
        FAIL("accepted port 0");
    } catch (const CniFailure& e) {
        CHECK(e.code == cni_invalid_config);
        CHECK(e.msg.find("port 0") != std::string::npos);
    }
    auto st = parse_oci_state(
        R"({"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b",
        "annotations":{"io.nsegress.allow":"192.168.1.0/24, 198.51.100.10 tcp/443 udp/53"}})");
    auto plan = hook_plan(st, HookArgs{});
    REQUIRE(plan);
    REQUIRE(plan->allow.size() == 2);
    CHECK(plan->allow[1].str() == "198.51.100.10/32 tcp/443 udp/53");
    auto bad = parse_oci_state(
        R"({"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b",
        "annotations":{"io.nsegress.allow":"198.51.100.10 tcp/443-80"}})");
    try {
        hook_plan(bad, HookArgs{});
        FAIL("accepted an inverted range");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).rfind(
                  "annotation io.nsegress.allow: item 1: invalid allow entry", 0) == 0);
    }
}

TEST_CASE("intersect_allow: addresses, protocols and ports") {
    auto es = [](std::initializer_list<const char*> l) {
        std::vector<AllowEntry> v;
        for (const char* s : l) v.push_back(parse_allow_entry(s));
        return v;
    };
    auto strs = [](const std::vector<AllowEntry>& v) {
        std::vector<std::string> out;
        for (const auto& e : v) out.push_back(e.str());
        return out;
    };
    using V = std::vector<std::string>;
    // The installer allows a /24 on any port; the annotation narrows it to one host's HTTPS.
    CHECK(strs(intersect_allow(es({"198.51.100.0/24"}), es({"198.51.100.10 tcp/443"}))) ==
          V{"198.51.100.10/32 tcp/443"});
    // The annotation cannot widen ports: tcp/443 stays, udp/53 goes.
    CHECK(strs(intersect_allow(es({"198.51.100.0/24 tcp/443"}), es({"198.51.100.0/24"}))) ==
          V{"198.51.100.0/24 tcp/443"});
    CHECK(strs(intersect_allow(es({"198.51.100.0/24 tcp/400-500"}),
                               es({"198.51.100.10 tcp/443-600 udp/53"}))) ==
          V{"198.51.100.10/32 tcp/443-500"});
    CHECK(strs(intersect_allow(es({"198.51.100.0/24 icmp"}), es({"198.51.100.10 icmp tcp"}))) ==
          V{"198.51.100.10/32 icmp"});
    CHECK(intersect_allow(es({"198.51.100.0/24 tcp"}), es({"198.51.100.10 udp"})).empty());
    // Exactly what both allow, sampled.
    auto a = es({"10.0.0.0/16 tcp/1-1000", "10.0.5.0/24", "2001:db8::/32 udp"});
    auto b = es({"10.0.0.0/8 tcp/500-2000 icmp", "2001:db8::1", "10.0.5.7"});
    Policy pa(a), pb(b), both(intersect_allow(a, b));
    for (const char* ip :
         {"10.0.0.1", "10.0.5.7", "10.0.5.8", "10.1.0.1", "2001:db8::1", "2001:db8::2"})
        for (IpProto p : {IpProto::tcp, IpProto::udp, IpProto::icmp})
            for (std::uint16_t port : {1, 499, 500, 1000, 1001, 2001}) {
                auto addr = parse_ip(ip);
                CAPTURE(ip);
                CAPTURE(port);
                CHECK(both.allows(addr, p, port) ==
                      (pa.allows(addr, p, port) && pb.allows(addr, p, port)));
            }
}

TEST_CASE("port_outside: a UDP port the policy does not allow on a port-scoped address") {
    auto pol = [](std::initializer_list<const char*> l) {
        std::vector<AllowEntry> v;
        for (const char* s : l) v.push_back(parse_allow_entry(s));
        return Policy(v);
    };
    CHECK_FALSE(port_outside(pol({"192.168.1.0/24"})).has_value());
    auto p = port_outside(pol({"198.51.100.10 tcp/443"}));
    REQUIRE(p);
    CHECK(p->addr.str() == "198.51.100.10");
    CHECK(p->port == 9);
    auto q = port_outside(pol({"198.51.100.10 udp/1-9 udp/65535"}));
    REQUIRE(q);
    CHECK(q->port == 65534);
    CHECK_FALSE(port_outside(pol({"198.51.100.10 udp"})).has_value());
}

TEST_CASE("an Error carries its context out, keeping its exit category and errno") {
    try {
        in_context("annotation io.nsegress.allow", [] {
            return in_context("item 3", [] { return parse_allow_entry("10.0.0.0/33"); });
        });
        FAIL("accepted a /33");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).rfind("annotation io.nsegress.allow: item 3: ", 0) == 0);
        CHECK(e.exit_code() == Exit::usage);
    }
    Error io(Exit::failed, "read 'x': Permission denied", EACCES);
    CHECK(io.in("--allow-file").sys_errno() == EACCES);
    CHECK(io.in("--allow-file").exit_code() == Exit::failed);
    CHECK(io.in("config", Exit::usage).exit_code() == Exit::usage);
    CHECK(std::string(io.in("--allow-file").what()) == "--allow-file: read 'x': Permission denied");
    CHECK_THROWS_WITH(parse_allow_entry_list("10.0.0.0/8, 10.1.0.0/16,", "annotation a"),
                      "annotation a: item 3: empty");
}
