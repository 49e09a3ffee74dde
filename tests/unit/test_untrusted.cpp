// Untrusted text: errors stay one printable line, deep JSON is refused before anything recurses
// over it, output never aborts on invalid UTF-8. Regression tests for what hardening (and the
// fuzzers in tests/fuzz) found.
#include <doctest/doctest.h>

#include <string>

#include "nsegress/cidr.hpp"
#include "nsegress/cni.hpp"
#include "nsegress/engine.hpp"
#include "nsegress/error.hpp"
#include "nsegress/hook.hpp"
#include "nsegress/untrusted.hpp"

using namespace nsegress;

namespace {

bool one_printable_line(const std::string& s) {
    for (unsigned char c : s)
        if (c < 0x20 || c >= 0x7f) return false;
    return true;
}

template <typename Fn>
std::string usage_error_of(Fn fn) {
    try {
        fn();
    } catch (const Error& e) {
        CHECK(e.exit_code() == Exit::usage);
        return e.what();
    }
    FAIL("no error");
    return {};
}

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

}  // namespace

TEST_CASE("quote/printable: control characters, non-ASCII and overlong text") {
    CHECK(quote("10.0.0.0/8") == "'10.0.0.0/8'");
    CHECK(quote("a\nb\tc\rd\\e") == "'a\\nb\\tc\\rd\\\\e'");
    CHECK(quote("\x1b[31m\x7f\xff") == "'\\x1b[31m\\x7f\\xff'");
    CHECK(quote(std::string(300, 'x')) == "'" + std::string(200, 'x') + "...'");
    CHECK(printable("ok") == "ok");
}

TEST_CASE("errors quoting untrusted input stay one printable line") {
    // was: the newline went to stderr as is (a second, forged line from a hook)
    auto e = usage_error_of([] { parse_cidr("1.2.3.4\nnsegress: all good"); });
    CHECK(one_printable_line(e));
    CHECK(e.find("\\n") != std::string::npos);
    CHECK(one_printable_line(usage_error_of([] { parse_ip("\x1b]0;title\x07"); })));
    CHECK(one_printable_line(usage_error_of([] { parse_allow_text("\xff\xfe\n", "list\nfile"); })));
    // an annotation key is untrusted text too
    CHECK(one_printable_line(
        usage_error_of([] { parse_oci_state(R"({"pid":5,"annotations":{"a\nb":7}})"); })));
}

TEST_CASE("parse_cidr: prefix digits are checked without isdigit on negative chars") {
    auto e = usage_error_of([] { parse_cidr("10.0.0.0/\xb2"); });  // superscript two in Latin-1
    CHECK(e.find("prefix length must be a number") != std::string::npos);
}

TEST_CASE("JSON nesting is bounded (was: stack overflow in CNI mode, exit 139)") {
    nlohmann::json j;
    CHECK(parse_untrusted_json(nested(kMaxJsonDepth), j) == JsonProblem::none);
    CHECK(parse_untrusted_json(nested(kMaxJsonDepth + 2), j) == JsonProblem::too_deep);
    CHECK(parse_untrusted_json("[[", j) == JsonProblem::invalid);

    // 200000 levels: parsing, copying prevResult and dumping it back used to recurse per level.
    std::string deep_prev = R"({"cniVersion":"1.0.0","allow":["10.0.0.0/8"],"prevResult":{"x":)" +
                            nested(200000) + "}}";
    std::string deep_allow = R"({"cniVersion":"1.0.0","allow":[)" + nested(200000) + "]}";
    for (const auto& text : {deep_prev, deep_allow}) {
        int code = 0;
        try {
            parse_cni_netconf(text);
        } catch (const CniFailure& f) {
            code = f.code;
        }
        CHECK(code == cni_decode_failed);
    }
    // run_cni answers with an error document instead of crashing
    auto out = run_cni({{"CNI_COMMAND", "ADD"}, {"CNI_NETNS", "/nonexistent"}}, deep_prev);
    CHECK(out.exit == 1);
    CHECK(out.stdout_text.find("deeper than") != std::string::npos);

    auto e = usage_error_of([] { parse_oci_state(R"({"pid":5,"x":)" + nested(100000) + "}"); });
    CHECK(e.find("deeper than") != std::string::npos);
}

TEST_CASE("dump_json never throws on invalid UTF-8 (was: abort with --json)") {
    nlohmann::json doc{{"error", std::string("invalid CIDR '\xff'")}};
    CHECK_THROWS(doc.dump());
    CHECK_NOTHROW(dump_json(doc, 2));
}

TEST_CASE("container inspect output: a PID beyond pid_t is not truncated into PID 1") {
    // 4294967297 = 2^32 + 1: a plain cast to pid_t made it 1, past the PID 1 check.
    CHECK_THROWS_AS(parse_inspect_output("c", "4294967297 true\n"), Error);
    CHECK_THROWS_AS(parse_inspect_output("c", "4194305 true\n"), Error);
    CHECK(parse_inspect_output("c", "4194304 true\n") == 4194304);
}
