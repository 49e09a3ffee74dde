#include <doctest/doctest.h>

#include <string>

#include "nsegress/engine.hpp"
#include "nsegress/error.hpp"
#include "nsegress/hook.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/verify.hpp"

using namespace nsegress;

namespace {
Exit state_error(const std::string& text) {
    try {
        parse_oci_state(text);
    } catch (const Error& e) {
        return e.exit_code();
    }
    return Exit::ok;
}
}  // namespace

TEST_CASE("OCI state: a runc createRuntime state parses") {
    auto st = parse_oci_state(R"({"ociVersion":"1.0.2","id":"web","status":"creating","pid":4242,
        "bundle":"/run/x","annotations":{"io.nsegress.allow":"192.168.1.0/24,2001:db8::/32","other":"x"}})");
    CHECK(st.id == "web");
    CHECK(st.status == "creating");
    CHECK(st.pid == 4242);
    CHECK(st.annotations.at("io.nsegress.allow") == "192.168.1.0/24,2001:db8::/32");
}

TEST_CASE("OCI state: malformed or hostile input is refused cleanly") {
    for (const char* bad :
         {"", "   \n", "{", "[]", "null", "42", R"({"id":"x"})", R"({"pid":0})", R"({"pid":-5})",
          R"({"pid":1})", R"({"pid":"42"})", R"({"pid":4.5})", R"({"pid":99999999999999999999})",
          R"({"pid":4194305})", R"({"pid":true})", R"({"pid":42,"annotations":[]})",
          R"({"pid":42,"annotations":{"a":1}})", R"({"pid":42,"id":7})", "{\"pid\":42}\xff"}) {
        CAPTURE(bad);
        CHECK(state_error(bad) == Exit::usage);
    }
    CHECK(state_error(std::string(kMaxOciState + 1, ' ')) == Exit::usage);
    std::string deep(100000, '[');  // nesting bomb: must not crash
    CHECK(state_error(deep) == Exit::usage);
}

TEST_CASE(
    "hook plan: arguments win over annotations (which only narrow them); no policy means nothing "
    "to do") {
    OciState st;
    st.pid = 42;
    HookArgs none;
    CHECK_FALSE(hook_plan(st, none).has_value());

    st.annotations[kAnnotationAllow] = " 192.168.1.0/24 , 2001:db8:1::/64";
    st.annotations[kAnnotationProbeBlock] = "198.51.100.10";
    auto p = hook_plan(st, none);
    REQUIRE(p);
    CHECK(p->target.pid == 42);
    CHECK(p->allow.size() == 2);
    CHECK(p->probe_block.size() == 1);
    CHECK_FALSE(p->default_probes);

    HookArgs args;
    args.allow = {parse_cidr("192.168.0.0/16")};
    auto q = hook_plan(st, args);
    REQUIRE(q);
    REQUIRE(q->allow.size() == 1);
    CHECK(q->allow[0].str() == "192.168.1.0/24");  // the annotation's part of the arguments' list
    st.annotations.erase(kAnnotationAllow);
    q = hook_plan(st, args);
    REQUIRE(q);
    REQUIRE(q->allow.size() == 1);
    CHECK(q->allow[0].str() == "192.168.0.0/16");
    st.annotations[kAnnotationAllow] = " 192.168.1.0/24 , 2001:db8:1::/64";

    st.annotations[kAnnotationAllow] = "192.168.1.0/24,,10.0.0.0/8";
    CHECK_THROWS_AS(hook_plan(st, none), Error);
    st.annotations[kAnnotationAllow] = "300.1.1.1";
    CHECK_THROWS_AS(hook_plan(st, none), Error);
}

TEST_CASE("hook plan: audit from --audit or io.nsegress.audit, alone or with an allow-list") {
    OciState st;
    st.pid = 42;
    HookArgs none;
    st.annotations[kAnnotationAudit] = "false";
    CHECK_FALSE(hook_plan(st, none).has_value());  // audit=false and no allow-list: nothing to do
    st.annotations[kAnnotationAudit] = "true";
    auto p = hook_plan(st, none);
    REQUIRE(p);  // audit alone is a policy: log everything
    CHECK(p->audit);
    CHECK(p->allow.empty());
    st.annotations[kAnnotationAllow] = "192.168.1.0/24";
    p = hook_plan(st, none);
    REQUIRE(p);
    CHECK(p->audit);
    CHECK(p->allow.size() == 1);
    st.annotations[kAnnotationAudit] = "yes";
    CHECK_THROWS_AS(hook_plan(st, none), Error);
    HookArgs args;
    args.audit = true;  // the argument wins over a malformed or absent annotation
    CHECK(hook_plan(st, args)->audit);
    st.annotations.erase(kAnnotationAudit);
    CHECK_FALSE(hook_plan(st, none)->audit);
}

TEST_CASE("hook plan: an annotation never turns the hook's own allow-list into audit mode") {
    OciState st;
    st.pid = 42;
    st.annotations[kAnnotationAudit] = "true";
    st.annotations[kAnnotationAllow] = "0.0.0.0/0";
    HookArgs admin;
    admin.allow = {parse_cidr("192.168.1.0/24")};
    auto p = hook_plan(st, admin);
    REQUIRE(p);
    CHECK_FALSE(p->audit);  // enforced, as the hook's installer asked
    REQUIRE(p->allow.size() == 1);
    CHECK(p->allow[0].str() == "192.168.1.0/24");
}

TEST_CASE("container inspect output") {
    CHECK(parse_inspect_output("web", "1234 true\n") == 1234);
    CHECK_THROWS_AS(parse_inspect_output("web", "0 false\n"), Error);
    CHECK_THROWS_AS(parse_inspect_output("web", "garbage"), Error);
    CHECK_THROWS_AS(parse_inspect_output("web", "1 true"), Error);
    CHECK(parse_engine("docker") == Engine::docker);
    CHECK_FALSE(parse_engine("lxc").has_value());
}

TEST_CASE("verify helpers: outside destinations, uid maps, JUnit") {
    auto d4 = outside_destination(Family::v4, AllowList({parse_cidr("192.168.1.0/24")}));
    REQUIRE(d4);
    CHECK(d4->str() == "192.0.2.1");
    auto d4b = outside_destination(Family::v4, AllowList({parse_cidr("192.0.2.0/24")}));
    REQUIRE(d4b);
    CHECK(d4b->str() == "203.0.113.1");
    CHECK_FALSE(outside_destination(Family::v4, AllowList({parse_cidr("0.0.0.0/0")})).has_value());
    auto d6 = outside_destination(Family::v6, AllowList({parse_cidr("2001:db8::/32")}));
    REQUIRE(d6);
    CHECK_FALSE(AllowList({parse_cidr("2001:db8::/32")}).contains(*d6));

    CHECK(host_uid_of_root("         0     100000      65536\n") == 100000ul);
    CHECK(host_uid_of_root("0 0 4294967295\n") == 0ul);
    CHECK_FALSE(host_uid_of_root("1000 1000 1\n").has_value());

    auto xml = junit_report("pid <7>", {Check{"a", CheckStatus::pass, "ok"},
                                        Check{"b & c", CheckStatus::fail, "bad \"x\""},
                                        Check{"d", CheckStatus::warn, "hm"}});
    CHECK(xml.find("tests=\"3\" failures=\"1\"") != std::string::npos);
    CHECK(xml.find("pid &lt;7&gt;") != std::string::npos);
    CHECK(xml.find("<failure message=\"bad &quot;x&quot;\"/>") != std::string::npos);
    CHECK(xml.find("WARN: hm") != std::string::npos);
}

TEST_CASE("verify: derived outside targets") {
    Snapshot s;
    s.links = {Link{1, "lo", true, true, "", 772, 65536},
               Link{2, "eth0", true, false, "veth", 1, 1500}};
    s.addresses = {Address{1, parse_ip("127.0.0.1"), 8, 254},
                   Address{2, parse_ip("172.17.0.2"), 16, 0},
                   Address{2, parse_ip("fd00:31::2"), 64, 0}};
    Route def4;
    def4.family = Family::v4;
    def4.dst = parse_cidr("0.0.0.0/0");
    def4.gateway = parse_ip("172.17.0.1");
    def4.oif = 2;
    s.routes = {def4};
    AllowList allow({parse_cidr("192.168.1.0/24")});
    auto t = derive_outside_targets(s, allow, {parse_ip("172.17.0.9"), parse_ip("192.168.1.7")});
    auto has = [&](const char* a, const char* why) {
        for (const auto& d : t)
            if (d.addr.str() == a) return d.why.find(why) != std::string::npos;
        return false;
    };
    CHECK(has("172.17.0.1", "default gateway"));
    CHECK(has("172.17.0.3", "on-link 172.17.0.0/16"));
    CHECK(has("172.17.0.9", "neighbour"));
    CHECK(has("192.168.0.255", "just below 192.168.1.0/24"));
    CHECK(has("192.168.2.0", "just above 192.168.1.0/24"));
    CHECK(has("fd00:31::1", "on-link fd00:31::/64"));
    CHECK(has("2001:db8:ffff::1", "spread"));
    for (const auto& d : t) {
        CHECK_FALSE(allow.contains(d.addr));  // the allowed neighbour 192.168.1.7 is not a target
        CHECK(d.addr.str() != "172.17.0.2");  // nor the namespace's own address
        CHECK(d.addr.str() != "172.17.255.255");  // nor the subnet's broadcast
        CHECK(d.addr.str() != "127.0.0.1");
    }
    // A wide allow-list: the addresses just outside it, nothing inside it.
    auto wide = derive_outside_targets(s, AllowList({parse_cidr("172.16.0.0/12")}), {});
    bool above = false;
    for (const auto& d : wide) {
        CHECK_FALSE(AllowList({parse_cidr("172.16.0.0/12")}).contains(d.addr));
        above = above || d.addr.str() == "172.32.0.0";
    }
    CHECK(above);
    // No IPv4 address: no IPv4 target.
    Snapshot v6only = s;
    v6only.addresses.erase(v6only.addresses.begin() + 1);
    for (const auto& d : derive_outside_targets(v6only, allow, {}))
        CHECK(d.addr.family == Family::v6);
}

TEST_CASE("verify: the teacher's own mistakes") {
    AllowList allow({parse_cidr("192.168.1.0/24")});
    CHECK_NOTHROW(validate_targets(allow, {parse_ip("192.168.1.10")}, {parse_ip("198.51.100.10")},
                                   "--reach", "--block"));
    try {
        validate_targets(allow, {}, {parse_ip("192.168.1.20")}, "--reach", "--block");
        FAIL("a block target inside the allow-list was accepted");
    } catch (const Error& e) {
        CHECK(e.exit_code() == Exit::usage);
        CHECK(std::string(e.what()).find("--block 192.168.1.20 is inside the allow-list") !=
              std::string::npos);
    }
    try {
        validate_targets(allow, {parse_ip("198.51.100.10")}, {}, "--probe-reach", "--probe-block");
        FAIL("a reach target outside the allow-list was accepted");
    } catch (const Error& e) {
        CHECK(e.exit_code() == Exit::usage);
        CHECK(std::string(e.what()).find(
                  "--probe-reach 198.51.100.10 is outside every allowed CIDR") !=
              std::string::npos);
    }
}

TEST_CASE("verify: a class report (one suite per target, errors as testcases)") {
    auto xml = junit_report(std::vector<JunitSuite>{
        {"alice",
         {Check{"netns-not-host", CheckStatus::pass, "ok", CheckGroup::target},
          Check{"block 1.2.3.4", CheckStatus::fail, "left", CheckGroup::block}},
         ""},
        {"bob", {}, "container 'bob' is not running"}});
    CHECK(xml.find("<testsuites tests=\"3\" failures=\"1\" errors=\"1\">") != std::string::npos);
    CHECK(xml.find("<testsuite name=\"alice\" tests=\"2\" failures=\"1\"") != std::string::npos);
    CHECK(xml.find("<testsuite name=\"bob\" tests=\"1\" failures=\"0\" errors=\"1\"") !=
          std::string::npos);
    CHECK(xml.find("<error message=\"container &apos;bob&apos; is not running\"/>") !=
          std::string::npos);
    CHECK(xml.find("classname=\"nsegress.verify.block\" name=\"block 1.2.3.4\"") !=
          std::string::npos);
    CHECK(xml.find("classname=\"nsegress.verify.target\" name=\"netns-not-host\"") !=
          std::string::npos);
    CHECK(xml.find("alice") < xml.find("bob"));
    CHECK(std::string(group_name(CheckGroup::outside)) == "nsegress.verify.outside");
    CHECK(std::string(group_name(CheckGroup::conntrack)) == "nsegress.verify.conntrack");
}

TEST_CASE("verify: the remap user's subordinate ranges") {
    const std::string subuid =
        "alice:100000:65536\n# comment\ndockremap:165536:65536\nbroken\nbob:x:y\n";
    CHECK(subid_owner(subuid, 165536, 65536) == std::optional<std::string>("dockremap"));
    CHECK(subid_owner(subuid, 100000, 1) == std::optional<std::string>("alice"));
    CHECK_FALSE(subid_owner(subuid, 165536, 65537).has_value());  // runs past the entry
    CHECK_FALSE(subid_owner(subuid, 0, 65536).has_value());
    CHECK(root_range("         0     165536      65536\n") == 65536ul);
    CHECK(root_range("1000 1000 1\n") == 0ul);
}
