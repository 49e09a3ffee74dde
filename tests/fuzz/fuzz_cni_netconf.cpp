// The CNI netconf on stdin (the nsegress entry of a conflist, with the previous plugin's
// prevResult), and the documents a CNI invocation prints about it.
#include "fuzz_common.hpp"

#include <set>

#include "nsegress/cni.hpp"
#include "nsegress/untrusted.hpp"

using namespace nsegress;

namespace {

void check_failure(const CniFailure& f) {
    static const std::set<int> codes{cni_incompatible_version, cni_invalid_env, cni_decode_failed,
                                     cni_invalid_config};
    fuzz::check(codes.count(f.code) == 1, "unexpected CNI error code", std::to_string(f.code));
    fuzz::check_message(f.msg);
    if (!f.details.empty()) fuzz::check_message(f.details);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto text = fuzz::text_of(data, size);
    try {
        CniNetconf nc = parse_cni_netconf(text);
        fuzz::check(nc.cni_version == "0.4.0" || nc.cni_version == "1.0.0",
                    "unsupported version accepted");
        if (nc.prev_result) {
            fuzz::check(nc.prev_result->is_object(), "prevResult is not an object");
            (void)dump_json(*nc.prev_result);
        }
    } catch (const CniFailure& f) {
        check_failure(f);
    }
    // What an invocation answers before it touches any namespace: CNI_NETNS is not set, so ADD
    // and CHECK stop after the netconf, and DEL of a namespace that does not exist succeeds.
    for (const char* command : {"ADD", "CHECK", "DEL"}) {
        std::map<std::string, std::string> env{{"CNI_COMMAND", command}};
        auto out = run_cni(env, text);
        fuzz::check(out.exit == 0 ? out.stdout_text.empty() : !out.stdout_text.empty(),
                    "CNI answer and exit status disagree", command);
        if (out.exit != 0) {
            auto doc = nlohmann::json::parse(out.stdout_text, nullptr, false);
            fuzz::check(doc.is_object() && doc.contains("code") && doc.contains("msg"),
                        "CNI error output is not an error document", out.stdout_text);
        } else {
            fuzz::check(std::string(command) == "DEL", "ADD/CHECK without CNI_NETNS succeeded");
        }
    }
    return 0;
}
