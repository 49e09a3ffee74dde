// The compiled batch, walked without a kernel: framing, order, sequence numbers, and the
// rules and set elements parsed back with libnftnl. Rules are compared against a golden dump
// in libnftnl's debug format (regenerate: NSEGRESS_UPDATE_GOLDEN=1 nsegress_unit_tests).
#include <doctest/doctest.h>

#include <netinet/in.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <iterator>
#include <optional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "nsegress/nft.hpp"

using namespace nsegress;
namespace fs = std::filesystem;

namespace {

struct Walked {
    std::vector<const nlmsghdr*> msgs;
};

Walked walk(const nft::Batch& b) {
    Walked w;
    int left = static_cast<int>(b.bytes.size());
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(b.bytes.data());
    while (mnl_nlmsg_ok(nlh, left)) {
        w.msgs.push_back(nlh);
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    CHECK(left == 0);  // nothing trailing, nothing truncated
    return w;
}

std::uint16_t nft_type(const nlmsghdr* nlh) { return nlh->nlmsg_type & 0xff; }
bool is_nft(const nlmsghdr* nlh) { return (nlh->nlmsg_type >> 8) == NFNL_SUBSYS_NFTABLES; }

std::string rules_text(const nft::Batch& b) {
    std::string out;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWRULE) continue;
        nftnl_rule* r = nftnl_rule_alloc();
        REQUIRE(nftnl_rule_nlmsg_parse(nlh, r) == 0);
        char buf[4096];
        nftnl_rule_snprintf(buf, sizeof buf, r, NFTNL_OUTPUT_DEFAULT, 0);
        out += buf;
        out += "\n";
        nftnl_rule_free(r);
    }
    return out;
}

// Decodes NEWSETELEM messages with plain libmnl attribute walking (libnftnl's parser is for
// kernel dumps), so this checks our encoding independently of the library that built it.
template <typename Fn>
void nested(const nlattr* nest, Fn fn) {
    const auto* a = static_cast<const nlattr*>(mnl_attr_get_payload(nest));
    int left = static_cast<int>(mnl_attr_get_payload_len(nest));
    while (mnl_attr_ok(a, left)) {
        fn(a);
        left -= static_cast<int>(MNL_ALIGN(a->nla_len));
        a = mnl_attr_next(a);
    }
}

std::vector<Range> elements_back(const nft::Batch& b, const char* set, Family f,
                                 std::size_t* messages, std::uint16_t type = NFT_MSG_NEWSETELEM) {
    std::vector<nft::ElementKey> keys;
    *messages = 0;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != type) continue;
        std::string name;
        const nlattr* list = nullptr;
        const auto* a =
            static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
        int left = static_cast<int>(static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh)) -
                                    reinterpret_cast<const char*>(a));
        while (mnl_attr_ok(a, left)) {
            if (mnl_attr_get_type(a) == NFTA_SET_ELEM_LIST_SET) name = mnl_attr_get_str(a);
            if (mnl_attr_get_type(a) == NFTA_SET_ELEM_LIST_ELEMENTS) list = a;
            left -= static_cast<int>(MNL_ALIGN(a->nla_len));
            a = mnl_attr_next(a);
        }
        if (name != set) continue;
        REQUIRE(list);
        ++*messages;
        std::size_t in_msg = 0;
        nested(list, [&](const nlattr* elem) {
            // libnftnl numbers the element nests 1, 2, 3...; the kernel ignores the type.
            nft::ElementKey k;
            bool has_key = false;
            nested(elem, [&](const nlattr* x) {
                if (mnl_attr_get_type(x) == NFTA_SET_ELEM_FLAGS)
                    k.interval_end = ntohl(mnl_attr_get_u32(x)) & NFT_SET_ELEM_INTERVAL_END;
                if (mnl_attr_get_type(x) == NFTA_SET_ELEM_KEY)
                    nested(x, [&](const nlattr* v) {
                        REQUIRE(mnl_attr_get_type(v) == NFTA_DATA_VALUE);
                        REQUIRE(mnl_attr_get_payload_len(v) == (f == Family::v4 ? 4u : 16u));
                        k.key = IpAddr::from_bytes(f, mnl_attr_get_payload(v));
                        has_key = true;
                    });
            });
            CHECK(has_key);
            keys.push_back(k);
            ++in_msg;
        });
        CHECK(in_msg <= 2 * nft::kElementsPerMessage);
    }
    return nft::elements_to_ranges(f, keys);
}

void golden(const std::string& name, const std::string& actual) {
    fs::path path = fs::path(__FILE__).parent_path() / "golden" / name;
    if (std::getenv("NSEGRESS_UPDATE_GOLDEN")) {
        std::ofstream(path) << actual;
        MESSAGE("updated " << path.string());
        return;
    }
    std::ifstream in(path);
    REQUIRE_MESSAGE(in, "missing golden file " << path.string());
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(ss.str() == actual);
}

}  // namespace

TEST_CASE("policy batch: framing, order, sequence numbers and ACK flags") {
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    nft::Batch b = nft::compile_policy(allow, 5000);
    auto w = walk(b);
    REQUIRE(w.msgs.size() == b.messages.size());
    for (std::size_t i = 0; i < w.msgs.size(); ++i) {
        CAPTURE(b.messages[i].what);
        CHECK(w.msgs[i]->nlmsg_seq == 5000 + i);
        CHECK(b.messages[i].seq == 5000 + i);
        bool framing = i == 0 || i + 1 == w.msgs.size();
        CHECK(bool(w.msgs[i]->nlmsg_flags & NLM_F_ACK) == !framing);
        CHECK(b.messages[i].ack == !framing);
    }
    CHECK(w.msgs.front()->nlmsg_type == NFNL_MSG_BATCH_BEGIN);
    CHECK(w.msgs.back()->nlmsg_type == NFNL_MSG_BATCH_END);

    std::vector<std::uint16_t> types;
    for (std::size_t i = 1; i + 1 < w.msgs.size(); ++i) {
        REQUIRE(is_nft(w.msgs[i]));
        types.push_back(nft_type(w.msgs[i]));
    }
    // Ensure, delete, recreate the table; sets (allow4, allow6, nd6) before the chains (output,
    // inbound); rules last.
    std::vector<std::uint16_t> head{NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE,
                                    NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_MSG_NEWSET,
                                    NFT_MSG_NEWSETELEM, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM,
                                    // allowp4, allowp6, icmp4, icmp6: empty, always there
                                    NFT_MSG_NEWSET, NFT_MSG_NEWSET, NFT_MSG_NEWSET, NFT_MSG_NEWSET,
                                    NFT_MSG_NEWCHAIN, NFT_MSG_NEWCHAIN};
    REQUIRE(types.size() > head.size());
    CHECK(std::vector<std::uint16_t>(types.begin(), types.begin() + head.size()) == head);
    for (std::size_t i = head.size(); i < types.size(); ++i) CHECK(types[i] == NFT_MSG_NEWRULE);
    // 2 inbound-labelling rules; output: IPv4 options, IPv6 routing header, 4 forged source
    // (not ours when new/invalid/untracked/related; 127/8 and ::1 beyond lo; not ours through
    // lo in any state), loopback, allow4, allow6, allowp4, allowp6, icmp4, icmp6, replies, 2
    // related, deny log, verdict = 18; with IPv6 allowed, DAD + 3 neighbour discovery.
    CHECK(types.size() - head.size() == 2 + 18 + 4);
}

TEST_CASE("policy rules parse back with libnftnl and match the golden dump") {
    golden("policy_v4.rules",
           rules_text(nft::compile_policy(AllowList({parse_cidr("192.168.1.0/24")}), 1)));
    golden("policy_v4v6.rules",
           rules_text(nft::compile_policy(
               AllowList({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")}), 1)));
    golden("policy_v4_audit.rules",
           rules_text(nft::compile_policy(AllowList({parse_cidr("192.168.1.0/24")}), 1,
                                          nft::Mode::audit)));
}

namespace {

// The NEWRULE messages of a batch, parsed back, in order.
std::vector<std::string> rule_dumps(const nft::Batch& b) {
    std::vector<std::string> out;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWRULE) continue;
        nftnl_rule* r = nftnl_rule_alloc();
        REQUIRE(nftnl_rule_nlmsg_parse(nlh, r) == 0);
        char buf[4096];
        nftnl_rule_snprintf(buf, sizeof buf, r, NFTNL_OUTPUT_DEFAULT, 0);
        out.emplace_back(buf);
        nftnl_rule_free(r);
    }
    return out;
}

std::uint32_t chain_policy(const nft::Batch& b) {
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWCHAIN) continue;
        nftnl_chain* c = nftnl_chain_alloc();
        REQUIRE(nftnl_chain_nlmsg_parse(nlh, c) == 0);
        std::uint32_t policy = nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY);
        nftnl_chain_free(c);
        return policy;
    }
    FAIL("no NEWCHAIN message");
    return 0;
}

}  // namespace

TEST_CASE("the deny log: its own rate-limited rule right before the verdict, in both modes") {
    for (auto mode : {nft::Mode::enforce, nft::Mode::audit}) {
        CAPTURE(nft::mode_name(mode));
        auto rules =
            rule_dumps(nft::compile_policy(AllowList({parse_cidr("10.0.0.0/8")}), 1, mode));
        REQUIRE(rules.size() >= 2);
        const std::string& log = rules[rules.size() - 2];
        const std::string& verdict = rules.back();
        // Only new flows, limited, counted, then logged to our group with the mode's prefix.
        auto at = [&](const char* what) { return log.find(what); };
        REQUIRE(at("ct load state") != std::string::npos);
        CHECK(log.find("reg 1 & 0x00000008") != std::string::npos);  // ct state new
        CHECK(at("ct load state") < at("limit rate 50/second burst 100 type packets"));
        CHECK(at("limit rate") < at("counter"));
        CHECK(at("counter") < at("log prefix"));
        CHECK(log.find(std::string("log prefix ") +
                       (mode == nft::Mode::audit ? nft::kLogPrefixAudit : nft::kLogPrefixEnforce) +
                       " group 28275") != std::string::npos);
        CHECK(log.find("immediate") == std::string::npos);  // no verdict: the packet goes on
        CHECK(log.find("nsegress: deny log") != std::string::npos);
        // The verdict rule carries no limit: packets over the log limit are still refused.
        CHECK(verdict.find("limit") == std::string::npos);
        if (mode == nft::Mode::enforce) {
            CHECK(verdict.find("reject type 2 code 3") != std::string::npos);
            CHECK(verdict.find("nsegress: refused") != std::string::npos);
        } else {
            CHECK(verdict.find("immediate reg 0 accept") != std::string::npos);
            CHECK(verdict.find("reject") == std::string::npos);
            CHECK(verdict.find("nsegress: audited") != std::string::npos);
        }
        CHECK(verdict.find("counter") != std::string::npos);
        // Nothing else is logged and nothing else rejects.
        for (std::size_t i = 0; i + 2 < rules.size(); ++i) {
            CHECK(rules[i].find("log ") == std::string::npos);
            CHECK(rules[i].find("reject") == std::string::npos);
        }
    }
}

TEST_CASE("audit mode: chain policy accept, same sets and allow rules as enforce") {
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    auto enforce = nft::compile_policy(allow, 1, nft::Mode::enforce);
    auto audit = nft::compile_policy(allow, 1, nft::Mode::audit);
    CHECK(chain_policy(enforce) == NF_DROP);
    CHECK(chain_policy(audit) == NF_ACCEPT);
    auto re = rule_dumps(enforce), ra = rule_dumps(audit);
    REQUIRE(re.size() == ra.size());
    for (std::size_t i = 0; i + 2 < re.size(); ++i) CHECK(re[i] == ra[i]);  // all but log + verdict
    std::size_t m4 = 0, m6 = 0;
    CHECK(elements_back(audit, nft::kSet4, Family::v4, &m4) == allow.ranges(Family::v4));
    CHECK(elements_back(audit, nft::kSet6, Family::v6, &m6) == allow.ranges(Family::v6));

    auto text = nft::render_policy(allow, nft::Mode::audit);
    CHECK(text.find("policy accept;") != std::string::npos);
    CHECK(text.find("policy drop;") == std::string::npos);
    CHECK(text.find("reject") == std::string::npos);
    CHECK(text.find("ct state new limit rate 50/second burst 100 packets counter log prefix "
                    "\"nsegress audit\" "
                    "group 28275") != std::string::npos);
    CHECK(text.find("counter accept comment \"nsegress: audited\"") != std::string::npos);
    auto etext = nft::render_policy(allow);
    CHECK(etext.find("log prefix \"nsegress refused\" group 28275") != std::string::npos);
    CHECK(etext.find("log prefix") < etext.find("reject with icmpx admin-prohibited"));
}

TEST_CASE("neighbour discovery is accepted only when an IPv6 CIDR is allowed") {
    auto v4 = rules_text(nft::compile_policy(AllowList({parse_cidr("10.0.0.0/8")}), 1));
    auto v6 = rules_text(nft::compile_policy(AllowList({parse_cidr("2001:db8::/32")}), 1));
    auto count = [](const std::string& s, const std::string& what) {
        std::size_t n = 0;
        for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
        return n;
    };
    // The two echo rules (icmp4, icmp6) read the ICMP type in every policy.
    CHECK(count(v4, "payload load 1b @ transport header + 0") == 2);
    CHECK(count(v6, "payload load 1b @ transport header + 0") == 2 + 4);  // DAD + RS, NS, NA
    // Only towards the link: RS, NS and NA look their destination up in nd6, DAD compares it
    // with the solicited-node prefix ff02::1:ff00:0/104.
    CHECK(count(v6, "lookup reg 1 set nd6") == 3);
    CHECK(count(v6, "payload load 13b @ network header + 24") == 1);
    CHECK(nft::render_policy(AllowList({parse_cidr("10.0.0.0/8")})).find("nd-neighbor") ==
          std::string::npos);
    CHECK(
        nft::render_policy(AllowList({parse_cidr("2001:db8::/32")})).find("nd-neighbor-solicit") !=
        std::string::npos);
}

TEST_CASE("set elements round-trip, chunked, including the top of the address space") {
    AllowList allow;
    for (unsigned i = 0; i < 5000; ++i)  // 5000 disjoint /32s: 10.0.0.0, 10.0.0.2, ...
        allow.add(Cidr{IpAddr{Family::v4, (10u << 24) + 2 * i}, 32});
    allow.add(parse_cidr("255.255.255.0/24"));
    allow.add(parse_cidr("ffff::/16"));
    allow.add(parse_cidr("2001:db8::/32"));
    nft::Batch b = nft::compile_policy(allow, 1);
    std::size_t msgs4 = 0, msgs6 = 0;
    CHECK(elements_back(b, nft::kSet4, Family::v4, &msgs4) == allow.ranges(Family::v4));
    CHECK(elements_back(b, nft::kSet6, Family::v6, &msgs6) == allow.ranges(Family::v6));
    CHECK(msgs4 == (5001 + nft::kElementsPerMessage - 1) / nft::kElementsPerMessage);
    CHECK(msgs6 == 1);
}

TEST_CASE("an empty allow-list compiles to empty sets and a refusing chain") {
    nft::Batch b = nft::compile_policy(AllowList{}, 1);
    // Only nd6 has elements (link-local and link multicast); allow4 and allow6 are empty.
    std::size_t with_elements = 0;
    for (const auto* nlh : walk(b).msgs)
        with_elements += is_nft(nlh) && nft_type(nlh) == NFT_MSG_NEWSETELEM;
    CHECK(with_elements == 1);
    std::size_t msgs = 0;
    CHECK(elements_back(b, nft::kSet4, Family::v4, &msgs).empty());
    CHECK(elements_back(b, nft::kSet6, Family::v6, &msgs).empty());
    CHECK(rules_text(b).find("reject type 2 code 3") != std::string::npos);
}

TEST_CASE("delete batch: ensure then delete, so it succeeds when the table is absent") {
    nft::Batch b = nft::compile_delete(7);
    auto w = walk(b);
    REQUIRE(w.msgs.size() == 4);
    CHECK(nft_type(w.msgs[1]) == NFT_MSG_NEWTABLE);
    CHECK(nft_type(w.msgs[2]) == NFT_MSG_DELTABLE);
}

TEST_CASE("elements_to_ranges decodes start/end keys in any order") {
    auto ip = [](const char* s) { return parse_ip(s); };
    std::vector<nft::ElementKey> keys{
        {ip("10.0.1.0"), true}, {ip("10.0.0.0"), false}, {ip("192.168.0.0"), false}};
    auto r = nft::elements_to_ranges(Family::v4, keys);
    REQUIRE(r.size() == 2);
    CHECK(r[0].str() == "10.0.0.0/24");
    CHECK(r[1].str() == "192.168.0.0-255.255.255.255");
}

TEST_CASE("render_policy is an nft script that replaces the table") {
    auto text = nft::render_policy(AllowList(
        {parse_cidr("192.168.1.0/24"), parse_cidr("10.0.0.0/24"), parse_cidr("10.0.1.0/25")}));
    CHECK(text.rfind("table inet nsegress\ndelete table inet nsegress\ntable inet nsegress {", 0) ==
          0);
    CHECK(text.find("10.0.0.0-10.0.1.127") != std::string::npos);
    CHECK(text.find("192.168.1.0/24") != std::string::npos);
    CHECK(text.find("policy drop;") != std::string::npos);
    CHECK(text.find("ct state established") == std::string::npos);
}

TEST_CASE("netdev egress table: same batch, its own sets, one egress chain per device") {
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    nft::NetdevPlan plan;
    plan.install = true;
    plan.devices = {{"eth0", true}, {"wg0", false}};
    plan.neighbour6.add(parse_cidr("fe80::/10"));
    nft::Batch b = nft::compile_policy(allow, 100, nft::Mode::enforce, plan);
    auto w = walk(b);
    REQUIRE(w.msgs.size() == b.messages.size());
    CHECK(w.msgs.front()->nlmsg_type == NFNL_MSG_BATCH_BEGIN);
    CHECK(w.msgs.back()->nlmsg_type == NFNL_MSG_BATCH_END);
    std::size_t netdev_msgs = 0, chains = 0, rules = 0;
    std::string netdev_rules;
    for (const auto* nlh : w.msgs) {
        if (!is_nft(nlh)) continue;
        const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        if (g->nfgen_family != NFPROTO_NETDEV) continue;
        ++netdev_msgs;
        if (nft_type(nlh) == NFT_MSG_NEWCHAIN) ++chains;
        if (nft_type(nlh) == NFT_MSG_NEWRULE) {
            ++rules;
            nftnl_rule* r = nftnl_rule_alloc();
            REQUIRE(nftnl_rule_nlmsg_parse(nlh, r) == 0);
            char buf[4096];
            nftnl_rule_snprintf(buf, sizeof buf, r, NFTNL_OUTPUT_DEFAULT, 0);
            netdev_rules += std::string(buf) + "\n";
            nftnl_rule_free(r);
        }
    }
    CHECK(chains == 2);
    // eth0: ip options, IPv6 extension headers, DAD, own4, own6, allow4, allow6, allowp4,
    // allowp6, icmp4, icmp6, arp, 3 x nd, drop; wg0 (no Ethernet header): the same without arp.
    CHECK(rules == 16 + 15);
    CHECK(netdev_msgs > rules + chains);
    // The frame is read, never skb->protocol (which a packet socket's sender chooses).
    CHECK(netdev_rules.find("meta load protocol") == std::string::npos);
    CHECK(netdev_rules.find("payload load 2b @ link header + 12") != std::string::npos);
    CHECK(netdev_rules.find("payload load 4b @ link header + 30") != std::string::npos);
    CHECK(netdev_rules.find("payload load 4b @ network header + 16") != std::string::npos);  // wg0
    // Error messages name the netdev table's objects.
    bool named = false;
    for (const auto& m : b.messages) named |= m.what.rfind("netdev chain egress_wg0", 0) == 0;
    CHECK(named);
    // The inet part is the same as without the netdev table.
    CHECK(rules_text(nft::compile_policy(allow, 1)) ==
          rules_text(nft::compile_policy(allow, 1, nft::Mode::enforce, nft::NetdevPlan{})));
    auto text = nft::render_netdev(allow, plan);
    CHECK(text.find("type filter hook egress device \"eth0\"") != std::string::npos);
    CHECK(text.find("0xc0a80100-0xc0a801ff") != std::string::npos);
}

TEST_CASE("a stale netdev table is deleted in the same batch; release deletes both") {
    nft::NetdevPlan stale;
    stale.replace_existing = true;
    auto b =
        nft::compile_policy(AllowList({parse_cidr("10.0.0.0/8")}), 1, nft::Mode::enforce, stale);
    std::size_t netdev_tables = 0;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh)) continue;
        const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        if (g->nfgen_family == NFPROTO_NETDEV) {
            CHECK((nft_type(nlh) == NFT_MSG_NEWTABLE || nft_type(nlh) == NFT_MSG_DELTABLE));
            ++netdev_tables;
        }
    }
    CHECK(netdev_tables == 2);  // ensure + delete
    CHECK(walk(nft::compile_delete(7, true)).msgs.size() == 6);
    CHECK(walk(nft::compile_delete(7, false)).msgs.size() == 4);
}

TEST_CASE(
    "an earlier policy of our shape is replaced in place: chain kept, rules and elements flushed "
    "first") {
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    nft::Installed reusable;
    reusable.inet = nft::Found::reusable;
    nft::Batch b = nft::compile_policy(allow, 500, nft::Mode::enforce, nft::NetdevPlan{}, reusable);
    std::vector<std::uint16_t> types;
    for (const auto* nlh : walk(b).msgs)
        if (is_nft(nlh)) types.push_back(nft_type(nlh));
    auto first = [&](std::uint16_t t) {
        return std::find(types.begin(), types.end(), t) - types.begin();
    };
    auto count = [&](std::uint16_t t) { return std::count(types.begin(), types.end(), t); };
    CHECK(count(NFT_MSG_DELTABLE) == 0);  // the base chain's hook never goes away
    CHECK(count(NFT_MSG_DELCHAIN) == 0);
    CHECK(count(NFT_MSG_NEWSET) == 2);  // the sets are kept too, but for allowp4/allowp6:
    CHECK(count(NFT_MSG_DELSET) == 2);  // replaced (a large pipapo flush is slow), after
    CHECK(first(NFT_MSG_DELRULE) < first(NFT_MSG_DELSET));  // the rules using them are flushed
    CHECK(count(NFT_MSG_NEWCHAIN) == 2);    // same hooks; output carries the (maybe new) policy
    CHECK(count(NFT_MSG_DELRULE) == 2);     // flush chain output, chain inbound
    CHECK(count(NFT_MSG_DELSETELEM) == 5);  // flush set allow4, allow6, nd6, icmp4, icmp6
    // Flushes first: a flush after the additions would delete them as well.
    CHECK(first(NFT_MSG_DELRULE) < first(NFT_MSG_NEWRULE));
    CHECK(first(NFT_MSG_DELSETELEM) < first(NFT_MSG_NEWSETELEM));
    // The same rules as the delete-and-create form.
    CHECK(rules_text(b) == rules_text(nft::compile_policy(allow, 500)));
    // Without knowledge of what is installed: the delete-and-create form.
    nft::Batch fresh = nft::compile_policy(allow, 500);
    std::size_t deletes = 0;
    for (const auto* nlh : walk(fresh).msgs)
        deletes += is_nft(nlh) && nft_type(nlh) == NFT_MSG_DELTABLE;
    CHECK(deletes == 1);
}

TEST_CASE(
    "netdev in place: kept chains are flushed, new devices get chains, gone devices lose theirs") {
    AllowList allow({parse_cidr("192.168.1.0/24")});
    nft::NetdevPlan plan;
    plan.install = true;
    plan.replace_existing = true;
    plan.devices = {{"eth0", true}, {"eth1", true}};
    nft::Installed in;
    in.inet = nft::Found::reusable;
    in.netdev = nft::Found::reusable;
    in.netdev_devices = {"eth0", "eth9"};
    nft::Batch b = nft::compile_policy(allow, 1, nft::Mode::enforce, plan, in);
    std::vector<std::string> what;
    for (const auto& m : b.messages) what.push_back(m.what);
    auto has = [&](const std::string& w) {
        return std::find(what.begin(), what.end(), w) != what.end();
    };
    CHECK(has("netdev flush chain egress_eth0"));
    CHECK_FALSE(has("netdev flush chain egress_eth1"));  // new: nothing to flush
    CHECK(has("netdev flush chain egress_eth9"));
    CHECK(has("netdev chain egress_eth9 (stale)"));
    CHECK_FALSE(has("netdev table netdev nsegress (replace)"));
}

// allowp4 / allowp6 elements decoded by attribute walking: KEY and KEY_END, padded fields.
std::vector<PortRange> port_elements_back(const nft::Batch& b, const char* set, Family f) {
    std::vector<PortRange> out;
    const std::size_t alen = f == Family::v4 ? 4 : 16;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWSETELEM) continue;
        std::string name;
        const nlattr* list = nullptr;
        const auto* a =
            static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
        int left = static_cast<int>(static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh)) -
                                    reinterpret_cast<const char*>(a));
        while (mnl_attr_ok(a, left)) {
            if (mnl_attr_get_type(a) == NFTA_SET_ELEM_LIST_SET) name = mnl_attr_get_str(a);
            if (mnl_attr_get_type(a) == NFTA_SET_ELEM_LIST_ELEMENTS) list = a;
            left -= static_cast<int>(MNL_ALIGN(a->nla_len));
            a = mnl_attr_next(a);
        }
        if (name != set) continue;
        REQUIRE(list);
        nested(list, [&](const nlattr* elem) {
            std::vector<std::uint8_t> key, end;
            nested(elem, [&](const nlattr* x) {
                CHECK(mnl_attr_get_type(x) != NFTA_SET_ELEM_FLAGS);  // no interval-end elements
                auto* to = mnl_attr_get_type(x) == NFTA_SET_ELEM_KEY       ? &key
                           : mnl_attr_get_type(x) == NFTA_SET_ELEM_KEY_END ? &end
                                                                           : nullptr;
                if (to)
                    nested(x, [&](const nlattr* v) {
                        const auto* p = static_cast<const std::uint8_t*>(mnl_attr_get_payload(v));
                        to->assign(p, p + mnl_attr_get_payload_len(v));
                    });
            });
            REQUIRE(key.size() == alen + 8);
            REQUIRE(end.size() == alen + 8);
            // padding is zero; the protocol is the same at both ends
            for (auto* k : {&key, &end}) {
                CHECK(((*k)[alen + 1] | (*k)[alen + 2] | (*k)[alen + 3] | (*k)[alen + 6] |
                       (*k)[alen + 7]) == 0);
            }
            CHECK(key[alen] == end[alen]);
            PortRange pr;
            pr.addrs = Range{IpAddr::from_bytes(f, key.data()), IpAddr::from_bytes(f, end.data())};
            pr.proto = static_cast<IpProto>(key[alen]);
            pr.first = static_cast<std::uint16_t>(key[alen + 4] << 8 | key[alen + 5]);
            pr.last = static_cast<std::uint16_t>(end[alen + 4] << 8 | end[alen + 5]);
            out.push_back(pr);
        });
    }
    return out;
}

TEST_CASE(
    "port-scoped entries: concatenated interval sets, exact elements, the port and echo rules") {
    std::vector<AllowEntry> es;
    for (const char* e :
         {"192.168.1.0/24", "198.51.100.0/24 tcp/443 tcp/8443 udp/53", "198.51.100.10 tcp",
          "2001:db8::/32 tcp/8000-8100 sctp/9", "203.0.113.7 icmp", "2001:db8:2::1 icmpv6"})
        es.push_back(parse_allow_entry(e));
    Policy policy(es);
    nft::Batch b = nft::compile_policy(policy, 1);
    CHECK(port_elements_back(b, nft::kSetPorts4, Family::v4) == policy.scoped(Family::v4));
    CHECK(port_elements_back(b, nft::kSetPorts6, Family::v6) == policy.scoped(Family::v6));
    std::size_t m = 0;
    CHECK(elements_back(b, nft::kSetEcho4, Family::v4, &m) == policy.echo().ranges(Family::v4));
    CHECK(elements_back(b, nft::kSetEcho6, Family::v6, &m) == policy.echo().ranges(Family::v6));
    CHECK(elements_back(b, nft::kSet4, Family::v4, &m) == policy.all().ranges(Family::v4));
    // The sets are declared concatenated intervals with their field lengths.
    bool p4 = false;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWSET) continue;
        nftnl_set* s = nftnl_set_alloc();
        REQUIRE(nftnl_set_nlmsg_parse(nlh, s) == 0);
        if (std::string(nftnl_set_get_str(s, NFTNL_SET_NAME)) == nft::kSetPorts4) {
            p4 = true;
            CHECK(nftnl_set_get_u32(s, NFTNL_SET_FLAGS) == (NFT_SET_INTERVAL | NFT_SET_CONCAT));
            CHECK(nftnl_set_get_u32(s, NFTNL_SET_KEY_LEN) == 12);
            CHECK(nftnl_set_get_u32(s, NFTNL_SET_KEY_TYPE) == ((7u << 6 | 12u) << 6 | 13u));
        }
        nftnl_set_free(s);
    }
    CHECK(p4);
    auto rules = rules_text(b);
    CHECK(rules.find("lookup reg 1 set allowp4") != std::string::npos);
    CHECK(rules.find("payload load 2b @ transport header + 2 => reg 10") != std::string::npos);
    CHECK(rules.find("lookup reg 1 set icmp6") != std::string::npos);
    auto text = nft::render_policy(policy);
    CHECK(text.find("198.51.100.10/32 . tcp . 1-442") != std::string::npos);  // the /24 holds 443
    CHECK(text.find("ip daddr . meta l4proto . th dport @allowp4 counter accept") !=
          std::string::npos);
    CHECK(text.find("icmp type echo-request ip daddr @icmp4") != std::string::npos);
    // The same policy read back element by element normalizes to itself (what status compares).
    Policy back(
        policy.all(),
        [&] {
            auto v = port_elements_back(b, nft::kSetPorts4, Family::v4);
            auto v6 = port_elements_back(b, nft::kSetPorts6, Family::v6);
            v.insert(v.end(), v6.begin(), v6.end());
            return v;
        }(),
        policy.echo());
    CHECK(back == policy);
}

TEST_CASE("10^4 port-scoped entries compile into chunked messages") {
    std::vector<AllowEntry> es;
    for (unsigned i = 0; i < 10000; ++i)
        es.push_back(AllowEntry{Cidr{IpAddr{Family::v4, (u128{10} << 24) | (2 * i)}, 32},
                                {PortSpec{IpProto::tcp, 443, 443},
                                 PortSpec{IpProto::udp, static_cast<std::uint16_t>(1000 + i % 7),
                                          static_cast<std::uint16_t>(1000 + i % 7)}}});
    Policy policy(es);
    nft::Batch b = nft::compile_policy(policy, 1);
    CHECK(port_elements_back(b, nft::kSetPorts4, Family::v4) == policy.scoped(Family::v4));
}

namespace {

// A batch as a list of what it asks, one message a line: type, family and the object it names
// (set elements as a count, not their values), so a change in what is sent, or in its order,
// shows as a diff of the golden file.
std::string message_list(const nft::Batch& b) {
    static const std::map<std::uint16_t, const char*> names{
        {NFT_MSG_NEWTABLE, "NEWTABLE"},     {NFT_MSG_DELTABLE, "DELTABLE"},
        {NFT_MSG_NEWCHAIN, "NEWCHAIN"},     {NFT_MSG_DELCHAIN, "DELCHAIN"},
        {NFT_MSG_NEWSET, "NEWSET"},         {NFT_MSG_DELSET, "DELSET"},
        {NFT_MSG_NEWSETELEM, "NEWSETELEM"}, {NFT_MSG_DELSETELEM, "DELSETELEM"},
        {NFT_MSG_NEWRULE, "NEWRULE"},       {NFT_MSG_DELRULE, "DELRULE"},
    };
    auto w = walk(b);
    REQUIRE(w.msgs.size() == b.messages.size());
    std::string out;
    for (std::size_t i = 0; i < w.msgs.size(); ++i) {
        const nlmsghdr* nlh = w.msgs[i];
        if (!is_nft(nlh)) {
            out += nlh->nlmsg_type == NFNL_MSG_BATCH_BEGIN ? "BATCH_BEGIN\n" : "BATCH_END\n";
            continue;
        }
        const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        auto it = names.find(nft_type(nlh));
        std::string type = it == names.end() ? std::to_string(nft_type(nlh)) : it->second;
        std::string fam = g->nfgen_family == NFPROTO_INET     ? "inet"
                          : g->nfgen_family == NFPROTO_NETDEV ? "netdev"
                                                              : std::to_string(g->nfgen_family);
        out += type + " " + fam + " " + b.messages[i].what + "\n";
    }
    return out;
}

nft::NetdevPlan two_devices() {
    nft::NetdevPlan plan;
    plan.install = true;
    plan.devices = {{"eth0", true}, {"wg0", false}};
    plan.neighbour6.add(parse_cidr("fe80::/10"));
    plan.neighbour6.add(parse_cidr("fd00:31::/64"));
    plan.own.add(parse_cidr("172.31.0.2/32"));
    plan.own.add(parse_cidr("fd00:31::2/128"));
    return plan;
}

// The netdev table's rules only (the inet ones have golden files of their own).
std::string netdev_rules_text(const nft::Batch& b) {
    std::string out;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWRULE) continue;
        const auto* g = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        if (g->nfgen_family != NFPROTO_NETDEV) continue;
        nftnl_rule* r = nftnl_rule_alloc();
        REQUIRE(nftnl_rule_nlmsg_parse(nlh, r) == 0);
        char buf[4096];
        nftnl_rule_snprintf(buf, sizeof buf, r, NFTNL_OUTPUT_DEFAULT, 0);
        out += buf;
        out += "\n";
        nftnl_rule_free(r);
    }
    return out;
}

}  // namespace

TEST_CASE("netdev rules match their golden dump (Ethernet and raw-IP devices)") {
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    golden("netdev_v4v6.rules",
           netdev_rules_text(nft::compile_policy(allow, 1, nft::Mode::enforce, two_devices())));
    golden("netdev_v4v6_audit.rules",
           netdev_rules_text(nft::compile_policy(allow, 1, nft::Mode::audit, two_devices())));
}

TEST_CASE("what each batch sends, message by message, matches its golden list") {
    AllowList allow({parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    // A first restrict (nothing installed), with and without the netdev table.
    golden("batch_first.msgs", message_list(nft::compile_policy(allow, 1)));
    golden("batch_first_netdev.msgs",
           message_list(nft::compile_policy(allow, 1, nft::Mode::enforce, two_devices())));
    // A re-restrict into our own table, and over a foreign table of the same name.
    nft::Installed reusable;
    reusable.inet = nft::Found::reusable;
    golden("batch_reusable.msgs",
           message_list(nft::compile_policy(allow, 1, nft::Mode::enforce, {}, reusable)));
    nft::Installed foreign;
    foreign.inet = nft::Found::foreign;
    golden("batch_foreign.msgs",
           message_list(nft::compile_policy(allow, 1, nft::Mode::enforce, {}, foreign)));
    // release.
    golden("batch_delete.msgs", message_list(nft::compile_delete(1, true)));
}

// ---- Incremental re-restrict (nft.hpp: SetContents, Stamp)
// ---------------------------------------

namespace {

std::vector<std::uint16_t> nft_types(const nft::Batch& b) {
    std::vector<std::uint16_t> types;
    for (const auto* nlh : walk(b).msgs)
        if (is_nft(nlh)) types.push_back(nft_type(nlh));
    return types;
}

// The stamp the final rule of the output chain carries, read back with libnftnl.
std::optional<nft::Stamp> stamp_back(const nft::Batch& b) {
    std::optional<nft::Stamp> out;
    int stamps = 0;
    for (const auto* nlh : walk(b).msgs) {
        if (!is_nft(nlh) || nft_type(nlh) != NFT_MSG_NEWRULE) continue;
        nftnl_rule* r = nftnl_rule_alloc();
        REQUIRE(nftnl_rule_nlmsg_parse(nlh, r) == 0);
        std::uint32_t len = 0;
        const auto* p =
            static_cast<const std::uint8_t*>(nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len));
        for (std::uint32_t at = 0; p && at + 2 <= len; at += 2u + p[at + 1])
            if (p[at] == nft::kStampUdataType) {
                out = nft::decode_stamp(p + at + 2, p[at + 1]);
                ++stamps;
            }
        nftnl_rule_free(r);
    }
    CHECK(stamps <= 1);
    return out;
}

AllowList big_list(unsigned n, unsigned skip_every = 0, unsigned shift = 0) {
    AllowList a;
    for (unsigned i = 0; i < n; ++i) {
        unsigned k = i;
        if (skip_every && i % skip_every == 0) k = i + shift;  // some entries moved elsewhere
        a.add(Cidr{IpAddr{Family::v4, (u128{10} << 24) + (u128{k} << 9)}, 24});
    }
    a.add(parse_cidr("2001:db8:1::/64"));
    return a;
}

}  // namespace

TEST_CASE(
    "re-restrict with what is installed: no set element messages, the same rules, a new stamp") {
    const Policy policy(big_list(3000));
    nft::Installed in;
    in.inet = nft::Found::reusable;
    in.genid = 41;
    in.sets = nft::set_contents(policy, nft::neighbour_destinations({}));
    nft::Batch b = nft::compile_policy(policy, 7, nft::Mode::enforce, {}, in);
    auto types = nft_types(b);
    auto count = [&](std::uint16_t t) { return std::count(types.begin(), types.end(), t); };
    CHECK(count(NFT_MSG_NEWSETELEM) == 0);
    CHECK(count(NFT_MSG_DELSETELEM) == 0);
    CHECK(count(NFT_MSG_NEWSET) == 0);  // the port sets are kept too when unchanged
    CHECK(count(NFT_MSG_DELSET) == 0);
    CHECK(count(NFT_MSG_DELTABLE) == 0);
    CHECK(count(NFT_MSG_DELRULE) == 2);  // rules are flushed and written again (a few dozen)
    {  // The same rules (the stamp is a userdata record beside the final rule's comment).
        nft::Installed unstamped = in;
        unstamped.genid = 0;
        CHECK(rules_text(nft::compile_policy(policy, 7, nft::Mode::enforce, {}, unstamped)) ==
              rules_text(nft::compile_policy(policy, 7)));
    }
    auto st = stamp_back(b);
    REQUIRE(st);
    CHECK(st->genid == 42);  // the generation this commit creates
    CHECK(st->digest == nft::digest_of(*in.sets));
    // Without a generation no stamp is written (and the golden batches stay as they are).
    CHECK_FALSE(stamp_back(nft::compile_policy(policy, 7)));
    // The counter wraps past 0, as the kernel's does.
    in.genid = 0xffffffffu;
    CHECK(stamp_back(nft::compile_policy(policy, 7, nft::Mode::enforce, {}, in))->genid == 1);
}

TEST_CASE(
    "re-restrict with 1% changed: exactly the removed ranges deleted and the new ones added") {
    const Policy before(big_list(5000));
    const Policy after(big_list(5000, 100, 7000));  // 50 of 5000 moved
    nft::Installed in;
    in.inet = nft::Found::reusable;
    in.genid = 9;
    in.sets = nft::set_contents(before, nft::neighbour_destinations({}));
    nft::Batch b = nft::compile_policy(after, 7, nft::Mode::enforce, {}, in);
    std::size_t msgs = 0;
    auto added = elements_back(b, nft::kSet4, Family::v4, &msgs, NFT_MSG_NEWSETELEM);
    auto gone = elements_back(b, nft::kSet4, Family::v4, &msgs, NFT_MSG_DELSETELEM);
    std::vector<Range> want_added, want_gone;
    const auto& o = before.all().ranges(Family::v4);
    const auto& n = after.all().ranges(Family::v4);
    std::set_difference(n.begin(), n.end(), o.begin(), o.end(), std::back_inserter(want_added));
    std::set_difference(o.begin(), o.end(), n.begin(), n.end(), std::back_inserter(want_gone));
    CHECK(added == want_added);
    CHECK(gone == want_gone);
    CHECK_FALSE(added.empty());
    CHECK(added.size() < 200);
    // Deletions before additions: a range added back with the same start key finds the old gone.
    auto types = nft_types(b);
    auto first = [&](std::uint16_t t) {
        return std::find(types.begin(), types.end(), t) - types.begin();
    };
    CHECK(first(NFT_MSG_DELSETELEM) < first(NFT_MSG_NEWSETELEM));
    // allow6 did not change: nothing for it.
    CHECK(elements_back(b, nft::kSet6, Family::v6, &msgs, NFT_MSG_NEWSETELEM).empty());
    CHECK(elements_back(b, nft::kSet6, Family::v6, &msgs, NFT_MSG_DELSETELEM).empty());
    // Applying the difference to what was there gives the new list.
    AllowList result;
    for (const auto& r : o)
        if (!std::binary_search(gone.begin(), gone.end(), r)) result.add(r);
    for (const auto& r : added) result.add(r);
    CHECK(result.ranges(Family::v4) == n);
}

TEST_CASE("a changed port set is created anew; unknown contents fall back to flushing everything") {
    const Policy before(big_list(10));
    const Policy after(std::vector<AllowEntry>{parse_allow_entry("192.0.2.0/24 tcp/443")});
    nft::Installed in;
    in.inet = nft::Found::reusable;
    in.genid = 3;
    in.sets = nft::set_contents(before, nft::neighbour_destinations({}));
    auto types = nft_types(nft::compile_policy(after, 7, nft::Mode::enforce, {}, in));
    CHECK(std::count(types.begin(), types.end(), NFT_MSG_DELSET) == 2);
    CHECK(std::count(types.begin(), types.end(), NFT_MSG_NEWSET) == 2);
    in.sets.reset();  // the stamp did not prove them
    types = nft_types(nft::compile_policy(after, 7, nft::Mode::enforce, {}, in));
    CHECK(std::count(types.begin(), types.end(), NFT_MSG_DELSETELEM) == 5);  // flush as before
}

TEST_CASE("stamp and state file round-trip; malformed ones are refused") {
    const Policy p(std::vector<AllowEntry>{
        parse_allow_entry("10.0.0.0/8"), parse_allow_entry("2001:db8::/32"),
        parse_allow_entry("192.0.2.7 tcp/80-90 udp/53"), parse_allow_entry("2001:db8:9::1 tcp/22"),
        parse_allow_entry("198.51.100.1 icmp")});
    auto c = nft::set_contents(p, nft::neighbour_destinations({}));
    CHECK_FALSE(c.ports4.empty());
    CHECK_FALSE(c.echo4.empty());
    CHECK(nft::digest_of(p, nft::neighbour_destinations({})) ==
          nft::digest_of(c));  // without copies
    auto bytes = nft::serialize_contents(c);
    CHECK(bytes == nft::serialize_contents(p, nft::neighbour_destinations({})));
    auto back = nft::parse_contents(bytes);
    REQUIRE(back);
    CHECK(*back == c);
    CHECK(nft::digest_of(*back) == nft::digest_of(c));
    CHECK_FALSE(nft::parse_contents(bytes.substr(0, bytes.size() - 1)));
    CHECK_FALSE(nft::parse_contents(bytes + "x"));
    CHECK_FALSE(nft::parse_contents(""));
    std::string bad = bytes;
    bad[0] = 'X';
    CHECK_FALSE(nft::parse_contents(bad));
    // A huge count is refused, not allocated.
    std::string huge = bytes.substr(0, 8) + std::string("\xff\xff\xff\xff\xff\xff\xff\x0f", 8);
    CHECK_FALSE(nft::parse_contents(huge));
    // The digest tells contents apart.
    auto d = c;
    d.allow4.back().last.value -= 1;
    CHECK_FALSE(nft::digest_of(d) == nft::digest_of(c));
    nft::Stamp st{12345, nft::digest_of(c)};
    auto enc = nft::encode_stamp(st);
    auto dec = nft::decode_stamp(enc.data(), enc.size());
    REQUIRE(dec);
    CHECK(dec->genid == 12345);
    CHECK(dec->digest == st.digest);
    CHECK_FALSE(nft::decode_stamp(enc.data(), enc.size() - 1));
    enc[0] ^= 1;
    CHECK_FALSE(nft::decode_stamp(enc.data(), enc.size()));
}

TEST_CASE("through lo, a source that is not ours is dropped in every conntrack state, both modes") {
    for (auto mode : {nft::Mode::enforce, nft::Mode::audit}) {
        CAPTURE(nft::mode_name(mode));
        auto rules =
            rule_dumps(nft::compile_policy(AllowList({parse_cidr("10.0.0.0/8")}), 1, mode));
        std::size_t lo_accept = rules.size(), lo_forged = rules.size();
        for (std::size_t i = 0; i < rules.size(); ++i) {
            if (rules[i].find("nsegress: loopback") != std::string::npos) lo_accept = i;
            if (rules[i].find("nsegress: forged source") != std::string::npos &&
                rules[i].find("meta load oif") != std::string::npos &&
                rules[i].find("cmp eq reg 1 0x00000001") != std::string::npos)
                lo_forged = i;
        }
        REQUIRE(lo_forged < rules.size());
        REQUIRE(lo_accept < rules.size());
        CHECK(lo_forged + 1 == lo_accept);
        const std::string& r = rules[lo_forged];
        CHECK(r.find("fib saddr type") != std::string::npos);
        CHECK(r.find("cmp neq reg 1 0x00000002") != std::string::npos);  // != local
        CHECK(r.find("ct load state") == std::string::npos);             // whatever the state
        CHECK(r.find("immediate reg 0 drop") != std::string::npos);
        CHECK(r.find("counter") != std::string::npos);
    }
}
