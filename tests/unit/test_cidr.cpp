#include <doctest/doctest.h>
#include <arpa/inet.h>

#include "nsegress/cidr.hpp"
#include "nsegress/error.hpp"

using namespace nsegress;

namespace {
std::string ranges_str(const AllowList& a, Family f) {
    std::string out;
    for (const auto& r : a.ranges(f)) out += (out.empty() ? "" : " ") + r.str();
    return out;
}
Exit exit_of(const char* text) {
    try {
        parse_cidr(text);
    } catch (const Error& e) {
        return e.exit_code();
    }
    return Exit::ok;
}
}  // namespace

TEST_CASE("parse_cidr accepts prefixes and bare hosts of both families") {
    CHECK(parse_cidr("192.168.1.0/24").str() == "192.168.1.0/24");
    CHECK(parse_cidr("10.0.0.1").str() == "10.0.0.1/32");
    CHECK(parse_cidr("2001:db8::/32").str() == "2001:db8::/32");
    CHECK(parse_cidr("2001:db8::1").str() == "2001:db8::1/128");
    CHECK(parse_cidr("0.0.0.0/0").str() == "0.0.0.0/0");
    CHECK(parse_cidr("::/0").str() == "::/0");
    CHECK(parse_cidr("::ffff:1.2.3.4").addr.family == Family::v6);
}

TEST_CASE("parse_cidr rejects bad input with a usage error naming it") {
    for (const char* bad : {"300.1.1.1/24", "10.0.0.0/33", "2001:db8::/129", "banana", "",
                            "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0", " 10.0.0.0/8",
                            "10.0.0.0/ 8", "fe80::1%eth0", "1.2.3.4/24", "10.0.0.0/0008"}) {
        CAPTURE(bad);
        CHECK(exit_of(bad) == Exit::usage);
    }
    try {
        parse_cidr("192.168.1.5/24");
        FAIL("accepted host bits");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("192.168.1.0/24") != std::string::npos);
    }
}

TEST_CASE("AllowList merges duplicates, overlaps and adjacent ranges per family") {
    AllowList a({parse_cidr("192.168.1.0/24"), parse_cidr("192.168.1.128/25"),
                 parse_cidr("192.168.1.10"), parse_cidr("192.168.1.0/24")});
    CHECK(ranges_str(a, Family::v4) == "192.168.1.0/24");

    AllowList adj({parse_cidr("10.0.1.0/24"), parse_cidr("10.0.0.0/24")});
    CHECK(ranges_str(adj, Family::v4) == "10.0.0.0/23");

    AllowList odd({parse_cidr("10.0.0.0/24"), parse_cidr("10.0.1.0/25")});
    CHECK(ranges_str(odd, Family::v4) == "10.0.0.0-10.0.1.127");

    AllowList bridge(
        {parse_cidr("10.0.0.0/24"), parse_cidr("10.0.2.0/24"), parse_cidr("10.0.1.0/24")});
    CHECK(ranges_str(bridge, Family::v4) == "10.0.0.0-10.0.2.255");

    AllowList mixed(
        {parse_cidr("2001:db8:1::/64"), parse_cidr("10.0.0.0/8"), parse_cidr("2001:db8::/32")});
    CHECK(ranges_str(mixed, Family::v4) == "10.0.0.0/8");
    CHECK(ranges_str(mixed, Family::v6) == "2001:db8::/32");

    AllowList all({parse_cidr("0.0.0.0/0"), parse_cidr("255.255.255.255"), parse_cidr("::/0"),
                   parse_cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")});
    CHECK(ranges_str(all, Family::v4) == "0.0.0.0/0");
    CHECK(ranges_str(all, Family::v6) == "::/0");
}

TEST_CASE("AllowList::contains") {
    AllowList a({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    CHECK(a.contains(parse_ip("192.168.1.0")));
    CHECK(a.contains(parse_ip("192.168.1.255")));
    CHECK_FALSE(a.contains(parse_ip("192.168.2.0")));
    CHECK_FALSE(a.contains(parse_ip("192.168.0.255")));
    CHECK(a.contains(parse_ip("2001:db8:1::ffff")));
    CHECK_FALSE(a.contains(parse_ip("2001:db8:2::1")));
    CHECK_FALSE(AllowList{}.contains(parse_ip("1.2.3.4")));
}

TEST_CASE("Range::to_cidrs is the minimal prefix cover") {
    Range r{parse_ip("10.0.0.1"), parse_ip("10.0.0.6")};
    std::string out;
    for (const auto& c : r.to_cidrs()) out += c.str() + " ";
    CHECK(out == "10.0.0.1/32 10.0.0.2/31 10.0.0.4/31 10.0.0.6/32 ");
    Range full{parse_ip("::"), parse_ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")};
    REQUIRE(full.as_cidr());
    CHECK(full.as_cidr()->str() == "::/0");
}

TEST_CASE("parse_allow_text: comments, blanks, line numbers in errors") {
    auto v = parse_allow_text("# lab\n\n192.168.1.0/24  # the LAN\n  2001:db8:1::/64\r\n10.0.0.1\n",
                              "f.txt");
    REQUIRE(v.size() == 3);
    CHECK(v[2].str() == "10.0.0.1/32");
    try {
        parse_allow_text("10.0.0.0/8\n# ok\n10.0.0.300/8\n", "allow.txt");
        FAIL("accepted a bad line");
    } catch (const Error& e) {
        CHECK(e.exit_code() == Exit::usage);
        CHECK(std::string(e.what()).rfind("allow.txt:3: invalid CIDR '10.0.0.300/8'", 0) == 0);
    }
    CHECK(parse_allow_text("", "empty").empty());
    CHECK_THROWS_AS(parse_allow_file("/nonexistent/allow.txt"), Error);
}

TEST_CASE("IPv4 addresses and CIDRs format as inet_ntop does") {
    for (const char* s : {"0.0.0.0/0", "1.2.3.4/32", "10.0.0.0/8", "100.64.0.0/10",
                          "192.168.1.0/24", "255.255.255.255/32", "9.99.199.200/31"})
        CHECK(parse_cidr(s).str() == s);
    CHECK(parse_ip("203.0.113.7").str() == "203.0.113.7");
    CHECK(parse_ip("2001:db8::1").str() == "2001:db8::1");
    CHECK(parse_cidr("2001:db8::/32").str() == "2001:db8::/32");
    // Every octet value, against the C library.
    for (unsigned o = 0; o < 256; ++o) {
        std::uint32_t v = (o << 24) | (o << 16) | (o << 8) | o;
        unsigned char b[4] = {static_cast<unsigned char>(o), static_cast<unsigned char>(o),
                              static_cast<unsigned char>(o), static_cast<unsigned char>(o)};
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, b, buf, sizeof buf);
        CHECK(IpAddr{Family::v4, v}.str() == buf);
    }
}
