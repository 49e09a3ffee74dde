// The edge: the verbs' typed reports (reports.hpp, verify.hpp, watch.hpp) rendered as their JSON
// documents
// (--json) and as human text. Nothing here decides anything; both renderings are made from the
// same report, so they never disagree.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nsegress/reports.hpp"
#include "nsegress/verify.hpp"
#include "nsegress/watch.hpp"

namespace nsegress {

nlohmann::json report_json(const RestrictReport& r);
nlohmann::json report_json(const ReleaseReport& r);
nlohmann::json report_json(const StatusReport& r);
nlohmann::json report_json(const ProbeReport& r);
nlohmann::json report_json(const VerifyResult& r);

std::string render_human(const RestrictReport& r);
std::string render_human(const ReleaseReport& r);
std::string render_human(const StatusReport& r);
std::string render_human(const ProbeReport& r);
std::string render_human(const VerifyResult& r);

// watch: each event as one --json line, or one human line ("attempt" and "lost"; empty for the
// names proxy's questions); the ready line; the end report.
nlohmann::json event_json(const WatchEvent& event);
std::string render_human(const WatchEvent& event);
std::string render_human(const WatchReady& ready);
nlohmann::json report_json(const WatchReport& r);
std::string render_human(const WatchReport& r);
// An attempt's object: {"event":"attempt", "time", "mode", "verdict", "family", "proto",
// "protocol", "src", "dst", "sport", "dport", "icmp_type", "icmp_code", "icmp", "fragment",
// "uid", "gid", "seq"}; absent facts are null. nullopt when the event has no parsable packet.
std::optional<nlohmann::json> attempt_json(const nflog::LogEvent& ev, const std::string& time);
// watch --summary's object: current, observed (with allowed_now), allow_file.
nlohmann::json summary_json(const AllowList& current, const std::vector<SummaryEntry>& observed,
                            const std::string& allow_file);
nlohmann::json summary_json(const Policy& current, const std::vector<SummaryEntry>& observed,
                            const std::string& allow_file);

// Parts of every document.
nlohmann::json target_json(const TargetInfo& t);
nlohmann::json probe_json(const ProbeResult& r);
nlohmann::json allow_json(const AllowList& a);
nlohmann::json allow_json(const Policy& p);
// One human line per other egress policy ("  table ip filter, chain OUTPUT: hook output
// priority 0, policy accept (not nsegress's)"), empty when there is none.
std::string foreign_lines(const ForeignPolicies& foreign);

}  // namespace nsegress
