// `nsegress verify`: judge a namespace by behaviour, whoever configured it (nsegress, or a
// student typing nft / iptables / ip route). Read-only: it probes and reads /proc, nothing else.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nsegress/commands.hpp"
#include "nsegress/engine.hpp"
#include "nsegress/grade.hpp"

namespace nsegress {

struct VerifyOptions {
    TargetSpec target;
    std::vector<AllowEntry> allow;  // entries of the grammar (policy.hpp)
    std::vector<IpAddr> reach;
    std::vector<IpAddr> block;
    std::optional<IpAddr>
        resolver;  // name entries: the resolver to ask (else the container's resolv.conf)
    bool expect_userns_remap = false;
    bool expect_no_new_privs = false;
    ProbeOptions probe_options;
    GradeOptions grade;  // TCP/UDP ports and the timeout of the grader's probes
    // --container: the engine's own NetworkMode ("host", "container:ID", "bridge"...).
    std::optional<std::string> network_mode;
    // --lab-profile: the whole seed lab (userns-remap, no-new-privileges, container root, id
    // maps inside the remap user's /etc/subuid and /etc/subgid ranges, the daemon's remap, its
    // namespaced data directory, a root-owned host directory not writable by container root).
    bool lab_profile = false;
    std::optional<DaemonInfo> daemon;  // --container with docker: what `docker info` says
};

// The teacher's own mistakes, caught before anything runs: a block target inside an allowed
// CIDR, or a reach target outside every allowed CIDR. Throws Error(Exit::usage) with a clear
// line (`reach_flag`/`block_flag` name the options, e.g. "--reach"/"--block").
void validate_targets(const AllowList& allow, const std::vector<IpAddr>& reach,
                      const std::vector<IpAddr>& block, const char* reach_flag,
                      const char* block_flag);
// With entries of the grammar: a block target is a mistake inside an entry without ports (all
// traffic to it is allowed), a reach target outside every entry's destination.
void validate_targets(const std::vector<AllowEntry>& allow, const std::vector<IpAddr>& reach,
                      const std::vector<IpAddr>& block, const char* reach_flag,
                      const char* block_flag);

enum class CheckStatus { pass, fail, warn };

// What a check is about; the JUnit classname (group_name) and the JSON's "group".
enum class CheckGroup { target, reach, block, outside, conntrack, bypass, process, lab };
const char* group_name(CheckGroup g);  // "nsegress.verify.<group>"

const char* status_name(CheckStatus s);  // "pass", "fail", "warn"

struct Check {
    std::string name;
    CheckStatus status = CheckStatus::pass;
    std::string detail;
    CheckGroup group = CheckGroup::lab;
};

// Which non-loopback interfaces have a netdev egress base chain (of any table).
struct EgressCoverage {
    bool readable = false;
    std::vector<std::string> covered, uncovered;  // non-loopback interfaces
    std::string detail;                           // tables/chains, or why unreadable
};

// verify's report: the checks, and what they were judged from. Its JSON document, its text and
// JUnit are rendered from it at the edge (render.hpp).
struct VerifyResult {
    Exit exit = Exit::ok;              // Exit::verify when a check failed
    std::optional<std::string> error;  // "N check(s) failed"
    TargetInfo target;
    AllowList allow;  // the destinations judged against (the entries' CIDRs, whatever the ports)
    std::vector<Check> checks;
    // The grader's probes, when they ran, and whether its packet observer was blind.
    std::optional<std::vector<GradeResult>> probes;
    bool observer_blind = false;
    std::optional<std::vector<ForgeAttempt>> forged_replies;  // when they were tried
    std::optional<EgressCoverage> netdev_egress;
};

VerifyResult cmd_verify(const VerifyOptions& opt);

// Who in the namespace could undo or go around a policy: processes whose network namespace it
// is and that hold CAP_NET_ADMIN (delete the policy) or CAP_NET_RAW (packet sockets, below the
// IP layer) in the user namespace owning it or an ancestor of that one. Read from /proc.
struct BypassRisks {
    struct Proc {
        pid_t pid = 0;
        std::string comm;
    };
    std::size_t processes = 0;  // processes found in the namespace
    std::vector<Proc> net_admin;
    std::vector<Proc> net_raw;
};
BypassRisks bypass_risks(const Netns& ns);
// "42 (sleep), 43 (sh) and 3 more"
std::string describe_procs(const std::vector<BypassRisks::Proc>& who);

// A JUnit XML report of the checks (one testcase each; a warning passes with its text as
// system-out), as CI systems and graders read it.
std::string junit_report(const std::string& target_label, const std::vector<Check>& checks);

// One suite of a class report: a graded target, or one that could not be graded (`error`).
struct JunitSuite {
    std::string name;  // the container's name, else the label
    std::vector<Check> checks;
    std::string error;  // non-empty: the target could not be graded (a testcase with <error>)
};
std::string junit_report(const std::vector<JunitSuite>& suites);

// For a family, a destination outside every allowed CIDR (documentation/reserved ranges that
// nobody answers for), or nothing when the allow-list covers them all.
std::optional<IpAddr> outside_destination(Family f, const AllowList& allow);

// The user of /etc/subuid (or subgid) text whose range holds [start, start + count), if any.
std::optional<std::string> subid_owner(const std::string& subid_text, unsigned long start,
                                       unsigned long count);
// The length of the uid/gid map line that maps 0 ("0 100000 65536" -> 65536), 0 if none.
unsigned long root_range(const std::string& map);

// "0 100000 65536" lines -> the host uid that uid 0 maps to (nullopt: 0 is not mapped).
std::optional<unsigned long> host_uid_of_root(const std::string& uid_map);

}  // namespace nsegress
