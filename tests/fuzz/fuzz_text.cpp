// Small text parsers fed by other programs: /proc/PID/status fields and uid_map (verify), the
// output of `docker/podman inspect` (--container), and the JUnit report built from checks whose
// details quote such text. The first byte picks the parser.
#include "fuzz_common.hpp"

#include "nsegress/engine.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/verify.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    switch (data[0] % 4) {
        case 0:
            for (const char* key : {"Name", "NoNewPrivs", "CapEff", "PPid"}) {
                auto v = status_field(text, key);
                fuzz::check(v.find('\n') == std::string::npos, "a status field spans lines", v);
            }
            break;
        case 1:
            (void)host_uid_of_root(text);
            break;
        case 2:
            try {
                pid_t pid = parse_inspect_output("fuzz", text);
                fuzz::check(pid > 1 && pid <= 4194304,
                            "inspect output gave a PID outside 2..PID_MAX_LIMIT",
                            std::to_string(pid));
            } catch (const Error& e) {
                fuzz::check_error(e, Exit::failed);
            }
            break;
        case 3: {
            auto xml = junit_report(
                text, {Check{text, CheckStatus::fail, text}, Check{"x", CheckStatus::warn, text}});
            for (unsigned char c : xml)
                fuzz::check(c >= 0x20 || c == '\n' || c == '\t',
                            "JUnit report holds a control character");
            break;
        }
    }
    return 0;
}
