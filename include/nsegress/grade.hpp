// The grader's probes (`nsegress verify`): sent as the container, over every protocol, judged
// by what really leaves the namespace.
//
//  - Identity: the sockets are created by a short-lived child process that joins the
//    container's cgroup (v2), its network namespace and its user namespace and takes the uid,
//    gid and groups of the container's process (keeping only CAP_NET_RAW, for its ICMP and
//    raw sockets), then hands them over (SCM_RIGHTS). A socket keeps its creator's owner,
//    cgroup and namespace for life, so no rule keyed on skuid/skgid/cgroup can tell the grader
//    from the workload.
//  - Observer: an AF_PACKET socket in the namespace records every packet that leaves through
//    a non-loopback interface (PACKET_OUTGOING, after the netdev egress hook). "Left the
//    namespace" is what a leak is; an answer generated inside (a local reject) is not.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/fd.hpp"
#include "nsegress/netns.hpp"
#include "nsegress/probe.hpp"

namespace nsegress {

struct Snapshot;

struct SocketRequest {
    int domain = 0, type = 0, protocol = 0;
};

// Sockets created with a process's identity (see above).
struct ContainerSockets {
    std::vector<Fd> fds;      // in request order; empty when that socket failed
    std::vector<int> errs;    // errno per request (0: created)
    bool as_process = false;  // false: created with nsegress's own identity (no process)
    std::string identity;     // "pid 42's: uid 0 gid 0 in user namespace 4026532..., cgroup /x"
    std::string notes;        // what could not be taken over (cgroup frozen, ...)
};

// `pid`: the process whose identity to take; nullopt: nsegress's own (said in identity).
// Throws Error(Exit::failed) when the child cannot enter the namespace or take the identity.
ContainerSockets open_sockets_as(const Netns& ns, std::optional<pid_t> pid,
                                 const std::vector<SocketRequest>& requests);

// Is `path` (on the host) writable with pid's credentials (its user namespace, uid, gids)?
// Asked with faccessat(AT_EACCESS) from a helper process: nothing is written. nullopt (and
// `why`) when it cannot be told.
std::optional<bool> writable_as(pid_t pid, const std::string& path, std::string& why);

// Outside targets derived from the namespace itself.
struct DerivedTarget {
    IpAddr addr;
    std::string why;  // "default gateway", "on-link 172.17.0.0/16", "just above 192.168.1.0/24"...
};
// Default gateways; on-link subnets' first hosts, last host and known neighbours; the addresses
// just below and above each allowed range; a spread of reserved/private addresses. Only
// addresses outside the allow-list, not the namespace's own, no multicast/loopback/link-local,
// no network/broadcast address of an on-link subnet; only families the namespace can use.
std::vector<DerivedTarget> derive_outside_targets(const Snapshot& snap, const AllowList& allow,
                                                  const std::vector<IpAddr>& neighbours);

enum class Proto { icmp, tcp, udp };
const char* proto_name(Proto p);

struct GradeProbe {
    IpAddr addr;
    Proto proto = Proto::icmp;
    Expect expect = Expect::block;  // reach or block
    std::uint16_t port = 0;         // tcp/udp
};

struct GradeResult {
    GradeProbe probe;
    bool refused = false;      // refused locally (errno, or nothing left and no outside answer)
    bool left = false;         // seen leaving the namespace (observer)
    bool answered = false;     // any answer came back
    bool real_answer = false;  // an answer only the far side gives (echo reply, SYN-ACK, data)
    std::string detail;
    bool ok() const;  // reach: answered (or udp/tcp left); block: refused, nothing left
};

struct GradeOptions {
    int timeout_ms = 1000;
    int count = 1;  // ICMP echoes per target
    std::uint16_t tcp_port = 80;
    std::uint16_t udp_port = 53;
    // Gateways of the namespace's routes: ARP/ND for them is no sign that a probe to them
    // passed the policy (the allowed traffic resolves them too).
    std::vector<IpAddr> next_hops;
    std::map<int, std::string> ifnames;  // interface names by index, for the details
};

// ICMP, TCP and UDP probes from sockets of the container (open_sockets_as), judged with an
// observer in the namespace. `observer_blind` is set when a packet that was answered was not
// seen leaving (the observer cannot be trusted: silences are then not counted as refusals).
std::vector<GradeResult> run_grade_probes(const Netns& ns, std::optional<pid_t> as_pid,
                                          const std::vector<GradeProbe>& probes,
                                          const GradeOptions& opt, std::string& identity,
                                          bool& as_process, bool& observer_blind);

// The forged-reply technique (issue 10), tried as the container could: a packet with a forged
// source (the block target) is sent to the namespace's own address over loopback, so conntrack
// records the forbidden peer as originator, then the "reply" is sent to it. IPv6 with
// IPV6_FREEBIND needs no capability; with `raw_pid` (a process of the container that holds
// CAP_NET_RAW, whose identity the raw sockets take) IPv4 and IPv6 raw IP_HDRINCL forgeries too, the
// reply sent normally and through a raw socket routed by `via` (an allowed host) with the block
// target in its header.
struct ForgeAttempt {
    std::string technique;
    bool applicable = false;
    bool leaked = false;
    std::string detail;
};
std::vector<ForgeAttempt> try_forged_replies(const Netns& ns, std::optional<pid_t> as_pid,
                                             const Snapshot& snap,
                                             const std::vector<IpAddr>& targets,
                                             const std::vector<IpAddr>& via,
                                             std::optional<pid_t> raw_pid);

// Can the container reach its own loopback (UDP to 127.0.0.1 and ::1)? Empty when it can,
// else why not.
std::string loopback_problem(const Netns& ns, std::optional<pid_t> as_pid, const Snapshot& snap);

}  // namespace nsegress
