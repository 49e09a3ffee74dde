// watch's pure parts: the summary builder (grouping policy, comments, allow-file round trip),
// the attempt events and their human lines.
#include <doctest/doctest.h>

#include <netinet/in.h>

#include "nsegress/procfs.hpp"
#include "nsegress/render.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/watch.hpp"

using namespace nsegress;
using nflog::PacketInfo;

namespace {

PacketInfo pkt(const char* dst, std::uint8_t proto,
               std::optional<std::uint16_t> dport = std::nullopt,
               std::optional<std::uint8_t> icmp_type = std::nullopt) {
    PacketInfo p;
    p.dst = parse_ip(dst);
    p.family = p.dst.family;
    p.src = parse_ip(p.family == Family::v4 ? "172.31.0.2" : "fd00:31::2");
    p.protocol = proto;
    p.dport = dport;
    if (dport) p.sport = 40000;
    p.icmp_type = icmp_type;
    if (icmp_type) p.icmp_code = 0;
    return p;
}

// The summary as a reviewer leaves it: every '#- ' removed.
std::string review(const std::string& text) {
    std::string reviewed;
    const std::string disabled = kSummaryDisabled;
    for (std::size_t pos = 0; pos < text.size();) {
        auto nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (line.rfind(disabled, 0) == 0) line.erase(0, disabled.size());
        reviewed += line + "\n";
        pos = nl == std::string::npos ? text.size() : nl + 1;
    }
    return reviewed;
}

std::vector<std::string> cidrs_of(const std::vector<SummaryEntry>& v) {
    std::vector<std::string> out;
    for (const auto& e : v) out.push_back(e.cidr.str());
    return out;
}

}  // namespace

TEST_CASE("summary: exact hosts, adjacent ones merged only into prefixes they fill") {
    SummaryBuilder b;
    b.add(pkt("10.0.0.4", IPPROTO_TCP, 443));
    b.add(pkt("10.0.0.5", IPPROTO_TCP, 443));  // .4 + .5 = 10.0.0.4/31 exactly
    b.add(pkt("10.0.1.5", IPPROTO_UDP, 53));
    b.add(pkt("10.0.1.6", IPPROTO_UDP, 53));  // .5 + .6: no single prefix is exactly them
    b.add(pkt("10.0.2.9", IPPROTO_ICMP, std::nullopt, 8));
    b.add(pkt("2001:db8:2::10", IPPROTO_TCP, 8080));
    b.add(pkt("2001:db8:2::11", IPPROTO_TCP, 8080));  // ::10 + ::11 = ::10/127
    b.add(pkt("2001:db8:2::10", IPPROTO_ICMPV6, std::nullopt, 128));
    auto e = b.entries();
    CHECK(cidrs_of(e) == std::vector<std::string>{"10.0.0.4/31", "10.0.1.5/32", "10.0.1.6/32",
                                                  "10.0.2.9/32", "2001:db8:2::10/127"});
    CHECK(b.attempts() == 8);
    CHECK(b.destinations() == 7);
    CHECK(e[0].hosts == 2);
    CHECK(e[0].attempts == 2);
    CHECK(e[0].seen == std::map<std::string, std::uint64_t>{{"tcp/443", 2}});
    CHECK(e[3].seen == std::map<std::string, std::uint64_t>{{"icmp echo-request", 1}});
    CHECK(e[4].attempts == 3);
    CHECK(e[4].seen ==
          std::map<std::string, std::uint64_t>{{"icmpv6 echo-request", 1}, {"tcp/8080", 2}});
}

TEST_CASE("summary: the allow-file covers exactly what was observed, plus the current allow-list") {
    SummaryBuilder b;
    std::vector<std::string> seen{"198.51.100.10", "198.51.100.11",  "198.51.100.200",
                                  "203.0.113.7",   "2001:db8:2::10", "2001:db8:2::ff"};
    for (const auto& s : seen) b.add(pkt(s.c_str(), IPPROTO_UDP, 9999));
    b.add(pkt("198.51.100.10", IPPROTO_TCP, 8080));
    AllowList current({parse_cidr("192.168.1.0/24"), parse_cidr("10.1.0.0/16")});
    std::string text = render_allow_file({"header one", "header two"}, current, b.entries());
    CAPTURE(text);
    CHECK(text.rfind("# header one\n# header two\n", 0) == 0);
    CHECK(text.find("# allowed by the current policy (kept):\n10.1.0.0/16\n192.168.1.0/24\n") !=
          std::string::npos);
    CHECK(text.find("198.51.100.10/31") != std::string::npos);
    CHECK(text.find("# 3 attempt(s) to 2 hosts: udp/9999 x2, tcp/8080 x1") != std::string::npos);

    // As printed, the observed destinations outside the current list are commented out: the
    // raw output allows nothing new (review first).
    CHECK(text.find("\n#- 198.51.100.10/31") != std::string::npos);
    CHECK(text.find("REVIEW") != std::string::npos);
    CHECK(Policy(parse_allow_entries(text, "raw summary")) == Policy(current));
    // Reviewed: every '#- ' removed.
    const std::string reviewed = review(text);
    CHECK(reviewed.find("198.51.100.10/31 tcp/8080 udp/9999") !=
          std::string::npos);  // the grammar's ports
    Policy policy(parse_allow_entries(reviewed, "summary"));
    AllowList parsed = policy.destinations();
    for (const auto& s : seen) CHECK(parsed.contains(parse_ip(s)));
    for (const auto& s : seen) CHECK(policy.allows(parse_ip(s), IpProto::udp, 9999));
    CHECK_FALSE(policy.allows(parse_ip("203.0.113.7"), IpProto::udp, 9998));
    CHECK_FALSE(policy.allows(parse_ip("203.0.113.7"), IpProto::tcp, 9999));
    CHECK(policy.allows(parse_ip("192.168.1.77"), IpProto::sctp,
                        1));  // the current CIDRs, kept whole
    for (const char* not_seen :
         {"198.51.100.9", "198.51.100.12", "198.51.100.199", "198.51.100.201", "203.0.113.6",
          "203.0.113.8", "2001:db8:2::11", "2001:db8:2::fe"})
        CHECK_FALSE(parsed.contains(parse_ip(not_seen)));
    CHECK(parsed.contains(parse_ip("192.168.1.77")));
    CHECK(parsed.contains(parse_ip("10.1.2.3")));
    AllowList expected(current);
    for (const auto& s : seen) expected.add(Cidr{parse_ip(s), bits_of(parse_ip(s).family)});
    CHECK(parsed == expected);

    auto j = summary_json(current, b.entries(), text);
    CHECK(j["current"] == nlohmann::json::array({"10.1.0.0/16", "192.168.1.0/24"}));
    CHECK(j["observed"][0]["cidr"] == "198.51.100.10/31");
    CHECK(j["observed"][0]["seen"]["udp/9999"] == 2);
    CHECK(j["observed"][0]["allowed_now"] == false);
    CHECK(j["allow_file"] == text);
}

TEST_CASE("summary: an observed destination the current list covers is a plain line") {
    SummaryBuilder b;
    b.add(pkt("192.168.1.7", IPPROTO_TCP, 443));  // e.g. logged before the list was widened
    b.add(pkt("203.0.113.9", IPPROTO_TCP, 443));
    AllowList current({parse_cidr("192.168.1.0/24")});
    std::string text = render_allow_file({}, current, b.entries());
    CAPTURE(text);
    CHECK(text.find("\n192.168.1.7/32 ") != std::string::npos);
    CHECK(text.find("\n#- 203.0.113.9/32 ") != std::string::npos);
    Policy parsed(parse_allow_entries(text, "summary"));
    CHECK_FALSE(parsed.destinations().contains(parse_ip("203.0.113.9")));
    auto j = summary_json(current, b.entries(), text);
    CHECK(j["observed"][0]["allowed_now"] == true);
    CHECK(j["observed"][1]["allowed_now"] == false);
}

TEST_CASE("summary: nothing observed is still a valid allow-file (the current list, or empty)") {
    SummaryBuilder b;
    std::string text = render_allow_file({"h"}, AllowList{}, b.entries());
    CHECK(text.find("# observed: nothing") != std::string::npos);
    CHECK(parse_allow_entries(text, "summary").empty());
    std::string kept = render_allow_file({}, AllowList({parse_cidr("10.0.0.0/8")}), b.entries());
    CHECK(Policy(parse_allow_entries(kept, "summary")) ==
          Policy(AllowList({parse_cidr("10.0.0.0/8")})));
}

TEST_CASE("summary: many protocols on one host are listed, the rest counted") {
    SummaryBuilder b;
    for (std::uint16_t port = 1; port <= 20; ++port) b.add(pkt("203.0.113.1", IPPROTO_TCP, port));
    auto text = render_allow_file({}, AllowList{}, b.entries());
    CHECK(text.find("and 8 more") != std::string::npos);
    CHECK(text.find("#- 203.0.113.1/32") != std::string::npos);
    CHECK_FALSE(
        Policy(parse_allow_entries(text, "s")).destinations().contains(parse_ip("203.0.113.1")));
    Policy p(parse_allow_entries(review(text), "s"));
    for (std::uint16_t port = 1; port <= 20; ++port)
        CHECK(p.allows(parse_ip("203.0.113.1"), IpProto::tcp, port));
    CHECK_FALSE(p.allows(parse_ip("203.0.113.1"), IpProto::tcp, 21));
    // Something no port spec says: the whole host.
    b.add(pkt("203.0.113.1", IPPROTO_GRE));
    CHECK(Policy(parse_allow_entries(review(render_allow_file({}, AllowList{}, b.entries())), "s"))
              .allows(parse_ip("203.0.113.1"), IpProto::tcp, 21));
}

TEST_CASE("seen labels") {
    CHECK(seen_label(pkt("10.0.0.1", IPPROTO_TCP, 443)) == "tcp/443");
    CHECK(seen_label(pkt("10.0.0.1", IPPROTO_ICMP, std::nullopt, 8)) == "icmp echo-request");
    CHECK(seen_label(pkt("::1", IPPROTO_ICMPV6, std::nullopt, 135)) ==
          "icmpv6 nd-neighbor-solicit");
    CHECK(seen_label(pkt("10.0.0.1", IPPROTO_GRE)) == "gre");
    auto frag = pkt("10.0.0.1", IPPROTO_UDP);
    frag.fragment = true;
    CHECK(seen_label(frag) == "udp (fragment)");
}

TEST_CASE("attempt events: JSON fields and the human line") {
    nflog::LogEvent ev;
    ev.prefix = nft::kLogPrefixEnforce;
    ev.uid = 1234;
    ev.gid = 1234;
    ev.seq = 3;
    ev.packet = pkt("198.51.100.10", IPPROTO_TCP, 8080);
    auto j = attempt_json(ev, "2026-11-25T10:00:00.123Z");
    REQUIRE(j);
    CHECK((*j)["event"] == "attempt");
    CHECK((*j)["mode"] == "enforce");
    CHECK((*j)["verdict"] == "refused");
    CHECK((*j)["proto"] == "tcp");
    CHECK((*j)["protocol"] == 6);
    CHECK((*j)["dst"] == "198.51.100.10");
    CHECK((*j)["dport"] == 8080);
    CHECK((*j)["uid"] == 1234);
    CHECK((*j)["icmp_type"].is_null());
    CHECK(event_json(WatchAttempt{"2026-11-25T10:00:00.123Z", ev}) == *j);
    std::string line = render_human(WatchEvent{WatchAttempt{"2026-11-25T10:00:00.123Z", ev}});
    CHECK(line.rfind("2026-11-25T10:00:00.123Z  tcp ", 0) == 0);
    CHECK(line.find("198.51.100.10:8080") != std::string::npos);
    CHECK(line.find("uid 1234") != std::string::npos);
    CHECK(line.find("refused") != std::string::npos);
    CHECK(line.find("audit") == std::string::npos);

    ev.prefix = nft::kLogPrefixAudit;
    ev.uid.reset();
    ev.packet = pkt("2001:db8:2::10", IPPROTO_ICMPV6, std::nullopt, 128);
    j = attempt_json(ev, "t");
    REQUIRE(j);
    CHECK((*j)["mode"] == "audit");
    CHECK((*j)["verdict"] == "would-be-refused");
    CHECK((*j)["family"] == "ipv6");
    CHECK((*j)["icmp"] == "echo-request");
    CHECK((*j)["uid"].is_null());
    line = render_human(WatchEvent{WatchAttempt{"t", ev}});
    CHECK(line.find("2001:db8:2::10 echo-request") != std::string::npos);
    CHECK(line.find("uid ?") != std::string::npos);
    CHECK(line.find("would be refused (audit)") != std::string::npos);

    ev.packet = pkt("2001:db8:2::10", IPPROTO_UDP, 53);
    CHECK(render_human(WatchEvent{WatchAttempt{"t", ev}}).find("[2001:db8:2::10]:53") !=
          std::string::npos);

    // A loss, and a question of the names proxy (in the JSON lines only).
    const WatchEvent lost = WatchLost{"t", 7, "the log socket overflowed (ENOBUFS)"};
    CHECK(render_human(lost) ==
          "t  LOST 7 logged attempt(s): the log socket overflowed (ENOBUFS)\n");
    CHECK(event_json(lost) == nlohmann::json{{"event", "lost"},
                                             {"time", "t"},
                                             {"count", 7},
                                             {"reason", "the log socket overflowed (ENOBUFS)"}});
    const WatchEvent name = WatchName{"t", {{"name", "example.com"}, {"verdict", "refused"}}};
    CHECK(render_human(name).empty());
    CHECK(event_json(name) ==
          nlohmann::json{
              {"event", "name"}, {"time", "t"}, {"name", "example.com"}, {"verdict", "refused"}});

    ev.packet.reset();
    CHECK_FALSE(attempt_json(ev, "t"));
}

TEST_CASE("iso_time is UTC with milliseconds") {
    CHECK(iso_time(0, 0) == "1970-01-01T00:00:00.000Z");
    CHECK(iso_time(1764064800, 123456789) == "2025-11-25T10:00:00.123Z");
}

TEST_CASE("no-route counters are read from /proc/net/snmp and snmp6 text") {
    const std::string snmp =
        "Ip: Forwarding DefaultTTL InReceives OutRequests OutNoRoutes ReasmTimeout\n"
        "Ip: 1 64 10 20 7 0\n"
        "Icmp: InMsgs OutNoRoutes\n"
        "Icmp: 3 99\n";
    CHECK(snmp_pair_value(snmp, "OutNoRoutes") == std::optional<std::uint64_t>(7));
    CHECK(snmp_pair_value(snmp, "Missing") == std::nullopt);
    CHECK(snmp_pair_value("Ip: OutNoRoutes\n", "OutNoRoutes") == std::nullopt);  // no value line
    CHECK(snmp_pair_value("Ip: OutNoRoutes\nIp: x\n", "OutNoRoutes") == std::nullopt);
    const std::string snmp6 =
        "Ip6InReceives                   	5\nIp6OutNoRoutes                  	12\n";
    CHECK(snmp6_value(snmp6, "Ip6OutNoRoutes") == std::optional<std::uint64_t>(12));
    CHECK(snmp6_value(snmp6, "Ip6OutRequests") == std::nullopt);
}
