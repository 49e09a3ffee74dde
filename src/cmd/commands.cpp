#include "nsegress/commands.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <libmnl/libmnl.h>

#include "nsegress/conntrack.hpp"
#include "nsegress/deferred_close.hpp"
#include "nsegress/fd.hpp"
#include "nsegress/foreign.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/nfnl.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/restrict_plan.hpp"
#include "nsegress/restrict_report.hpp"
#include "nsegress/routeset.hpp"
#include "nsegress/names.hpp"
#include "nsegress/names_proxy.hpp"
#include "nsegress/testpoint.hpp"
#include "nsegress/untrusted.hpp"
#include "nsegress/verify.hpp"

namespace nsegress {

using nlohmann::json;

namespace {

// Sockets and files opened inside the target, used after we are back home.
struct Handles {
    DeferredClose closer;  // first: destroyed last, after the sockets it holds copies of
    NlSock rtnl;
    nft::MnlSocket nfnl;
    nft::MnlSocket ctnl;
    ProbeSockets probe;
    NetSnmp snmp;
};

enum Need : unsigned { need_rtnl = 1, need_nfnl = 2, need_ct = 4, need_probe = 8, need_snmp = 16 };

Handles open_handles(const Netns& ns, unsigned need) {
    Handles h;
    ns.run_inside([&] {
        if (need & need_rtnl) h.rtnl = open_rtnl_socket();
        if (need & need_nfnl) h.nfnl = nft::open_nfnl_socket();
        if (need & need_ct) h.ctnl = nft::open_nfnl_socket();
        if (need & need_probe) h.probe = open_probe_sockets();
        if (need & need_snmp) h.snmp = NetSnmp::open_here();
    });
    return h;
}

// Once we commit an nftables change, closing our nfnetlink sockets would wait for the kernel to
// free the old objects (deferred_close.hpp): hand their last references to a helper instead.
void close_nfnl_in_background(Handles& h) {
    h.closer = DeferredClose({h.nfnl ? mnl_socket_get_fd(h.nfnl.get()) : -1,
                              h.ctnl ? mnl_socket_get_fd(h.ctnl.get()) : -1});
}

// The first sequence number of a policy batch, from the process's one source (nfnl.hpp); a batch
// of 10^5 ranges is a few hundred messages.
std::uint32_t batch_seq() { return nfnl::next_seq(1u << 20); }

json snapshot_json(const Snapshot& s) {
    json links = json::array(), addrs = json::array(), routes = json::array(), rules = json::array();
    for (const auto& l : s.links)
        links.push_back({{"ifindex", l.ifindex}, {"name", l.name}, {"up", l.up},
                         {"kind", l.kind}, {"mtu", l.mtu}});
    for (const auto& a : s.addresses)
        addrs.push_back({{"ifindex", a.ifindex}, {"link", s.link_name(a.ifindex)},
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
    return json{{"links", links}, {"addresses", addrs}, {"routes", routes}, {"rules", rules}};
}

constexpr std::size_t kReportedRoutes = 256;

// One line per route (the first `max_routes`), then one per rule.
std::vector<std::string> route_set_lines(const RoutePlan& p, const Snapshot& s,
                                         std::size_t max_routes = SIZE_MAX) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < p.routes.size() && i < max_routes; ++i)
        out.push_back(fmt::format("{} ({})", format_route(p.routes[i], s), family_name(p.routes[i].family)));
    for (const auto& r : p.rules) out.push_back(fmt::format("rule {} ({})", format_rule(r), family_name(r.family)));
    return out;
}

std::vector<IpAddr> local_addresses(const Snapshot& s) {
    std::vector<IpAddr> out;
    for (const auto& a : s.addresses) out.push_back(a.addr);
    return out;
}

json opt_json(const std::optional<std::uint64_t>& v) { return v ? json(*v) : json(nullptr); }

// Non-loopback interfaces without a chain in the netdev table (created after restrict).
std::vector<std::string> uncovered_interfaces(const Snapshot& snap, const nft::NetdevState& nd) {
    std::vector<std::string> out;
    for (const auto& l : snap.links) {
        if (l.loopback) continue;
        if (std::none_of(nd.chains.begin(), nd.chains.end(),
                         [&](const nft::NetdevChainState& c) { return c.device == l.name; }))
            out.push_back(l.name);
    }
    return out;
}

json procs_json(const std::vector<BypassRisks::Proc>& ps) {
    json out = json::array();
    for (const auto& p : ps) out.push_back(json{{"pid", p.pid}, {"comm", p.comm}});
    return out;
}

json counter_json(const nft::Counter& c) { return json{{"packets", c.packets}, {"bytes", c.bytes}}; }

json base_doc(const char* command) {
    return json{{"command", command}, {"ok", true}, {"exit_code", 0}, {"error", nullptr}};
}

// The one place a command's outcome is decided: the exit status and the document agree.
void finish(CommandResult& res, Exit exit) {
    res.exit = exit;
    res.doc["ok"] = exit == Exit::ok;
    res.doc["exit_code"] = static_cast<int>(exit);
}

// Incremental re-restrict (nft.hpp, SetContents): what the last commit wrote into the inet
// table's sets, kept beside the namespace's lock. Trusted only through the table's stamp.
std::string state_path(const Netns& ns) {
    return fmt::format("/run/nsegress/netns-{}-{}.sets", static_cast<unsigned long>(ns.id().dev),
                       static_cast<unsigned long>(ns.id().ino));
}

std::optional<nft::SetContents> load_state(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return std::nullopt;
    struct stat st {};
    std::optional<nft::SetContents> out;
    if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        // Read in 64 KiB pieces: the file is never held whole beside the lists it describes.
        std::vector<char> buf(1 << 16);
        std::size_t have = 0, at = 0;
        bool failed = false;
        out = nft::parse_contents(static_cast<std::size_t>(st.st_size),
                                  [&](void* dst, std::size_t n) {
                                      auto* p = static_cast<char*>(dst);
                                      while (n > 0) {
                                          if (at == have) {
                                              ssize_t got = ::read(fd.get(), buf.data(), buf.size());
                                              if (got < 0 && errno == EINTR) continue;
                                              if (got <= 0) return !(failed = true);
                                              have = static_cast<std::size_t>(got);
                                              at = 0;
                                          }
                                          std::size_t k = std::min(n, have - at);
                                          std::memcpy(p, buf.data() + at, k);
                                          p += k;
                                          at += k;
                                          n -= k;
                                      }
                                      return true;
                                  });
        if (failed) out.reset();
    }
    return out;
}

// Best effort: without the file the next re-restrict writes the sets whole, which is correct.
void save_state(const std::string& path, const std::string& bytes) {
    const std::string tmp = path + ".tmp";
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return;
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    bool ok = ::close(fd.release()) == 0 && done == bytes.size();  // a failed close is a failed write
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) ::unlink(tmp.c_str());
}

void forget_state(const Netns& ns) { ::unlink(state_path(ns).c_str()); }

// Small policies keep no state file: writing their sets whole costs less than the file, and a
// container that dies without `release` then leaves nothing behind.
constexpr std::size_t kStateMinRanges = 256;

std::size_t range_count(const Policy& p, const AllowList& nd6) {
    std::size_t n = nd6.ranges(Family::v6).size();
    for (Family f : {Family::v4, Family::v6})
        n += p.all().ranges(f).size() + p.echo().ranges(f).size() + p.scoped(f).size();
    return n;
}

// State files of namespaces that are gone (containers that exited without `release`): removed
// whenever a state file is written. A namespace counts as alive when a process is in it or it
// is mounted under /run/netns; one kept alive only by an open fd or a mount elsewhere loses its
// file, which costs its next restrict a full update, nothing else.
void prune_states(const std::string& keep) {
    std::set<ino_t> alive;
    struct stat st {};
    if (DIR* d = ::opendir("/proc")) {
        while (const dirent* e = ::readdir(d)) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            if (::stat(fmt::format("/proc/{}/ns/net", e->d_name).c_str(), &st) == 0)
                alive.insert(st.st_ino);
        }
        ::closedir(d);
    }
    if (DIR* d = ::opendir("/run/netns")) {
        while (const dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.') continue;
            if (::stat(fmt::format("/run/netns/{}", e->d_name).c_str(), &st) == 0)
                alive.insert(st.st_ino);
        }
        ::closedir(d);
    }
    DIR* d = ::opendir("/run/nsegress");
    if (!d) return;
    while (const dirent* e = ::readdir(d)) {
        std::string_view name(e->d_name);
        if (name.rfind("netns-", 0) != 0 || name.size() < 11 ||
            name.substr(name.size() - 5) != ".sets")
            continue;
        const std::string path = std::string("/run/nsegress/") + e->d_name;
        if (path == keep) continue;
        auto dash = name.rfind('-');
        unsigned long ino = std::strtoul(
            std::string(name.substr(dash + 1, name.size() - 5 - dash - 1)).c_str(), nullptr, 10);
        if (ino != 0 && !alive.count(static_cast<ino_t>(ino))) ::unlinkat(::dirfd(d), e->d_name, 0);
    }
    ::closedir(d);
}

}  // namespace

TargetInfo target_info(const Netns& ns, const TargetSpec& spec) {
    return TargetInfo{ns.label(), spec.pid, spec.netns_path, spec.container,
                      static_cast<std::uint64_t>(ns.id().ino)};
}

json target_json(const Netns& ns, const TargetSpec& spec) { return target_json(target_info(ns, spec)); }

nlohmann::json error_document(const std::string& command, const Error& e) {
    CommandResult res{base_doc(command.c_str())};
    finish(res, e.exit_code());
    res.doc["error"] = e.what();
    return res.doc;
}

RestrictReport run_restrict(const RestrictOptions& opt) {
    RestrictReport rep;
    require_privileges(priv_enter | (opt.dry_run ? 0u : unsigned{priv_net_admin}) |
                       (opt.probe && !opt.dry_run ? unsigned{priv_net_raw} : 0u));
    check_plannable(opt);  // a usage error needs no target

    // 1. The target.
    Netns ns = open_target(opt.target);
    rep.target = target_info(ns, opt.target);
    rep.dry_run = opt.dry_run;
    rep.mode = opt.audit ? nft::Mode::audit : nft::Mode::enforce;
    // One writer per namespace at a time: everything that writes (restrict, release, the OCI
    // hook and CNI ADD/DEL, which call these two) takes this lock first.
    std::optional<NetnsLock> lock;
    if (!opt.dry_run) lock.emplace(ns);
    unsigned need = need_rtnl;
    if (!opt.dry_run) need |= need_nfnl | need_ct | (opt.probe ? unsigned{need_probe} : 0u);
    Handles h = open_handles(ns, need);
    testing::test_point("entered");
    if (!opt.dry_run) close_nfnl_in_background(h);

    // 2. Inspect. With a route set to install, our table's routes are read compactly (a
    //    re-run over 10^5).
    const bool compact_routes = opt.route_set && !opt.audit && !opt.dry_run;
    Snapshot before = inspect(h.rtnl.get(), inspect_all, compact_routes ? kRouteTable : 0);

    // 3. Plan: everything restrict decides, from the policy and the snapshot alone.
    const auto plan = std::make_shared<const RestrictPlan>(plan_restrict(opt, before, opt.probe, opt.default_probes));
    // The normalized policy goes into the report; its JSON (~14 MiB for 10^5 entries) is made
    // at the edge, after the batch is built and committed.
    const std::shared_ptr<const Policy> policy(plan, &plan->policy);
    // A namespace without routes in our table (the container start path) gets its route set
    // streamed to the kernel as it is planned; otherwise the plan is streamed and merged against
    // what is there, and only the difference is sent.
    const bool fresh_route_set = plan->route_set && !opt.dry_run && before.table_routes.empty();
    rep.netdev = plan->netdev;
    testing::test_point("inspected");

    if (opt.dry_run) {
        const RoutePlan routes = plan->route_set ? plan_route_set(plan->destinations) : RoutePlan{};
        rep.dry = RestrictReport::DryRun{
            nft::render_policy(*policy, plan->mode, plan->netdev) + nft::render_netdev(*policy, plan->netdev),
            plan->route_set, render_route_set(routes, before)};
        rep.allow = policy;
        return rep;
    }

    // The point of no return. Our fd keeps the namespace alive even if its container died
    // meanwhile; say so instead of restricting an orphan and reporting success.
    if (auto why = ns.vanished(); !why.empty())
        throw_failed(fmt::format("{} while nsegress was working on {}; nothing was changed", why, ns.describe()));

    // 4. Commit the policy: one atomic batch (inet table, and the netdev table when asked for or
    //    when one must go). Nothing after this can leave the namespace less restricted than it.
    RestrictReport::Commit commit{0, "new", 0};
    const std::string state = state_path(ns);
    std::optional<nft::Digest> proven;  // what the state file holds, when the stamp proved it
    {   // The batch is as large as the allow-list: gone before the route set is built.
        std::optional<nft::Batch> batch;
        commit.attempts = nft::commit(h.nfnl.get(), [&](std::uint32_t genid) -> const nft::Batch& {
            // What an earlier run left decides how the batch replaces it (in place when it
            // can); read after the generation, so the kernel vouches that it still holds.
            nft::Installed installed = nft::read_installed(h.nfnl.get());
            installed.genid = genid;
            commit.update = installed.inet == nft::Found::reusable ? "full"
                            : installed.inet == nft::Found::absent ? "new"
                                                                   : "replace";
            // The sets' contents are known without a dump only when no commit came after the
            // one that stamped them: then the state file it left must carry the same digest.
            if (installed.inet == nft::Found::reusable && installed.stamp &&
                installed.stamp->genid == genid) {
                auto saved = load_state(state);
                if (saved && nft::digest_of(*saved) == installed.stamp->digest) {
                    installed.sets = std::move(saved);
                    commit.update = "incremental";
                    proven = installed.stamp->digest;
                }
            }
            batch.reset();
            batch = plan->batch(installed, batch_seq());
            if (testing::g_hooks.mutate_batch) testing::g_hooks.mutate_batch(*batch);
            commit.set_element_messages = static_cast<std::size_t>(std::count_if(
                batch->messages.begin(), batch->messages.end(), [](const nft::BatchMessage& m) {
                    return m.type == NFT_MSG_NEWSETELEM || m.type == NFT_MSG_DELSETELEM;
                }));
            return *batch;
        });
    }
    {  // What the sets hold now, for the next re-restrict (the stamp in the batch carries its
        // digest); the file is left as it is when it holds exactly that already.
        const AllowList nd6 = nft::neighbour_destinations(plan->netdev);
        if (range_count(*policy, nd6) < kStateMinRanges) {
            ::unlink(state.c_str());  // an earlier, larger policy's, if any
        } else if (!proven || !(*proven == nft::digest_of(*policy, nd6))) {
            save_state(state, nft::serialize_contents(*policy, nd6));
            prune_states(state);
        }
    }
    rep.policy = commit;
    testing::test_point("committed");
    rep.conntrack_dropped = plan->drop_forbidden_flows
                                ? drop_forbidden_flows(h.ctnl.get(), plan->destinations, local_addresses(before))
                                : 0;
    testing::test_point("conntrack");

    // 5. The names proxy: started after the policy (its redirect is in place, so until the
    //    proxy listens no name resolves: fail closed), stopped when the new policy has none.
    auto& names = rep.names.emplace();
    names.enabled = plan->names;
    try {
        if (plan->names) {
            const ProxyResolvers resolvers = choose_proxy_resolvers(ns, opt.resolvers, opt.before_workload);
            names.resolvers = resolvers.trusted;
            names.resolvers_from = resolvers.source;
            names.resolvers_not_trusted = resolvers.untrusted;
            names.resolv_conf = resolvers.resolv_conf;
            if (resolvers.trusted.empty())
                names.warning =
                    "no trusted resolver (give --resolver IP, CNI \"resolvers\", or restrict by --pid with a "
                    "nameserver in the container's resolv.conf): every name gets SERVFAIL";
            names.proxy_pid = start_names_proxy(ns, opt.target, policy->names(), opt.audit, resolvers);
            names.port = kNamesProxyPort;
            names.state = names_state_path(ns.id());
            names.log = names_log_path(ns.id());
        } else if (stop_names_proxy(ns.id())) {
            names.stopped_proxy = true;
        }
    } catch (const Error& e) {
        rep.error = std::string(e.what()) + "; the nftables policy is installed and stays (fail closed: no name resolves)";
        rep.exit = Exit::failed;
        return rep;
    }

    // 6. The route layer. Failure: exit 2, the policy stays (fail closed).
    auto& rs = rep.route_set.emplace();
    rs.enabled = plan->route_set;
    rs.disabled_by = plan->route_set_disabled_by;
    try {
        if (plan->route_set) {
            // The report names at most kReportedRoutes routes: with a long allow-list the route
            // set is as long, and formatting 10^5 lines nobody reads would cost the container
            // start path tens of MiB and milliseconds (status lists them all).
            RoutePlan head;  // the routes the report names
            head.rules = route_set_rules();
            auto name_route = [&](const Route& r) {
                if (head.routes.size() < kReportedRoutes) head.routes.push_back(r);
            };
            if (fresh_route_set) {
                rs.route_count = apply_fresh_route_set(h.rtnl.get(), before, plan->destinations, name_route);
            } else {
                auto changes = apply_route_set_diff(h.rtnl.get(), before, std::move(before.table_routes),
                                                    plan->destinations, name_route);
                rs.route_count = changes.routes;
                rs.added = changes.added;
                rs.deleted = changes.deleted;
            }
            rs.routes = route_set_lines(head, before);
            rs.rule_count = head.rules.size();
            rs.installed = true;
            rs.truncated = rs.route_count > kReportedRoutes;
        } else {
            auto removed = remove_route_set(h.rtnl.get(), before);  // a previous run's, if any
            rs.removed_rules = removed.rules;
            rs.removed_routes = removed.routes;
        }
    } catch (const Error& e) {
        rep.error = std::string(e.what()) + "; the nftables policy is installed and stays (fail closed)";
        rep.exit = Exit::failed;
        rep.allow = policy;
        return rep;
    }

    // 7. Proof.
    testing::test_point("probe");
    rep.probes_none = plan->probes_none;
    auto& probes = rep.probes.emplace();
    if (!plan->probes.empty()) {
        probes = run_probes(h.probe, plan->probes, opt.probe_options);
        if (std::any_of(probes.begin(), probes.end(), [](const ProbeResult& r) { return !r.ok(); })) {
            rep.exit = Exit::verify;
            rep.error = "a probe did not hold; the policy stays installed (fail closed)";
        }
    }
    rep.allow = policy;
    return rep;
}

CommandResult cmd_restrict(const RestrictOptions& opt) {
    RestrictReport r = run_restrict(opt);
    return CommandResult{restrict_json(r), r.exit};
}

// Other people's egress policies in the namespace (foreign.hpp), as the "foreign" object.
json foreign_policies(const Netns& ns, mnl_socket* nfnl) {
    std::vector<std::string> legacy;
    ns.run_inside([&] { legacy = legacy_iptables_tables(); });
    return foreign_json(foreign_output_hooks(nfnl), legacy);
}

CommandResult cmd_release(const TargetSpec& target) {
    CommandResult res{base_doc("release")};
    json& doc = res.doc;
    require_privileges(priv_enter | priv_net_admin);
    Netns ns = open_target(target);
    doc["target"] = target_json(ns, target);
    NetnsLock lock(ns);
    Handles h = open_handles(ns, need_rtnl | need_nfnl);
    testing::test_point("release-entered");
    close_nfnl_in_background(h);
    bool had_table = nft::read_policy(h.nfnl.get()).present;
    bool had_netdev = nft::netdev_table_present(h.nfnl.get());
    // Keep going after a failure: remove as much as possible, then report every failure.
    std::vector<Error> failures;
    bool tables_removed = false;
    try {
        doc["removed_names_proxy"] = stop_names_proxy(ns.id());
    } catch (const Error& e) {
        failures.push_back(e.in("stop the names proxy"));
    }
    try {
        nft::commit(h.nfnl.get(), nft::compile_delete(batch_seq(), had_netdev));
        tables_removed = true;
        forget_state(ns);
    } catch (const Error& e) {
        failures.push_back(e.in("remove the nftables tables"));
    }
    testing::test_point("release-committed");
    RouteSetRemoval removed;
    try {
        removed = remove_route_set(h.rtnl.get(), inspect(h.rtnl.get(), inspect_routes | inspect_rules | inspect_links));
    } catch (const Error& e) {
        failures.push_back(e.in("remove the route set"));
    }
    doc["removed"] = json{{"table", had_table && tables_removed},
                          {"netdev_table", had_netdev && tables_removed},
                          {"rules", removed.rules},
                          {"routes", removed.routes}};
    try {
        doc["foreign"] = foreign_policies(ns, h.nfnl.get());  // left in place: not ours
    } catch (const Error&) {
        // Only a report about other people's policies: release itself is done.
    }
    if (!failures.empty()) {
        json errors = json::array();
        std::string all;
        for (const auto& f : failures) {
            errors.push_back(f.what());
            all += (all.empty() ? "" : "; ") + std::string(f.what());
        }
        doc["errors"] = errors;
        doc["error"] = all;
        finish(res, failures.front().exit_code());
    }
    return res;
}

// The installed policy: the kernel's sets, and the names the names proxy serves (its state).
Policy installed_policy(const nft::PolicyState& st, NsId id) {
    Policy p = st.policy();
    if (st.names) {
        std::vector<AllowEntry> names;
        for (const auto& n : read_names_info(id).names) {
            try {
                names.push_back(parse_allow_entry(n));
            } catch (const Error&) {
            }
        }
        p.set_names(std::move(names));
    }
    return p;
}

std::vector<std::string> policy_drift(const RestrictOptions& want) {
    const bool audit = want.audit;
    // audit mode never has a route set, nor has a policy with names
    const bool route_set = want.route_set && !audit && !Policy(want.allow).has_names();
    const bool netdev_egress = want.netdev_egress && !audit;
    require_privileges(priv_enter | priv_net_admin);
    Netns ns = open_target(want.target);
    Handles h = open_handles(ns, need_rtnl | need_nfnl);
    Snapshot snap = inspect(h.rtnl.get());
    nft::PolicyState st = nft::read_policy(h.nfnl.get());
    const Policy policy(want.allow);
    const AllowList allow = policy.destinations();  // what the route set admits
    std::vector<std::string> drift;
    if (!st.present) drift.push_back("table inet nsegress is missing");
    else if (!st.complete) drift.push_back("table inet nsegress is incomplete (modified by hand?)");
    if (st.present && st.complete && st.mode != (audit ? nft::Mode::audit : nft::Mode::enforce))
        drift.push_back(fmt::format("the policy is in {} mode but {} was asked for", nft::mode_name(st.mode),
                                    audit ? "audit" : "enforce"));
    const Policy have = installed_policy(st, ns.id());
    if (st.present && !(have == policy))
        drift.push_back(fmt::format("allow-list is {} but {} was asked for", allow_json(have)["entries"].dump(),
                                    allow_json(policy)["entries"].dump()));
    if (policy.has_names() && !names_proxy_pid(ns.id()))
        drift.push_back("the names proxy is not running (no name resolves)");
    RoutePlan installed = installed_route_set(snap);
    if (route_set) {
        if (installed.rules.empty() && installed.routes.empty()) drift.push_back("the route set is missing");
        else
            for (auto& d : route_set_drift(snap, plan_route_set(allow)))
                drift.push_back("route set: " + d);
    } else if (!installed.rules.empty() || !installed.routes.empty()) {
        drift.push_back("a route set is installed but none was asked for");
    }
    nft::NetdevState nd = nft::read_netdev(h.nfnl.get());
    if (netdev_egress && !nd.present) drift.push_back("table netdev nsegress is missing");
    if (!netdev_egress && nd.present) drift.push_back("table netdev nsegress is installed but none was asked for");
    if (netdev_egress && nd.present)
        for (const auto& name : uncovered_interfaces(snap, nd))
            drift.push_back(fmt::format("interface {} has no netdev egress chain", quote(name)));
    return drift;
}

CommandResult cmd_status(const TargetSpec& target) {
    CommandResult res{base_doc("status")};
    json& doc = res.doc;
    require_privileges(priv_enter | priv_net_admin);  // reading nftables needs CAP_NET_ADMIN too
    Netns ns = open_target(target);
    json t = target_json(ns, target);
    UsernsInfo owner = ns.owner();
    t["userns"] = json{{"inode", static_cast<std::uint64_t>(owner.ino)},
                       {"initial", owner.initial},
                       {"uid_map", owner.uid_map ? json(*owner.uid_map) : json(nullptr)}};
    doc["target"] = t;
    Handles h = open_handles(ns, need_rtnl | need_nfnl | need_snmp);
    Snapshot snap = inspect(h.rtnl.get());
    json topology = snapshot_json(snap);  // a named object: items() must not outlive it
    for (auto& [k, v] : topology.items()) doc[k] = v;
    nft::PolicyState st = nft::read_policy(h.nfnl.get());
    RoutePlan installed = installed_route_set(snap);
    bool routes_present = !installed.rules.empty();
    // An audit-mode policy refuses nothing: the namespace is not restricted (mode says why).
    doc["restricted"] = st.present && st.complete && st.mode == nft::Mode::enforce;
    doc["policy"] = json{{"present", st.present},
                         {"complete", st.complete},
                         {"mode", st.present && st.complete ? json(nft::mode_name(st.mode)) : json(nullptr)},
                         {"rules", st.rules},
                         {"allow", allow_json(installed_policy(st, ns.id()))},
                         {"deny_log", st.deny_log ? json{{"group", nft::kNflogGroup},
                                                         {"rate_per_second", nft::kLogRatePerSecond},
                                                         {"burst", nft::kLogBurst}}
                                                  : json(nullptr)},
                         // Replies are only honoured for connections that came from outside; a
                         // policy of an older nsegress honours any (forgeable) reply: say so.
                         {"reply_marking", st.reply_marking},
                         {"counters", {{"allowed", counter_json(st.allowed)},
                                       {"allowed_ports", counter_json(st.allowed_ports)},
                                       {"allowed_echo", counter_json(st.allowed_echo)},
                                       // audit mode refuses nothing: its final rule counts what
                                       // enforce mode would refuse (and lets it through)
                                       {"refused", counter_json(st.mode == nft::Mode::audit ? nft::Counter{} : st.refused)},
                                       {"would_be_refused", st.mode == nft::Mode::audit ? counter_json(st.refused) : json(nullptr)},
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
    const bool legacy = legacy_route_set(snap);
    doc["route_set"] = json{
        {"present", routes_present},
        {"table", kRouteTable},
        {"layout", !routes_present ? json(nullptr) : json(legacy ? "snapshot" : "refers-to-main")},
        {"stale", legacy ? json("a copy of the main table taken at restrict time (an earlier "
                                "nsegress): run restrict again")
                         : json(nullptr)},
        {"routes", route_set_lines(installed, snap)}};
    // What the route set refuses is not counted: its unreachable route fails with EHOSTUNREACH,
    // and the kernel counts only ENETUNREACH (no route at all) in OutNoRoutes. That counter is
    // still reported, for what it is.
    NoRouteCounters no_route = h.snmp.out_no_routes();
    doc["route_refused"] =
        json{{"counted", false},
             {"not_counted", legacy ? "refusals by the earlier layout's unreachable rule are in "
                                      "OutNoRoutes, except those of raw sockets (IPv4 ping)"
                                    : "refusals by the route set (EHOSTUNREACH from its "
                                      "unreachable route): no kernel counter counts them"},
             {"ipv4_out_no_routes", opt_json(no_route.ipv4)},
             {"ipv6_out_no_routes", opt_json(no_route.ipv6)}};

    // Names: each name with the addresses its answers gave that are still allowed, and when
    // they expire (the kernel's timeout of their elements in names4/names6).
    {
        NamesInfo ni = read_names_info(ns.id());
        json names{{"enabled", st.names}, {"proxy_running", ni.pid.has_value()},
                   {"proxy_pid", ni.pid ? json(*ni.pid) : json(nullptr)},
                   {"state", ni.configured ? json(ni.state) : json(nullptr)},
                   {"log", ni.configured ? json(ni.log) : json(nullptr)},
                   {"resolvers", ni.resolvers},
                   {"resolvers_from", ni.configured ? json(ni.resolvers_from) : json(nullptr)},
                   {"counters", {{"allowed", counter_json(st.allowed_names)},
                                 {"established", counter_json(st.named)},
                                 {"queries_redirected", counter_json(st.dns_redirected)},
                                 {"proxy_queries", counter_json(st.resolver)}}}};
        std::map<IpAddr, std::uint64_t> expires;  // address -> latest expiry (ms)
        json elements = json::array();
        if (st.names) {
            for (const auto& e : nft::read_name_elements(h.nfnl.get())) {
                auto& x = expires[e.addr];
                x = std::max(x, e.expires_ms);
                std::string slot = e.slot.proto_first == e.slot.proto_last
                                       ? fmt::format("{}/{}-{}", proto_name(static_cast<IpProto>(e.slot.proto_first)),
                                                     e.slot.port_first, e.slot.port_last)
                                       : fmt::format("proto {}-{}", e.slot.proto_first, e.slot.proto_last);
                elements.push_back({{"address", e.addr.str()}, {"slot", slot}, {"expires_in_s", e.expires_ms / 1000}});
            }
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
                        addrs.push_back({{"name", name}, {"address", a}, {"expires_in_s", it->second / 1000}});
                    } catch (const Error&) {
                    }
                }
            }
            entries.push_back({{"entry", n}, {"addresses", addrs}});
        }
        names["entries"] = entries;
        names["elements"] = elements;
        doc["names"] = names;
    }

    // The netdev egress layer: which interfaces it covers (an interface created after restrict
    // is not covered until restrict runs again), and its counters per interface.
    nft::NetdevState nd = nft::read_netdev(h.nfnl.get());
    json chains = json::array(), uncovered = json::array();
    for (const auto& c : nd.chains)
        chains.push_back(json{{"chain", c.chain}, {"device", c.device},
                              {"counters", {{"allowed", counter_json(c.allowed)}, {"refused", counter_json(c.refused)}}}});
    if (nd.present)
        for (const auto& name : uncovered_interfaces(snap, nd)) uncovered.push_back(name);
    doc["netdev_egress"] = json{{"present", nd.present}, {"chains", chains}, {"uncovered", uncovered}};

    doc["foreign"] = foreign_policies(ns, h.nfnl.get());
    // Who could undo or go around the policy from inside (see verify's bypass checks).
    BypassRisks risks = bypass_risks(ns);
    doc["bypass"] = json{{"processes", risks.processes},
                         {"net_admin", procs_json(risks.net_admin)},
                         {"net_raw", procs_json(risks.net_raw)},
                         {"net_raw_filtered", nd.present && uncovered.empty()},
                         // Never filtered from inside the namespace (no netfilter hook on its path).
                         {"af_xdp_filtered", false}};
    return res;
}

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
