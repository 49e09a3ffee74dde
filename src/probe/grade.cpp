#include "nsegress/grade.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#include "nsegress/error.hpp"
#include "nsegress/fd.hpp"
#include "nsegress/icmp.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/procfs.hpp"

namespace nsegress {

namespace {

using Ns = std::int64_t;
constexpr Ns kMs = 1'000'000;
Ns now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return Ns{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// ----- the child that takes the container's identity ----------------------------------------

// Writes a whole message or gives up (the child has nothing better to do).
void child_send(int sock, const void* data, std::size_t len, int fd = -1) {
    iovec iov{const_cast<void*>(data), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))]{};
    if (fd >= 0) {
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

// Message kinds from the child: 'S' errno + optional fd, 'I' identity text, 'N' a note,
// 'E' a fatal error text.
void child_text(int sock, char kind, const std::string& text) {
    std::string m(1, kind);
    m += text;
    child_send(sock, m.data(), m.size());
}

std::vector<unsigned long> ids_of(const std::string& status, const char* key) {
    std::vector<unsigned long> out;
    std::istringstream in(status_field(status, key));
    unsigned long v;
    while (in >> v) out.push_back(v);
    return out;
}

// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a
// hybrid system), from our mountinfo; empty when it is not.
std::string cgroup2_mount(const std::string& pid = "self") {
    auto info = read_text_file("/proc/" + pid + "/mountinfo");
    if (!info) return {};
    std::istringstream in(*info);
    std::string line;
    while (std::getline(in, line)) {
        auto dash = line.find(" - ");
        if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
        std::istringstream ls(line.substr(0, dash));
        std::string id, parent, devno, root, mount;
        if (ls >> id >> parent >> devno >> root >> mount && root == "/") return mount;
    }
    return {};
}

[[noreturn]] void child_main(int sock, int netns_fd, std::optional<pid_t> pid,
                             const std::vector<SocketRequest>& reqs) {
    auto fatal = [&](const std::string& why) {
        child_text(sock, 'E', why);
        ::_exit(1);
    };
    std::string identity;
    if (pid) {
        // The cgroup first (v2): afterwards we no longer have the rights on the host's cgroupfs.
        std::string base = fmt::format("/proc/{}", *pid);
        auto cg = read_text_file(base + "/cgroup");
        std::string path;
        if (cg) {
            std::istringstream in(*cg);
            std::string line;
            while (std::getline(in, line))
                if (line.rfind("0::", 0) == 0) path = line.substr(3);
        }
        std::string own;
        if (auto mine = read_text_file("/proc/self/cgroup")) {
            std::istringstream in(*mine);
            std::string line;
            while (std::getline(in, line))
                if (line.rfind("0::", 0) == 0) own = line.substr(3);
        }
        std::string mnt = cgroup2_mount();
        // Not mounted where we run (`ip netns exec` remounts /sys): PID 1's view of it.
        if (mnt.empty()) {
            std::string init = cgroup2_mount("1");
            if (!init.empty()) mnt = "/proc/1/root" + init;
        }
        if (path.empty() || mnt.empty()) {
            child_text(sock, 'N',
                       path.empty()
                           ? "its cgroup (v2) is unknown: not joined"
                           : "no cgroup v2 hierarchy is mounted where nsegress runs: its cgroup " +
                                 path + " not joined");
        } else if (path == own) {
            identity += ", cgroup " + path + " (nsegress's own)";
        } else {
            std::string dir = mnt + path;
            auto events = read_text_file(dir + "/cgroup.events");
            if (events && events->find("frozen 1") != std::string::npos) {
                child_text(sock, 'N', "its cgroup " + path + " is frozen (paused): not joined");
            } else if (!write_text_file(dir + "/cgroup.procs", "0")) {
                child_text(
                    sock, 'N',
                    fmt::format("cannot join its cgroup {}: {}", path, std::strerror(errno)));
            } else {
                identity += ", cgroup " + path;
            }
        }
    }
    if (::setns(netns_fd, CLONE_NEWNET) != 0)
        fatal(std::string("setns net: ") + std::strerror(errno));
    if (pid) {
        std::string base = fmt::format("/proc/{}", *pid);
        Fd user(::open((base + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
        if (!user) fatal("open its user namespace: " + std::string(std::strerror(errno)));
        struct stat theirs {
        }, ours{};
        ::fstat(user.get(), &theirs);
        ::stat("/proc/self/ns/user", &ours);
        if (theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev) {
            if (::setns(user.get(), CLONE_NEWUSER) != 0)
                fatal(std::string("setns user: ") + std::strerror(errno));
        }
        // Read now: the ids come translated into the user namespace we are in.
        auto status = read_text_file(base + "/status");
        if (!status) fatal("read its status: " + std::string(std::strerror(errno)));
        auto uid = ids_of(*status, "Uid"), gid = ids_of(*status, "Gid");
        auto groups = ids_of(*status, "Groups");
        if (uid.size() < 4 || gid.size() < 4) fatal("unexpected Uid/Gid lines in its status");
        std::vector<gid_t> g(groups.begin(), groups.end());
        ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
        if (::setgroups(g.size(), g.data()) != 0)
            child_text(sock, 'N',
                       std::string("setgroups: ") + std::strerror(errno) +
                           " (supplementary groups not taken)");
        if (::setresgid(gid[0], gid[1], gid[2]) != 0)
            fatal(std::string("setresgid: ") + std::strerror(errno));
        ::setfsgid(gid[3]);
        if (::setresuid(uid[0], uid[1], uid[2]) != 0)
            fatal(std::string("setresuid: ") + std::strerror(errno));
        ::setfsuid(uid[3]);
        // Only CAP_NET_RAW is kept (ICMP and raw sockets); the owner fields do not depend on it.
        __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2]{};
        data[0].effective = data[0].permitted = 1u << CAP_NET_RAW;
        if (::syscall(SYS_capset, &hdr, data) != 0)
            child_text(sock, 'N', std::string("capset: ") + std::strerror(errno));
        identity =
            fmt::format("pid {}'s: uid {} gid {}{} in user namespace {}{}", *pid, uid[3], gid[3],
                        g.empty() ? "" : fmt::format(" groups {}", status_field(*status, "Groups")),
                        static_cast<unsigned long>(theirs.st_ino),
                        theirs.st_ino == ours.st_ino ? " (nsegress's own)" : "") +
            identity;
    }
    child_text(sock, 'I', identity);
    for (const auto& r : reqs) {
        Fd fd(::socket(r.domain, r.type | SOCK_CLOEXEC, r.protocol));
        int err = fd ? 0 : errno;
        char m[1 + sizeof err] = {'S'};
        std::memcpy(m + 1, &err, sizeof err);
        child_send(sock, m, sizeof m, fd.get());
    }
    ::_exit(0);
}

}  // namespace

ContainerSockets open_sockets_as(const Netns& ns, std::optional<pid_t> pid,
                                 const std::vector<SocketRequest>& requests) {
    ContainerSockets out;
    if (!pid) {
        out.identity = "nsegress's own (root); no process in the namespace to take the identity of";
        ns.run_inside([&] {
            for (const auto& r : requests) {
                int fd = ::socket(r.domain, r.type | SOCK_CLOEXEC, r.protocol);
                out.errs.push_back(fd < 0 ? errno : 0);
                out.fds.emplace_back(fd);
            }
        });
        return out;
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        throw_errno("socketpair", errno);
    Fd mine(sv[0]), theirs(sv[1]);
    pid_t child = ::fork();
    if (child < 0) throw_errno("fork", errno);
    if (child == 0) {
        mine.release();
        child_main(theirs.get(), ns.fd().get(), pid, requests);
    }
    theirs.reset();
    std::string fatal;
    while (true) {
        char buf[4096];
        iovec iov{buf, sizeof buf};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))]{};
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        ssize_t n = ::recvmsg(mine.get(), &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        Fd fd;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int got = -1;
                std::memcpy(&got, CMSG_DATA(c), sizeof got);
                fd = Fd(got);
            }
        if (buf[0] == 'S' && n == 1 + sizeof(int)) {
            int err;
            std::memcpy(&err, buf + 1, sizeof err);
            out.errs.push_back(err);
            out.fds.push_back(std::move(fd));
            continue;
        }
        fd.reset();  // only 'S' messages carry a socket
        std::string text(buf + 1, static_cast<std::size_t>(n - 1));
        if (buf[0] == 'I')
            out.identity = text;
        else if (buf[0] == 'N')
            out.notes += (out.notes.empty() ? "" : "; ") + text;
        else if (buf[0] == 'E')
            fatal = text;
    }
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (!fatal.empty()) throw_failed(fmt::format("cannot probe as pid {}: {}", *pid, fatal));
    if (out.errs.size() != requests.size())
        throw_failed(fmt::format("cannot probe as pid {}: the helper process ended early", *pid));
    // The identity was read through /proc/PID: only trust it while that process lives.
    if (ns.pidfd() && ns.pid() == pid && !pidfd_alive(ns.pidfd().get()))
        throw_failed(fmt::format("process {} exited while verify took its identity", *pid));
    out.as_process = true;
    return out;
}

std::optional<bool> writable_as(pid_t pid, const std::string& path, std::string& why) {
    int pfd[2];
    if (::pipe2(pfd, O_CLOEXEC) != 0) {
        why = std::string("pipe: ") + std::strerror(errno);
        return std::nullopt;
    }
    Fd rd(pfd[0]), wr(pfd[1]);
    pid_t child = ::fork();
    if (child < 0) {
        why = std::string("fork: ") + std::strerror(errno);
        return std::nullopt;
    }
    if (child == 0) {
        auto say = [&](const std::string& m) {
            (void)!::write(wr.get(), m.data(), m.size());
            ::_exit(0);
        };
        std::string base = fmt::format("/proc/{}", pid);
        Fd user(::open((base + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
        struct stat theirs {
        }, ours{};
        if (!user || ::fstat(user.get(), &theirs) != 0)
            say(std::string("Eits user namespace: ") + std::strerror(errno));
        ::stat("/proc/self/ns/user", &ours);
        if (theirs.st_ino != ours.st_ino && ::setns(user.get(), CLONE_NEWUSER) != 0)
            say(std::string("Esetns user: ") + std::strerror(errno));
        auto status = read_text_file(base + "/status");
        if (!status) say("Eits status is gone");
        auto uid = ids_of(*status, "Uid"), gid = ids_of(*status, "Gid");
        auto groups = ids_of(*status, "Groups");
        std::vector<gid_t> g(groups.begin(), groups.end());
        if (uid.size() < 4 || gid.size() < 4) say("Eunexpected Uid/Gid lines");
        ::setgroups(g.size(), g.data());
        if (::setresgid(gid[0], gid[1], gid[2]) != 0 || ::setresuid(uid[0], uid[1], uid[2]) != 0)
            say(std::string("Esetresuid: ") + std::strerror(errno));
        say(::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) == 0 ? "W" : "R");
    }
    wr.reset();
    char buf[256];
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    int st = 0;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    if (n <= 0) {
        why = "the helper process said nothing";
        return std::nullopt;
    }
    if (buf[0] == 'E') {
        why = std::string(buf + 1, static_cast<std::size_t>(n - 1));
        return std::nullopt;
    }
    return buf[0] == 'W';
}

// ----- derived targets -----------------------------------------------------------------------

namespace {

bool plain_unicast(const IpAddr& a) {
    if (a.family == Family::v4) {
        auto v = static_cast<std::uint32_t>(a.value);
        if (v == 0 || v == 0xffffffffu) return false;
        if ((v >> 24) == 127 || (v >> 24) == 0 || (v >> 28) == 0xe)
            return false;                       // loopback, this-net, multicast
        if ((v >> 16) == 0xa9fe) return false;  // 169.254/16 link-local
        return true;
    }
    if (a.value == 0 || a.value == 1) return false;
    auto top = static_cast<unsigned>(a.value >> 120);
    if (top == 0xff) return false;                // multicast
    if ((a.value >> 118) == 0x3fa) return false;  // fe80::/10 needs a zone
    if ((a.value >> 32) == 0xffff) return false;  // v4-mapped
    return true;
}

bool family_usable(Family f, const Snapshot& s) {
    for (const auto& a : s.addresses) {
        if (a.addr.family != f || !plain_unicast(a.addr)) continue;
        const Link* l = s.link(a.ifindex);
        if (l && l->loopback) continue;
        return true;
    }
    return false;
}

IpAddr add(IpAddr a, long long d) {
    a.value = static_cast<u128>(static_cast<__int128>(a.value) + d);
    if (a.family == Family::v4) a.value &= 0xffffffffu;
    return a;
}

}  // namespace

std::vector<DerivedTarget> derive_outside_targets(const Snapshot& snap, const AllowList& allow,
                                                  const std::vector<IpAddr>& neighbours) {
    std::vector<DerivedTarget> out;
    std::set<IpAddr> seen;
    // Network and broadcast addresses of on-link subnets: a send there is a broadcast (EACCES
    // without SO_BROADCAST), which would read as a refusal.
    std::vector<Cidr> onlink;
    for (const auto& a : snap.addresses) {
        const Link* l = snap.link(a.ifindex);
        if ((l && l->loopback) || !plain_unicast(a.addr)) continue;
        Cidr c{a.addr, a.prefix};
        u128 hostmask = a.prefix >= bits_of(a.addr.family)
                            ? 0
                            : ((u128{1} << (bits_of(a.addr.family) - a.prefix)) - 1);
        c.addr.value &= ~hostmask;
        onlink.push_back(c);
    }
    auto special = [&](const IpAddr& x) {
        for (const auto& c : onlink)
            if (c.addr.family == Family::v4 && c.prefix < 31 && (x == c.first() || x == c.last()))
                return true;
        return false;
    };
    auto push = [&](const IpAddr& a, std::string why) {
        if (!family_usable(a.family, snap) || !plain_unicast(a) || allow.contains(a) || special(a))
            return;
        if (snap.is_local_address(a) || !seen.insert(a).second) return;
        out.push_back({a, std::move(why)});
    };
    for (const auto& r : snap.routes)
        if (r.table == 254 && r.is_default() && r.gateway) push(*r.gateway, "default gateway");
    for (const auto& c : onlink) {
        if (allow.contains(c.first()) && allow.contains(c.last())) continue;
        std::string why = "on-link " + c.str();
        unsigned bits = bits_of(c.addr.family);
        if (c.prefix + 1 >= bits) continue;
        for (int k = 1; k <= 4; ++k) push(add(c.first(), k), why);
        push(add(c.last(), c.addr.family == Family::v4 ? -1 : 0), why + " (last host)");
    }
    for (const auto& n : neighbours) push(n, "neighbour");
    for (Family f : {Family::v4, Family::v6}) {
        for (const auto& r : allow.ranges(f)) {
            std::string name = r.str();
            if (r.first.value != 0) {
                IpAddr b = add(r.first, -1);
                push(special(b) ? add(r.first, -2) : b, "just below " + name);
            }
            u128 max = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
            if (r.last.value != max) {
                IpAddr a = add(r.last, 1);
                push(special(a) ? add(r.last, 2) : a, "just above " + name);
            }
        }
    }
    // A spread over the rest of the space (reserved and private ranges: a packet to one only
    // has to leave the namespace to be seen).
    for (const char* s :
         {"192.0.2.1", "198.18.0.1", "203.0.113.1", "240.0.0.1", "100.64.0.1", "10.255.255.254",
          "172.16.0.1", "172.31.255.254", "192.168.255.254", "2001:db8:ffff::1", "100::1",
          "3fff:ffff::1", "fdff:ffff::1", "fc00::1", "64:ff9b::c000:201"})
        push(parse_ip(s), "spread");
    return out;
}

// ----- the observer --------------------------------------------------------------------------

namespace {

struct Seen {
    IpAddr src, dst;
    int proto = 0;
    std::uint16_t sport = 0, dport = 0;
    int icmp_type = -1;  // ICMP/ICMPv6 only
    int ifindex = 0;
};

constexpr int kNeighbour = -1;  // Seen::proto of an ARP request / neighbour solicitation

class Observer {
public:
    void open(const Netns& ns) {
        ns.run_inside([&] {
            fd_ = Fd(
                ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL)));
        });
        if (!fd_) throw_errno("open the packet observer in the namespace", errno);
        int size = 8 << 20;
        if (::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
            ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    int fd() const { return fd_.get(); }
    void drain() {
        std::uint8_t buf[256];
        for (;;) {
            sockaddr_ll ll{};
            socklen_t len = sizeof ll;
            ssize_t n = ::recvfrom(fd_.get(), buf, sizeof buf, MSG_TRUNC,
                                   reinterpret_cast<sockaddr*>(&ll), &len);
            if (n < 0) {
                if (errno == EINTR) continue;
                return;
            }
            if (ll.sll_pkttype != PACKET_OUTGOING || ll.sll_hatype == ARPHRD_LOOPBACK) continue;
            std::size_t got = std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf);
            if (ntohs(ll.sll_protocol) == ETH_P_ARP) {
                // An ARP request (Ethernet/IPv4): the namespace resolves the target's address,
                // i.e. a packet to it passed the policy and waits for the neighbour.
                if (got >= 28 && buf[6] == 0 && buf[7] == 1 && buf[4] == 6 && buf[5] == 4) {
                    Seen a;
                    a.dst = IpAddr::from_bytes(Family::v4, buf + 24);
                    a.proto = kNeighbour;
                    a.ifindex = ll.sll_ifindex;
                    seen_.push_back(a);
                }
                continue;
            }
            parse(buf, got, ll.sll_ifindex);
        }
    }
    bool saw(const IpAddr& dst, int proto, std::optional<std::uint16_t> dport,
             std::optional<std::uint16_t> sport = std::nullopt, int* ifindex = nullptr) const {
        for (const auto& s : seen_) {
            if (s.dst != dst || s.proto != proto) continue;
            // An ICMP probe is an echo request: the kernel's own ICMP to the same address
            // (a unicast neighbour solicitation probing the gateway, an error it answers with)
            // is not the probe leaving.
            if (proto == IPPROTO_ICMP && s.icmp_type != icmp::v4_echo_request) continue;
            if (proto == IPPROTO_ICMPV6 && s.icmp_type != icmp::v6_echo_request) continue;
            if (dport && s.dport != *dport) continue;
            if (sport && s.sport != *sport) continue;
            if (ifindex) *ifindex = s.ifindex;
            return true;
        }
        return false;
    }

private:
    void parse(const std::uint8_t* p, std::size_t n, int ifindex) {
        Seen s;
        s.ifindex = ifindex;
        std::size_t off;
        if (n >= 20 && (p[0] >> 4) == 4) {
            off = std::size_t{p[0] & 0x0fu} * 4;
            s.proto = p[9];
            s.src = IpAddr::from_bytes(Family::v4, p + 12);
            s.dst = IpAddr::from_bytes(Family::v4, p + 16);
            if (((p[6] << 8 | p[7]) & 0x1fff) != 0) off = n;  // a later fragment: no ports
        } else if (n >= 40 && (p[0] >> 4) == 6) {
            s.proto = p[6];
            s.src = IpAddr::from_bytes(Family::v6, p + 8);
            s.dst = IpAddr::from_bytes(Family::v6, p + 24);
            off = 40;
            for (int i = 0;
                 i < 6 && (s.proto == 0 || s.proto == 43 || s.proto == 60 || s.proto == 44); ++i) {
                if (off + 8 > n) break;
                int next = p[off];
                off += s.proto == 44 ? 8 : (std::size_t{p[off + 1]} + 1) * 8;
                s.proto = next;
            }
        } else {
            return;
        }
        if (s.proto == IPPROTO_ICMPV6 && s.src.family == Family::v6 && off + 24 <= n &&
            p[off] == 135) {
            // A neighbour solicitation: for its target address, as an ARP request is.
            Seen a = s;
            a.dst = IpAddr::from_bytes(Family::v6, p + off + 8);
            a.proto = kNeighbour;
            if (seen_.size() < 200000) seen_.push_back(a);
        }
        if ((s.proto == IPPROTO_ICMP || s.proto == IPPROTO_ICMPV6) && off < n) s.icmp_type = p[off];
        if ((s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP) && off + 4 <= n) {
            s.sport = static_cast<std::uint16_t>(p[off] << 8 | p[off + 1]);
            s.dport = static_cast<std::uint16_t>(p[off + 2] << 8 | p[off + 3]);
        }
        if (seen_.size() < 200000) seen_.push_back(s);
    }
    Fd fd_;
    std::vector<Seen> seen_;
};

sockaddr_storage sockaddr_of(const IpAddr& a, std::uint16_t port, socklen_t& len) {
    sockaddr_storage ss{};
    auto b = a.bytes();
    if (a.family == Family::v4) {
        auto* s = reinterpret_cast<sockaddr_in*>(&ss);
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        std::memcpy(&s->sin_addr, b.data(), 4);
        len = sizeof(sockaddr_in);
    } else {
        auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        std::memcpy(&s->sin6_addr, b.data(), 16);
        len = sizeof(sockaddr_in6);
    }
    return ss;
}

std::uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

bool local_refusal(int err) {
    return err == EPERM || err == ENETUNREACH || err == EHOSTUNREACH || err == EACCES ||
           err == EINVAL;
}

void set_nonblock(int fd) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

std::string errtext(int err) { return std::strerror(err); }

}  // namespace

namespace {
std::string ifname(const GradeOptions& opt, int ifindex) {
    auto it = opt.ifnames.find(ifindex);
    return it != opt.ifnames.end() ? it->second : fmt::format("ifindex {}", ifindex);
}
}  // namespace

const char* proto_name(Proto p) {
    switch (p) {
        case Proto::icmp:
            return "icmp";
        case Proto::tcp:
            return "tcp";
        case Proto::udp:
            return "udp";
    }
    return "?";
}

bool GradeResult::ok() const {
    if (probe.expect == Expect::block) return refused && !left && !real_answer;
    if (probe.proto == Proto::icmp) return real_answer;
    return !refused && (answered || left);
}

std::vector<GradeResult> run_grade_probes(const Netns& ns, std::optional<pid_t> as_pid,
                                          const std::vector<GradeProbe>& probes,
                                          const GradeOptions& opt, std::string& identity,
                                          bool& as_process, bool& observer_blind) {
    std::vector<GradeResult> res(probes.size());
    for (std::size_t i = 0; i < probes.size(); ++i) res[i].probe = probes[i];
    // Sockets: two raw ICMP ones, then one per TCP/UDP probe.
    std::vector<SocketRequest> reqs{{AF_INET, SOCK_RAW, IPPROTO_ICMP},
                                    {AF_INET6, SOCK_RAW, IPPROTO_ICMPV6}};
    std::vector<std::size_t> sock_of(probes.size(), 0);
    for (std::size_t i = 0; i < probes.size(); ++i) {
        if (probes[i].proto == Proto::icmp) continue;
        sock_of[i] = reqs.size();
        reqs.push_back({probes[i].addr.family == Family::v4 ? AF_INET : AF_INET6,
                        probes[i].proto == Proto::tcp ? SOCK_STREAM : SOCK_DGRAM, 0});
    }
    ContainerSockets cs = open_sockets_as(ns, as_pid, reqs);
    identity = cs.identity + (cs.notes.empty() ? "" : " (" + cs.notes + ")");
    as_process = cs.as_process;
    Observer obs;
    obs.open(ns);

    // ICMP: the echo prober, from the container's raw sockets. A container without
    // CAP_NET_RAW over its namespace cannot open them: nsegress's own are used for ICMP then
    // (said in the identity), TCP and UDP still go as the container.
    {
        ProbeSockets ps;
        ps.v4 = std::move(cs.fds[0]);
        ps.v6 = std::move(cs.fds[1]);
        if ((!ps.v4 && cs.errs[0] == EPERM) || (!ps.v6 && cs.errs[1] == EPERM)) {
            ProbeSockets own;
            ns.run_inside([&] { own = open_probe_sockets(); });
            if (!ps.v4) ps.v4 = std::move(own.v4);
            if (!ps.v6) ps.v6 = std::move(own.v6);
            identity +=
                "; ICMP echoes from nsegress's own raw sockets (the container cannot open raw ICMP "
                "sockets: no CAP_NET_RAW over its network namespace)";
        }
        prepare_probe_sockets(ps);
        std::vector<ProbeTarget> targets;
        std::vector<std::size_t> idx;
        for (std::size_t i = 0; i < probes.size(); ++i)
            if (probes[i].proto == Proto::icmp) {
                targets.push_back({probes[i].addr, Expect::block});
                idx.push_back(i);
            }
        ProbeOptions po;
        po.timeout_ms = opt.timeout_ms;
        po.count = opt.count;
        auto r = run_probes(ps, targets, po);
        for (std::size_t k = 0; k < r.size(); ++k) {
            GradeResult& g = res[idx[k]];
            g.detail = fmt::format("{} {}", outcome_name(r[k].outcome), r[k].detail);
            g.refused =
                r[k].outcome == Outcome::refused_policy || r[k].outcome == Outcome::refused_route;
            g.answered = r[k].outcome == Outcome::reachable || r[k].outcome == Outcome::unreachable;
            g.real_answer = r[k].outcome == Outcome::reachable;
            if (r[k].outcome == Outcome::error) g.detail = "error: " + r[k].detail;
            int e = cs.errs[r[k].target.family == Family::v4 ? 0 : 1];
            if (r[k].outcome == Outcome::error && e == EAFNOSUPPORT) {
                g.refused = true;  // the family does not exist in this kernel
                g.detail = "socket: " + errtext(e);
            }
        }
    }

    // TCP and UDP, all at once.
    struct Open {
        std::size_t i;
        int fd;
        bool done = false;
    };
    std::vector<Open> open;
    for (std::size_t i = 0; i < probes.size(); ++i) {
        if (probes[i].proto == Proto::icmp) continue;
        GradeResult& g = res[i];
        Fd& fd = cs.fds[sock_of[i]];
        if (!fd) {
            int e = cs.errs[sock_of[i]];
            g.refused = e == EAFNOSUPPORT;  // no such family in this kernel: nothing can be sent
            g.detail = (g.refused ? "socket: " : "error: socket: ") + errtext(e);
            continue;
        }
        set_nonblock(fd.get());
        socklen_t len;
        auto sa = sockaddr_of(probes[i].addr, probes[i].port, len);
        int rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), len);
        int err = rc == 0 ? 0 : errno;
        if (probes[i].proto == Proto::udp && rc == 0) {
            static const char msg[] = "nsegress verify probe\n";
            rc = static_cast<int>(::send(fd.get(), msg, sizeof msg - 1, 0));
            err = rc < 0 ? errno : 0;
        }
        if (err != 0 && err != EINPROGRESS) {
            if (err == ECONNREFUSED) {
                g.answered = true;
                g.detail = "answered at once: connection refused";
            } else {
                g.refused = local_refusal(err);
                g.detail =
                    fmt::format("{}: {}{}", probes[i].proto == Proto::tcp ? "connect" : "send",
                                errtext(err), g.refused ? " (refused inside the namespace)" : "");
            }
            continue;
        }
        open.push_back({i, fd.get()});
    }
    Ns deadline = now_ns() + Ns{opt.timeout_ms} * kMs;
    while (true) {
        std::vector<pollfd> pf;
        std::vector<std::size_t> which;
        for (std::size_t k = 0; k < open.size(); ++k) {
            if (open[k].done) continue;
            pf.push_back(
                {open[k].fd,
                 static_cast<short>(probes[open[k].i].proto == Proto::tcp ? POLLOUT : POLLIN), 0});
            which.push_back(k);
        }
        Ns now = now_ns();
        if (pf.empty() || now >= deadline) break;
        int rc = ::poll(pf.data(), pf.size(), static_cast<int>((deadline - now + kMs - 1) / kMs));
        if (rc < 0 && errno != EINTR) break;
        for (std::size_t j = 0; j < pf.size(); ++j) {
            if (!pf[j].revents) continue;
            Open& o = open[which[j]];
            GradeResult& g = res[o.i];
            int err = 0;
            socklen_t el = sizeof err;
            if (probes[o.i].proto == Proto::tcp) {
                ::getsockopt(o.fd, SOL_SOCKET, SO_ERROR, &err, &el);
                o.done = true;
                if (err == 0) {
                    g.answered = g.real_answer = true;
                    g.detail = "connected (SYN-ACK)";
                } else if (err == ECONNREFUSED) {
                    g.answered = true;
                    g.detail = "connection refused (RST)";
                } else {
                    g.answered = true;
                    g.detail =
                        "connect: " + errtext(err) + " (an ICMP error or a failed neighbour)";
                }
            } else {
                char b[64];
                ssize_t n = ::recv(o.fd, b, sizeof b, MSG_DONTWAIT);
                if (n >= 0) {
                    o.done = true;
                    g.answered = g.real_answer = true;
                    g.detail = "a datagram came back";
                } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    o.done = true;
                    g.answered = true;
                    g.detail = "recv: " + errtext(errno) + " (an ICMP error answered)";
                }
            }
        }
    }
    // Let what is still queued (neighbour resolution) leave, then read the observer.
    ::usleep(100000);
    obs.drain();
    for (auto& g : res) {
        const GradeProbe& p = g.probe;
        if (g.detail.empty()) g.detail = fmt::format("no answer within {} ms", opt.timeout_ms);
        int proto = IPPROTO_UDP;
        if (p.proto == Proto::icmp)
            proto = p.addr.family == Family::v4 ? int{IPPROTO_ICMP} : int{IPPROTO_ICMPV6};
        else if (p.proto == Proto::tcp)
            proto = IPPROTO_TCP;
        std::optional<std::uint16_t> port;
        if (p.proto != Proto::icmp) port = p.port;
        int ifindex = 0;
        g.left = obs.saw(p.addr, proto, port, std::nullopt, &ifindex);
        const bool errno_refused = g.refused && !g.detail.ends_with("nothing left the namespace");
        if (g.left) {
            g.refused = false;
            g.detail += fmt::format("; it left the namespace via {}", ifname(opt, ifindex));
        } else if (!errno_refused && !g.real_answer &&
                   std::find(opt.next_hops.begin(), opt.next_hops.end(), p.addr) ==
                       opt.next_hops.end() &&
                   obs.saw(p.addr, kNeighbour, std::nullopt, std::nullopt, &ifindex)) {
            // On-link and absent: nothing left but ARP/ND for it, which only a packet that
            // passed the policy triggers (per address: which protocol did is not known).
            g.left = true;
            g.refused = false;
            g.detail += fmt::format(
                "; the namespace asked for its link-layer address (ARP/ND on {}): packets "
                "to it passed the policy",
                ifindex);
        } else if (!g.refused && !g.real_answer && !g.detail.starts_with("error")) {
            // Nothing left and only a local answer (a reject) or silence: refused inside.
            g.refused = true;
            g.detail += "; nothing left the namespace";
        }
    }
    // The observer must have seen what was answered from outside.
    observer_blind = false;
    for (auto& g : res)
        if (g.real_answer && !g.left) observer_blind = true;
    if (observer_blind)
        for (auto& g : res)
            if (g.refused && g.detail.ends_with("nothing left the namespace")) {
                g.refused = false;
                g.detail += " (but the observer missed answered packets: not counted as refused)";
            }
    return res;
}

// ----- forged replies ------------------------------------------------------------------------

namespace {

std::uint16_t random_port() {
    std::uint16_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r))
        r = static_cast<std::uint16_t>(now_ns());
    return static_cast<std::uint16_t>(40000 + r % 20000);
}

std::uint16_t csum_fold(std::uint64_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

std::uint64_t csum_add(std::uint64_t sum, const std::uint8_t* p, std::size_t n) {
    for (std::size_t i = 0; i + 1 < n; i += 2) sum += (std::uint32_t{p[i]} << 8) | p[i + 1];
    if (n & 1) sum += std::uint32_t{p[n - 1]} << 8;
    return sum;
}

// An IPv4 or IPv6 header + UDP header + payload.
std::vector<std::uint8_t> build_udp(const IpAddr& src, const IpAddr& dst, std::uint16_t sport,
                                    std::uint16_t dport, const std::string& payload) {
    std::size_t ulen = 8 + payload.size();
    std::vector<std::uint8_t> udp(ulen);
    udp[0] = sport >> 8, udp[1] = sport & 0xff, udp[2] = dport >> 8, udp[3] = dport & 0xff;
    udp[4] = static_cast<std::uint8_t>(ulen >> 8), udp[5] = ulen & 0xff;
    std::memcpy(udp.data() + 8, payload.data(), payload.size());
    auto sb = src.bytes(), db = dst.bytes();
    std::size_t alen = src.size();
    std::uint64_t sum = csum_add(0, sb.data(), alen);
    sum = csum_add(sum, db.data(), alen);
    sum += IPPROTO_UDP + ulen;
    sum = csum_add(sum, udp.data(), ulen);
    std::uint16_t c = csum_fold(sum);
    if (c == 0) c = 0xffff;
    udp[6] = c >> 8, udp[7] = c & 0xff;
    std::vector<std::uint8_t> pkt;
    if (src.family == Family::v4) {
        pkt.assign(20, 0);
        pkt[0] = 0x45;
        std::size_t tot = 20 + ulen;
        pkt[2] = static_cast<std::uint8_t>(tot >> 8), pkt[3] = tot & 0xff;
        pkt[8] = 64;
        pkt[9] = IPPROTO_UDP;
        std::memcpy(&pkt[12], sb.data(), 4);
        std::memcpy(&pkt[16], db.data(), 4);
        std::uint16_t hc = csum_fold(csum_add(0, pkt.data(), 20));
        pkt[10] = hc >> 8, pkt[11] = hc & 0xff;
    } else {
        pkt.assign(40, 0);
        pkt[0] = 0x60;
        pkt[4] = static_cast<std::uint8_t>(ulen >> 8), pkt[5] = ulen & 0xff;
        pkt[6] = IPPROTO_UDP;
        pkt[7] = 64;
        std::memcpy(&pkt[8], sb.data(), 16);
        std::memcpy(&pkt[24], db.data(), 16);
    }
    pkt.insert(pkt.end(), udp.begin(), udp.end());
    return pkt;
}

bool wait_readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
}

std::optional<IpAddr> own_address(const Snapshot& snap, Family f) {
    for (const auto& a : snap.addresses) {
        if (a.addr.family != f || !plain_unicast(a.addr)) continue;
        const Link* l = snap.link(a.ifindex);
        if (l && l->loopback) continue;
        return a.addr;
    }
    return std::nullopt;
}

}  // namespace

std::vector<ForgeAttempt> try_forged_replies(const Netns& ns, std::optional<pid_t> as_pid,
                                             const Snapshot& snap,
                                             const std::vector<IpAddr>& targets,
                                             const std::vector<IpAddr>& via,
                                             std::optional<pid_t> raw_pid) {
    const bool net_raw = raw_pid.has_value();
    std::vector<ForgeAttempt> out;
    struct Plan {
        Family f;
        bool raw_forge;  // else IPV6_FREEBIND
        bool raw_reply;
        IpAddr target, own;
        std::optional<IpAddr> via;
    };
    std::vector<Plan> plans;
    auto pick = [&](Family f) -> std::optional<IpAddr> {
        for (const auto& t : targets)
            if (t.family == f) return t;
        return std::nullopt;
    };
    auto via_of = [&](Family f) -> std::optional<IpAddr> {
        for (const auto& v : via)
            if (v.family == f) return v;
        return std::nullopt;
    };
    for (Family f : {Family::v6, Family::v4}) {
        auto t = pick(f);
        auto own = own_address(snap, f);
        std::string fam = family_name(f);
        if (f == Family::v6) {
            ForgeAttempt a{"IPv6 IPV6_FREEBIND (no capability)", false, false, ""};
            if (!t || !own) {
                a.detail = !own ? "not applicable: the namespace has no IPv6 address"
                                : "not applicable: no IPv6 target outside the allow-list";
                out.push_back(a);
            } else {
                plans.push_back({f, false, false, *t, *own, std::nullopt});
            }
        }
        if (!net_raw) continue;
        if (!t || !own) {
            out.push_back({fam + " raw IP_HDRINCL (CAP_NET_RAW)", false, false,
                           !own ? "not applicable: no " + fam + " address"
                                : "not applicable: no " + fam + " target outside the allow-list"});
            continue;
        }
        plans.push_back({f, true, false, *t, *own, std::nullopt});
        auto v = via_of(f);
        if (v) plans.push_back({f, true, true, *t, *own, v});
    }
    if (plans.empty()) return out;

    // Per plan: forger (UDP freebind or raw), receiver B (UDP), optional raw replier. The raw
    // plans go as a process that holds CAP_NET_RAW, the others as the container's process.
    std::vector<SocketRequest> plain_reqs, raw_reqs;
    for (const auto& p : plans) {
        int af = p.f == Family::v4 ? AF_INET : AF_INET6;
        auto& reqs = p.raw_forge ? raw_reqs : plain_reqs;
        reqs.push_back(p.raw_forge ? SocketRequest{af, SOCK_RAW, IPPROTO_RAW}
                                   : SocketRequest{af, SOCK_DGRAM, 0});
        reqs.push_back({af, SOCK_DGRAM, 0});
        reqs.push_back({af, p.raw_forge ? SOCK_RAW : SOCK_DGRAM, p.raw_forge ? IPPROTO_RAW : 0});
    }
    ContainerSockets plain_cs = open_sockets_as(ns, as_pid, plain_reqs);
    ContainerSockets raw_cs;
    if (!raw_reqs.empty()) raw_cs = open_sockets_as(ns, raw_pid, raw_reqs);
    ContainerSockets cs;
    {
        std::size_t pi = 0, ri = 0;
        for (const auto& p : plans) {
            auto& from = p.raw_forge ? raw_cs : plain_cs;
            auto& i = p.raw_forge ? ri : pi;
            for (int k = 0; k < 3; ++k, ++i) {
                cs.fds.push_back(std::move(from.fds[i]));
                cs.errs.push_back(from.errs[i]);
            }
        }
    }
    Observer obs;
    obs.open(ns);
    struct Sent {
        std::size_t plan;
        std::uint16_t pa, pb;
        bool sent = false;
        std::string detail;
    };
    std::vector<Sent> sent;
    for (std::size_t k = 0; k < plans.size(); ++k) {
        const Plan& p = plans[k];
        Fd& forger = cs.fds[3 * k];
        Fd& b = cs.fds[3 * k + 1];
        Fd& raw = cs.fds[3 * k + 2];
        Sent s{k, random_port(), 0, false, {}};
        auto fail = [&](std::string why) {
            s.detail = std::move(why);
            sent.push_back(s);
        };
        if (!forger || !b) {
            fail("cannot open its sockets: " + errtext(cs.errs[forger ? 3 * k + 1 : 3 * k]));
            continue;
        }
        socklen_t len;
        auto own0 = sockaddr_of(p.own, 0, len);
        if (::bind(b.get(), reinterpret_cast<sockaddr*>(&own0), len) != 0) {
            fail("bind to own address: " + errtext(errno));
            continue;
        }
        s.pb = local_port(b.get());
        std::string payload = "nsegress verify forged " + std::to_string(k);
        auto own_b = sockaddr_of(p.own, s.pb, len);
        ssize_t rc;
        if (!p.raw_forge) {
            int one = 1;
            ::setsockopt(forger.get(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
            socklen_t tl;
            auto tsa = sockaddr_of(p.target, s.pa, tl);
            if (::bind(forger.get(), reinterpret_cast<sockaddr*>(&tsa), tl) != 0) {
                fail(fmt::format("bind to [{}]:{}: {} (the technique is not available)",
                                 p.target.str(), s.pa, errtext(errno)));
                continue;
            }
            rc = ::sendto(forger.get(), payload.data(), payload.size(), 0,
                          reinterpret_cast<sockaddr*>(&own_b), len);
        } else {
            auto pkt = build_udp(p.target, p.own, s.pa, s.pb, payload);
            auto own_raw = sockaddr_of(p.own, 0, len);
            rc = ::sendto(forger.get(), pkt.data(), pkt.size(), 0,
                          reinterpret_cast<sockaddr*>(&own_raw), len);
        }
        if (rc < 0) {
            int e = errno;
            fail(fmt::format("the forged packet from {} was refused: {}", p.target.str(),
                             errtext(e)));
            continue;
        }
        if (!wait_readable(b.get(), 300)) {
            fail(fmt::format("the forged packet from {} never arrived (dropped inside)",
                             p.target.str()));
            continue;
        }
        char buf[128];
        (void)::recv(b.get(), buf, sizeof buf, MSG_DONTWAIT);
        std::string reply = "nsegress verify forged reply " + std::to_string(k);
        if (!p.raw_reply) {
            auto tsa = sockaddr_of(p.target, s.pa, len);
            rc = ::sendto(b.get(), reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&tsa),
                          len);
        } else if (!raw) {
            fail("cannot open a raw socket: " + errtext(cs.errs[3 * k + 2]));
            continue;
        } else {
            auto pkt = build_udp(p.own, p.target, s.pb, s.pa, reply);
            auto vsa = sockaddr_of(*p.via, 0, len);
            rc = ::sendto(raw.get(), pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&vsa),
                          len);
        }
        if (rc < 0) {
            int e = errno;
            fail(fmt::format(
                "the forged conversation was set up, but the reply to {} was refused: {}",
                p.target.str(), errtext(e)));
            continue;
        }
        s.sent = true;
        sent.push_back(s);
    }
    ::usleep(300000);
    obs.drain();
    for (const auto& s : sent) {
        const Plan& p = plans[s.plan];
        ForgeAttempt a;
        a.applicable = true;
        std::string fam = family_name(p.f);
        a.technique = !p.raw_forge ? "IPv6 IPV6_FREEBIND (no capability)"
                      : p.raw_reply
                          ? fmt::format("{} raw IP_HDRINCL (CAP_NET_RAW), reply routed via {}", fam,
                                        p.via->str())
                          : fam + " raw IP_HDRINCL (CAP_NET_RAW)";
        if (!s.sent) {
            a.detail = s.detail;
        } else {
            int ifindex = 0;
            a.leaked = obs.saw(p.target, IPPROTO_UDP, s.pa, s.pb, &ifindex);
            a.detail = a.leaked ? fmt::format(
                                      "a datagram to [{}]:{} left the namespace via {} as the "
                                      "\"reply\" to a packet forged from it",
                                      p.target.str(), s.pa, snap.link_name(ifindex))
                                : fmt::format(
                                      "the reply to [{}]:{} was accepted by the socket but never "
                                      "left the namespace",
                                      p.target.str(), s.pa);
        }
        out.push_back(a);
    }
    return out;
}

std::string loopback_problem(const Netns& ns, std::optional<pid_t> as_pid, const Snapshot& snap) {
    bool v6 = false;
    for (const auto& a : snap.addresses)
        if (a.addr.family == Family::v6 && a.addr.value == 1) v6 = true;
    std::vector<SocketRequest> reqs{{AF_INET, SOCK_DGRAM, 0}, {AF_INET, SOCK_DGRAM, 0}};
    if (v6) {
        reqs.push_back({AF_INET6, SOCK_DGRAM, 0});
        reqs.push_back({AF_INET6, SOCK_DGRAM, 0});
    }
    ContainerSockets cs = open_sockets_as(ns, as_pid, reqs);
    std::string problems;
    for (std::size_t k = 0; k + 1 < cs.fds.size(); k += 2) {
        IpAddr lo = parse_ip(k == 0 ? "127.0.0.1" : "::1");
        Fd& r = cs.fds[k];
        Fd& s = cs.fds[k + 1];
        std::string why;
        socklen_t len;
        auto sa = sockaddr_of(lo, 0, len);
        if (!r || !s)
            why = "cannot open a socket";
        else if (::bind(r.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0)
            why = "bind: " + errtext(errno);
        else {
            auto to = sockaddr_of(lo, local_port(r.get()), len);
            if (::sendto(s.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), len) < 0)
                why = "sendto: " + errtext(errno);
            else if (!wait_readable(r.get(), 300))
                why = "a datagram sent to it never arrived";
        }
        if (!why.empty())
            problems += fmt::format("{}{}: {}", problems.empty() ? "" : "; ", lo.str(), why);
    }
    return problems;
}

}  // namespace nsegress
