// One error type for the whole tool: an exit category, an errno when there is one, and a
// message that already names the object it is about (`setns '/proc/42/ns/net': ...`).
// Library code throws; only the CLI layer prints.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace nsegress {

// The exit status is part of the command-line contract.
enum class Exit : int {
    ok = 0,
    usage = 1,   // bad usage or input
    failed = 2,  // the operation failed: target missing, not permitted, kernel refused
    verify = 3,  // a probe or verification did not hold
};

class Error : public std::runtime_error {
public:
    Error(Exit code, const std::string& message, int sys_errno = 0)
        : std::runtime_error(message), code_(code), errno_(sys_errno) {}
    Exit exit_code() const noexcept { return code_; }
    int sys_errno() const noexcept { return errno_; }

    // The same error with where it happened in front ("--allow: ", "annotation
    // io.nsegress.allow: item 3: "), keeping its exit category and errno. Context is added by
    // the caller that knows it, once, on the way out: `throw e.in("--allow")`.
    [[nodiscard]] Error in(std::string_view where) const { return in(where, code_); }
    // ... with another exit category (a usage error in a file nsegress edits is a failure).
    [[nodiscard]] Error in(std::string_view where, Exit code) const {
        return Error(code, std::string(where) + ": " + what(), errno_);
    }

private:
    Exit code_;
    int errno_;
};

// Runs fn(); an Error from it leaves with `where` in front of its message (see Error::in).
template <typename Fn>
decltype(auto) in_context(std::string_view where, Fn&& fn) {
    try {
        return std::forward<Fn>(fn)();
    } catch (const Error& e) {
        throw e.in(where);
    }
}

[[noreturn]] void throw_usage(const std::string& message);
[[noreturn]] void throw_failed(const std::string& message);
// "what: strerror(err)" with Exit::failed; EPERM/EACCES get a hint about the missing privilege.
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace nsegress
