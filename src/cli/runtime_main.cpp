// nsegress-runtime: an OCI runtime wrapper for dockerd (include/nsegress/runtime.hpp).
//
// Registered in daemon.json "runtimes" with the policy as runtimeArgs. On create/run/restore it
// adds the createRuntime hook `nsegress hook POLICY` to the bundle's config.json and execs the
// real runtime; every other call is exec'd untouched, so stdio, the exit status and signals are
// the real runtime's own. Anything that keeps the hook from being added keeps the container from
// being created (fail closed), with one line on stderr and in the runtime log that containerd
// quotes in its error.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "nsegress/error.hpp"
#include "nsegress/runtime.hpp"
#include "nsegress/untrusted.hpp"

using namespace nsegress;

namespace {

void report(const RuntimeCall& call, const std::string& msg) {
    const std::string line = "nsegress-runtime: " + printable(msg, 2000);
    std::string out = line + "\n";
    (void)!::write(2, out.data(), out.size());
    if (call.log_path.empty()) return;
    int fd = ::open(call.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    std::string text =
        runtime_log_line(call.log_format, line, static_cast<long long>(std::time(nullptr)));
    (void)!::write(fd, text.data(), text.size());
    ::close(fd);
}

std::string self_path() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return {};
    return std::string(buf, static_cast<std::size_t>(n));
}

bool same_file(const std::string& a, const std::string& b) {
    struct stat sa {
    }, sb{};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

// The real runtime: --runtime, else runc at a fixed absolute path (never a PATH search: the
// daemon's PATH decides nothing here), and never this wrapper itself.
std::string real_runtime(const RuntimePolicy& p) {
    std::vector<std::string> candidates;
    if (!p.runtime.empty())
        candidates = {p.runtime};
    else
        candidates = {"/usr/bin/runc",        "/usr/sbin/runc", "/usr/local/bin/runc",
                      "/usr/local/sbin/runc", "/bin/runc",      "/sbin/runc"};
    for (const auto& c : candidates) {
        if (::access(c.c_str(), X_OK) != 0) continue;
        if (same_file(c, "/proc/self/exe"))
            throw_usage("--runtime " + quote(c) + " is nsegress-runtime itself");
        return c;
    }
    if (!p.runtime.empty())
        throw_usage("--runtime " + quote(p.runtime) + " is not an executable file");
    throw_usage(
        "no runc found in /usr/bin, /usr/sbin, /usr/local/bin, /usr/local/sbin: give --runtime "
        "PATH");
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    RuntimeCall call;
    std::string split_error;
    try {
        call = split_runtime_args(args);
    } catch (const Error& e) {
        // The wrapper's own options cannot be split (a value missing, a relative path): where
        // the real runtime's arguments start is unknown, so nothing is exec'd. (A policy that
        // splits but is invalid, e.g. a bad CIDR, fails only create/run/restore below: state,
        // kill and delete keep working.)
        split_error = e.what();
        call = RuntimeCall{};
        for (std::size_t i = 0; i + 1 < args.size(); ++i) {
            if (args[i] == "--log") call.log_path = args[i + 1];
            if (args[i] == "--log-format") call.log_format = args[i + 1];
        }
        report(call, split_error);
        return 1;
    }
    std::string runtime;
    try {
        runtime = real_runtime(call.policy);
    } catch (const Error& e) {
        report(call, e.what());
        return 127;  // as a shell says of a command it cannot run
    }
    try {
        if (call.edits_bundle()) {
            validate_policy(call.policy);
            std::string hook = call.policy.nsegress;
            if (hook.empty()) {
                std::string self = self_path();
                auto slash = self.rfind('/');
                if (slash == std::string::npos)
                    throw_failed("cannot find this executable's directory (/proc/self/exe)");
                hook = self.substr(0, slash) + "/nsegress";
            }
            if (::access(hook.c_str(), X_OK) != 0)
                throw_failed("the hook binary " + quote(hook) + " is not executable: " +
                             std::strerror(errno) + " (give --nsegress PATH)");
            edit_bundle_config(call.bundle, runtime_hook_entry(call.policy, hook));
        }
    } catch (const Error& e) {
        report(call, e.what());
        return 1;
    } catch (const std::exception& e) {
        report(call, std::string("internal error: ") + e.what());
        return 1;
    }
    std::vector<char*> out;
    out.push_back(runtime.data());
    for (auto& a : call.rest) out.push_back(a.data());
    out.push_back(nullptr);
    ::execv(runtime.c_str(), out.data());
    report(call, "exec " + quote(runtime) + ": " + std::strerror(errno));
    return 127;
}
