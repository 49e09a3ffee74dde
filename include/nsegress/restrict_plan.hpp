#pragma once
// restrict as a pure plan: everything restrict decides before it touches the kernel, from the
// policy, the options and the namespace's snapshot alone -- no socket, no namespace switch, so
// it is unit-tested without root (tests/unit/test_restrict_plan.cpp). cmd_restrict (src/cmd)
// then runs it: commit the batch, drop forbidden flows, start the names proxy, the route layer,
// the probes.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nsegress/cidr.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/probe.hpp"

namespace nsegress {

// RT_SCOPE_HOST (linux/rtnetlink.h, checked in src/kernel/inspect.cpp): an address that never
// leaves its link (127.0.0.1, ::1 on lo).
inline constexpr int kAddressScopeHost = 254;

struct RestrictPlan {
    explicit RestrictPlan(Policy p) : policy(std::move(p)) {}
    Policy policy;
    nft::Mode mode = nft::Mode::enforce;
    // What the route set admits and conntrack keeps: every destination some entry names (ports
    // are the nft policy's job); the CIDR-only list itself when no entry has ports (then not a
    // copy: 10^5 ranges are 6 MiB).
    const AllowList& destinations() const { return with_ports_ ? *with_ports_ : policy.all(); }
    bool names = false;      // name entries: the names proxy runs
    bool route_set = false;  // the route layer is installed (else a previous one is removed)
    std::optional<std::string> route_set_disabled_by;  // "audit" / "names"
    nft::NetdevPlan netdev;  // the devices to filter (replace_existing is decided at commit)
    // Forbidden flows' conntrack entries are dropped (not in audit mode, not with names: a
    // name's addresses are not in the static list).
    bool drop_forbidden_flows = true;
    std::vector<ProbeTarget> probes;
    std::string probes_none;  // why nothing is probed (empty when probes.size() > 0 or no probing)

    // The policy batch against what is installed (the commit loop calls it once per attempt,
    // after reading `installed` under the generation it commits against).
    nft::Batch batch(const nft::Installed& installed, std::uint32_t first_seq) const;

private:
    friend RestrictPlan plan_restrict(const PolicySpec&, Policy, const Snapshot&, bool, bool);
    std::optional<AllowList> with_ports_;  // the destinations when some entry has ports
};

// Throws a usage error for a combination of options that cannot be planned (names with
// --netdev-egress), before anything else is looked at.
void check_plannable(const PolicySpec& spec);

// Throws a usage error for combinations that cannot be planned (names with --netdev-egress).
// `probe`: restrict probes at all; `default_probes`: the default gateways when no target is given.
RestrictPlan plan_restrict(const PolicySpec& spec, const Snapshot& snap, bool probe,
                           bool default_probes);
// The same with the policy already made from spec.allow (restrict makes it before it reads the
// namespace, and lets the entries go: a 10^5-entry list is not held beside the snapshot).
RestrictPlan plan_restrict(const PolicySpec& spec, Policy policy, const Snapshot& snap, bool probe,
                           bool default_probes);

// The netdev egress layer: one chain per non-loopback interface of the snapshot when `install`;
// in both tables, neighbour discovery may go to link-local and multicast destinations and to the
// namespace's own on-link IPv6 prefixes (/64 or longer) and IPv6 gateways (unicast NUD probes).
nft::NetdevPlan netdev_plan(const Snapshot& snap, bool install, bool present);

// Default probe targets for restrict: per family, the main default gateway is a reach target
// when the allow-list covers it and a block target when it does not (link-local gateways are
// skipped: they need a zone).
std::vector<ProbeTarget> default_probe_targets(const Snapshot& snap, const AllowList& allow);
// The same for a policy with ports: the probes are ICMP echoes, so a gateway is a reach target
// only when echo requests to it are allowed (a CIDR-only entry or an icmp entry covers it).
std::vector<ProbeTarget> default_probe_targets(const Snapshot& snap, const Policy& policy);

}  // namespace nsegress
