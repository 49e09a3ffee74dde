// Netlink replies parsed without a socket: real kernel dumps captured in a lab
// (tests/fuzz/capture_seeds.sh) and hand-made malformed messages that the fuzzers found.
#include <doctest/doctest.h>

#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/rule.h>
#include <linux/fib_rules.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "nsegress/conntrack.hpp"
#include "nsegress/error.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/routeset.hpp"

using namespace nsegress;

namespace {

std::vector<std::uint8_t> read_bytes(const std::string& rel) {
    std::ifstream in(std::string(NSEGRESS_TESTS_DIR) + "/" + rel, std::ios::binary);
    REQUIRE(in);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every message of a kernel reply buffer (all well-formed: they come from a kernel). The
// pointers point into `bytes`: keep it alive.
std::vector<const nlmsghdr*> messages(const std::vector<std::uint8_t>& bytes) {
    std::vector<const nlmsghdr*> out;
    int left = static_cast<int>(bytes.size());
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(bytes.data()); mnl_nlmsg_ok(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left))
        if (nlh->nlmsg_type != NLMSG_DONE) out.push_back(nlh);
    return out;
}

// A route message: rtmsg + attributes, built by hand so that it can be malformed.
struct RouteMsg {
    std::vector<std::uint32_t> words = std::vector<std::uint32_t>(256);
    nlmsghdr* nlh;
    explicit RouteMsg(std::uint8_t family, std::uint8_t dst_len) {
        nlh = mnl_nlmsg_put_header(words.data());
        nlh->nlmsg_type = RTM_NEWROUTE;
        auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
        rtm->rtm_family = family;
        rtm->rtm_dst_len = dst_len;
        rtm->rtm_table = RT_TABLE_MAIN;
        rtm->rtm_type = RTN_UNICAST;
    }
    std::span<const std::uint8_t> bytes() const {
        return {reinterpret_cast<const std::uint8_t*>(words.data()), nlh->nlmsg_len};
    }
};

bool refused(const RouteMsg& m) {
    Snapshot snap;
    try {
        parse_rtnl_messages(m.bytes(), snap);
    } catch (const Error& e) {
        CHECK(e.exit_code() == Exit::failed);
        return true;
    }
    return false;
}

}  // namespace

TEST_CASE("rtnetlink: a lab namespace's real dumps parse into the snapshot") {
    auto bytes = read_bytes("fuzz/corpus/rtnl/lab-all");
    Snapshot snap;
    parse_rtnl_messages(bytes, snap);
    auto has_link = [&](const char* name) {
        return std::any_of(snap.links.begin(), snap.links.end(),
                           [&](const Link& l) { return l.name == name; });
    };
    CHECK(has_link("lo"));
    CHECK(has_link("eth0"));
    CHECK(has_link("d0"));
    CHECK(std::is_sorted(snap.links.begin(), snap.links.end(),
                         [](const Link& a, const Link& b) { return a.ifindex < b.ifindex; }));
    CHECK(snap.is_local_address(parse_ip("172.31.0.2")));
    CHECK(snap.is_local_address(parse_ip("fd00:31::2")));
    CHECK(snap.is_local_address(parse_ip("10.9.1.1")));

    const Route* def = snap.default_route(Family::v4);
    REQUIRE(def != nullptr);
    CHECK(def->gateway == parse_ip("172.31.0.1"));
    REQUIRE(snap.default_route(Family::v6) != nullptr);
    auto route_to = [&](const char* cidr) -> const Route* {
        for (const auto& r : snap.routes)
            if (r.dst == parse_cidr(cidr)) return &r;
        return nullptr;
    };
    REQUIRE(route_to("10.50.0.0/16"));
    CHECK(route_to("10.50.0.0/16")->multipath);
    REQUIRE(route_to("10.60.0.0/16"));
    CHECK(route_to("10.60.0.0/16")->onlink);
    CHECK(route_to("10.60.0.0/16")->metric == 50);
    REQUIRE(route_to("10.70.0.0/16"));
    CHECK(route_to("10.70.0.0/16")->type == RTN_BLACKHOLE);

    // nsegress had restricted the namespace: its route set and rules are in the dump
    RoutePlan installed = installed_route_set(snap);
    CHECK(installed.rules.size() == 4);  // lookup + unreachable, both families
    CHECK_FALSE(installed.routes.empty());
    bool selector_rule = std::any_of(snap.rules.begin(), snap.rules.end(), [](const Rule& r) {
        return r.priority == 500 && r.has_selector;
    });
    CHECK(selector_rule);
}

TEST_CASE("rtnetlink: malformed route messages are refused, not crashed or looped on") {
    // regression (fuzz_rtnl): an IPv4 prefix of 40 bits made the host-mask shift undefined
    CHECK(refused(RouteMsg(AF_INET, 40)));
    CHECK_FALSE(refused(RouteMsg(AF_INET, 0)));  // a plain default route is fine

    // host bits set in the destination (the kernel masks them)
    RouteMsg host_bits(AF_INET, 8);
    std::uint8_t dst[4] = {10, 0, 0, 5};
    mnl_attr_put(host_bits.nlh, RTA_DST, 4, dst);
    CHECK(refused(host_bits));

    // regression (fuzz_rtnl): a multipath nexthop of length 0 made libnl allocate forever
    RouteMsg loop(AF_INET, 0);
    rtnexthop nh{};  // rtnh_len 0
    mnl_attr_put(loop.nlh, RTA_MULTIPATH, sizeof nh, &nh);
    CHECK(refused(loop));

    // regression (fuzz_rtnl): a one-byte RTA_VIA made libnl memcpy a negative size
    RouteMsg via(AF_INET, 0);
    std::uint8_t b = 0;
    mnl_attr_put(via.nlh, RTA_VIA, 1, &b);
    CHECK(refused(via));

    // an address of the other family as destination
    RouteMsg other(AF_INET, 32);
    std::uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
    mnl_attr_put(other.nlh, RTA_DST, 16, v6);
    CHECK(refused(other));

    // the committed regression inputs of the fuzzer, as a whole
    for (const char* f : {"fuzz/corpus/rtnl/regress-prefix-too-long",
                          "fuzz/corpus/rtnl/regress-multipath-rtnh-len-0"}) {
        Snapshot snap;
        try {
            parse_rtnl_messages(read_bytes(f), snap);
        } catch (const Error& e) {
            CHECK(e.exit_code() == Exit::failed);
        }
    }
}

TEST_CASE("nft read-back: the kernel's dump of an nsegress policy") {
    int rules = 0, counted = 0;
    std::vector<std::string> comments;
    auto rule_bytes = read_bytes("unit/fixtures/netlink/nft-rules");
    for (const auto* m : messages(rule_bytes)) {
        std::optional<nft::RuleSummary> r;
        REQUIRE(nft::parse_rule_message(m, r));
        REQUIRE(r);
        ++rules;
        if (!r->comment.empty()) comments.push_back(r->comment);
        counted += r->comment == nft::kCommentAllow4;
    }
    CHECK(rules >= 9);
    CHECK(counted == 1);
    CHECK(std::find(comments.begin(), comments.end(), nft::kCommentDeny) != comments.end());

    std::vector<nft::ElementKey> keys;
    auto set4 = read_bytes("unit/fixtures/netlink/nft-setelem-allow4");
    for (const auto* m : messages(set4)) REQUIRE(nft::parse_setelem_message(m, Family::v4, keys));
    AllowList got;
    for (const auto& r : nft::elements_to_ranges(Family::v4, keys)) got.add(r);
    CHECK(got == AllowList({parse_cidr("192.168.1.0/24"), parse_cidr("10.9.0.0/16"),
                            parse_cidr("203.0.113.7")}));
    keys.clear();
    auto set6 = read_bytes("unit/fixtures/netlink/nft-setelem-allow6");
    for (const auto* m : messages(set6)) REQUIRE(nft::parse_setelem_message(m, Family::v6, keys));
    CHECK(nft::elements_to_ranges(Family::v6, keys) ==
          AllowList({parse_cidr("2001:db8:1::/64")}).ranges(Family::v6));
}

TEST_CASE("nft read-back: a comment is bounded by its userdata (was: read past the buffer)") {
    // A rule comment record claiming 200 bytes in 5 bytes of userdata, without a NUL: what
    // anyone with CAP_NET_ADMIN in the namespace can store (userdata is opaque to the kernel).
    std::unique_ptr<nftnl_rule, void (*)(const nftnl_rule*)> r(nftnl_rule_alloc(), nftnl_rule_free);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, nft::kTable);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, nft::kChain);
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    const std::uint8_t ud[] = {0 /* NFTNL_UDATA_RULE_COMMENT */, 200, 'a', 'b', 'c'};
    nftnl_rule_set_data(r.get(), NFTNL_RULE_USERDATA, ud, sizeof ud);
    std::vector<std::uint32_t> buf(1024);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(buf.data()), NFT_MSG_NEWRULE,
                                          NFPROTO_INET, 0, 1);
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    std::optional<nft::RuleSummary> got;
    REQUIRE(nft::parse_rule_message(nlh, got));
    REQUIRE(got);
    CHECK(got->comment == "abc");
}

TEST_CASE("nft read-back: two interval starts at one key decode to one well-formed range") {
    IpAddr a = parse_ip("10.0.0.0"), end = parse_ip("10.0.1.0");
    auto ranges = nft::elements_to_ranges(Family::v4, {{a, false}, {a, false}, {end, true}});
    REQUIRE(ranges.size() == 1);
    CHECK(ranges[0].str() == "10.0.0.0/24");
    // a start right after another: the first closes just before it
    auto two = nft::elements_to_ranges(Family::v4,
                                       {{a, false}, {parse_ip("10.0.0.128"), false}, {end, true}});
    REQUIRE(two.size() == 2);
    CHECK(two[0].first.value <= two[0].last.value);
}

TEST_CASE("conntrack: the flows of a real dump") {
    int flows = 0;
    bool to_lan = false;
    auto flow_bytes = read_bytes("fuzz/corpus/conntrack/lab-flows");
    for (const auto* m : messages(flow_bytes)) {
        auto t = parse_conntrack_message(m);
        if (!t) continue;
        ++flows;
        to_lan |= t->src == parse_ip("172.31.0.2") && t->dst == parse_ip("192.168.1.10");
    }
    CHECK(flows >= 2);
    CHECK(to_lan);
}
