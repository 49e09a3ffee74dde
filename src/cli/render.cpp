#include "nsegress/render.hpp"

#include <linux/rtnetlink.h>

#include <array>
#include <cctype>
#include <map>

#include <fmt/format.h>

#include "nsegress/names.hpp"
#include "nsegress/routeset.hpp"

namespace nsegress {

using nlohmann::json;

namespace {

std::string join(const std::vector<std::string>& list, const char* sep = ", ") {
    std::string out;
    for (const auto& e : list) out += (out.empty() ? "" : sep) + e;
    return out.empty() ? "(none)" : out;
}

// A family's ranges, appended straight to `out`: a 10^5-entry list is never formatted into a
// copy first.
void append_ranges(std::string& out, const std::vector<Range>& ranges) {
    bool first = true;
    for (const auto& r : ranges) {
        if (!first) out += ", ";
        out += r.str();
        first = false;
    }
    if (first) out += "(none)";
}

void allow_lines(std::string& out, const Policy& allow, const char* indent) {
    for (Family f : {Family::v4, Family::v6}) {
        out += indent;
        out += f == Family::v4 ? "IPv4: " : "IPv6: ";
        append_ranges(out, allow.all().ranges(f));
        out += "\n";
    }
    // Entries with protocols and ports ("198.51.100.10/32 tcp/443"), one per line.
    for (const auto& e : allow.entries())
        if (e.find(' ') != std::string::npos) out += fmt::format("{}ports: {}\n", indent, e);
}

void probe_lines(std::string& out, const std::vector<ProbeResult>& probes) {
    for (const auto& p : probes) {
        std::string rtt = p.rtt_ms ? fmt::format(" rtt {:.3f} ms", *p.rtt_ms) : "";
        out += fmt::format("  {} {:<22} expect {:<5}  {}{}  {}\n", p.ok() ? "PASS" : "FAIL",
                           p.target.str(), expect_name(p.expect), outcome_name(p.outcome), rtt,
                           p.detail);
    }
}

std::string target_line(const TargetInfo& t) {
    return fmt::format("{} (netns inode {})", t.label, t.netns_inode);
}

json counter_json(const nft::Counter& c) {
    return json{{"packets", c.packets}, {"bytes", c.bytes}};
}

json opt_json(const std::optional<std::uint64_t>& v) { return v ? json(*v) : json(nullptr); }

json procs_json(const std::vector<BypassRisks::Proc>& ps) {
    json out = json::array();
    for (const auto& p : ps) out.push_back(json{{"pid", p.pid}, {"comm", p.comm}});
    return out;
}

json foreign_json(const ForeignPolicies& f) {
    json chains = json::array();
    for (const auto& h : f.chains)
        chains.push_back({{"family", h.family},
                          {"table", h.table},
                          {"chain", h.chain},
                          {"hook", h.hook},
                          {"priority", h.priority},
                          {"device", h.device},
                          {"policy", h.policy}});
    return {{"chains", chains}, {"legacy_iptables", f.legacy_iptables}};
}

// The beginning of every document.
json base_json(const char* command, Exit exit, const std::optional<std::string>& error) {
    return json{{"command", command},
                {"ok", exit == Exit::ok},
                {"exit_code", static_cast<int>(exit)},
                {"error", error ? json(*error) : json(nullptr)}};
}

}  // namespace

std::string foreign_lines(const ForeignPolicies& f) {
    std::string out;
    for (const auto& c : f.chains)
        out += fmt::format("  table {} {}, chain {}: hook {}{} priority {}{} (not nsegress's)\n",
                           c.family, c.table, c.chain, c.hook,
                           c.device.empty() ? "" : " device " + c.device, c.priority,
                           c.policy.empty() ? "" : ", policy " + c.policy);
    for (const auto& l : f.legacy_iptables) out += "  " + l + " (not nsegress's)\n";
    return out;
}

// ----- watch: its events, the ready line, the end report -------------------------------------

std::optional<json> attempt_json(const nflog::LogEvent& ev, const std::string& time) {
    if (!ev.packet) return std::nullopt;
    const nflog::PacketInfo& p = *ev.packet;
    auto mode = nflog::mode_of_prefix(ev.prefix);
    auto opt = [](const auto& v) { return v ? json(*v) : json(nullptr); };
    return json{
        {"event", "attempt"},
        {"time", time},
        {"mode", mode ? json(nft::mode_name(*mode)) : json(nullptr)},
        {"verdict",
         !mode ? json(nullptr) : json(*mode == nft::Mode::audit ? "would-be-refused" : "refused")},
        {"family", p.family == Family::v4 ? "ipv4" : "ipv6"},
        {"proto", nflog::protocol_name(p.protocol)},
        {"protocol", p.protocol},
        {"src", p.src.str()},
        {"dst", p.dst.str()},
        {"sport", opt(p.sport)},
        {"dport", opt(p.dport)},
        {"icmp_type", opt(p.icmp_type)},
        {"icmp_code", opt(p.icmp_code)},
        {"icmp", p.icmp_type ? json(nflog::icmp_type_name(p.family, *p.icmp_type)) : json(nullptr)},
        {"fragment", p.fragment},
        {"uid", opt(ev.uid)},
        {"gid", opt(ev.gid)},
        {"seq", opt(ev.seq)}};
}

json summary_json(const AllowList& current, const std::vector<SummaryEntry>& observed,
                  const std::string& allow_file) {
    return summary_json(Policy(current), observed, allow_file);
}

json summary_json(const Policy& current, const std::vector<SummaryEntry>& observed,
                  const std::string& allow_file) {
    json cur = json::array();
    for (const auto& e : current.entries()) cur.push_back(e);
    json obs = json::array();
    for (const auto& e : observed)
        obs.push_back(json{{"cidr", e.cidr.str()},
                           {"entry", suggested_entry(e)},
                           {"hosts", e.hosts},
                           {"attempts", e.attempts},
                           {"seen", e.seen},
                           {"allowed_now", already_allowed(current, suggested_entry(e))}});
    return json{{"current", cur}, {"observed", obs}, {"allow_file", allow_file}};
}

json event_json(const WatchEvent& event) {
    if (const auto* a = std::get_if<WatchAttempt>(&event)) return *attempt_json(a->event, a->time);
    if (const auto* l = std::get_if<WatchLost>(&event))
        return json{
            {"event", "lost"}, {"time", l->time}, {"count", l->count}, {"reason", l->reason}};
    const auto& n = std::get<WatchName>(event);
    json ev{{"event", "name"}, {"time", n.time}};
    for (const auto& [k, v] : n.fields.items()) ev[k] = v;
    return ev;
}

std::string render_human(const WatchEvent& event) {
    if (const auto* a = std::get_if<WatchAttempt>(&event)) {
        const nflog::LogEvent& ev = a->event;
        const nflog::PacketInfo& p = *ev.packet;
        const std::string dst = p.dst.str();
        std::string where;
        if (p.dport)
            where = fmt::format("{}:{}", p.family == Family::v6 ? "[" + dst + "]" : dst, *p.dport);
        else if (p.icmp_type)
            where = dst + " " + nflog::icmp_type_name(p.family, *p.icmp_type);
        else
            where = dst;
        const std::string uid = ev.uid ? fmt::format("uid {}", *ev.uid) : "uid ?";
        const auto mode = nflog::mode_of_prefix(ev.prefix);
        const char* verdict = mode == nft::Mode::audit ? "would be refused (audit)" : "refused";
        return fmt::format("{}  {:<7} {:<40} {:<10} {}\n", a->time,
                           nflog::protocol_name(p.protocol), where, uid, verdict);
    }
    if (const auto* l = std::get_if<WatchLost>(&event))
        return fmt::format("{}  LOST {} logged attempt(s): {}\n", l->time, l->count, l->reason);
    return {};  // the names proxy's questions: in the JSON lines and in its own log
}

std::string render_human(const WatchReady& r) {
    return fmt::format(
        "listening on nflog group {} in {} (netns inode {}), policy: {}; stop with Ctrl-C or "
        "SIGTERM\n",
        nft::kNflogGroup, r.target.label, r.target.netns_inode,
        r.policy.present ? std::string(nft::mode_name(r.policy.mode)) + " mode"
                         : std::string("none"));
}

namespace {

json watch_policy_json(const nft::PolicyState& st) {
    return json{{"present", st.present},
                {"complete", st.complete},
                {"mode", st.present ? json(nft::mode_name(st.mode)) : json(nullptr)},
                {"deny_log", st.deny_log},
                {"logged_packets", st.logged.packets},
                {"refused_packets", st.refused.packets}};
}

}  // namespace

json report_json(const WatchReport& r) {
    json doc = base_json("watch", r.exit, std::nullopt);
    doc["event"] = "end";
    doc["target"] = target_json(r.target);
    doc["reason"] = r.reason;
    doc["duration_s"] = r.duration_s;
    doc["group"] = nft::kNflogGroup;
    doc["attempts"] = r.attempts;
    doc["received"] = r.received;
    doc["lost"] = r.lost;
    doc["overruns"] = r.overruns;
    doc["unparsed"] = r.unparsed;
    doc["foreign"] = r.foreign;
    doc["notices"] = r.notices;
    doc["route_set"] = r.route_set;
    doc["route_refused"] = json{{"counted", false}};
    doc["policy"] =
        json{{"before", watch_policy_json(r.before)},
             {"after", watch_policy_json(r.after)},
             {"logged_meanwhile", r.logged_meanwhile ? json(*r.logged_meanwhile) : json(nullptr)}};
    if (r.summary) {
        doc["summary"] =
            summary_json(r.summary->current, r.summary->observed, r.summary->allow_file);
        json refused_names = json::array();
        for (const auto& [name, n] : r.summary->refused_names)
            refused_names.push_back({{"name", name}, {"asked", n}});
        doc["summary"]["refused_names"] = refused_names;
    }
    return doc;
}

std::string render_human(const WatchReport& r) {
    std::string out =
        fmt::format("ended ({}) after {:.1f} s on {}: {} attempt(s), {} lost\n", r.reason,
                    r.duration_s, target_line(r.target), r.attempts, r.lost);
    if (r.route_set)
        out +=
            "  not counted: what the route set refused meanwhile (no packet, and no kernel "
            "counter counts its EHOSTUNREACH)\n";
    return out;
}

// ----- restrict -------------------------------------------------------------------------------

std::string render_human(const RestrictReport& r) {
    std::string out;
    const bool audit = r.mode == nft::Mode::audit;
    if (r.dry) {
        out += fmt::format("# nsegress restrict --dry-run{} for {}\n", audit ? " --audit" : "",
                           target_line(r.target));
        out += "# nftables (one atomic batch, equivalent to `nft -f` of this script):\n";
        out += r.dry->nft;
        if (r.dry->route_set) {
            out += "# route set:\n";
            for (const auto& c : r.dry->route_commands) out += c + "\n";
        } else {
            out += audit ? "# route set: none in audit mode (a previous one is removed)\n"
                         : "# route set: disabled (--no-route-set)\n";
        }
        return out;
    }
    out += fmt::format("restricted {}{}\n", target_line(r.target),
                       audit ? " in AUDIT mode: nothing is refused, what would be is logged" : "");
    if (r.allow) {
        out += "  allow-list:\n";
        allow_lines(out, *r.allow, "    ");
    }
    if (r.policy)
        out += fmt::format(
            "  policy: table inet nsegress committed ({} mode, deny log: nflog group {}; "
            "see it with `nsegress watch`)\n",
            audit ? "audit" : "enforce", nft::kNflogGroup);
    if (r.netdev && r.netdev->install) {
        std::string devs;
        for (const auto& d : r.netdev->devices) devs += (devs.empty() ? "" : ", ") + d.name;
        out += fmt::format("  netdev egress filter: table netdev nsegress on {}\n",
                           devs.empty() ? "(no interface)" : devs);
    }
    if (r.route_set) {
        const auto& rs = *r.route_set;
        if (rs.disabled_by == std::optional<std::string>("names"))
            out +=
                "  route set: none with names (their addresses are not known in advance; a "
                "previous one is removed)\n";
        else if (rs.disabled_by)
            out += "  route set: none in audit mode (a previous one is removed)\n";
        else if (!rs.enabled)
            out += "  route set: disabled (--no-route-set)\n";
        else if (rs.installed)
            out += fmt::format("  route set: table {} installed ({} route(s), {} rule(s))\n",
                               kRouteTable, rs.route_count, rs.rule_count);
        else
            out += "  route set: NOT installed\n";
    }
    if (r.conntrack_dropped && *r.conntrack_dropped > 0)
        out += fmt::format("  conntrack: dropped {} forbidden flow(s)\n", *r.conntrack_dropped);
    if (r.probes) {
        if (r.probes->empty())
            out += fmt::format("  probes: none ({})\n",
                               r.probes_none.empty() ? "no target" : r.probes_none);
        else
            out += "  probes:\n";
        probe_lines(out, *r.probes);
    }
    return out;
}

// ----- release --------------------------------------------------------------------------------

json report_json(const ReleaseReport& r) {
    json doc = base_json("release", r.exit, r.error());
    if (!r.errors.empty()) doc["errors"] = r.errors;
    doc["target"] = target_json(r.target);
    if (r.removed_names_proxy) doc["removed_names_proxy"] = *r.removed_names_proxy;
    doc["removed"] = json{{"table", r.removed_table},
                          {"netdev_table", r.removed_netdev_table},
                          {"rules", r.removed_rules},
                          {"routes", r.removed_routes}};
    if (r.foreign) doc["foreign"] = foreign_json(*r.foreign);
    return doc;
}

std::string render_human(const ReleaseReport& r) {
    std::string out =
        fmt::format("released {}: table {}{}, {} rule(s), {} route(s) removed\n",
                    target_line(r.target), r.removed_table ? "inet nsegress" : "(none)",
                    r.removed_netdev_table ? " and table netdev nsegress" : "", r.removed_rules,
                    r.removed_routes);
    // Say plainly when nothing of nsegress's was there, and what was left alone.
    if (!r.removed_table && !r.removed_netdev_table && r.removed_rules == 0 &&
        r.removed_routes == 0)
        out += "  nothing of nsegress's was installed: nothing removed\n";
    if (r.foreign && !r.foreign->empty())
        out += "  left in place (not nsegress's):\n" + foreign_lines(*r.foreign);
    return out;
}

// ----- probe ----------------------------------------------------------------------------------

json report_json(const ProbeReport& r) {
    json doc = base_json("probe", r.exit, r.error);
    doc["target"] = target_json(r.target);
    json probes = json::array();
    for (const auto& p : r.probes) probes.push_back(probe_json(p));
    doc["probes"] = probes;
    return doc;
}

std::string render_human(const ProbeReport& r) {
    std::string out = fmt::format("probe from {}\n", target_line(r.target));
    probe_lines(out, r.probes);
    return out;
}

// ----- verify ---------------------------------------------------------------------------------

namespace {

// How many checks passed, failed and warned (indexed by CheckStatus).
std::array<std::size_t, 3> check_counts(const std::vector<Check>& checks) {
    std::array<std::size_t, 3> n{};
    for (const auto& c : checks) ++n[static_cast<std::size_t>(c.status)];
    return n;
}

}  // namespace

json report_json(const VerifyResult& r) {
    json doc = base_json("verify", r.exit, r.error);
    doc["target"] = target_json(r.target);
    json allow = json::array();
    for (Family f : {Family::v4, Family::v6})
        for (const auto& range : r.allow.ranges(f)) allow.push_back(range.str());
    doc["allow"] = allow;
    json checks = json::array();
    for (const auto& c : r.checks)
        checks.push_back(json{{"name", c.name},
                              {"group", group_name(c.group)},
                              {"status", status_name(c.status)},
                              {"detail", c.detail}});
    doc["checks"] = checks;
    const auto n = check_counts(r.checks);
    doc["summary"] = json{{"pass", n[static_cast<std::size_t>(CheckStatus::pass)]},
                          {"fail", n[static_cast<std::size_t>(CheckStatus::fail)]},
                          {"warn", n[static_cast<std::size_t>(CheckStatus::warn)]}};
    if (r.probes) {
        json probes = json::array();
        for (const auto& p : *r.probes)
            probes.push_back(json{{"target", p.probe.addr.str()},
                                  {"protocol", proto_name(p.probe.proto)},
                                  {"port", p.probe.port},
                                  {"expect", expect_name(p.probe.expect)},
                                  {"ok", p.ok()},
                                  {"refused", p.refused},
                                  {"left", p.left},
                                  {"answered", p.answered},
                                  {"detail", p.detail}});
        doc["probes"] = probes;
        doc["observer_blind"] = r.observer_blind;
    }
    if (r.forged_replies) {
        json forged = json::array();
        for (const auto& f : *r.forged_replies)
            forged.push_back(json{{"technique", f.technique},
                                  {"applicable", f.applicable},
                                  {"leaked", f.leaked},
                                  {"detail", f.detail}});
        doc["forged_replies"] = forged;
    }
    if (r.netdev_egress)
        doc["netdev_egress"] = json{{"readable", r.netdev_egress->readable},
                                    {"covered", r.netdev_egress->covered},
                                    {"uncovered", r.netdev_egress->uncovered},
                                    {"detail", r.netdev_egress->detail}};
    return doc;
}

std::string render_human(const VerifyResult& r) {
    std::string out = fmt::format("verify {}\n", target_line(r.target));
    for (const auto& c : r.checks) {
        std::string st = status_name(c.status);
        for (auto& ch : st) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        out += fmt::format("{} {}: {}\n", st, c.name, c.detail);
    }
    const auto n = check_counts(r.checks);
    out += fmt::format("{} passed, {} failed, {} warning(s)\n",
                       n[static_cast<std::size_t>(CheckStatus::pass)],
                       n[static_cast<std::size_t>(CheckStatus::fail)],
                       n[static_cast<std::size_t>(CheckStatus::warn)]);
    return out;
}

// ----- status ---------------------------------------------------------------------------------

namespace {

json snapshot_json(const Snapshot& s, json& doc) {
    json links = json::array(), addrs = json::array(), routes = json::array(),
         rules = json::array();
    for (const auto& l : s.links)
        links.push_back({{"ifindex", l.ifindex},
                         {"name", l.name},
                         {"up", l.up},
                         {"kind", l.kind},
                         {"mtu", l.mtu}});
    for (const auto& a : s.addresses)
        addrs.push_back({{"ifindex", a.ifindex},
                         {"link", s.link_name(a.ifindex)},
                         {"address", a.addr.str() + "/" + std::to_string(a.prefix)},
                         {"family", a.addr.family == Family::v4 ? "ipv4" : "ipv6"}});
    for (const auto& r : s.routes) {
        if (r.table == RT_TABLE_LOCAL) continue;  // local/broadcast bookkeeping, not routing policy
        routes.push_back({{"family", r.family == Family::v4 ? "ipv4" : "ipv6"},
                          {"table", table_name(r.table)},
                          {"type", route_type_name(r.type)},
                          {"dst", r.is_default() ? std::string("default") : r.dst.str()},
                          {"gateway", r.gateway ? json(r.gateway->str()) : json(nullptr)},
                          {"dev", r.oif ? json(s.link_name(r.oif)) : json(nullptr)},
                          {"metric", r.metric},
                          {"text", format_route(r, s)}});
    }
    for (const auto& r : s.rules)
        rules.push_back({{"family", r.family == Family::v4 ? "ipv4" : "ipv6"},
                         {"priority", r.priority},
                         {"text", format_rule(r)}});
    doc["links"] = std::move(links);
    doc["addresses"] = std::move(addrs);
    doc["routes"] = std::move(routes);
    doc["rules"] = std::move(rules);
    return doc;
}

// Each name of the policy with the addresses its answers gave that are still allowed, and when
// they expire (the kernel's timeout of their elements in names4/names6).
json names_status_json(const StatusReport& r) {
    const NamesInfo& ni = r.names;
    const nft::PolicyState& st = r.policy;
    json names{{"enabled", st.names},
               {"proxy_running", ni.pid.has_value()},
               {"proxy_pid", ni.pid ? json(*ni.pid) : json(nullptr)},
               {"state", ni.configured ? json(ni.state) : json(nullptr)},
               {"log", ni.configured ? json(ni.log) : json(nullptr)},
               {"resolvers", ni.resolvers},
               {"resolvers_from", ni.configured ? json(ni.resolvers_from) : json(nullptr)},
               {"counters",
                {{"allowed", counter_json(st.allowed_names)},
                 {"established", counter_json(st.named)},
                 {"queries_redirected", counter_json(st.dns_redirected)},
                 {"proxy_queries", counter_json(st.resolver)}}}};
    std::map<IpAddr, std::uint64_t> expires;  // address -> latest expiry (ms)
    json elements = json::array();
    for (const auto& e : r.name_elements) {
        auto& x = expires[e.addr];
        x = std::max(x, e.expires_ms);
        std::string slot =
            e.slot.proto_first == e.slot.proto_last
                ? fmt::format("{}/{}-{}", proto_name(static_cast<IpProto>(e.slot.proto_first)),
                              e.slot.port_first, e.slot.port_last)
                : fmt::format("proto {}-{}", e.slot.proto_first, e.slot.proto_last);
        elements.push_back(
            {{"address", e.addr.str()}, {"slot", slot}, {"expires_in_s", e.expires_ms / 1000}});
    }
    json entries = json::array();
    for (const auto& n : ni.names) {
        const auto words = n.substr(0, n.find(' '));
        json addrs = json::array();
        for (const auto& [name, list] : ni.answered) {
            if (!name_matches(words, name)) continue;
            for (const auto& a : list) {
                try {
                    auto it = expires.find(parse_ip(a));
                    if (it == expires.end()) continue;
                    addrs.push_back(
                        {{"name", name}, {"address", a}, {"expires_in_s", it->second / 1000}});
                } catch (const Error&) {
                }
            }
        }
        entries.push_back({{"entry", n}, {"addresses", addrs}});
    }
    names["entries"] = entries;
    names["elements"] = elements;
    return names;
}

constexpr const char* kStaleRouteSet =
    "a copy of the main table taken at restrict time (an earlier nsegress): run restrict again";
constexpr const char* kRouteSetNotCounted =
    "refusals by the route set (EHOSTUNREACH from its unreachable route): no kernel counter "
    "counts them";
constexpr const char* kLegacyNotCounted =
    "refusals by the earlier layout's unreachable rule are in OutNoRoutes, except those of raw "
    "sockets (IPv4 ping)";

}  // namespace

json report_json(const StatusReport& r) {
    json doc = base_json("status", Exit::ok, std::nullopt);
    json t = target_json(r.target);
    t["userns"] = json{{"inode", static_cast<std::uint64_t>(r.owner.ino)},
                       {"initial", r.owner.initial},
                       {"uid_map", r.owner.uid_map ? json(*r.owner.uid_map) : json(nullptr)}};
    doc["target"] = t;
    snapshot_json(r.snapshot, doc);
    const nft::PolicyState& st = r.policy;
    // An audit-mode policy refuses nothing: the namespace is not restricted (mode says why).
    doc["restricted"] = r.restricted();
    const bool audit = st.mode == nft::Mode::audit;
    doc["policy"] =
        json{{"present", st.present},
             {"complete", st.complete},
             {"mode", st.present && st.complete ? json(nft::mode_name(st.mode)) : json(nullptr)},
             {"rules", st.rules},
             {"allow", allow_json(r.allow)},
             {"deny_log", st.deny_log ? json{{"group", nft::kNflogGroup},
                                             {"rate_per_second", nft::kLogRatePerSecond},
                                             {"burst", nft::kLogBurst}}
                                      : json(nullptr)},
             // Replies are only honoured for connections that came from outside; a
             // policy of an older nsegress honours any (forgeable) reply: say so.
             {"reply_marking", st.reply_marking},
             {"counters",
              {{"allowed", counter_json(st.allowed)},
               {"allowed_ports", counter_json(st.allowed_ports)},
               {"allowed_echo", counter_json(st.allowed_echo)},
               // audit mode refuses nothing: its final rule counts what
               // enforce mode would refuse (and lets it through)
               {"refused", counter_json(audit ? nft::Counter{} : st.refused)},
               {"would_be_refused", audit ? counter_json(st.refused) : json(nullptr)},
               {"logged", counter_json(st.logged)},
               {"loopback", counter_json(st.loopback)},
               {"replies", counter_json(st.replies)},
               {"related", counter_json(st.related)},
               {"neighbour_discovery", counter_json(st.neighbour)},
               {"inbound_connections", counter_json(st.inbound)},
               {"forged_source", counter_json(st.forged)},
               {"source_route", counter_json(st.source_route)}}}};
    doc["mode"] = doc["policy"]["mode"];
    // The earlier layout (a copy of main taken at restrict time) goes stale with the network:
    // said only when it is what is installed.
    doc["route_set"] = json{
        {"present", r.route_set_present},
        {"table", kRouteTable},
        {"layout", !r.route_set_present ? json(nullptr)
                                        : json(r.route_set_legacy ? "snapshot" : "refers-to-main")},
        {"stale", r.route_set_legacy ? json(kStaleRouteSet) : json(nullptr)},
        {"routes", r.route_set_lines}};
    // What the route set refuses is not counted: its unreachable route fails with EHOSTUNREACH,
    // and the kernel counts only ENETUNREACH (no route at all) in OutNoRoutes.
    doc["route_refused"] =
        json{{"counted", false},
             {"not_counted", r.route_set_legacy ? kLegacyNotCounted : kRouteSetNotCounted},
             {"ipv4_out_no_routes", opt_json(r.no_route.ipv4)},
             {"ipv6_out_no_routes", opt_json(r.no_route.ipv6)}};
    doc["names"] = names_status_json(r);
    json chains = json::array();
    for (const auto& c : r.netdev.chains)
        chains.push_back(
            json{{"chain", c.chain},
                 {"device", c.device},
                 {"counters",
                  {{"allowed", counter_json(c.allowed)}, {"refused", counter_json(c.refused)}}}});
    doc["netdev_egress"] =
        json{{"present", r.netdev.present}, {"chains", chains}, {"uncovered", r.uncovered}};
    doc["foreign"] = foreign_json(r.foreign);
    doc["bypass"] = json{{"processes", r.bypass.processes},
                         {"net_admin", procs_json(r.bypass.net_admin)},
                         {"net_raw", procs_json(r.bypass.net_raw)},
                         {"net_raw_filtered", r.netdev.present && r.uncovered.empty()},
                         // Never filtered from inside the namespace (no netfilter hook on its
                         // path).
                         {"af_xdp_filtered", false}};
    return doc;
}

std::string render_human(const StatusReport& r) {
    std::string out = fmt::format("target: {}\n", target_line(r.target));
    out += fmt::format("  owning user namespace: inode {}{}, uid map: {}\n",
                       static_cast<std::uint64_t>(r.owner.ino), r.owner.initial ? " (initial)" : "",
                       r.owner.uid_map ? *r.owner.uid_map : "(not visible)");
    const Snapshot& s = r.snapshot;
    out += "links:\n";
    for (const auto& l : s.links)
        out += fmt::format("  {}: {} {}{}\n", l.ifindex, l.name, l.up ? "UP" : "DOWN",
                           l.kind.empty() ? "" : " " + l.kind);
    out += "addresses:\n";
    for (const auto& a : s.addresses)
        out += fmt::format("  {} {}/{}\n", s.link_name(a.ifindex), a.addr.str(),
                           std::to_string(a.prefix));
    out += "routes:\n";
    for (const auto& rt : s.routes)
        if (rt.table != RT_TABLE_LOCAL)
            out += fmt::format("  {:<4} {}\n", rt.family == Family::v4 ? "ipv4" : "ipv6",
                               format_route(rt, s));
    out += "rules:\n";
    for (const auto& ru : s.rules)
        out +=
            fmt::format("  {:<4} {}\n", ru.family == Family::v4 ? "ipv4" : "ipv6", format_rule(ru));
    const nft::PolicyState& p = r.policy;
    // The mode is known only of a complete table.
    const bool audit = p.present && p.complete && p.mode == nft::Mode::audit;
    out += fmt::format("restricted: {}\n",
                       r.restricted() ? "yes"
                       : audit        ? "no (audit mode: nothing is refused)"
                       : !r.foreign.empty()
                           ? "not by nsegress (another egress policy is installed: see below)"
                           : "no");
    if (p.present) {
        out += fmt::format(
            "policy: table inet nsegress{}{}\n",
            p.complete ? "" : " (INCOMPLETE: modified by hand?)",
            audit         ? ", AUDIT mode (nothing is refused; what would be is counted and logged)"
            : !p.complete ? ""
                          : ", enforce mode");
        allow_lines(out, r.allow, "  allow ");
        out += fmt::format("  allowed: {} packets, {} bytes\n", p.allowed.packets, p.allowed.bytes);
        if (p.allowed_ports.packets || p.allowed_echo.packets)
            out += fmt::format(
                "    of which by port-scoped entries: {} packets, by echo entries: {} "
                "packets\n",
                p.allowed_ports.packets, p.allowed_echo.packets);
        // audit mode refuses nothing: its final rule counts what enforce mode would refuse (of
        // an incomplete table, whose mode is not known, that counter is not shown)
        const nft::Counter refused =
            p.mode == nft::Mode::audit && !audit ? nft::Counter{} : p.refused;
        out += fmt::format("  {}: {} packets, {} bytes\n",
                           audit ? "would be refused (let through)" : "refused by policy",
                           refused.packets, refused.bytes);
        if (p.reply_marking) {
            out += fmt::format(
                "  replies to peers outside the allow-list (connections they opened): {} "
                "packets, {} bytes; related ICMP errors: {} packets\n",
                p.replies.packets, p.replies.bytes, p.related.packets);
            out += fmt::format(
                "  also accepted: loopback {} packets, neighbour discovery {} packets; "
                "connections opened from outside: {}\n",
                p.loopback.packets, p.neighbour.packets, p.inbound.packets);
            out += fmt::format(
                "  dropped before the allow-list: forged source address {} packets, "
                "source routing {} packets\n",
                p.forged.packets, p.source_route.packets);
        } else {
            out +=
                "  WARNING: this policy accepts any conntrack reply, which a process inside "
                "can forge (installed by an older nsegress; run restrict again)\n";
        }
        if (p.deny_log)
            out += fmt::format(
                "  deny log: nflog group {}, {}/s burst {}: {} packets logged (`nsegress "
                "watch`)\n",
                nft::kNflogGroup, nft::kLogRatePerSecond, nft::kLogBurst, p.logged.packets);
        else
            out +=
                "  deny log: none (policy installed by an older nsegress; run restrict "
                "again)\n";
    } else {
        out += "policy: none\n";
    }
    if (!r.foreign.empty())
        out += "other egress policies (not nsegress's; status reports, release leaves them):\n" +
               foreign_lines(r.foreign);
    out += fmt::format("route set: {}\n",
                       r.route_set_present ? fmt::format("table {}", kRouteTable) : "none");
    if (r.route_set_legacy) out += std::string("  STALE: ") + kStaleRouteSet + "\n";
    for (const auto& l : r.route_set_lines) out += "  " + l + "\n";
    auto num = [](const std::optional<std::uint64_t>& v) {
        return v ? std::to_string(*v) : std::string("?");
    };
    if (r.route_set_present)
        out += std::string("  not counted: ") +
               (r.route_set_legacy ? kLegacyNotCounted : kRouteSetNotCounted) + "\n";
    out += fmt::format("  no route at all (OutNoRoutes, whole namespace): IPv4 {}, IPv6 {}\n",
                       num(r.no_route.ipv4), num(r.no_route.ipv6));
    if (!r.netdev.present) {
        out += "netdev egress filter: none\n";
    } else {
        out += "netdev egress filter: table netdev nsegress\n";
        for (const auto& c : r.netdev.chains)
            out += fmt::format("  {}: allowed {} packets, refused {} packets\n", c.device,
                               c.allowed.packets, c.refused.packets);
        if (!r.uncovered.empty())
            out +=
                "  NOT covered (created after restrict; run restrict again): " + join(r.uncovered) +
                "\n";
    }
    auto who = [](const std::vector<BypassRisks::Proc>& list) {
        std::string s;
        for (const auto& p : list)
            s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", p.pid, p.comm);
        return s;
    };
    if (r.bypass.net_admin.empty())
        out += "bypass: no process holds CAP_NET_ADMIN over the namespace\n";
    else
        out +=
            "bypass: WARNING: CAP_NET_ADMIN (can delete the policy): " + who(r.bypass.net_admin) +
            "\n";
    if (r.bypass.net_raw.empty())
        out += "bypass: no process holds CAP_NET_RAW over the namespace\n";
    else
        out += fmt::format(
            "bypass: WARNING: CAP_NET_RAW: {}: packet sockets sit below the IP layer ({}); "
            "AF_XDP sockets pass no netfilter hook at all and are not filtered by any "
            "layer inside the namespace (drop CAP_NET_RAW, or refuse socket(AF_XDP) "
            "with seccomp)\n",
            who(r.bypass.net_raw),
            r.netdev.present && r.uncovered.empty()
                ? "ordinary ones are filtered by the netdev egress filter"
                : "not filtered without --netdev-egress");
    return out;
}

// ----- parts of every document, and restrict's ------------------------------------------------

json target_json(const TargetInfo& t) {
    return json{{"label", t.label},
                {"pid", t.pid ? json(*t.pid) : json(nullptr)},
                {"path", t.path ? json(*t.path) : json(nullptr)},
                {"container", t.container ? json(*t.container) : json(nullptr)},
                {"netns_inode", t.netns_inode}};
}

json allow_json(const AllowList& a) {
    json j;
    for (Family f : {Family::v4, Family::v6}) {
        json list = json::array();
        for (const auto& r : a.ranges(f)) list.push_back(r.str());
        j[f == Family::v4 ? "ipv4" : "ipv6"] = list;
    }
    return j;
}

// The policy's entries in the grammar, and the per-family view of its CIDR-only part.
json allow_json(const Policy& p) {
    json j = allow_json(p.all());
    json list = json::array();
    for (const auto& e : p.entries()) list.push_back(e);
    j["entries"] = list;
    return j;
}

json probe_json(const ProbeResult& r) {
    return json{{"target", r.target.str()},
                {"family", r.target.family == Family::v4 ? "ipv4" : "ipv6"},
                {"expect", expect_name(r.expect)},
                {"outcome", outcome_name(r.outcome)},
                {"ok", r.ok()},
                {"rtt_ms", r.rtt_ms ? json(*r.rtt_ms) : json(nullptr)},
                {"sent", r.sent},
                {"received", r.received},
                {"detail", r.detail}};
}

namespace {

json addresses_json(const std::vector<IpAddr>& v) {
    json out = json::array();
    for (const auto& a : v) out.push_back(a.str());
    return out;
}

json netdev_json(const nft::NetdevPlan& p) {
    json devs = json::array();
    for (const auto& d : p.devices) devs.push_back(d.name);
    return json{{"enabled", p.install}, {"table", "netdev nsegress"}, {"devices", devs}};
}

json names_json(const RestrictReport::Names& n) {
    json j{{"enabled", n.enabled}};
    if (!n.resolvers_from.empty()) {
        j["resolvers"] = addresses_json(n.resolvers);
        j["resolvers_from"] = n.resolvers_from;
        if (!n.resolvers_not_trusted.empty())
            j["resolvers_not_trusted"] = addresses_json(n.resolvers_not_trusted);
        if (!n.resolv_conf.empty()) j["resolv_conf"] = n.resolv_conf;
        if (!n.warning.empty()) j["warning"] = n.warning;
    }
    if (n.proxy_pid) {
        j["proxy_pid"] = *n.proxy_pid;
        j["port"] = n.port;
        j["state"] = n.state;
        j["log"] = n.log;
    }
    if (n.stopped_proxy) j["stopped_proxy"] = true;
    return j;
}

json route_layer_json(const RestrictReport::RouteLayer& rs) {
    json j{{"enabled", rs.enabled}, {"installed", rs.installed}, {"table", kRouteTable}};
    if (rs.disabled_by) j["disabled_by"] = *rs.disabled_by;
    if (rs.routes) {
        j["routes"] = *rs.routes;
        j["rule_count"] = rs.rule_count;
    }
    if (rs.added) j["routes_added"] = *rs.added;
    if (rs.deleted) j["routes_deleted"] = *rs.deleted;
    if (rs.installed) {
        j["route_count"] = rs.route_count;
        j["routes_truncated"] = rs.truncated;
    }
    if (rs.removed_rules) j["removed_rules"] = *rs.removed_rules;
    if (rs.removed_routes) j["removed_routes"] = *rs.removed_routes;
    return j;
}

}  // namespace

json report_json(const RestrictReport& r) {
    json doc = base_json("restrict", r.exit, r.error);
    doc["target"] = target_json(r.target);
    doc["dry_run"] = r.dry_run;
    doc["mode"] = nft::mode_name(r.mode);
    if (r.dry) {
        doc["nft"] = r.dry->nft;
        doc["route_set"] = json{{"enabled", r.dry->route_set}, {"commands", r.dry->route_commands}};
    }
    if (r.policy)
        doc["policy"] = json{{"table", "inet nsegress"},
                             {"committed", true},
                             {"commit_attempts", r.policy->attempts},
                             {"mode", nft::mode_name(r.mode)},
                             {"log_group", nft::kNflogGroup},
                             {"update", r.policy->update},
                             {"set_element_messages", r.policy->set_element_messages}};
    if (r.netdev) doc["netdev_egress"] = netdev_json(*r.netdev);
    if (r.conntrack_dropped) doc["conntrack_dropped"] = *r.conntrack_dropped;
    if (r.names) doc["names"] = names_json(*r.names);
    if (r.route_set) doc["route_set"] = route_layer_json(*r.route_set);
    if (r.probes) {
        json probes = json::array();
        for (const auto& p : *r.probes) probes.push_back(probe_json(p));
        doc["probes"] = probes;
    }
    if (!r.probes_none.empty()) doc["probes_none"] = r.probes_none;
    if (r.allow) doc["allow"] = allow_json(*r.allow);
    return doc;
}

}  // namespace nsegress
