#include "verbs.hpp"

#include <algorithm>

#include "nsegress/reports.hpp"

namespace nsegress {

using namespace verbs;

ProbeReport cmd_probe(const ProbeCommandOptions& opt) {
    ProbeReport rep;
    require_privileges(priv_enter | priv_net_raw);
    Netns ns = open_target(opt.target);
    rep.target = target_info(ns, opt.target);
    Handles h = open_handles(ns, need_probe);
    std::vector<ProbeTarget> targets;
    for (const auto& a : opt.targets) targets.push_back({a, opt.expect});
    rep.probes = run_probes(h.probe, targets, opt.probe_options);
    if (std::any_of(rep.probes.begin(), rep.probes.end(),
                    [](const ProbeResult& r) { return !r.ok(); })) {
        rep.exit = Exit::verify;
        rep.error = "a probe did not hold";
    }
    return rep;
}

}  // namespace nsegress
