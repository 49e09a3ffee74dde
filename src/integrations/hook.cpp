#include "nsegress/hook.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "nsegress/render.hpp"
#include "nsegress/reports.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

using nlohmann::json;

std::vector<std::string> split_list(std::string_view text, const std::string& what) {
    std::vector<std::string> out;
    while (true) {
        auto comma = text.find(',');
        auto item = text.substr(0, comma);
        auto b = item.find_first_not_of(" \t");
        auto e = item.find_last_not_of(" \t");
        if (b == std::string_view::npos) throw_usage(what + ": empty item in list");
        out.emplace_back(item.substr(b, e - b + 1));
        if (comma == std::string_view::npos) break;
        text = text.substr(comma + 1);
    }
    return out;
}

OciState parse_oci_state(std::string_view text) {
    if (text.size() > kMaxOciState)
        throw_usage(fmt::format("OCI state on stdin is larger than {} bytes", kMaxOciState));
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
        throw_usage("no OCI state on stdin (expected the runtime's state JSON)");
    json j;
    switch (parse_untrusted_json(text, j)) {
        case JsonProblem::invalid:
            throw_usage("OCI state on stdin is not valid JSON");
        case JsonProblem::too_deep:
            throw_usage(
                fmt::format("OCI state on stdin nests deeper than {} levels", kMaxJsonDepth));
        case JsonProblem::none:
            break;
    }
    if (!j.is_object()) throw_usage("OCI state on stdin is not a JSON object");
    OciState st;
    auto str = [&](const char* key) -> std::string {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) return {};
        if (!it->is_string()) throw_usage(fmt::format("OCI state: '{}' is not a string", key));
        return it->get<std::string>();
    };
    st.id = str("id");
    st.status = str("status");
    auto pid = j.find("pid");
    if (pid == j.end())
        throw_usage("OCI state has no 'pid' (is this hook in a stage that has one?)");
    if (!pid->is_number_integer()) throw_usage("OCI state: 'pid' is not an integer");
    if (pid->is_number_unsigned() ? pid->get<std::uint64_t>() > 4194304
                                  : pid->get<std::int64_t>() > 4194304)
        throw_usage("OCI state: 'pid' is out of range");
    std::int64_t p = pid->is_number_unsigned()
                         ? static_cast<std::int64_t>(pid->get<std::uint64_t>())
                         : pid->get<std::int64_t>();
    if (p <= 0) throw_usage(fmt::format("OCI state: pid {} is not a valid process", p));
    if (p == 1) throw_usage("OCI state: pid 1 is the host's init, not a container");
    st.pid = static_cast<pid_t>(p);
    if (auto a = j.find("annotations"); a != j.end() && !a->is_null()) {
        if (!a->is_object()) throw_usage("OCI state: 'annotations' is not an object");
        for (const auto& [k, v] : a->items()) {
            if (!v.is_string())
                throw_usage(fmt::format("OCI state: annotation {} is not a string", quote(k)));
            st.annotations[k] = v.get<std::string>();
        }
    }
    return st;
}

std::optional<RestrictOptions> hook_plan(const OciState& state, const HookArgs& args) {
    RestrictOptions o;
    static_cast<PolicySpec&>(o) = args;  // the installer's policy; annotations adjust it below
    o.target.pid = state.pid;
    o.default_probes = false;  // the network may still be being set up: probe only on request
    // A createRuntime/prestart hook runs before the container's process: its resolv.conf is
    // still the one the engine wrote (a loopback nameserver there is the engine's: 127.0.0.11).
    o.before_workload = true;
    auto note = [&](const char* key) -> const std::string* {
        auto it = state.annotations.find(key);
        return it == state.annotations.end() ? nullptr : &it->second;
    };
    // Annotations come from whoever creates the container; the hook's arguments from whoever
    // installed the hook. An annotation may choose audit mode only for a policy that annotations
    // choose too: it never weakens an allow-list given in the arguments to "refuse nothing".
    if (const std::string* a = note(kAnnotationAudit); a && !args.audit && args.allow.empty()) {
        if (*a == "true")
            o.audit = true;
        else if (*a != "false")
            throw_usage(std::string("annotation ") + kAnnotationAudit + ": " + quote(*a) +
                        " must be true or false");
    }
    auto annotated_allow = [&](const std::string& text) {
        // Entries of the grammar, separated by commas (an entry contains spaces).
        return parse_allow_entry_list(text, std::string("annotation ") + kAnnotationAllow);
    };
    if (args.allow_given || !args.allow.empty()) {
        // Per-container narrowing: the annotation may only take destinations (and ports) away.
        if (const std::string* a = note(kAnnotationAllow))
            o.allow = intersect_allow(o.allow, annotated_allow(*a));
    } else if (const std::string* a = note(kAnnotationAllow)) {
        o.allow = annotated_allow(*a);
    } else if (!o.audit) {
        return std::nullopt;  // no policy for this container
    }  // else: audit with an empty allow-list, i.e. log everything the container sends
    auto ips = [&](const std::vector<IpAddr>& from_args, const char* key) {
        if (!from_args.empty()) return from_args;
        std::vector<IpAddr> out;
        if (const std::string* a = note(key)) {
            std::size_t n = 0;
            for (const auto& item : split_list(*a, std::string("annotation ") + key))
                out.push_back(in_context(fmt::format("annotation {}: item {}", key, ++n),
                                         [&] { return parse_ip(item); }));
        }
        return out;
    };
    o.probe_reach = ips(args.probe_reach, kAnnotationProbeReach);
    o.probe_block = ips(args.probe_block, kAnnotationProbeBlock);
    return o;
}

CommandResult cmd_hook(std::string_view stdin_text, const HookArgs& args) {
    OciState st = parse_oci_state(stdin_text);
    auto plan = hook_plan(st, args);
    if (!plan) {
        CommandResult res{json{{"command", "hook"},
                               {"ok", true},
                               {"exit_code", 0},
                               {"error", nullptr},
                               {"container", st.id},
                               {"applied", false}}};
        return res;
    }
    const RestrictReport r = run_restrict(std::move(*plan));
    CommandResult res{report_json(r), r.exit};
    res.doc["command"] = "hook";
    res.doc["container"] = st.id;
    res.doc["applied"] = true;
    return res;
}

}  // namespace nsegress
