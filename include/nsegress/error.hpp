// One error type for the whole tool: an exit category, an errno when there is one, and a
// message that already names the object it is about (`setns '/proc/42/ns/net': ...`).
// Library code throws; only the CLI layer prints.
#pragma once

#include <stdexcept>
#include <string>

namespace nsegress {

// The exit status is part of the command-line contract.
enum class Exit : int {
    ok = 0,
    usage = 1,    // bad usage or input
    failed = 2,   // the operation failed: target missing, not permitted, kernel refused
    verify = 3,   // a probe or verification did not hold
};

class Error : public std::runtime_error {
public:
    Error(Exit code, const std::string& message, int sys_errno = 0)
        : std::runtime_error(message), code_(code), errno_(sys_errno) {}
    Exit exit_code() const noexcept { return code_; }
    int sys_errno() const noexcept { return errno_; }

private:
    Exit code_;
    int errno_;
};

[[noreturn]] void throw_usage(const std::string& message);
[[noreturn]] void throw_failed(const std::string& message);
// "what: strerror(err)" with Exit::failed; EPERM/EACCES get a hint about the missing privilege.
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace nsegress
