// `nsegress watch`: the live deny log of one namespace, and the allow-list it suggests.
//
// watch binds the policy's nflog group inside the target namespace (nflog.hpp) and turns every
// logged packet into one event: an "attempt" (time, protocol, destination and port or ICMP
// type, the socket's uid, and whether it was refused or, in audit mode, would have been). It
// ends on SIGINT/SIGTERM, after --duration, or when the --pid/--container process exits, and
// then reports what it saw, what it lost, and with --summary the allow-list that covers it.
//
// Events and the end report are typed (WatchEvent, WatchReport); the --json lines (one object per
// event, then the end document) and the human text are both rendered from them at the edge
// (render.hpp). The summary builder is pure and unit-tested.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/cidr.hpp"
#include "nsegress/commands.hpp"
#include "nsegress/nflog.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"

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

// The entry suggested for what was seen: "DEST tcp/443 udp/53 icmp" when every protocol seen
// has a place in the grammar (ports seen on any host of the line, echo requests), else the
// bare CIDR (all traffic).
std::string suggested_entry(const SummaryEntry& e);
// Whether the current policy already allows all of `suggestion`: adding it changes nothing.
bool already_allowed(const Policy& current, const std::string& suggestion);

// ---- Events ----------------------------------------------------------------------------------

// A logged packet: an attempt the policy refused (or, in audit mode, would have); its event
// always has a parsable packet.
struct WatchAttempt {
    std::string time;
    nflog::LogEvent event;
};
// Logged attempts that never reached us (the socket overflowed).
struct WatchLost {
    std::string time;
    std::uint64_t count = 0;
    std::string reason;
};
// A question the names proxy answered or refused: the fields of its log record (name, type,
// verdict, transport, resolver, addresses), passed through as that log has them.
struct WatchName {
    std::string time;
    nlohmann::json fields;
};
using WatchEvent = std::variant<WatchAttempt, WatchLost, WatchName>;

// "2026-11-25T10:00:00.123Z" for a CLOCK_REALTIME time.
std::string iso_time(std::int64_t sec, long nsec);

// ---- The command -----------------------------------------------------------------------------

struct WatchOptions {
    TargetSpec target;
    std::optional<double> duration_s;  // end after this long; none: until a signal
    bool summary = false;
    int receive_buffer = 4 << 20;  // bytes, SO_RCVBUFFORCE of the log socket
};

// Once the group is bound and the policy read: events can flow now.
struct WatchReady {
    TargetInfo target;
    bool route_set = false;  // a route set refuses some attempts before any packet exists
    nft::PolicyState policy;
};

struct WatchSink {
    std::function<void(const WatchReady& ready)> ready;
    // Every event, as it happens.
    std::function<void(const WatchEvent& event)> event;
    // A warning worth showing at once (no policy, no deny log in it, ...).
    std::function<void(const std::string& text)> notice;
};

// --summary: what was observed, as an allow-file against the current policy.
struct WatchSummary {
    Policy current;  // the installed policy, with its names
    std::vector<SummaryEntry> observed;
    std::string allow_file;
    std::vector<std::pair<std::string, std::size_t>> refused_names;  // name, times asked
};

// How the watch ended, and what it saw and lost ("end", the last --json line).
struct WatchReport {
    Exit exit = Exit::ok;
    TargetInfo target;
    std::string reason;  // "duration", "SIGINT", "SIGTERM", "target process exited"
    double duration_s = 0;
    std::uint64_t attempts = 0, received = 0, lost = 0, overruns = 0, unparsed = 0, foreign = 0;
    std::vector<std::string> notices;
    bool route_set = false;
    nft::PolicyState before, after;
    std::optional<std::uint64_t> logged_meanwhile;  // the policy's log counter, when it has one
    std::optional<WatchSummary> summary;
};

// Runs until a signal, the duration, or the target process's exit.
WatchReport cmd_watch(const WatchOptions& opt, const WatchSink& sink);

}  // namespace nsegress
