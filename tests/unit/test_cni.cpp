#include <doctest/doctest.h>

#include "nsegress/cni.hpp"

using namespace nsegress;

namespace {
int code_of(const char* text) {
    try {
        parse_cni_netconf(text);
    } catch (const CniFailure& f) {
        return f.code;
    }
    return 0;
}
}  // namespace

TEST_CASE("CNI netconf: a chained nsegress entry parses") {
    auto nc = parse_cni_netconf(R"({"cniVersion":"1.0.0","name":"lab","type":"nsegress",
        "allow":["192.168.1.0/24","2001:db8:1::/64","10.0.0.1"],"probeReach":["192.168.1.10"],
        "probeBlock":["198.51.100.10"],"routeSet":false,"prevResult":{"ips":[]}})");
    CHECK(nc.cni_version == "1.0.0");
    CHECK(nc.name == "lab");
    REQUIRE(nc.allow.size() == 3);
    CHECK(nc.allow[2].str() == "10.0.0.1/32");
    CHECK(nc.probe_reach.size() == 1);
    CHECK(nc.probe_block.size() == 1);
    CHECK_FALSE(nc.route_set);
    CHECK(nc.prev_result.has_value());
    CHECK(parse_cni_netconf(R"({"cniVersion":"0.4.0","allow":[]})").route_set);
    CHECK_FALSE(parse_cni_netconf(R"({"cniVersion":"0.4.0","allow":[]})").audit);
    CHECK(parse_cni_netconf(R"({"cniVersion":"1.0.0","allow":[],"audit":true})").audit);
}

TEST_CASE("CNI netconf: bad input gets the spec's error codes") {
    CHECK(code_of("") == cni_decode_failed);
    CHECK(code_of("not json") == cni_decode_failed);
    CHECK(code_of("[]") == cni_decode_failed);
    CHECK(code_of(R"({"allow":[]})") == cni_invalid_config);  // no cniVersion
    CHECK(code_of(R"({"cniVersion":"0.3.1","allow":[]})") == cni_incompatible_version);
    CHECK(code_of(R"({"cniVersion":"1.0.0"})") == cni_invalid_config);  // no allow
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":"192.168.1.0/24"})") == cni_invalid_config);
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":[42]})") == cni_invalid_config);
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":["300.1.1.1/24"]})") == cni_invalid_config);
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":[],"routeSet":"yes"})") == cni_invalid_config);
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":[],"audit":"true"})") == cni_invalid_config);
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":[],"probeReach":["x"]})") == cni_invalid_config);
    CHECK(code_of(R"({"cniVersion":"1.0.0","allow":[],"prevResult":[]})") == cni_invalid_config);
    try {
        parse_cni_netconf(R"({"cniVersion":"1.0.0","allow":["300.1.1.1/24"]})");
    } catch (const CniFailure& f) {
        CHECK(f.msg.find("300.1.1.1/24") != std::string::npos);
    }
}

TEST_CASE("CNI: VERSION, unknown commands, missing env and prevResult") {
    auto v = run_cni({{"CNI_COMMAND", "VERSION"}}, "");
    CHECK(v.exit == 0);
    auto vj = nlohmann::json::parse(v.stdout_text);
    CHECK(vj["supportedVersions"] == nlohmann::json({"0.4.0", "1.0.0"}));

    auto bad = nlohmann::json::parse(run_cni({{"CNI_COMMAND", "FROB"}}, "").stdout_text);
    CHECK(bad["code"] == cni_invalid_env);

    const char* nc = R"({"cniVersion":"0.4.0","allow":["10.0.0.0/8"],"prevResult":{}})";
    auto no_netns = run_cni({{"CNI_COMMAND", "ADD"}}, nc);
    CHECK(no_netns.exit != 0);
    auto e = nlohmann::json::parse(no_netns.stdout_text);
    CHECK(e["code"] == cni_invalid_env);
    CHECK(e["cniVersion"] == "0.4.0");  // errors answer in the caller's version

    auto no_prev = run_cni({{"CNI_COMMAND", "ADD"}, {"CNI_NETNS", "/run/netns/x"}},
                           R"({"cniVersion":"1.0.0","allow":["10.0.0.0/8"]})");
    CHECK(nlohmann::json::parse(no_prev.stdout_text)["code"] == cni_invalid_config);

    // DEL of a namespace that is gone (or never named) succeeds without output.
    auto del = run_cni({{"CNI_COMMAND", "DEL"}, {"CNI_NETNS", "/nonexistent/netns"}}, nc);
    CHECK(del.exit == 0);
    CHECK(del.stdout_text.empty());
    CHECK(run_cni({{"CNI_COMMAND", "DEL"}}, nc).exit == 0);
}

TEST_CASE("CNI error JSON has the spec's fields") {
    auto j = cni_error_json("1.0.0", CniFailure{cni_drift, "drifted", "table missing"});
    CHECK(j["cniVersion"] == "1.0.0");
    CHECK(j["code"] == 102);
    CHECK(j["msg"] == "drifted");
    CHECK(j["details"] == "table missing");
    CHECK_FALSE(cni_error_json("", CniFailure{7, "x", ""}).contains("details"));
}
