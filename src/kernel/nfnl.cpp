#include "nsegress/nfnl.hpp"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <vector>

#include "nsegress/error.hpp"

namespace nsegress::nfnl {

void SocketDeleter::operator()(mnl_socket* s) const { mnl_socket_close(s); }

Socket open(int extra_flags) {
    Socket sock(mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | extra_flags));
    if (!sock) throw_errno("open nfnetlink socket", errno);
    if (mnl_socket_bind(sock.get(), 0, MNL_SOCKET_AUTOPID) < 0)
        throw_errno("bind nfnetlink socket", errno);
    int on = 1;
    // Extended ACKs: the kernel's own words on what it refused. Capped ACKs: do not echo our
    // (possibly megabytes of) request back in every error.
    mnl_socket_setsockopt(sock.get(), NETLINK_EXT_ACK, &on, sizeof on);
    mnl_socket_setsockopt(sock.get(), NETLINK_CAP_ACK, &on, sizeof on);
    return sock;
}

std::uint32_t next_seq(std::uint32_t count) {
    static std::atomic<std::uint32_t> next{static_cast<std::uint32_t>(::time(nullptr)) ^
                                           (static_cast<std::uint32_t>(::getpid()) << 16)};
    return next.fetch_add(count == 0 ? 1 : count);
}

int request(mnl_socket* sock, nlmsghdr* req, const ReplyFn& each) {
    req->nlmsg_seq = next_seq();
    if (!(req->nlmsg_flags & NLM_F_DUMP)) req->nlmsg_flags |= NLM_F_ACK;
    if (mnl_socket_sendto(sock, req, req->nlmsg_len) < 0) return -errno;
    const std::uint32_t portid = mnl_socket_get_portid(sock);
    const std::uint32_t seq = req->nlmsg_seq;
    // A dump streams many messages per read; any other answer is one small message and the ACK
    // (a names proxy makes several such requests per query: they stay off the heap's high-water
    // mark).
    std::vector<char> buf((req->nlmsg_flags & NLM_F_DUMP) ? std::size_t{1} << 16
                                                          : std::size_t{1} << 13);
    auto trampoline = [](const nlmsghdr* nlh, void* data) -> int {
        const auto* fn = static_cast<const ReplyFn*>(data);
        return *fn ? (*fn)(nlh) : MNL_CB_OK;
    };
    // The end of this request (its DONE or its error) in one receive buffer.
    auto ends = [&](ssize_t n) {
        int left = static_cast<int>(n);
        for (auto* m = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, left);
             m = mnl_nlmsg_next(m, &left))
            if (m->nlmsg_seq == seq &&
                (m->nlmsg_type == NLMSG_DONE || m->nlmsg_type == NLMSG_ERROR))
                return true;
        return false;
    };
    while (true) {
        ssize_t n = mnl_socket_recvfrom(sock, buf.data(), buf.size());
        if (n < 0) return -errno;
        errno = 0;
        int ret = mnl_cb_run(buf.data(), static_cast<std::size_t>(n), seq, portid, trampoline,
                             const_cast<ReplyFn*>(&each));
        if (ret < 0 && errno == EINTR) {
            // NLM_F_DUMP_INTR: a commit came in while the kernel was dumping, so what we got
            // mixes two generations. Read the rest away (the socket serves the next request
            // too) and say so.
            while (!ends(n))
                if ((n = mnl_socket_recvfrom(sock, buf.data(), buf.size())) < 0) return -errno;
            return -EINTR;
        }
        if (ret < 0) return errno > 0 ? -errno : -EPROTO;
        if (ret == MNL_CB_STOP) return 0;
    }
}

}  // namespace nsegress::nfnl
