// The rendering edge (render.hpp): the verbs' typed reports, made by hand here, rendered as
// their JSON documents and human text without root or a namespace.
#include <doctest/doctest.h>

#include <memory>

#include "nsegress/render.hpp"

using namespace nsegress;
using nlohmann::json;

namespace {

TargetInfo target() {
    return TargetInfo{"'/run/netns/x'", std::nullopt, "/run/netns/x", std::nullopt, 4026531999};
}

bool has(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

ProbeResult probe(const char* ip, Expect expect, Outcome outcome) {
    ProbeResult r;
    r.target = parse_ip(ip);
    r.expect = expect;
    r.outcome = outcome;
    if (outcome == Outcome::reachable) r.rtt_ms = 0.25;
    r.sent = r.received = 1;
    return r;
}

}  // namespace

TEST_CASE("restrict: the report's text and document come from the same types") {
    RestrictReport r;
    r.target = target();
    r.allow = std::make_shared<const Policy>(std::vector<AllowEntry>{
        parse_allow_entry("192.168.1.0/24"), parse_allow_entry("198.51.100.10 tcp/443")});
    r.policy = RestrictCommit{1, "new", 2};
    r.route_set = RestrictRouteLayer{};
    r.route_set->enabled = r.route_set->installed = true;
    r.route_set->route_count = 3;
    r.route_set->rule_count = 2;
    r.probes = std::vector<ProbeResult>{probe("192.168.1.10", Expect::reach, Outcome::reachable),
                                        probe("198.51.100.10", Expect::block, Outcome::reachable)};
    r.exit = Exit::verify;
    r.error = "a probe did not hold; the policy stays installed (fail closed)";

    const std::string text = render_human(r);
    CAPTURE(text);
    CHECK(text.rfind("restricted '/run/netns/x' (netns inode 4026531999)\n", 0) == 0);
    CHECK(has(text, "    IPv4: 192.168.1.0/24\n"));  // the entries without ports
    CHECK(has(text, "    IPv6: (none)\n"));
    CHECK(has(text, "    ports: 198.51.100.10/32 tcp/443\n"));
    CHECK(has(text, "route set: table 28275 installed (3 route(s), 2 rule(s))"));
    CHECK(has(text, "  PASS 192.168.1.10"));
    CHECK(has(text, "  FAIL 198.51.100.10"));

    const json doc = report_json(r);
    CHECK(doc["command"] == "restrict");
    CHECK(doc["ok"] == false);
    CHECK(doc["exit_code"] == 3);
    CHECK(doc["error"] == *r.error);
    CHECK(doc["allow"]["entries"] == json::array({"192.168.1.0/24", "198.51.100.10/32 tcp/443"}));
    CHECK(doc["probes"].size() == 2);
    CHECK(doc["probes"][1]["ok"] == false);
    CHECK(doc["route_set"]["route_count"] == 3);
}

TEST_CASE("restrict: a route layer that names disabled, and a report cut short, render") {
    RestrictReport r;
    r.target = target();
    r.route_set = RestrictRouteLayer{};
    r.route_set->disabled_by = "names";
    CHECK(has(render_human(r), "route set: none with names"));
    CHECK(report_json(r)["route_set"]["disabled_by"] == "names");
    r.route_set->disabled_by = "audit";
    r.mode = nft::Mode::audit;
    CHECK(has(render_human(r), "route set: none in audit mode"));
    CHECK(has(render_human(r), "in AUDIT mode"));

    // The names proxy failed after the commit: no route layer, no probes yet. Every part that
    // is there renders, nothing else is assumed.
    RestrictReport cut;
    cut.target = target();
    cut.policy = RestrictCommit{1, "new", 0};
    cut.exit = Exit::failed;
    cut.error = "names proxy: failed";
    const std::string text = render_human(cut);
    CHECK(has(text, "policy: table inet nsegress committed"));
    CHECK_FALSE(has(text, "route set"));
    CHECK_FALSE(has(text, "probes"));
    CHECK(report_json(cut)["exit_code"] == 2);
}

TEST_CASE("release: every failure in the document, and plain words when nothing was there") {
    ReleaseReport r;
    r.target = target();
    r.removed_names_proxy = false;
    r.foreign =
        ForeignPolicies{{ForeignHook{"ip", "filter", "OUTPUT", "output", 0, "", "accept"}}, {}};
    std::string text = render_human(r);
    CAPTURE(text);
    CHECK(has(text, "table (none), 0 rule(s), 0 route(s) removed"));
    CHECK(has(text, "nothing of nsegress's was installed: nothing removed"));
    CHECK(has(text,
              "  table ip filter, chain OUTPUT: hook output priority 0, policy accept (not "
              "nsegress's)\n"));
    json doc = report_json(r);
    CHECK(doc["ok"] == true);
    CHECK(doc["error"].is_null());
    CHECK_FALSE(doc.contains("errors"));
    CHECK(doc["foreign"]["chains"][0]["table"] == "filter");

    r.removed_table = true;
    r.removed_rules = 2;
    r.removed_routes = 3;
    r.errors = {"stop the names proxy: gone", "remove the route set: EPERM"};
    r.exit = Exit::failed;
    r.foreign.reset();  // could not be read
    text = render_human(r);
    CHECK(has(text, "table inet nsegress, 2 rule(s), 3 route(s) removed"));
    CHECK_FALSE(has(text, "nothing of nsegress's"));
    doc = report_json(r);
    CHECK(doc["exit_code"] == 2);
    CHECK(doc["error"] == "stop the names proxy: gone; remove the route set: EPERM");
    CHECK(doc["errors"].size() == 2);
    CHECK_FALSE(doc.contains("foreign"));
    CHECK(r.error() == doc["error"].get<std::string>());
}

TEST_CASE("status: restricted, audit, nobody's and someone else's policy") {
    StatusReport r;
    r.target = target();
    std::string text = render_human(r);
    CAPTURE(text);
    CHECK(has(text, "restricted: no\n"));
    CHECK(has(text, "policy: none\n"));
    CHECK(has(text, "route set: none\n"));
    CHECK(has(text, "netdev egress filter: none\n"));
    CHECK(has(text, "no route at all (OutNoRoutes, whole namespace): IPv4 ?, IPv6 ?"));
    json doc = report_json(r);
    CHECK(doc["restricted"] == false);
    CHECK(doc["policy"]["mode"].is_null());
    CHECK(doc["mode"].is_null());

    r.foreign.legacy_iptables = {"iptables filter"};
    CHECK(has(render_human(r), "restricted: not by nsegress"));

    r.policy.present = r.policy.complete = true;
    r.policy.mode = nft::Mode::audit;
    r.policy.refused = nft::Counter{7, 700};
    r.policy.reply_marking = r.policy.deny_log = true;
    text = render_human(r);
    CHECK(has(text, "restricted: no (audit mode: nothing is refused)"));
    CHECK(has(text, "AUDIT mode"));
    CHECK(has(text, "would be refused (let through): 7 packets, 700 bytes"));
    doc = report_json(r);
    CHECK(doc["policy"]["counters"]["refused"]["packets"] == 0);
    CHECK(doc["policy"]["counters"]["would_be_refused"]["packets"] == 7);
    CHECK(doc["mode"] == "audit");

    r.policy.mode = nft::Mode::enforce;
    r.no_route.ipv4 = 4;
    r.bypass.net_raw = {BypassRisks::Proc{42, "sh"}};
    text = render_human(r);
    CHECK(has(text, "restricted: yes\n"));
    CHECK(has(text, "refused by policy: 7 packets, 700 bytes"));
    CHECK(has(text, "IPv4 4, IPv6 ?"));
    CHECK(has(text, "CAP_NET_RAW: 42 (sh)"));
    CHECK(has(text, "not filtered without --netdev-egress"));
    doc = report_json(r);
    CHECK(doc["restricted"] == true);
    CHECK(doc["bypass"]["net_raw"][0]["pid"] == 42);
    CHECK(doc["bypass"]["net_raw_filtered"] == false);
}

TEST_CASE("probe and verify: the text from typed results") {
    ProbeReport p;
    p.target = target();
    p.probes = {probe("192.168.1.10", Expect::reach, Outcome::reachable)};
    CHECK(render_human(p).rfind("probe from '/run/netns/x' (netns inode 4026531999)\n  PASS ", 0) ==
          0);
    CHECK(report_json(p)["probes"][0]["rtt_ms"] == 0.25);

    VerifyResult v;
    v.target = target();
    v.checks = {Check{"reach 192.168.1.10", CheckStatus::pass, "answered", CheckGroup::reach},
                Check{"block 198.51.100.10", CheckStatus::fail, "answered", CheckGroup::block},
                Check{"bypass", CheckStatus::warn, "CAP_NET_RAW", CheckGroup::bypass}};
    const std::string text = render_human(v);
    CHECK(has(text, "PASS reach 192.168.1.10: answered\n"));
    CHECK(has(text, "FAIL block 198.51.100.10: answered\n"));
    CHECK(has(text, "1 passed, 1 failed, 1 warning(s)\n"));
}
