#include "nsegress/netns.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nsegress/error.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

namespace {

int sys_pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

NsId id_of(int fd, const std::string& what) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("stat " + what, errno);
    return NsId{st.st_dev, st.st_ino};
}

Fd open_ns_path(const char* path) { return Fd(::open(path, O_RDONLY | O_CLOEXEC)); }

// The namespace this thread is in right now.
Fd current_netns() {
    Fd fd = open_ns_path("/proc/thread-self/ns/net");
    if (!fd) throw_errno("open '/proc/thread-self/ns/net'", errno);
    return fd;
}

[[noreturn]] void die_wrong_namespace(int err) {
    // Not an exception: nothing may run in a namespace we did not mean to be in.
    std::fprintf(stderr, "nsegress: fatal: cannot return to the original network namespace: %s\n",
                 std::strerror(err));
    std::abort();
}

void check_is_netns(int fd, const std::string& what) {
    struct statfs sfs {};
    if (::fstatfs(fd, &sfs) != 0) throw_errno("statfs " + what, errno);
    if (sfs.f_type != NSFS_MAGIC) throw_usage(what + " is not a namespace file (not on nsfs)");
    int type = ::ioctl(fd, NS_GET_NSTYPE);
    if (type < 0) throw_errno("ioctl NS_GET_NSTYPE " + what, errno);
    if (type != CLONE_NEWNET) throw_usage(what + " is a namespace, but not a network namespace");
}

// The initial network namespace has a fixed inode on recent kernels (PROC_NET_INIT_INO, 6.x).
// Older kernels number namespaces from 0xF0000000 up, so no other namespace can have this one.
constexpr ino_t kInitNetIno = 0xEFFFFFF9;

// pidfd ioctl (Linux 6.11+): a namespace of the pidfd's process, even when /proc/PID/ns is not
// readable to us (as PID 1's may not be, inside a sandbox).
constexpr unsigned long kPidfdGetNetNamespace = _IO(0xFF, 4);

std::optional<pid_t> parent_of(pid_t pid) {
    auto status = read_text_file("/proc/" + std::to_string(pid) + "/status");
    if (!status) return std::nullopt;
    std::string ppid = status_field(*status, "PPid");
    if (ppid.empty()) return std::nullopt;
    return static_cast<pid_t>(std::atoi(ppid.c_str()));
}

// Why `id` must be treated as the host's network namespace, or empty. Several independent
// signals, because any one of them can be blind: nsegress may itself run inside a lab
// namespace (then "our own" is not the host's), and /proc/1/ns may be unreadable.
std::string host_reason(NsId id) {
    Fd self = open_ns_path("/proc/self/ns/net");
    NsId own = self ? id_of(self.get(), "own netns") : NsId{};
    if (self && own == id) return "it is the network namespace nsegress itself runs in";
    if (self && id.dev == own.dev && id.ino == kInitNetIno)
        return "it is the machine's initial network namespace";
    Fd init = open_ns_path("/proc/1/ns/net");
    if (init && id_of(init.get(), "PID 1's netns") == id)
        return "it is PID 1's network namespace, i.e. the host's";
    if (!init) {
        Fd pidfd(sys_pidfd_open(1));
        Fd ns(pidfd ? ::ioctl(pidfd.get(), kPidfdGetNetNamespace, 0) : -1);
        if (ns && ::ioctl(ns.get(), NS_GET_NSTYPE) == CLONE_NEWNET &&
            id_of(ns.get(), "PID 1's netns") == id)
            return "it is PID 1's network namespace, i.e. the host's";
    }
    // Whoever started us (a shell, `ip netns exec`, nsenter, a test runner) lives there: the
    // namespace the operator's own session depends on.
    pid_t pid = ::getppid();
    for (int depth = 0; pid > 1 && depth < 64; ++depth) {
        Fd ns = open_ns_path(("/proc/" + std::to_string(pid) + "/ns/net").c_str());
        if (ns && id_of(ns.get(), "ancestor netns") == id)
            return "it is the network namespace of nsegress's ancestor process " +
                   std::to_string(pid) + " (the session that started it)";
        auto parent = parent_of(pid);
        if (!parent) break;
        pid = *parent;
    }
    return {};
}

std::string collapse_map(std::string s) {
    // "         0     100000      65536\n" -> "0 100000 65536", lines joined with "; ".
    std::istringstream in(s);
    std::string line, out;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string a, b, c;
        if (!(ls >> a >> b >> c)) continue;
        if (!out.empty()) out += "; ";
        out += a + " " + b + " " + c;
    }
    return out;
}

}  // namespace

void require_privileges(unsigned needed) {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &hdr, data) != 0) return;  // cannot tell: let the kernel decide
    auto has = [&](int cap) { return (data[cap / 32].effective >> (cap % 32)) & 1u; };
    std::string missing;
    auto check = [&](unsigned bit, int cap, const char* text) {
        if ((needed & bit) && !has(cap))
            missing += (missing.empty() ? "" : ", ") + std::string(text);
    };
    check(priv_enter, CAP_SYS_ADMIN, "CAP_SYS_ADMIN (to enter the network namespace)");
    check(priv_net_admin, CAP_NET_ADMIN, "CAP_NET_ADMIN (to change nftables, routes and rules)");
    check(priv_net_raw, CAP_NET_RAW, "CAP_NET_RAW (for the ICMP probe)");
    if (!missing.empty())
        throw Error(Exit::failed, "missing privilege: " + missing + "; run nsegress as root",
                    EPERM);
}

NetnsLock::NetnsLock(const Netns& ns, int timeout_ms) {
    const char* dir = "/run/nsegress";
    if (::mkdir(dir, 0700) != 0 && errno != EEXIST)
        throw_errno(std::string("create lock directory '") + dir + "'", errno);
    path_ = std::string(dir) + "/netns-" + std::to_string(static_cast<unsigned long>(ns.id().dev)) +
            "-" + std::to_string(static_cast<unsigned long>(ns.id().ino)) + ".lock";
    const std::string& path = path_;
    for (int waited = 0;; waited += 10) {
        if (!fd_) {
            fd_ = Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
            if (!fd_) throw_errno("open lock '" + path + "'", errno);
        }
        if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) {
            // Ours only if the path still names this file: the previous holder removes it
            // (under the lock) when it is done, and a later writer then creates a new one.
            struct stat held {};
            struct stat named {};
            if (::fstat(fd_.get(), &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
                held.st_dev == named.st_dev && held.st_ino == named.st_ino)
                return;
            fd_.reset();
            continue;
        }
        if (errno != EWOULDBLOCK && errno != EINTR) throw_errno("lock '" + path + "'", errno);
        if (waited >= timeout_ms)
            throw_failed("another nsegress has held the lock on " + ns.describe() + " for " +
                         std::to_string(timeout_ms / 1000) + " s ('" + path + "')");
        ::usleep(10000);
    }
}

NetnsLock::~NetnsLock() {
    if (fd_) ::unlink(path_.c_str());
}

bool pidfd_alive(int pidfd) { return ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0; }

bool pidfd_exited(int pidfd) {
    pollfd p{pidfd, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP));
}

std::string Netns::vanished() const {
    if (pid_) {
        if (pidfd_ && pidfd_exited(pidfd_.get()))
            return "process " + std::to_string(*pid_) + " has exited";
        return {};
    }
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0)
        return label_ + " no longer exists (" + std::strerror(errno) + ")";
    if (st.st_ino != id_.ino || st.st_dev != id_.dev)
        return label_ + " now names another network namespace";
    return {};
}

std::string Netns::describe() const {
    return label_ + " (netns inode " + std::to_string(static_cast<unsigned long>(id_.ino)) + ")";
}

void Netns::run_inside(const std::function<void()>& fn) const {
    Fd home = current_netns();
    if (::setns(fd_.get(), CLONE_NEWNET) != 0) throw_errno("setns " + label_, errno);
    std::exception_ptr failure;
    try {
        fn();
    } catch (...) {
        failure = std::current_exception();
    }
    if (::setns(home.get(), CLONE_NEWNET) != 0) die_wrong_namespace(errno);
    if (failure) std::rethrow_exception(failure);
}

UsernsInfo Netns::owner() const {
    UsernsInfo info;
    Fd user(::ioctl(fd_.get(), NS_GET_USERNS));
    if (!user) return info;  // EPERM when the owner is outside our own user namespace
    struct stat st {};
    if (::fstat(user.get(), &st) != 0) return info;
    info.ino = st.st_ino;
    struct stat own {};
    if (::stat("/proc/self/ns/user", &own) == 0)
        info.initial = own.st_ino == st.st_ino && own.st_dev == st.st_dev;

    auto map_of = [&](const std::string& pid) -> std::optional<std::string> {
        struct stat ps {};
        if (::stat(("/proc/" + pid + "/ns/user").c_str(), &ps) != 0) return std::nullopt;
        if (ps.st_ino != st.st_ino || ps.st_dev != st.st_dev) return std::nullopt;
        auto m = read_text_file("/proc/" + pid + "/uid_map");
        if (!m) return std::nullopt;
        return collapse_map(*m);
    };
    if (pid_) {
        auto m = map_of(std::to_string(*pid_));
        // The read went through /proc/PID: only trust it while the pidfd's process lives.
        if (m && pidfd_alive(pidfd_.get())) info.uid_map = m;
    }
    if (!info.uid_map) {
        // --netns: any process in the owning user namespace shows its map.
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
            auto name = e.path().filename().string();
            if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
            if (auto m = map_of(name)) {
                info.uid_map = m;
                break;
            }
        }
    }
    return info;
}

Netns open_target(const TargetSpec& spec, HostCheck host) {
    if (spec.pid && spec.netns_path) throw_usage("give one target: --pid or --netns, not both");
    if (!spec.pid && !spec.netns_path) throw_usage("no target: give --pid PID or --netns PATH");
    Netns ns;
    if (spec.pid) {
        pid_t pid = *spec.pid;
        ns.label_ = spec.container ? "container " + quote(*spec.container) + " (pid " +
                                         std::to_string(pid) + ")"
                                   : "pid " + std::to_string(pid);
        ns.pid_ = pid;
        if (pid <= 0) throw_usage("invalid PID " + std::to_string(pid) + ": must be positive");
        ns.pidfd_ = Fd(sys_pidfd_open(pid));
        if (!ns.pidfd_) {
            if (errno == ESRCH) throw_failed("no such process: pid " + std::to_string(pid));
            throw_errno("pidfd_open pid " + std::to_string(pid), errno);
        }
        // setns through the pidfd: the namespace of exactly the process we hold, never of a
        // process that reused the PID. Then pin it with an nsfd of our own.
        Fd home = current_netns();
        if (::setns(ns.pidfd_.get(), CLONE_NEWNET) != 0) {
            int err = errno;
            if (err == ESRCH) throw_failed("process " + std::to_string(pid) + " has exited");
            throw_errno("setns into the network namespace of " + ns.label_, err);
        }
        ns.fd_ = current_netns();
        if (::setns(home.get(), CLONE_NEWNET) != 0) die_wrong_namespace(errno);
    } else {
        const std::string& path = *spec.netns_path;
        ns.label_ = quote(path, 4096);
        ns.path_ = path;
        if (path.empty()) throw_usage("--netns: empty path");
        // O_NONBLOCK: a FIFO must not hang us; the fd is validated below, not the path.
        ns.fd_ = Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
        if (!ns.fd_) {
            int err = errno;
            if (err == ENOENT) throw_failed("network namespace " + ns.label_ + " does not exist");
            throw_errno("open " + ns.label_, err);
        }
        check_is_netns(ns.fd_.get(), ns.label_);
    }
    ns.id_ = id_of(ns.fd_.get(), ns.label_);
    ns.host_reason_ = host_reason(ns.id_);
    if (!ns.host_reason_.empty() && host == HostCheck::refuse)
        throw_failed("refusing " + ns.label_ + ": " + ns.host_reason_ +
                     " (restricting it would cut this machine off)");
    return ns;
}

}  // namespace nsegress
