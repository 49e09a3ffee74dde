// DeferredClose: the helper holds our sockets until it is let go, and then releases them.
// No root needed: a socketpair stands in for the nfnetlink sockets.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nsegress/deferred_close.hpp"

using nsegress::DeferredClose;
using nsegress::Fd;

namespace {

// True when the peer of `fd` has closed its end (EOF), waiting at most `ms`.
bool peer_closed(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return false;
    char c;
    return ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

}  // namespace

TEST_CASE("DeferredClose keeps the sockets open until it is destroyed, then lets them go") {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    Fd ours(sv[0]), peer(sv[1]);
    {
        DeferredClose closer({ours.get()});
        ours.reset();  // our close is not the last one: the helper still holds a copy
        CHECK_FALSE(peer_closed(peer.get(), 0));
    }
    // The helper saw its pipe close, exited, and its copy was the last reference. The bound is
    // generous (scheduling of a forked process), it is not a performance assertion.
    CHECK(peer_closed(peer.get(), 10000));
}
