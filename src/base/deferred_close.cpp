#include "nsegress/deferred_close.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace nsegress {

namespace {

// Closes every descriptor from `from` upwards except those in `keep` (sorted).
void close_all_but(int from, const std::vector<int>& keep) {
    unsigned lo = static_cast<unsigned>(from);
    for (int k : keep) {
        if (k < from) continue;
        if (static_cast<unsigned>(k) > lo)
            ::syscall(SYS_close_range, lo, static_cast<unsigned>(k) - 1, 0u);
        lo = static_cast<unsigned>(k) + 1;
    }
    ::syscall(SYS_close_range, lo, ~0u, 0u);
}

}  // namespace

DeferredClose::DeferredClose(std::initializer_list<int> fds) {
    std::vector<int> keep;
    for (int fd : fds)
        if (fd >= 0) keep.push_back(fd);
    if (keep.empty()) return;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    keep.push_back(p[0]);
    std::sort(keep.begin(), keep.end());
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(p[0]);
        ::close(p[1]);
        return;
    }
    if (pid == 0) {
        // The helper: async-signal-safe calls only from here on.
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        for (int i = 0; i < 3; ++i) {
            if (null >= 0)
                ::dup2(null, i);
            else
                ::close(i);
        }
        close_all_but(3, keep);
        ::prctl(PR_SET_NAME, "nsegress-close", 0, 0, 0);
        char c;
        while (::read(p[0], &c, 1) < 0 && errno == EINTR) {
        }
        ::_exit(0);  // closes the last references to the sockets, and waits for the kernel
    }
    ::close(p[0]);
    go_ = Fd(p[1]);
}

}  // namespace nsegress
