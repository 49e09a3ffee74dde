#include "verbs.hpp"

#include "nsegress/restrict_report.hpp"

namespace nsegress {

using namespace verbs;

CommandResult cmd_probe(const ProbeCommandOptions& opt) {
    CommandResult res{base_doc("probe")};
    json& doc = res.doc;
    require_privileges(priv_enter | priv_net_raw);
    Netns ns = open_target(opt.target);
    doc["target"] = target_json(ns, opt.target);
    Handles h = open_handles(ns, need_probe);
    std::vector<ProbeTarget> targets;
    for (const auto& a : opt.targets) targets.push_back({a, opt.expect});
    json probes = json::array();
    Exit exit = Exit::ok;
    for (const auto& r : run_probes(h.probe, targets, opt.probe_options)) {
        probes.push_back(probe_json(r));
        if (!r.ok()) exit = Exit::verify;
    }
    doc["probes"] = probes;
    if (exit != Exit::ok) doc["error"] = "a probe did not hold";
    finish(res, exit);
    return res;
}

}  // namespace nsegress
