// Naming, validating and entering a target network namespace.
//
// The tool never *runs* in the target: it switches the calling thread in, opens the sockets
// it needs (sockets stay bound to the netns they were created in), and switches back at once.
// A failure to switch back is fatal (abort): continuing in the wrong namespace could apply a
// policy to the host.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

#include "nsegress/fd.hpp"

namespace nsegress {

struct TargetSpec {
    std::optional<pid_t> pid;
    std::optional<std::string> netns_path;
    std::optional<std::string> container;  // the name --container resolved to `pid`
};

struct NsId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const NsId&) const = default;
};

struct UsernsInfo {
    ino_t ino = 0;
    bool initial = false;                // the user namespace nsegress itself runs in
    std::optional<std::string> uid_map;  // as in /proc/PID/uid_map, when a process shows it
};

enum class HostCheck {
    refuse,  // Exit::failed for the host's namespace: anything that changes the namespace
    report,  // open it anyway and say so in host_reason(): verify judges it, changes nothing
};

// An opened, validated network namespace: `fd` pins it for as long as the object lives.
class Netns {
public:
    const Fd& fd() const { return fd_; }
    NsId id() const { return id_; }
    std::optional<pid_t> pid() const { return pid_; }
    const std::string& label() const { return label_; }  // "pid 42" / "'/run/netns/x'"
    std::string describe() const;                        // label plus "(netns inode N)"
    UsernsInfo owner() const;                            // the user namespace owning the netns
    // Why this is the host's namespace ("it is the network namespace nsegress itself runs in"),
    // or empty. Only an open_target(spec, HostCheck::report) can return a host namespace.
    const std::string& host_reason() const { return host_reason_; }
    const Fd& pidfd() const { return pidfd_; }  // empty for --netns

    // Why the target is no longer what was opened, or empty: the process of --pid has exited,
    // or the --netns path is gone or now names another namespace. Our fd keeps the namespace
    // itself alive, so nothing would fail by itself: restrict asks this before its point of no
    // return, so that a container that died meanwhile gets a clear error and no change.
    std::string vanished() const;

    // Runs fn with the calling thread inside the namespace. fn should only create fds.
    void run_inside(const std::function<void()>& fn) const;

private:
    friend Netns open_target(const TargetSpec&, HostCheck);
    Fd fd_;
    std::string host_reason_;
    NsId id_;
    std::optional<pid_t> pid_;
    Fd pidfd_;
    std::string label_;
    std::string path_;  // --netns
};

// Opens and validates the target. --pid: pidfd_open + setns(pidfd, CLONE_NEWNET), so a PID that
// is reused meanwhile can never redirect us. --netns: the *opened fd* must be nsfs and of type
// net. The host's namespace is the one nsegress itself runs in, or PID 1's.
Netns open_target(const TargetSpec& spec, HostCheck host = HostCheck::refuse);

// Capabilities a command needs, checked up front so that an unprivileged run says which one is
// missing instead of a bare EPERM from somewhere deep. The kernel still has the final word.
enum Privilege : unsigned {
    priv_enter = 1,      // CAP_SYS_ADMIN: setns into a network namespace
    priv_net_admin = 2,  // CAP_NET_ADMIN: nftables, routes, rules, conntrack
    priv_net_raw = 4,    // CAP_NET_RAW: ICMP probe sockets
};
void require_privileges(unsigned needed);  // throws Error(Exit::failed) naming what is missing

// An exclusive lock on one network namespace (flock on /run/nsegress/netns-DEV-INO.lock), so
// that concurrent restrict/release runs on it (a hook and an operator, two CNI calls) take
// turns instead of interleaving their route-set changes. Waits up to `timeout_ms`.
class NetnsLock {
public:
    explicit NetnsLock(const Netns& ns, int timeout_ms = 30000);
    // Removes the lock file while still holding the lock, so that /run/nsegress does not keep
    // one file per namespace ever restricted. A waiter that then gets the lock on the removed
    // file sees that the path no longer names it, and starts over.
    ~NetnsLock();
    NetnsLock(const NetnsLock&) = delete;
    NetnsLock& operator=(const NetnsLock&) = delete;

private:
    std::string path_;
    Fd fd_;
};

// True while the process with that pidfd still runs (used to close the PID-reuse window for
// the /proc reads that have no pidfd equivalent).
bool pidfd_alive(int pidfd);
// True once the process has exited, zombie or not (the pidfd polls readable).
bool pidfd_exited(int pidfd);

}  // namespace nsegress
