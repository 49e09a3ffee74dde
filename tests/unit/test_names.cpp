// Names in a policy (names.hpp): the grammar, matching, the slots an answer opens, and the DNS
// messages the names proxy reads and writes (built with python3-dnslib's wire format by hand).
#include <doctest/doctest.h>

#include "nsegress/error.hpp"
#include "nsegress/names.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"
#include "policy_helpers.hpp"

using namespace nsegress;

namespace {
using test::entry_error;

// A DNS message: header + one question + answer records (type, owner, rdata), all uncompressed.
void put16(std::vector<std::uint8_t>& m, unsigned v) {
    m.push_back(static_cast<std::uint8_t>(v >> 8));
    m.push_back(static_cast<std::uint8_t>(v));
}
void put_name(std::vector<std::uint8_t>& m, const std::string& name) {
    std::size_t b = 0;
    while (b < name.size()) {
        auto e = name.find('.', b);
        if (e == std::string::npos) e = name.size();
        m.push_back(static_cast<std::uint8_t>(e - b));
        m.insert(m.end(), name.begin() + static_cast<long>(b), name.begin() + static_cast<long>(e));
        b = e + 1;
    }
    m.push_back(0);
}
struct Rec {
    std::string owner;
    unsigned type;
    std::uint32_t ttl;
    std::vector<std::uint8_t> rdata;
};
std::vector<std::uint8_t> message(unsigned id, bool response, const std::string& qname,
                                  unsigned qtype, const std::vector<Rec>& answers = {}) {
    std::vector<std::uint8_t> m;
    put16(m, id);
    put16(m, response ? 0x8180 : 0x0100);
    put16(m, 1);
    put16(m, static_cast<unsigned>(answers.size()));
    put16(m, 0);
    put16(m, 0);
    put_name(m, qname);
    put16(m, qtype);
    put16(m, 1);
    for (const auto& r : answers) {
        put_name(m, r.owner);
        put16(m, r.type);
        put16(m, 1);
        put16(m, r.ttl >> 16);
        put16(m, r.ttl & 0xffff);
        put16(m, static_cast<unsigned>(r.rdata.size()));
        m.insert(m.end(), r.rdata.begin(), r.rdata.end());
    }
    return m;
}
std::vector<std::uint8_t> name_rdata(const std::string& n) {
    std::vector<std::uint8_t> m;
    put_name(m, n);
    return m;
}
}  // namespace

TEST_CASE("names: the grammar takes names and one-label wildcards, with ports") {
    auto e = parse_allow_entry("API.Example.com. tcp/443 udp/53");
    CHECK(e.is_name());
    CHECK(e.name == "api.example.com");
    CHECK(e.str() == "api.example.com tcp/443 udp/53");
    CHECK(parse_allow_entry("*.example.com").str() == "*.example.com");
    CHECK(parse_allow_entry("_svc.example-1.com tcp").name == "_svc.example-1.com");
    // Addresses stay addresses.
    CHECK_FALSE(parse_allow_entry("10.0.0.0/8 tcp/1").is_name());
    CHECK_FALSE(parse_allow_entry("2001:db8::/32").is_name());
    CHECK_FALSE(parse_allow_entry("fd00::1").is_name());
    CHECK(entry_error("single").find("two or more labels") != std::string::npos);
    CHECK(entry_error("*.com").find("two or more labels") != std::string::npos);
    CHECK(entry_error("a.*.example.com").find("first label") != std::string::npos);
    CHECK(entry_error("a..example.com").find("empty label") != std::string::npos);
    CHECK(entry_error("-a.example.com").find("'-'") != std::string::npos);
    CHECK(entry_error("api.example.com icmp").find("by address only") != std::string::npos);
    CHECK(entry_error("1.2.3").find("1.2.3") != std::string::npos);
    CHECK(entry_error("a.123").find("does not start with a letter") != std::string::npos);
    CHECK(entry_error("10.0.0.90-80").find("does not start with a letter") !=
          std::string::npos);  // a mistyped range
    CHECK(entry_error("a b.example.com").find("a") != std::string::npos);
    std::string long_label(64, 'a');
    CHECK(entry_error((long_label + ".com").c_str()).find("63") != std::string::npos);
}

TEST_CASE("names: one entry per name in the policy, ports merged, all traffic absorbs") {
    Policy p({parse_allow_entry("b.example.com tcp/443"), parse_allow_entry("a.example.com tcp/80"),
              parse_allow_entry("b.example.com udp/53"), parse_allow_entry("a.example.com"),
              parse_allow_entry("10.0.0.0/8")});
    REQUIRE(p.names().size() == 2);
    CHECK(p.names()[0].str() == "a.example.com");
    CHECK(p.names()[1].str() == "b.example.com tcp/443 udp/53");
    CHECK(p.has_names());
    CHECK(p.all().contains(parse_ip("10.1.2.3")));
    auto entries = p.entries();
    CHECK(entries.back() == "b.example.com tcp/443 udp/53");
    // The runtime wrapper's narrowing keeps names both lists hold, with the ports both allow.
    auto both = intersect_allow(
        {parse_allow_entry("a.example.com tcp/80-90"), parse_allow_entry("c.example.com")},
        {parse_allow_entry("a.example.com tcp/85-100"), parse_allow_entry("d.example.com")});
    REQUIRE(both.size() == 1);
    CHECK(both[0].str() == "a.example.com tcp/85-90");
}

TEST_CASE("names: matching") {
    CHECK(name_matches("api.example.com", "api.example.com"));
    CHECK_FALSE(name_matches("api.example.com", "x.api.example.com"));
    CHECK(name_matches("*.example.com", "a.example.com"));
    CHECK_FALSE(name_matches("*.example.com", "example.com"));
    CHECK_FALSE(name_matches("*.example.com", "a.b.example.com"));
    CHECK_FALSE(name_matches("*.example.com", "aexample.com"));
    CHECK_FALSE(name_matches("*.example.com", ".example.com"));
}

TEST_CASE("names: slots are equal or disjoint across names, and cover what each entry allows") {
    std::vector<AllowEntry> names{parse_allow_entry("a.example.com tcp/443"),
                                  parse_allow_entry("*.example.com tcp/400-500 udp"),
                                  parse_allow_entry("all.example.com")};
    auto a = name_slots(names, "a.example.com");  // both a.example.com and the wildcard
    // tcp 400-442, 443, 444-500; udp 0-65535 split nowhere
    REQUIRE(a.size() == 4);
    CHECK(a[0] == NameSlot{6, 6, 400, 442});
    CHECK(a[1] == NameSlot{6, 6, 443, 443});
    CHECK(a[2] == NameSlot{6, 6, 444, 500});
    CHECK(a[3] == NameSlot{17, 17, 1, 65535});  // "udp" is ports 1-65535
    auto x = name_slots(names, "x.example.com");
    CHECK(x.size() == 4);
    CHECK(name_slots(names, "example.com").empty());
    auto all = name_slots(names, "all.example.com");  // all traffic: every protocol and port
    std::uint32_t tcp_ports = 0;
    for (const auto& s : all)
        if (s.proto_first == 6) tcp_ports += s.port_last - s.port_first + 1u;
    CHECK(tcp_ports == 65536);
    CHECK(std::any_of(all.begin(), all.end(), [](const NameSlot& s) {
        return s.proto_first == 133 && s.proto_last == 255;
    }));
    for (std::size_t i = 1; i < all.size(); ++i)
        CHECK((all[i - 1].proto_last < all[i].proto_first ||
               all[i - 1].port_last < all[i].port_first));
}

TEST_CASE("names: lifetimes") {
    CHECK(name_timeout(1) == kNameTtlFloor + kNameGrace);
    CHECK(name_timeout(300) == 300 + kNameGrace);
    CHECK(name_timeout(10'000'000) == kNameTtlCap + kNameGrace);
    // An element the kernel holds is left alone while it outlives the answer's cache by half
    // the grace; a fresh element (name_timeout) always covers, one about to expire never does.
    for (std::uint32_t ttl : {0u, 1u, 300u, 10'000'000u}) {
        CHECK(name_element_covers(std::uint64_t{name_timeout(ttl)} * 1000, ttl));
        CHECK_FALSE(name_element_covers(0, ttl));
        CHECK_FALSE(name_element_covers(1000, ttl));
    }
    CHECK(name_element_covers((300 + kNameGrace / 2) * 1000, 300));
    CHECK_FALSE(name_element_covers((300 + kNameGrace / 2) * 1000 - 1, 300));
    CHECK_FALSE(name_element_covers((kNameTtlFloor + kNameGrace / 2) * 1000 - 1, 1));
}

TEST_CASE("names: questions, error replies and the addresses of an answer") {
    auto q = message(0x1234, false, "API.example.com", 1);
    auto parsed = parse_dns_query(q.data(), q.size());
    REQUIRE(parsed);
    CHECK(parsed->id == 0x1234);
    CHECK(parsed->qname == "api.example.com");
    CHECK(parsed->qtype == 1);
    CHECK_FALSE(parse_dns_query(q.data(), 11));
    auto resp = message(0x1234, true, "api.example.com", 1);
    CHECK_FALSE(parse_dns_query(resp.data(), resp.size()));  // a response is no question

    auto refused = dns_error_reply(q.data(), q.size(), 5);
    REQUIRE(refused.size() > 12);
    CHECK(refused[0] == 0x12);
    CHECK(refused[1] == 0x34);
    CHECK((refused[2] & 0x80) != 0);
    CHECK((refused[3] & 0x0f) == 5);
    CHECK(refused[5] == 1);  // the question is kept
    CHECK(dns_error_reply(q.data(), 5, 5).empty());
    std::vector<std::uint8_t> junk(q.begin(), q.begin() + 14);  // a header and a broken question
    auto formerr = dns_error_reply(junk.data(), junk.size(), 1);
    REQUIRE(formerr.size() == 12);
    CHECK((formerr[3] & 0x0f) == 1);

    // A label with a dot inside cannot pose as a policy's name.
    auto sneaky = message(1, false, "api.example.com", 1);
    sneaky[12] = 7;  // "api.exa" as one label
    sneaky[16] = '.';
    if (auto s = parse_dns_query(sneaky.data(), sneaky.size()))
        CHECK(s->qname != "api.example.com");

    // The chain: api.example.com -> edge.cdn.net -> 192.0.2.1; other records are not taken.
    auto ans = message(
        0x1234, true, "api.example.com", 1,
        {{"api.example.com", 5, 60, name_rdata("Edge.cdn.net")},
         {"edge.cdn.net", 1, 7, {192, 0, 2, 1}},
         {"other.net", 1, 7, {192, 0, 2, 9}},
         {"edge.cdn.net", 28, 9, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}}});
    auto addrs = dns_answer_addresses(ans.data(), ans.size(), *parsed);
    REQUIRE(addrs);
    REQUIRE(addrs->size() == 2);
    CHECK((*addrs)[0].addr == parse_ip("192.0.2.1"));
    CHECK((*addrs)[0].ttl == 7);
    CHECK((*addrs)[1].addr == parse_ip("2001:db8::1"));
    // Not an answer to this question: another id, another name.
    auto other_id =
        message(0x9999, true, "api.example.com", 1, {{"api.example.com", 1, 7, {192, 0, 2, 1}}});
    CHECK_FALSE(dns_answer_addresses(other_id.data(), other_id.size(), *parsed));
    auto other_name =
        message(0x1234, true, "evil.example.com", 1, {{"api.example.com", 1, 7, {192, 0, 2, 1}}});
    CHECK_FALSE(dns_answer_addresses(other_name.data(), other_name.size(), *parsed));
    // A CNAME loop ends.
    auto loop = message(0x1234, true, "api.example.com", 1,
                        {{"api.example.com", 5, 1, name_rdata("b.example.com")},
                         {"b.example.com", 5, 1, name_rdata("api.example.com")}});
    auto none = dns_answer_addresses(loop.data(), loop.size(), *parsed);
    REQUIRE(none);
    CHECK(none->empty());
}

TEST_CASE("names: the policy batch carries the name sets, the nat chain and the rules") {
    Policy p({parse_allow_entry("api.example.com tcp/443")});
    auto text = nft::render_policy(p);
    CHECK(text.find("set names4") != std::string::npos);
    CHECK(text.find("flags interval,timeout") != std::string::npos);
    CHECK(text.find("chain dns") != std::string::npos);
    CHECK(text.find("redirect to :28275") != std::string::npos);
    CHECK(text.find("ct direction original ct state established ct label 126") !=
          std::string::npos);
    auto b = nft::compile_policy(p, 1);
    bool nat = false;
    for (const auto& m : b.messages)
        nat = nat || m.what.find("redirect to the names proxy") != std::string::npos;
    CHECK(nat);
    // Without names: nothing of it (the golden batches of CIDR policies are unchanged).
    auto plain = nft::render_policy(Policy({parse_allow_entry("10.0.0.0/8")}));
    CHECK(plain.find("names4") == std::string::npos);
    CHECK(plain.find("chain dns") == std::string::npos);
    // The refresh: add, delete, add per family, with the timeout.
    auto r = nft::compile_name_refresh({{parse_ip("192.0.2.1"), NameSlot{6, 6, 443, 443}, 90},
                                        {parse_ip("2001:db8::1"), NameSlot{6, 6, 443, 443}, 90}},
                                       1);
    int adds = 0, dels = 0;
    for (const auto& m : r.messages) {
        adds += m.what.find(" add ") != std::string::npos;
        dels += m.what.find(" delete ") != std::string::npos;
    }
    CHECK(adds == 4);
    CHECK(dels == 2);
}

TEST_CASE("names: the forwarded query is built afresh: new id, one question, nothing else") {
    // The client's query with a TXT record in the additional section, an OPT record with an
    // option, a second question and trailing bytes: none of it may reach the resolver.
    auto q = message(0x4242, false, "API.Example.test", 1);
    q[5] = 1;   // qdcount 1
    q[11] = 2;  // arcount 2: TXT "A3-SECRET-PAYLOAD" and OPT with an option
    put_name(q, "x");
    put16(q, 16);
    put16(q, 1);
    put16(q, 0);
    put16(q, 0);
    const std::string secret = "A3-SECRET-PAYLOAD";
    put16(q, static_cast<unsigned>(secret.size() + 1));
    q.push_back(static_cast<std::uint8_t>(secret.size()));
    q.insert(q.end(), secret.begin(), secret.end());
    q.push_back(0);   // OPT: root owner
    put16(q, 41);     // type OPT
    put16(q, 4096);   // udp size
    put16(q, 0);      // ext rcode, version
    put16(q, 0);      // flags
    put16(q, 12);     // rdlen: one option
    put16(q, 65001);  // option code
    put16(q, 8);      // option length
    for (char c : std::string("EDNSLEAK")) q.push_back(static_cast<std::uint8_t>(c));
    auto parsed = parse_dns_query(q.data(), q.size());
    REQUIRE(parsed);
    CHECK(parsed->edns);
    CHECK(parsed->rd);
    auto fwd = dns_forward_query(*parsed, 0x0102);
    REQUIRE_FALSE(fwd.empty());
    const std::string wire(fwd.begin(), fwd.end());
    CHECK(wire.find("SECRET") == std::string::npos);
    CHECK(wire.find("EDNSLEAK") == std::string::npos);
    CHECK(fwd[0] == 0x01);
    CHECK(fwd[1] == 0x02);
    CHECK((fwd[2] & 0x01) == 1);  // RD as the client set it
    CHECK(fwd[4] == 0);
    CHECK(fwd[5] == 1);  // one question
    CHECK(fwd[6] == 0);
    CHECK(fwd[7] == 0);  // no answers
    CHECK(fwd[8] == 0);
    CHECK(fwd[9] == 0);  // no authority
    CHECK(fwd[10] == 0);
    CHECK(fwd[11] == 1);  // the OPT record alone
    // 12 header + 18 name + 4 + OPT 11 (no options)
    CHECK(fwd.size() == 12 + 18 + 4 + 11);
    auto back = parse_dns_query(fwd.data(), fwd.size());
    REQUIRE(back);
    CHECK(back->qname == "api.example.test");
    CHECK(back->qtype == 1);
    CHECK(back->id == 0x0102);
    // Without EDNS from the client: no OPT record either.
    auto plain = message(7, false, "api.example.test", 28);
    plain[2] = 0;  // RD clear
    auto pp = parse_dns_query(plain.data(), plain.size());
    REQUIRE(pp);
    auto f2 = dns_forward_query(*pp, 9);
    REQUIRE(f2.size() == 12 + 18 + 4);
    CHECK((f2[2] & 0x01) == 0);
    CHECK(f2[11] == 0);
    // The relay puts the client's id back.
    auto relayed = dns_with_id(message(0x0102, true, "api.example.test", 1), 0x4242);
    CHECK(relayed[0] == 0x42);
    CHECK(relayed[1] == 0x42);
}

TEST_CASE("names: a label with a dot or NUL inside is never forwarded as another name") {
    auto dotted = message(1, false, "api.example.test", 1);
    dotted[12] = 11;  // "api.example" as one label, then "test"
    dotted[16] = '.';
    auto d = parse_dns_query(dotted.data(), dotted.size());
    REQUIRE(d);
    CHECK(d->qname != "api.example.test");
    CHECK_FALSE(name_matches("api.example.test", d->qname));
    CHECK_FALSE(name_matches("*.test", d->qname));
    CHECK(dns_forward_query(*d, 1).empty());
    // "api\0" . example . test
    std::vector<std::uint8_t> nul{0,   1,   1,   0,   0,   1,   0,   0,   0,   0,   0,   0,
                                  4,   'a', 'p', 'i', 0,   7,   'e', 'x', 'a', 'm', 'p', 'l',
                                  'e', 4,   't', 'e', 's', 't', 0,   0,   1,   0,   1};
    auto n = parse_dns_query(nul.data(), nul.size());
    if (n) {
        CHECK_FALSE(name_matches("api.example.test", n->qname));
        CHECK(dns_forward_query(*n, 1).empty());
    }
    // Two questions, or none: no question to judge.
    auto two = message(1, false, "api.example.test", 1);
    two[5] = 2;
    put_name(two, "leak.evil.test");
    put16(two, 1);
    put16(two, 1);
    CHECK_FALSE(parse_dns_query(two.data(), two.size()));
    auto zero = message(1, false, "leak.evil.test", 1);
    zero[5] = 0;
    if (auto z = parse_dns_query(zero.data(), zero.size())) CHECK(z->qname != "leak.evil.test");
}

TEST_CASE(
    "names: trusted resolvers: the operator's, else resolv.conf's, never the container's choice") {
    auto ns = resolv_conf_nameservers(
        "# generated\nsearch example.test\nnameserver 10.0.0.53\n  nameserver\t2001:db8::53 # v6\n"
        "nameserver 127.0.0.11\nnameserver 10.0.0.53\nnameservers 9.9.9.9\nnameserver "
        "fe80::1%eth0\n"
        "options ndots:0\n");
    REQUIRE(ns.size() == 3);
    CHECK(ns[0] == parse_ip("10.0.0.53"));
    CHECK(ns[1] == parse_ip("2001:db8::53"));
    CHECK(ns[2] == parse_ip("127.0.0.11"));
    CHECK(is_loopback(parse_ip("127.0.0.11")));
    CHECK(is_loopback(parse_ip("::1")));
    CHECK(is_loopback(parse_ip("::ffff:127.0.0.1")));
    CHECK_FALSE(is_loopback(parse_ip("10.0.0.53")));
    CHECK_FALSE(is_loopback(parse_ip("::ffff:10.0.0.1")));
    // A running container may have written a loopback nameserver of its own.
    CHECK(trusted_resolvers({}, ns, false) ==
          std::vector<IpAddr>{parse_ip("10.0.0.53"), parse_ip("2001:db8::53")});
    CHECK(trusted_resolvers({}, ns, true) == ns);
    CHECK(trusted_resolvers({parse_ip("127.0.0.53")}, ns, false) ==
          std::vector<IpAddr>{parse_ip("127.0.0.53")});
    const std::vector<IpAddr> trusted{parse_ip("10.0.0.53"), parse_ip("2001:db8::53")};
    // Addressed to a trusted resolver: that one. Elsewhere (the attacker's server, 8.8.8.8):
    // the trusted ones in order, never the address the container chose.
    CHECK(upstream_candidates(trusted, parse_ip("2001:db8::53")) ==
          std::vector<IpAddr>{parse_ip("2001:db8::53")});
    CHECK(upstream_candidates(trusted, parse_ip("198.51.100.10")) == trusted);
    CHECK(upstream_candidates(trusted, std::nullopt) == trusted);
    CHECK(upstream_candidates({}, parse_ip("198.51.100.10")).empty());
}

TEST_CASE("names: an entry without ports is kept (all traffic), first or after others") {
    for (auto order : {std::vector<std::string>{"*.cdn.example.com", "*.cdn.example.m tcp/443"},
                       std::vector<std::string>{"*.cdn.example.m tcp/443", "*.cdn.example.com"},
                       std::vector<std::string>{"api.example.com", "api.example.com tcp/443"}}) {
        std::vector<AllowEntry> es;
        for (const auto& t : order) es.push_back(parse_allow_entry(t));
        Policy p(es);
        std::vector<AllowEntry> again;
        for (const auto& line : p.entries()) again.push_back(parse_allow_entry(line));
        CHECK(Policy(again) == p);
        bool portless = false;
        for (const auto& n : p.names()) portless |= n.ports.empty();
        CHECK(portless);
    }
}
