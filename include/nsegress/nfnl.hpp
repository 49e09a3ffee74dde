#pragma once
// The one netfilter-netlink socket discipline, for every nfnetlink user of nsegress: nftables
// (nft.cpp: commit, dumps, readers), conntrack (dropping forbidden flows, counting entries),
// the names proxy (forgetting its own UDP flows), other software's tables (foreign.cpp).
// It owns opening the socket, the sequence numbers, and one request with all its replies,
// including the interrupted-dump case. The nflog socket (nflog.hpp) streams events on a
// non-blocking socket and binds with its own request; it shares open() and next_seq().

#include <cstdint>
#include <functional>
#include <memory>

struct mnl_socket;
struct nlmsghdr;

namespace nsegress::nfnl {

struct SocketDeleter {
    void operator()(mnl_socket* s) const;
};
using Socket = std::unique_ptr<mnl_socket, SocketDeleter>;

// NETLINK_NETFILTER, close-on-exec (plus `extra_flags`, e.g. SOCK_NONBLOCK), bound, extended
// and capped ACKs on. Call inside the target netns: a socket belongs to the namespace it was
// made in.
Socket open(int extra_flags = 0);

// The first of `count` fresh sequence numbers, unique within this process and unlikely to
// repeat an earlier process's (the first is drawn from the time and the pid), so a stray
// answer to another request or run is never taken for ours.
std::uint32_t next_seq(std::uint32_t count = 1);

// Each reply message of a request (MNL_CB_OK to go on, MNL_CB_STOP, MNL_CB_ERROR).
using ReplyFn = std::function<int(const nlmsghdr*)>;

// Sends one request and hands every reply to `each` until the request is answered: NLMSG_DONE
// for a dump (NLM_F_DUMP), the ACK otherwise (NLM_F_ACK is set on every other request, so that
// even a request whose answer is one message ends). The request gets a fresh sequence number.
// Returns 0, or a negative errno: the kernel's error (ENOENT: no such object, an answer rather
// than a failure), -EINTR when a commit interrupted the dump (NLM_F_DUMP_INTR; the rest of the
// dump was read away, the caller reads again), or the socket's.
int request(mnl_socket* sock, nlmsghdr* req, const ReplyFn& each = {});

}  // namespace nsegress::nfnl
