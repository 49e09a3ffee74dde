#include "verbs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/netfilter/nf_tables.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include <fmt/format.h>

#include "nsegress/fd.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/names.hpp"
#include "nsegress/names_proxy.hpp"
#include "nsegress/restrict_plan.hpp"
#include "nsegress/reports.hpp"
#include "nsegress/testpoint.hpp"

namespace nsegress {

using namespace verbs;

namespace {

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
        out = nft::parse_contents(
            static_cast<std::size_t>(st.st_size), [&](void* dst, std::size_t n) {
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
    bool ok =
        ::close(fd.release()) == 0 && done == bytes.size();  // a failed close is a failed write
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) ::unlink(tmp.c_str());
}

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
    if (CHandle<DIR, ::closedir> d{::opendir("/proc")}) {
        while (const dirent* e = ::readdir(d.get())) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            if (::stat(fmt::format("/proc/{}/ns/net", e->d_name).c_str(), &st) == 0)
                alive.insert(st.st_ino);
        }
    }
    if (CHandle<DIR, ::closedir> d{::opendir("/run/netns")}) {
        while (const dirent* e = ::readdir(d.get())) {
            if (e->d_name[0] == '.') continue;
            if (::stat(fmt::format("/run/netns/{}", e->d_name).c_str(), &st) == 0)
                alive.insert(st.st_ino);
        }
    }
    CHandle<DIR, ::closedir> d{::opendir("/run/nsegress")};
    if (!d) return;
    while (const dirent* e = ::readdir(d.get())) {
        std::string_view name(e->d_name);
        if (name.rfind("netns-", 0) != 0 || name.size() < 11 ||
            name.substr(name.size() - 5) != ".sets")
            continue;
        const std::string path = std::string("/run/nsegress/") + e->d_name;
        if (path == keep) continue;
        auto dash = name.rfind('-');
        unsigned long ino = std::strtoul(
            std::string(name.substr(dash + 1, name.size() - 5 - dash - 1)).c_str(), nullptr, 10);
        if (ino != 0 && !alive.count(static_cast<ino_t>(ino)))
            ::unlinkat(::dirfd(d.get()), e->d_name, 0);
    }
}

}  // namespace

RestrictReport run_restrict(RestrictOptions opt) {
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

    // The policy, normalized from the entries, which are let go: a 10^5-entry list is not held
    // beside the namespace's snapshot (10^5 routes on a re-run), the plan and its batch.
    Policy normalized(opt.allow);
    std::vector<AllowEntry>().swap(opt.allow);

    // 2. Inspect. With a route set to install, our table's routes are read compactly (a
    //    re-run over 10^5).
    const bool compact_routes = opt.route_set && !opt.audit && !opt.dry_run;
    Snapshot before = inspect(h.rtnl.get(), inspect_all, compact_routes ? kRouteTable : 0);

    // 3. Plan: everything restrict decides, from the policy and the snapshot alone.
    const auto plan = std::make_shared<const RestrictPlan>(
        plan_restrict(opt, std::move(normalized), before, opt.probe, opt.default_probes));
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
        const RoutePlan routes =
            plan->route_set ? plan_route_set(plan->destinations()) : RoutePlan{};
        rep.dry = RestrictReport::DryRun{nft::render_policy(*policy, plan->mode, plan->netdev) +
                                             nft::render_netdev(*policy, plan->netdev),
                                         plan->route_set, render_route_set(routes, before)};
        rep.allow = policy;
        return rep;
    }

    // The point of no return. Our fd keeps the namespace alive even if its container died
    // meanwhile; say so instead of restricting an orphan and reporting success.
    if (auto why = ns.vanished(); !why.empty())
        throw_failed(fmt::format("{} while nsegress was working on {}; nothing was changed", why,
                                 ns.describe()));

    // 4. Commit the policy: one atomic batch (inet table, and the netdev table when asked for or
    //    when one must go). Nothing after this can leave the namespace less restricted than it.
    RestrictReport::Commit commit{0, "new", 0};
    const std::string state = state_path(ns);
    std::optional<nft::Digest> proven;  // what the state file holds, when the stamp proved it
    {  // The batch is as large as the allow-list: gone before the route set is built.
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
    rep.conntrack_dropped =
        plan->drop_forbidden_flows
            ? drop_forbidden_flows(h.ctnl.get(), plan->destinations(), local_addresses(before))
            : 0;
    testing::test_point("conntrack");

    // 5. The names proxy: started after the policy (its redirect is in place, so until the
    //    proxy listens no name resolves: fail closed), stopped when the new policy has none.
    auto& names = rep.names.emplace();
    names.enabled = plan->names;
    try {
        if (plan->names) {
            const ProxyResolvers resolvers =
                choose_proxy_resolvers(ns, opt.resolvers, opt.before_workload);
            names.resolvers = resolvers.trusted;
            names.resolvers_from = resolvers.source;
            names.resolvers_not_trusted = resolvers.untrusted;
            names.resolv_conf = resolvers.resolv_conf;
            if (resolvers.trusted.empty())
                names.warning =
                    "no trusted resolver (give --resolver IP, CNI \"resolvers\", or restrict by "
                    "--pid with a "
                    "nameserver in the container's resolv.conf): every name gets SERVFAIL";
            names.proxy_pid =
                start_names_proxy(ns, opt.target, policy->names(), opt.audit, resolvers);
            names.port = kNamesProxyPort;
            names.state = names_state_path(ns.id());
            names.log = names_log_path(ns.id());
        } else if (stop_names_proxy(ns.id())) {
            names.stopped_proxy = true;
        }
    } catch (const Error& e) {
        rep.error = std::string(e.what()) +
                    "; the nftables policy is installed and stays (fail closed: no name resolves)";
        rep.exit = Exit::failed;
        rep.allow = policy;
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
                rs.route_count =
                    apply_fresh_route_set(h.rtnl.get(), before, plan->destinations(), name_route);
            } else {
                auto changes =
                    apply_route_set_diff(h.rtnl.get(), before, std::move(before.table_routes),
                                         plan->destinations(), name_route);
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
        rep.error =
            std::string(e.what()) + "; the nftables policy is installed and stays (fail closed)";
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
        if (std::any_of(probes.begin(), probes.end(),
                        [](const ProbeResult& r) { return !r.ok(); })) {
            rep.exit = Exit::verify;
            rep.error = "a probe did not hold; the policy stays installed (fail closed)";
        }
    }
    rep.allow = policy;
    return rep;
}

}  // namespace nsegress
