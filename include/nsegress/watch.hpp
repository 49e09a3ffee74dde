// `nsegress watch`: the live deny log of one namespace, and the allow-list it suggests.
//
// watch binds the policy's nflog group inside the target namespace (nflog.hpp) and turns every
// logged packet into one event: an "attempt" (time, protocol, destination and port or ICMP
// type, the socket's uid, and whether it was refused or, in audit mode, would have been). It
// ends on SIGINT/SIGTERM, after --duration, or when the --pid/--container process exits, and
// then reports what it saw, what it lost, and with --summary the allow-list that covers it.
//
// Events are JSON objects (the --json output is one per line); the human text is rendered from
// the same objects (report.hpp). The summary builder is pure and unit-tested.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/cidr.hpp"
#include "nsegress/commands.hpp"
#include "nsegress/nflog.hpp"

namespace nsegress {

// ---- The summary: what was observed, as an allow-list
// --------------------------------------------

// One line of the suggested allow-list.
struct SummaryEntry {
    Cidr cidr;
    std::size_t hosts = 0;                      // distinct destinations seen inside it
    std::uint64_t attempts = 0;                 // logged attempts to them
    std::map<std::string, std::uint64_t> seen;  // "tcp/443" -> 12, "icmp echo-request" -> 1
};

// Collects observed destinations. Grouping policy (documented in nsegress(8)): the allow-list
// covers *exactly* the destination addresses observed, never more: each one is a host (/32,
// /128); hosts that are adjacent are merged into ranges, and each range is written as its
// minimal set of CIDRs (10.0.0.4 and .5 become 10.0.0.4/31; .5 and .6 stay two /32s, since
// no single prefix covers exactly those two). Each line carries the ports and protocols seen
// (policy.hpp grammar: "198.51.100.10/32 tcp/443 udp/53 icmp"; on a merged line, those seen on
// any of its hosts); a line where something without a port spec was seen (gre, a fragment, an
// ICMP type other than echo) allows all traffic to its CIDR. The counts stay in a comment.
class SummaryBuilder {
public:
    void add(const nflog::PacketInfo& p);
    std::vector<SummaryEntry> entries() const;
    std::uint64_t attempts() const { return attempts_; }
    std::size_t destinations() const { return by_host_.size(); }

private:
    std::map<IpAddr, std::map<std::string, std::uint64_t>> by_host_;
    std::uint64_t attempts_ = 0;
};

// "tcp/8080", "udp/53", "icmp echo-request", "icmpv6 echo-request", "gre", "tcp (fragment)".
std::string seen_label(const nflog::PacketInfo& p);

// The summary in --allow-file format: `header` lines as comments, then the CIDRs the current
// policy already allows (kept, so that the file can replace the allow-list without cutting
// anything off), then one line per observed entry with a comment of what was seen. Entries the
// current allow-list does not cover are commented out with kSummaryDisabled in front: the raw
// output allows nothing new until someone reviews it and removes that prefix.
inline constexpr const char* kSummaryDisabled = "#- ";
std::string render_allow_file(const std::vector<std::string>& header, const AllowList& current,
                              const std::vector<SummaryEntry>& observed);
// What the names proxy saw (names_proxy.hpp, its log): the names whose answers gave an address,
// and the names it refused with how many times they were asked.
struct NameHints {
    std::map<IpAddr, std::string> answered;
    std::vector<std::pair<std::string, std::size_t>> refused;
};
// The same with a policy that may have port-scoped and name entries (all kept, in the grammar).
// With hints: an observed address a name's answer gave is suggested as that name (with the
// ports seen), and the refused names follow, commented out, for review (their ports unknown).
std::string render_allow_file(const std::vector<std::string>& header, const Policy& current,
                              const std::vector<SummaryEntry>& observed,
                              const NameHints& hints = {});

nlohmann::json summary_json(const AllowList& current, const std::vector<SummaryEntry>& observed,
                            const std::string& allow_file);
nlohmann::json summary_json(const Policy& current, const std::vector<SummaryEntry>& observed,
                            const std::string& allow_file);

// ---- Events ----------------------------------------------------------------------------------

// The JSON object of one attempt: {"event":"attempt", "time", "mode", "verdict", "family",
// "proto", "protocol", "src", "dst", "sport", "dport", "icmp_type", "icmp_code", "uid", "gid",
// "seq"}; absent facts are null. nullopt when the event has no parsable packet.
std::optional<nlohmann::json> attempt_json(const nflog::LogEvent& ev, const std::string& time);

// "2026-11-25T10:00:00.123Z" for a CLOCK_REALTIME time.
std::string iso_time(std::int64_t sec, long nsec);

// ---- The command -----------------------------------------------------------------------------

struct WatchOptions {
    TargetSpec target;
    std::optional<double> duration_s;  // end after this long; none: until a signal
    bool summary = false;
    int receive_buffer = 4 << 20;  // bytes, SO_RCVBUFFORCE of the log socket
};

struct WatchSink {
    // Called once, when the group is bound and the policy read: events can flow now.
    std::function<void(const nlohmann::json& ready)> ready;
    // Called for every "attempt" and "lost" event, as it happens.
    std::function<void(const nlohmann::json& event)> event;
    // A warning worth showing at once (no policy, no deny log in it, ...).
    std::function<void(const std::string& text)> notice;
};

// Runs until a signal, the duration, or the target process's exit. The returned document is the
// final "end" event: command, ok, exit_code, error, target, reason, duration_s, attempts, lost,
// overruns, policy (before/after), and summary when asked for.
CommandResult cmd_watch(const WatchOptions& opt, const WatchSink& sink);

}  // namespace nsegress
