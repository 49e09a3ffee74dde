// The names proxy: the long-running part of a policy with names (names.hpp).
//
// One process per restricted namespace whose policy names a DNS name, started by restrict (and
// so by the OCI hook, CNI ADD and the runtime wrapper, which all go through restrict), stopped
// by release. It lives in the container's network namespace (setns, then every socket it opens
// is the container's) and keeps nothing there but its sockets:
//   - it exits when the container does: the process of --pid through a pidfd, or, for --netns,
//     when the path is gone or names another namespace; and when the policy's chain dns is
//     gone (released, or replaced by a policy without names). So it never keeps a dead
//     container's namespace alive for longer than a poll interval (1 s).
//   - it holds no state that matters: the learnt addresses live in the kernel's sets with their
//     timeouts. Restarted (`nsegress names-proxy --state FILE`, or restrict again), it listens
//     again and nothing was opened meanwhile.
//   - while it is down, the nat redirect stays: queries meet a closed port (ICMP port
//     unreachable, TCP RST), no name resolves, no address is added: fail closed.
// State under /run/nsegress: names-DEV-INO.json (what to serve: namespace and names),
// names-DEV-INO.pid (flock-held by the running proxy), names-DEV-INO.log (one JSON line per
// question: name, type, verdict, addresses).
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nsegress/fd.hpp"
#include "nsegress/netns.hpp"
#include "nsegress/policy.hpp"

namespace nsegress {

std::string names_state_path(NsId id);  // /run/nsegress/names-DEV-INO.json
std::string names_pid_path(NsId id);    // .pid
std::string names_log_path(NsId id);    // .log

// The resolvers the proxy may ask (names.hpp, trusted_resolvers): the operator's (--resolver,
// CNI "resolvers", the runtime wrapper's --resolver), else the nameservers of the container's
// /etc/resolv.conf read once, now, through /proc/PID/root when a pid is known. A container that
// is already running may have edited that file: then its loopback nameservers (a server the
// container may run itself) are not trusted unless `engine_wrote_it` (the hook and the runtime
// wrapper run before the container's process, so the file is the engine's). Never the address
// a query was sent to: a query to an untrusted address goes to the first reachable trusted one.
struct ProxyResolvers {
    std::vector<IpAddr> trusted;
    std::string source;             // "operator", "resolv.conf" or "none"
    std::string resolv_conf;        // the file read ("" when none)
    std::vector<IpAddr> untrusted;  // its nameservers left out (loopback)
};
ProxyResolvers choose_proxy_resolvers(const Netns& ns, const std::vector<IpAddr>& from_operator,
                                      bool engine_wrote_it);

// Writes the state file and (re)starts the proxy for `ns` (an earlier one is stopped first),
// detached from the caller (its own session, stdio on /dev/null and the log), and waits until
// it listens. Returns its pid. Throws Error(Exit::failed) when it could not start.
// `audit`: the proxy answers every name, and logs those no entry allows as would-be-refused.
pid_t start_names_proxy(const Netns& ns, const TargetSpec& target,
                        const std::vector<AllowEntry>& names, bool audit,
                        const ProxyResolvers& resolvers);
// Stops a running proxy of that namespace (SIGTERM, SIGKILL after 2 s) and removes its state
// and pid files (the log stays for watch). True when one was running.
bool stop_names_proxy(NsId id);
// The running proxy's pid (the holder of the pid file's lock).
std::optional<pid_t> names_proxy_pid(NsId id);

// `nsegress names-proxy --state FILE [--ready-fd N]`: enters the namespace the state names
// (checked by device and inode), listens, serves until one of the exits above. Returns the
// exit code.
int run_names_proxy(const std::string& state_path, int ready_fd);

// The proxy's own executable, nsegress-names-proxy (src/cli/names_proxy_main.cpp): the same
// run_names_proxy in an executable that links only the proxy's part of the core, so that a
// proxy holds a fraction of nsegress's memory (README, "Performance", target 12). It is looked
// for in the directory of the running executable (where the build and the package put it):
// a regular file (not a symlink) of the same owner that no group or other may write, in a
// directory no group or other may write. An invalid Fd when there is none: then the proxy runs
// in nsegress itself, as before.
Fd open_proxy_executable();
// `nsegress names-proxy`: execs the proxy's own executable with the same arguments when there is
// one; returns when there is none (or the exec failed), and the caller runs the proxy itself.
void exec_names_proxy(const std::string& state_path, int ready_fd);
// `nsegress names-supervise` (share/systemd/nsegress-names.service, the Kubernetes DaemonSet):
// every second, starts again the proxy of every state file whose proxy is not running (killed,
// crashed, or the host rebooted its services). `only`: just these state files (tests). Never
// returns.
int run_names_supervisor(const std::vector<std::string>& only = {});

// What status shows of a namespace's names: the names the proxy serves (its state file), the
// running proxy, and per name the addresses its answers gave (the log), newest answer last.
struct NamesInfo {
    bool configured = false;  // a state file exists
    std::vector<std::string> names;
    std::optional<pid_t> pid;
    std::string state, log;
    std::vector<std::string> resolvers;  // the trusted resolvers of the state file
    std::string resolvers_from;          // where they came from
    std::map<std::string, std::vector<std::string>> answered;  // name -> addresses
};
NamesInfo read_names_info(NsId id);

// The refused questions of a namespace's log (watch): name, type, how many times.
struct RefusedName {
    std::string name;
    std::string type;
    std::size_t count = 0;
};
std::vector<RefusedName> read_refused_names(NsId id);

}  // namespace nsegress
