#include <doctest/doctest.h>

#include <string>

#include "nsegress/engine.hpp"
#include "nsegress/error.hpp"
#include "nsegress/hook.hpp"
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
    for (const char* bad : {"", "   \n", "{", "[]", "null", "42", R"({"id":"x"})", R"({"pid":0})",
                            R"({"pid":-5})", R"({"pid":1})", R"({"pid":"42"})", R"({"pid":4.5})",
                            R"({"pid":99999999999999999999})", R"({"pid":4194305})", R"({"pid":true})",
                            R"({"pid":42,"annotations":[]})", R"({"pid":42,"annotations":{"a":1}})",
                            R"({"pid":42,"id":7})", "{\"pid\":42}\xff"}) {
        CAPTURE(bad);
        CHECK(state_error(bad) == Exit::usage);
    }
    CHECK(state_error(std::string(kMaxOciState + 1, ' ')) == Exit::usage);
    std::string deep(100000, '[');  // nesting bomb: must not crash
    CHECK(state_error(deep) == Exit::usage);
}

TEST_CASE("hook plan: arguments win over annotations (which only narrow them); no policy means nothing to do") {
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
