// Closing nfnetlink sockets without making the caller wait for the kernel's cleanup.
//
// After every nf_tables commit the kernel frees the transaction's objects in a worker that first
// waits for an RCU grace period (5-20 ms). Since Linux 6.x the release of *any* bound
// NETLINK_NETFILTER socket of that namespace (close, or process exit) flushes that worker
// (nft_rcv_nl_event -> nf_tables_trans_destroy_flush_work), i.e. sleeps until the grace period
// is over. The policy is long committed and in force by then: nothing the caller needs is
// waited for, yet the container start that runs nsegress would wait for it.
//
// DeferredClose forks a small helper that holds duplicates of the given sockets, so that our
// own close is never the last reference. When the DeferredClose is destroyed (after the sockets
// were closed) the helper drops the last references and exits; the grace period is then
// waited for in the helper, which nobody waits for. The helper holds nothing else: its
// stdin/stdout/stderr are /dev/null (so a runtime reading our stdout sees EOF when we exit)
// and every other descriptor (e.g. the namespace lock) is closed at once.
#pragma once

#include <initializer_list>

#include "nsegress/fd.hpp"

namespace nsegress {

class DeferredClose {
public:
    DeferredClose() = default;
    // Call while the process is still small (fork copies its page tables) and single-threaded.
    // If the helper cannot be started, closing simply stays synchronous.
    explicit DeferredClose(std::initializer_list<int> fds);
    DeferredClose(DeferredClose&&) = default;
    DeferredClose& operator=(DeferredClose&&) = default;
    // Lets the helper go: it closes its duplicates (the last ones if ours are closed) and exits.
    ~DeferredClose() = default;

private:
    Fd go_;  // write end of a pipe; the helper waits for EOF on the read end
};

}  // namespace nsegress
