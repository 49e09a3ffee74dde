// Native ICMP/ICMPv6 echo probe, run from sockets that were opened inside the target netns.
//
// Classification is what makes the probe honest:
//  - sendto() failing with EPERM means a netfilter drop/reject in OUTPUT refused the packet
//    locally (refused_policy) -- decided at once, no timeout wait;
//  - sendto() failing with ENETUNREACH/EHOSTUNREACH/EACCES/EINVAL means the routing decision
//    refused it locally (refused_route);
//  - an echo reply is `reachable` (with RTT);
//  - an ICMP destination-unreachable (or similar error) quoting our echo is `unreachable`
//    (something outside the namespace refused it);
//  - nothing at all before the timeout is `timeout`.
// Only refused_policy and refused_route prove a *block*: a timeout could be packet loss.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/fd.hpp"

namespace nsegress {

// audit: a target outside the allow-list while the policy is in audit mode (restrict --audit):
// it must NOT be refused locally (the policy lets it through and logs it).
enum class Expect { reach, block, audit };
enum class Outcome { reachable, refused_policy, refused_route, unreachable, timeout, error };

const char* expect_name(Expect e);    // "reach" / "block" / "audit"
const char* outcome_name(Outcome o);  // "reachable", "refused-policy", "refused-route",
                                      // "unreachable", "timeout", "error"

struct ProbeTarget {
    IpAddr addr;
    Expect expect = Expect::reach;
};

struct ProbeResult {
    IpAddr target;
    Expect expect = Expect::reach;
    Outcome outcome = Outcome::error;
    std::optional<double> rtt_ms;  // reachable only: the best RTT of the answered echoes
    int sent = 0;                  // echoes handed to the kernel successfully
    int received = 0;              // echo replies received
    std::string detail;            // human text: errno text, ICMP type/code, "from 10.0.0.1"...

    // reach holds when reachable; block holds when refused locally (policy or route); audit
    // holds when not refused locally (reachable, unreachable or timeout).
    bool ok() const;
};

// Raw ICMP sockets (SOCK_RAW, IPPROTO_ICMP / IPPROTO_ICMPV6), opened inside the target netns
// with SOCK_CLOEXEC. Either may be empty when the family is not available.
struct ProbeSockets {
    Fd v4;
    Fd v6;
};

ProbeSockets open_probe_sockets();  // call while inside the target netns
// Non-blocking, close-on-exec, a large send buffer and the ICMP filters, for raw ICMP sockets
// created elsewhere (verify's sockets of the container, grade.hpp).
void prepare_probe_sockets(ProbeSockets& s);

struct ProbeOptions {
    int count = 1;          // echoes per target
    int timeout_ms = 1000;  // per target, total wait for answers after the last send
    int interval_ms = 0;    // pause between echoes to one target
};

// Probes all targets concurrently (one poll loop over both sockets), so the total time is
// bounded by the slowest reach target, and blocked targets cost nothing. Results are in the
// order of `targets`.
std::vector<ProbeResult> run_probes(const ProbeSockets& sockets,
                                    const std::vector<ProbeTarget>& targets,
                                    const ProbeOptions& options);

}  // namespace nsegress
