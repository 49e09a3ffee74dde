// nsegress-names-proxy: the names proxy (include/nsegress/names_proxy.hpp) as an executable of
// its own, installed next to nsegress. One runs per restricted namespace whose policy names a DNS
// name, for as long as the container, so its memory is what one more namespace costs the host
// (README, "Performance", target 12). `nsegress names-proxy` execs it (spawn_proxy, and the
// command itself); the code is the same run_names_proxy, but this executable links only the
// proxy's part of the core: no argument parser, no libnl, no iostreams, ldns without the
// DNSSEC crypto it never calls (src/cli/ldns_crypto_stubs.c).
//
//   nsegress-names-proxy [names-proxy] --state FILE [--ready-fd N]
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "nsegress/error.hpp"
#include "nsegress/names_proxy.hpp"
#include "nsegress/untrusted.hpp"

using namespace nsegress;

namespace {

int fail(Exit code, const std::string& msg) {
    const std::string line = "nsegress: " + printable(msg, 500) + "\n";
    (void)!::write(2, line.data(), line.size());
    return static_cast<int>(code);
}

const char* kUsage = "usage: nsegress names-proxy --state FILE [--ready-fd N]\n";

}  // namespace

int main(int argc, char** argv) {
    std::string state;
    int ready_fd = -1;
    int i = 1;
    if (i < argc && std::strcmp(argv[i], "names-proxy") == 0) ++i;
    for (; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* opt) -> std::string {
            const std::string eq = std::string(opt) + "=";
            if (a.starts_with(eq)) return a.substr(eq.size());
            if (i + 1 >= argc) throw Error(Exit::usage, std::string(opt) + " needs a value");
            return argv[++i];
        };
        try {
            if (a == "--help" || a == "-h") {
                (void)!::write(1, kUsage, std::strlen(kUsage));
                return 0;
            } else if (a == "--state" || a.starts_with("--state=")) {
                state = value("--state");
            } else if (a == "--ready-fd" || a.starts_with("--ready-fd=")) {
                const std::string v = value("--ready-fd");
                char* end = nullptr;
                errno = 0;
                const long n = std::strtol(v.c_str(), &end, 10);
                if (v.empty() || *end != '\0' || errno != 0 || n < -1 || n > 1 << 20)
                    throw Error(Exit::usage, "--ready-fd: '" + v + "' is not a file descriptor");
                ready_fd = static_cast<int>(n);
            } else {
                throw Error(Exit::usage, "unknown argument '" + a + "'");
            }
        } catch (const Error& e) {
            return fail(e.exit_code(), std::string("names-proxy: ") + e.what() + " (" +
                                           std::string(kUsage, std::strlen(kUsage) - 1) + ")");
        }
    }
    if (state.empty())
        return fail(Exit::usage, std::string("names-proxy: --state is required (") +
                                     std::string(kUsage, std::strlen(kUsage) - 1) + ")");
    try {
        return run_names_proxy(state, ready_fd);
    } catch (const Error& e) {
        return fail(e.exit_code(), e.what());
    } catch (const std::exception& e) {
        return fail(Exit::failed, std::string("internal error: ") + e.what());
    }
}
