#include "nsegress/error.hpp"

#include <cerrno>
#include <cstring>

namespace nsegress {

void throw_usage(const std::string& message) { throw Error(Exit::usage, message); }

void throw_failed(const std::string& message) { throw Error(Exit::failed, message); }

void throw_errno(const std::string& what, int err) {
    std::string msg = what + ": " + std::strerror(err);
    if (err == EPERM || err == EACCES)
        msg += " (nsegress needs root: CAP_SYS_ADMIN, CAP_NET_ADMIN and, to probe, CAP_NET_RAW)";
    throw Error(Exit::failed, msg, err);
}

}  // namespace nsegress
