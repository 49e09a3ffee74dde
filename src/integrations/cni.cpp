#include "nsegress/cni.hpp"

#include <sys/stat.h>

#include <algorithm>

#include <fmt/format.h>

#include "nsegress/commands.hpp"
#include "nsegress/error.hpp"
#include "nsegress/render.hpp"
#include "nsegress/reports.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

using nlohmann::json;

namespace {

[[noreturn]] void fail(int code, std::string msg, std::string details = {}) {
    throw CniFailure{code, std::move(msg), std::move(details)};
}

std::vector<std::string> string_list(const json& j, const char* key) {
    std::vector<std::string> out;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return out;
    if (!it->is_array())
        fail(cni_invalid_config, fmt::format("'{}' must be an array of strings", key));
    for (const auto& v : *it) {
        if (!v.is_string())
            fail(cni_invalid_config, fmt::format("'{}' must be an array of strings", key),
                 fmt::format("found {}", printable(dump_json(v))));
        out.push_back(v.get<std::string>());
    }
    return out;
}

std::string env_of(const std::map<std::string, std::string>& env, const char* key) {
    auto it = env.find(key);
    return it == env.end() ? std::string{} : it->second;
}

bool netns_gone(const std::string& path) {
    struct stat st {};
    return path.empty() || ::stat(path.c_str(), &st) != 0;
}

}  // namespace

CniNetconf parse_cni_netconf(std::string_view text) {
    json j;
    switch (parse_untrusted_json(text, j)) {
        case JsonProblem::invalid:
            fail(cni_decode_failed, "netconf on stdin is not valid JSON");
        case JsonProblem::too_deep:
            fail(cni_decode_failed,
                 fmt::format("netconf on stdin nests deeper than {} levels", kMaxJsonDepth));
        case JsonProblem::none:
            break;
    }
    if (!j.is_object()) fail(cni_decode_failed, "netconf on stdin is not a JSON object");
    CniNetconf nc;
    auto ver = j.find("cniVersion");
    if (ver == j.end() || !ver->is_string())
        fail(cni_invalid_config, "netconf has no string 'cniVersion'");
    nc.cni_version = ver->get<std::string>();
    if (std::find(kCniVersions.begin(), kCniVersions.end(), nc.cni_version) == kCniVersions.end())
        fail(cni_incompatible_version,
             fmt::format("cniVersion {} is not supported", quote(nc.cni_version)),
             "supported: 0.4.0, 1.0.0");
    if (auto n = j.find("name"); n != j.end() && n->is_string()) nc.name = n->get<std::string>();
    auto allow = j.find("allow");
    if (allow == j.end())
        fail(cni_invalid_config, "netconf has no 'allow' (the list of allowed CIDRs)");
    for (const auto& s : string_list(j, "allow")) {
        try {
            nc.allow.push_back(parse_allow_entry(s));  // one entry of the grammar per string
        } catch (const Error& e) {
            fail(cni_invalid_config, std::string("'allow': ") + e.what());
        }
    }
    for (const auto& s : string_list(j, "resolvers")) {
        try {
            nc.resolvers.push_back(parse_ip(s));
        } catch (const Error& e) {
            fail(cni_invalid_config, fmt::format("'resolvers': {}", e.what()));
        }
    }
    for (const char* key : {"probeReach", "probeBlock"}) {
        for (const auto& s : string_list(j, key)) {
            try {
                (std::string(key) == "probeReach" ? nc.probe_reach : nc.probe_block)
                    .push_back(parse_ip(s));
            } catch (const Error& e) {
                fail(cni_invalid_config, fmt::format("'{}': {}", key, e.what()));
            }
        }
    }
    if (auto rs = j.find("routeSet"); rs != j.end() && !rs->is_null()) {
        if (!rs->is_boolean()) fail(cni_invalid_config, "'routeSet' must be true or false");
        nc.route_set = rs->get<bool>();
    }
    if (auto a = j.find("audit"); a != j.end() && !a->is_null()) {
        if (!a->is_boolean()) fail(cni_invalid_config, "'audit' must be true or false");
        nc.audit = a->get<bool>();
    }
    if (auto nd = j.find("netdevEgress"); nd != j.end() && !nd->is_null()) {
        if (!nd->is_boolean()) fail(cni_invalid_config, "'netdevEgress' must be true or false");
        nc.netdev_egress = nd->get<bool>();
    }
    if (auto prev = j.find("prevResult"); prev != j.end() && !prev->is_null()) {
        if (!prev->is_object()) fail(cni_invalid_config, "'prevResult' must be an object");
        nc.prev_result = *prev;
    }
    return nc;
}

json cni_error_json(const std::string& cni_version, const CniFailure& f) {
    json e{{"cniVersion", cni_version.empty() ? "1.0.0" : cni_version},
           {"code", f.code},
           {"msg", f.msg}};
    if (!f.details.empty()) e["details"] = f.details;
    return e;
}

CniOutcome run_cni(const std::map<std::string, std::string>& env, std::string_view stdin_text) {
    std::string command = env_of(env, "CNI_COMMAND");
    std::string version = "1.0.0";
    try {
        if (command == "VERSION") {
            json v{{"cniVersion", "1.0.0"}, {"supportedVersions", kCniVersions}};
            return {0, dump_json(v) + "\n"};
        }
        if (command != "ADD" && command != "DEL" && command != "CHECK")
            fail(cni_invalid_env,
                 fmt::format("CNI_COMMAND {} is not ADD, DEL, CHECK or VERSION", quote(command)));
        CniNetconf nc = parse_cni_netconf(stdin_text);
        version = nc.cni_version;
        std::string netns = env_of(env, "CNI_NETNS");
        TargetSpec target;
        target.netns_path = netns;

        if (command == "DEL") {
            // DEL must succeed when there is nothing left to remove.
            if (netns_gone(netns)) return {0, ""};
            try {
                ReleaseReport r = cmd_release(target);
                if (r.exit != Exit::ok)
                    fail(cni_restrict_failed, "release failed", r.error().value_or(""));
            } catch (const Error& e) {
                if (e.exit_code() == Exit::usage || netns_gone(netns))
                    return {0, ""};  // not a netns any more
                fail(cni_restrict_failed, "release failed", e.what());
            }
            return {0, ""};
        }

        if (netns.empty()) fail(cni_invalid_env, "CNI_NETNS is not set");
        if (!nc.prev_result)
            fail(cni_invalid_config,
                 "no 'prevResult': nsegress is a chained plugin (list it after the interface "
                 "plugins)");

        // What the netconf asks for: ADD installs it, CHECK compares the pod against it.
        RestrictOptions want;
        static_cast<PolicySpec&>(want) = nc;
        want.target = target;
        want.default_probes = false;

        if (command == "ADD") {
            RestrictReport r;
            try {
                r = run_restrict(want);
            } catch (const Error& e) {
                fail(cni_restrict_failed, "restricting the pod's network namespace failed",
                     e.what());
            }
            if (r.exit == Exit::verify) {
                json probes = json::array();
                for (const auto& p : r.probes.value_or(std::vector<ProbeResult>{}))
                    probes.push_back(probe_json(p));
                fail(cni_probe_failed, "a probe did not hold (the policy stays installed)",
                     dump_json(probes));
            }
            if (r.exit != Exit::ok)
                fail(cni_restrict_failed, "restricting the pod's network namespace failed",
                     r.error.value_or(""));
            json result = *nc.prev_result;
            result["cniVersion"] = nc.cni_version;
            return {0, dump_json(result) + "\n"};
        }

        // CHECK
        std::vector<std::string> drift;
        try {
            drift = policy_drift(want);
        } catch (const Error& e) {
            fail(cni_drift, "cannot read the pod's policy", e.what());
        }
        if (!drift.empty()) {
            std::string all;
            for (const auto& d : drift) all += (all.empty() ? "" : "; ") + d;
            fail(cni_drift, "the pod's egress policy differs from the netconf", all);
        }
        return {0, ""};
    } catch (const CniFailure& f) {
        return {f.code == cni_probe_failed ? 3 : (f.code >= 100 ? 2 : 1),
                dump_json(cni_error_json(version, f)) + "\n"};
    }
}

}  // namespace nsegress
