// The OCI state on a hook's stdin and the policy its annotations carry (io.nsegress.allow,
// io.nsegress.probe-reach, io.nsegress.probe-block): written by whoever made the container.
#include "fuzz_common.hpp"

#include "nsegress/hook.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    OciState st;
    try {
        st = parse_oci_state(fuzz::text_of(data, size));
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::usage);
        return 0;
    }
    fuzz::check(st.pid > 1 && st.pid <= 4194304,
                "OCI state accepted a PID outside 2..PID_MAX_LIMIT", std::to_string(st.pid));
    try {
        auto plan = hook_plan(st, HookArgs{});
        fuzz::check(plan.has_value() == (st.annotations.count(kAnnotationAllow) > 0),
                    "a policy without io.nsegress.allow, or none with it");
        if (plan) {
            fuzz::check(plan->target.pid == st.pid && !plan->target.netns_path,
                        "hook targets another process");
            fuzz::check(!plan->allow.empty(), "io.nsegress.allow accepted with no CIDR");
            fuzz::check(!plan->default_probes, "hook probes gateways by default");
        }
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::usage);
    }
    return 0;
}
