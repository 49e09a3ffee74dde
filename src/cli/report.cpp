#include "nsegress/report.hpp"

#include "nsegress/foreign.hpp"
#include "nsegress/names.hpp"
#include "nsegress/restrict_report.hpp"
#include "nsegress/routeset.hpp"

#include <cctype>

#include <fmt/format.h>

namespace nsegress {

using nlohmann::json;

namespace {

bool has_foreign(const json& doc) {
    return doc.contains("foreign") && !foreign_lines(doc["foreign"]).empty();
}

// status's "restricted:" when nsegress's policy is absent.
std::string not_by_nsegress(const json& doc) {
    return has_foreign(doc) ? "not by nsegress (another egress policy is installed: see below)"
                            : "no";
}

// release: say plainly when nothing of nsegress's was there, and what it left alone.
void release_foreign(std::string& out, const json& doc) {
    const json& r = doc["removed"];
    bool nothing = !r["table"].get<bool>() && !r.value("netdev_table", false) &&
                   r["rules"].get<int>() == 0 && r["routes"].get<int>() == 0;
    if (nothing) out += "  nothing of nsegress's was installed: nothing removed\n";
    if (has_foreign(doc))
        out += "  left in place (not nsegress's):\n" + foreign_lines(doc["foreign"]);
}

std::string str(const json& j, const char* key, const char* fallback = "") {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return fallback;
    return it->get<std::string>();
}

std::string join(const json& list, const char* sep = ", ") {
    std::string out;
    for (const auto& e : list) out += (out.empty() ? "" : sep) + e.get<std::string>();
    return out.empty() ? "(none)" : out;
}

// Appended straight to `out`: a 10^5-entry list is never formatted into a copy first.
void append_joined(std::string& out, const json& list) {
    bool first = true;
    for (const auto& e : list) {
        if (!first) out += ", ";
        out += e.get_ref<const std::string&>();
        first = false;
    }
    if (first) out += "(none)";
}

void allow_lines(std::string& out, const json& allow, const char* indent) {
    for (const char* fam : {"ipv4", "ipv6"}) {
        out += indent;
        out += fam == std::string_view("ipv4") ? "IPv4: " : "IPv6: ";
        append_joined(out, allow[fam]);
        out += "\n";
    }
    // Entries with protocols and ports ("198.51.100.10/32 tcp/443"), one per line.
    if (auto it = allow.find("entries"); it != allow.end() && it->is_array())
        for (const auto& e : *it)
            if (e.is_string() && e.get<std::string>().find(' ') != std::string::npos)
                out += fmt::format("{}ports: {}\n", indent, e.get<std::string>());
}

void probe_lines(std::string& out, const json& probes) {
    for (const auto& p : probes) {
        std::string rtt =
            p["rtt_ms"].is_null() ? "" : fmt::format(" rtt {:.3f} ms", p["rtt_ms"].get<double>());
        out += fmt::format("  {} {:<22} expect {:<5}  {}{}  {}\n",
                           p["ok"].get<bool>() ? "PASS" : "FAIL", p["target"].get<std::string>(),
                           p["expect"].get<std::string>(), p["outcome"].get<std::string>(), rtt,
                           str(p, "detail"));
    }
}

std::string target_line(const json& doc) {
    const json& t = doc["target"];
    return fmt::format("{} (netns inode {})", t["label"].get<std::string>(),
                       t["netns_inode"].get<std::uint64_t>());
}

}  // namespace

std::string render_watch_event(const json& ev) {
    std::string kind = str(ev, "event");
    if (kind == "attempt") {
        std::string dst = ev["dst"].get<std::string>();
        std::string where;
        if (!ev["dport"].is_null())
            where = fmt::format("{}:{}", ev["family"] == "ipv6" ? "[" + dst + "]" : dst,
                                ev["dport"].get<int>());
        else if (!ev["icmp"].is_null())
            where = dst + " " + ev["icmp"].get<std::string>();
        else
            where = dst;
        std::string uid =
            ev["uid"].is_null() ? "uid ?" : fmt::format("uid {}", ev["uid"].get<std::uint32_t>());
        std::string verdict =
            str(ev, "verdict") == "would-be-refused" ? "would be refused (audit)" : "refused";
        return fmt::format("{}  {:<7} {:<40} {:<10} {}\n", str(ev, "time"), str(ev, "proto"), where,
                           uid, verdict);
    }
    if (kind == "lost")
        return fmt::format("{}  LOST {} logged attempt(s): {}\n", str(ev, "time"),
                           ev["count"].get<std::uint64_t>(), str(ev, "reason"));
    return {};
}

std::string render_human(const json& doc) {
    std::string out;
    std::string cmd = str(doc, "command");
    if (!doc.contains("target")) return out;  // failed before a target was known: stderr says why
    if (cmd == "restrict") {
        if (doc.value("dry_run", false)) {
            out += std::string("# nsegress restrict --dry-run") +
                   (str(doc, "mode") == "audit" ? " --audit" : "") + " for " + target_line(doc) +
                   "\n";
            out += "# nftables (one atomic batch, equivalent to `nft -f` of this script):\n";
            out += doc["nft"].get<std::string>();
            if (doc["route_set"]["enabled"].get<bool>()) {
                out += "# route set:\n";
                for (const auto& c : doc["route_set"]["commands"])
                    out += c.get<std::string>() + "\n";
            } else {
                out += str(doc, "mode") == "audit"
                           ? "# route set: none in audit mode (a previous one is removed)\n"
                           : "# route set: disabled (--no-route-set)\n";
            }
            return out;
        }
        bool audit = str(doc, "mode") == "audit";
        out +=
            fmt::format("restricted {}{}\n", target_line(doc),
                        audit ? " in AUDIT mode: nothing is refused, what would be is logged" : "");
        out += "  allow-list:\n";
        allow_lines(out, doc["allow"], "    ");
        out += fmt::format(
            "  policy: table inet nsegress committed ({} mode, deny log: nflog group {}; "
            "see it with `nsegress watch`)\n",
            audit ? "audit" : "enforce", doc["policy"].value("log_group", 0));
        if (doc.contains("netdev_egress") && doc["netdev_egress"].value("enabled", false)) {
            std::string devs;
            for (const auto& d : doc["netdev_egress"]["devices"])
                devs += (devs.empty() ? "" : ", ") + d.get<std::string>();
            out += fmt::format("  netdev egress filter: table netdev nsegress on {}\n",
                               devs.empty() ? "(no interface)" : devs);
        }
        if (doc.contains("route_set")) {
            const json& rs = doc["route_set"];
            if (rs.contains("disabled_by"))
                out += "  route set: none in audit mode (a previous one is removed)\n";
            else if (!rs["enabled"].get<bool>())
                out += "  route set: disabled (--no-route-set)\n";
            else if (rs["installed"].get<bool>())
                out += fmt::format("  route set: table {} installed ({} route(s), {} rule(s))\n",
                                   rs["table"].get<int>(), rs.value("route_count", std::size_t{0}),
                                   rs.value("rule_count", std::size_t{0}));
            else
                out += "  route set: NOT installed\n";
        }
        if (doc.contains("conntrack_dropped") && doc["conntrack_dropped"].get<int>() > 0)
            out += fmt::format("  conntrack: dropped {} forbidden flow(s)\n",
                               doc["conntrack_dropped"].get<int>());
        if (doc.contains("probes")) {
            if (doc["probes"].empty())
                out += fmt::format("  probes: none ({})\n",
                                   doc.value("probes_none", std::string("no target")));
            else
                out += "  probes:\n";
            probe_lines(out, doc["probes"]);
        }
    } else if (cmd == "watch") {
        out += fmt::format("ended ({}) after {:.1f} s on {}: {} attempt(s), {} lost\n",
                           str(doc, "reason"), doc["duration_s"].get<double>(), target_line(doc),
                           doc["attempts"].get<std::uint64_t>(), doc["lost"].get<std::uint64_t>());
        if (doc.value("route_set", false))
            out +=
                "  not counted: what the route set refused meanwhile (no packet, and no kernel "
                "counter "
                "counts its EHOSTUNREACH)\n";
    } else if (cmd == "release") {
        const json& r = doc["removed"];
        out += fmt::format("released {}: table {}{}, {} rule(s), {} route(s) removed\n",
                           target_line(doc), r["table"].get<bool>() ? "inet nsegress" : "(none)",
                           r.value("netdev_table", false) ? " and table netdev nsegress" : "",
                           r["rules"].get<int>(), r["routes"].get<int>());
        release_foreign(out, doc);
    } else if (cmd == "probe") {
        out += fmt::format("probe from {}\n", target_line(doc));
        probe_lines(out, doc["probes"]);
    } else if (cmd == "verify") {
        out += fmt::format("verify {}\n", target_line(doc));
        for (const auto& c : doc["checks"]) {
            std::string st = c["status"].get<std::string>();
            for (auto& ch : st)
                ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
            out += fmt::format("{} {}: {}\n", st, c["name"].get<std::string>(),
                               c["detail"].get<std::string>());
        }
        const json& sum = doc["summary"];
        out += fmt::format("{} passed, {} failed, {} warning(s)\n", sum["pass"].get<int>(),
                           sum["fail"].get<int>(), sum["warn"].get<int>());
    } else if (cmd == "status") {
        const json& t = doc["target"];
        out += fmt::format("target: {}\n", target_line(doc));
        const json& u = t["userns"];
        out += fmt::format(
            "  owning user namespace: inode {}{}, uid map: {}\n", u["inode"].get<std::uint64_t>(),
            u["initial"].get<bool>() ? " (initial)" : "",
            u["uid_map"].is_null() ? "(not visible)" : u["uid_map"].get<std::string>());
        out += "links:\n";
        for (const auto& l : doc["links"])
            out += fmt::format(
                "  {}: {} {}{}\n", l["ifindex"].get<int>(), l["name"].get<std::string>(),
                l["up"].get<bool>() ? "UP" : "DOWN",
                l["kind"].get<std::string>().empty() ? "" : " " + l["kind"].get<std::string>());
        out += "addresses:\n";
        for (const auto& a : doc["addresses"])
            out += fmt::format("  {} {}\n", a["link"].get<std::string>(),
                               a["address"].get<std::string>());
        out += "routes:\n";
        for (const auto& r : doc["routes"])
            out += fmt::format("  {:<4} {}\n", r["family"].get<std::string>(),
                               r["text"].get<std::string>());
        out += "rules:\n";
        for (const auto& r : doc["rules"])
            out += fmt::format("  {:<4} {}\n", r["family"].get<std::string>(),
                               r["text"].get<std::string>());
        const json& p = doc["policy"];
        out += fmt::format("restricted: {}\n", doc["restricted"].get<bool>() ? "yes"
                                               : str(p, "mode") == "audit"
                                                   ? "no (audit mode: nothing is refused)"
                                                   : not_by_nsegress(doc));
        if (p["present"].get<bool>()) {
            bool audit = str(p, "mode") == "audit";
            out += fmt::format(
                "policy: table inet nsegress{}{}\n",
                p["complete"].get<bool>() ? "" : " (INCOMPLETE: modified by hand?)",
                audit ? ", AUDIT mode (nothing is refused; what would be is counted and logged)"
                : p["mode"].is_null() ? ""
                                      : ", enforce mode");
            allow_lines(out, p["allow"], "  allow ");
            const json& c = p["counters"];
            out += fmt::format("  allowed: {} packets, {} bytes\n",
                               c["allowed"]["packets"].get<std::uint64_t>(),
                               c["allowed"]["bytes"].get<std::uint64_t>());
            if (c.contains("allowed_ports") && c.contains("allowed_echo") &&
                (c["allowed_ports"]["packets"].get<std::uint64_t>() ||
                 c["allowed_echo"]["packets"].get<std::uint64_t>()))
                out += fmt::format(
                    "    of which by port-scoped entries: {} packets, by echo entries: {} "
                    "packets\n",
                    c["allowed_ports"]["packets"].get<std::uint64_t>(),
                    c["allowed_echo"]["packets"].get<std::uint64_t>());
            const json& r =
                audit && c.contains("would_be_refused") && c["would_be_refused"].is_object()
                    ? c["would_be_refused"]
                    : c["refused"];
            out += fmt::format("  {}: {} packets, {} bytes\n",
                               audit ? "would be refused (let through)" : "refused by policy",
                               r["packets"].get<std::uint64_t>(), r["bytes"].get<std::uint64_t>());
            auto pk = [&](const char* k) { return c[k]["packets"].get<std::uint64_t>(); };
            if (p["reply_marking"].get<bool>()) {
                out += fmt::format(
                    "  replies to peers outside the allow-list (connections they opened): {} "
                    "packets, "
                    "{} bytes; related ICMP errors: {} packets\n",
                    pk("replies"), c["replies"]["bytes"].get<std::uint64_t>(), pk("related"));
                out += fmt::format(
                    "  also accepted: loopback {} packets, neighbour discovery {} packets; "
                    "connections opened from outside: {}\n",
                    pk("loopback"), pk("neighbour_discovery"), pk("inbound_connections"));
                out += fmt::format(
                    "  dropped before the allow-list: forged source address {} packets, "
                    "source routing {} packets\n",
                    pk("forged_source"), pk("source_route"));
            } else {
                out +=
                    "  WARNING: this policy accepts any conntrack reply, which a process inside "
                    "can forge "
                    "(installed by an older nsegress; run restrict again)\n";
            }
            if (p["deny_log"].is_object())
                out += fmt::format(
                    "  deny log: nflog group {}, {}/s burst {}: {} packets logged (`nsegress "
                    "watch`)\n",
                    p["deny_log"]["group"].get<int>(), p["deny_log"]["rate_per_second"].get<int>(),
                    p["deny_log"]["burst"].get<int>(), c["logged"]["packets"].get<std::uint64_t>());
            else
                out +=
                    "  deny log: none (policy installed by an older nsegress; run restrict "
                    "again)\n";
        } else {
            out += "policy: none\n";
        }
        if (doc.contains("foreign") && !foreign_lines(doc["foreign"]).empty())
            out +=
                "other egress policies (not nsegress's; status reports, release leaves them):\n" +
                foreign_lines(doc["foreign"]);
        const json& rs = doc["route_set"];
        out += fmt::format("route set: {}\n", rs["present"].get<bool>()
                                                  ? fmt::format("table {}", rs["table"].get<int>())
                                                  : "none");
        if (rs.contains("stale") && !rs["stale"].is_null())
            out += "  STALE: " + rs["stale"].get<std::string>() + "\n";
        for (const auto& l : rs["routes"]) out += "  " + l.get<std::string>() + "\n";
        const json& nr = doc["route_refused"];
        auto num = [](const json& v) {
            return v.is_null() ? std::string("?") : std::to_string(v.get<std::uint64_t>());
        };
        if (rs["present"].get<bool>() && nr.contains("not_counted"))
            out += "  not counted: " + nr["not_counted"].get<std::string>() + "\n";
        out += fmt::format("  no route at all (OutNoRoutes, whole namespace): IPv4 {}, IPv6 {}\n",
                           num(nr["ipv4_out_no_routes"]), num(nr["ipv6_out_no_routes"]));
        if (doc.contains("netdev_egress")) {
            const json& nd = doc["netdev_egress"];
            if (!nd["present"].get<bool>()) {
                out += "netdev egress filter: none\n";
            } else {
                out += "netdev egress filter: table netdev nsegress\n";
                for (const auto& c : nd["chains"])
                    out += fmt::format("  {}: allowed {} packets, refused {} packets\n",
                                       c["device"].get<std::string>(),
                                       c["counters"]["allowed"]["packets"].get<std::uint64_t>(),
                                       c["counters"]["refused"]["packets"].get<std::uint64_t>());
                if (!nd["uncovered"].empty())
                    out += "  NOT covered (created after restrict; run restrict again): " +
                           join(nd["uncovered"]) + "\n";
            }
        }
        if (doc.contains("bypass")) {
            const json& b = doc["bypass"];
            auto who = [](const json& list) {
                std::string s;
                for (const auto& p : list)
                    s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", p["pid"].get<int>(),
                                     p["comm"].get<std::string>());
                return s;
            };
            if (b["net_admin"].empty())
                out += "bypass: no process holds CAP_NET_ADMIN over the namespace\n";
            else
                out += "bypass: WARNING: CAP_NET_ADMIN (can delete the policy): " +
                       who(b["net_admin"]) + "\n";
            if (b["net_raw"].empty())
                out += "bypass: no process holds CAP_NET_RAW over the namespace\n";
            else
                out += fmt::format(
                    "bypass: WARNING: CAP_NET_RAW: {}: packet sockets sit below the IP layer ({}); "
                    "AF_XDP sockets pass no netfilter hook at all and are not filtered by any "
                    "layer inside the namespace (drop CAP_NET_RAW, or refuse socket(AF_XDP) "
                    "with seccomp)\n",
                    who(b["net_raw"]),
                    b["net_raw_filtered"].get<bool>()
                        ? "ordinary ones are filtered by the netdev egress filter"
                        : "not filtered without --netdev-egress");
        }
    }
    return out;
}

// ----- restrict's document, from its report ----------------------------------------------------

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

json restrict_json(const RestrictReport& r) {
    json doc{{"command", "restrict"},
             {"ok", r.exit == Exit::ok},
             {"exit_code", static_cast<int>(r.exit)},
             {"error", r.error ? json(*r.error) : json(nullptr)}};
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
