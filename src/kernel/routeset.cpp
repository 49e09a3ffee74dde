#include "nsegress/routeset.hpp"

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <netlink/msg.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <stdexcept>
#include <tuple>

#include <fmt/format.h>

#include "nsegress/error.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/testpoint.hpp"

namespace nsegress {

namespace {

using RouteFree = CFree<rtnl_route_put>;
using RuleFree = CFree<rtnl_rule_put>;
struct AddrFree {
    void operator()(nl_addr* a) const { nl_addr_put(a); }
};
using RoutePtr = std::unique_ptr<rtnl_route, RouteFree>;
using RulePtr = std::unique_ptr<rtnl_rule, RuleFree>;
using AddrPtr = std::unique_ptr<nl_addr, AddrFree>;

AddrPtr to_nl(const IpAddr& a, unsigned prefix) {
    auto b = a.bytes();
    AddrPtr out(nl_addr_build(to_af(a.family), b.data(), a.size()));
    if (!out) throw std::bad_alloc();
    nl_addr_set_prefixlen(out.get(), static_cast<int>(prefix));
    return out;
}

bool ours(const Rule& r) {
    return r.protocol == kRouteProtocol ||
           // Also recognise our rules if a tool stripped the protocol: same priority and shape.
           (!r.has_selector &&
            ((r.priority == kRulePriorityLookup && r.action == FR_ACT_TO_TBL &&
              r.table == kRouteTable) ||
             (r.priority == kLegacyRulePriorityUnreachable && r.action == FR_ACT_UNREACHABLE)));
}

bool legacy_rule(const Rule& r) { return r.action == FR_ACT_UNREACHABLE; }

RoutePtr to_nl_route(const Route& r, bool with_nexthop) {
    RoutePtr out(rtnl_route_alloc());
    if (!out) throw std::bad_alloc();
    rtnl_route_set_family(out.get(), static_cast<std::uint8_t>(to_af(r.family)));
    rtnl_route_set_table(out.get(), r.table);
    rtnl_route_set_type(out.get(), r.type);
    rtnl_route_set_protocol(out.get(), r.protocol);
    rtnl_route_set_scope(out.get(), r.scope);
    rtnl_route_set_priority(out.get(), r.metric);
    auto dst = to_nl(r.dst.addr, r.dst.prefix);
    rtnl_route_set_dst(out.get(), dst.get());  // takes its own reference
    if (r.prefsrc && with_nexthop) {
        auto src = to_nl(*r.prefsrc, r.prefsrc->family == Family::v4 ? 32 : 128);
        rtnl_route_set_pref_src(out.get(), src.get());
    }
    if (with_nexthop && r.oif) {
        // Owned here until the route takes it: to_nl() below may throw.
        auto nh = make_handle<rtnl_nexthop, rtnl_route_nh_free>(rtnl_route_nh_alloc());
        rtnl_route_nh_set_ifindex(nh.get(), r.oif);
        if (r.gateway) {
            auto gw = to_nl(*r.gateway, r.gateway->family == Family::v4 ? 32 : 128);
            rtnl_route_nh_set_gateway(nh.get(), gw.get());
        }
        if (r.onlink) rtnl_route_nh_set_flags(nh.get(), RTNH_F_ONLINK);
        rtnl_route_add_nexthop(out.get(), nh.release());  // the route owns it now
    }
    return out;
}

RulePtr to_nl_rule(const Rule& r) {
    RulePtr out(rtnl_rule_alloc());
    if (!out) throw std::bad_alloc();
    rtnl_rule_set_family(out.get(), to_af(r.family));
    rtnl_rule_set_prio(out.get(), r.priority);
    rtnl_rule_set_action(out.get(), r.action);
    if (r.action == FR_ACT_TO_TBL) rtnl_rule_set_table(out.get(), r.table);
    if (r.protocol) rtnl_rule_set_protocol(out.get(), r.protocol);
    return out;
}

// What identifies a route in its table (the kernel's own key), and everything that makes two
// routes with that key the same route.
auto route_key(const Route& r) { return std::tie(r.family, r.dst, r.metric); }
// A throw or unreachable route has no nexthop: whatever device the kernel reports for it (IPv6
// says `dev lo`) is no part of it.
auto route_all(const Route& r) {
    static const std::optional<IpAddr> none;
    const bool nh = r.type == RTN_UNICAST;
    return std::make_tuple(r.family, r.dst, r.metric, r.type, r.scope, nh ? r.gateway : none,
                           nh ? r.oif : 0, nh ? r.prefsrc : none, nh && r.onlink);
}

using MsgPtr = CHandle<nl_msg, nlmsg_free>;

// Many rtnetlink requests in few syscalls. A route set can hold 10^5 routes: one sendmsg and one
// ACK round trip per route cost more than the kernel's own work. Requests (built by libnl) are
// packed into sendmsg()s of up to kChunk bytes, and only the last request of each asks for an
// ACK. rtnetlink handles the requests of one sendmsg in order, inside that call, and answers a
// failed request with an error even without NLM_F_ACK: once the chunk's ACK arrives, every
// error of the chunk is already in our receive queue, ahead of it.
class RtnlBatch {
public:
    struct Failure {
        std::size_t tag;  // the caller's name for the request (described only if it fails)
        int error;        // positive errno
    };

    explicit RtnlBatch(nl_sock* sock) : sock_(sock), fd_(nl_socket_get_fd(sock)) {
        int on = 1;
        // Extended ACKs carry the kernel's own words; capped ones do not echo our request.
        ::setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on);
        ::setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);
        // A chunk goes in one skb, which the send buffer must hold (libnl sets 32 KiB); the
        // receive buffer must hold the errors of a whole chunk, should every request fail.
        grow(SO_SNDBUFFORCE, SO_SNDBUF, 4 * kChunk);
        grow(SO_RCVBUFFORCE, SO_RCVBUF, 4 << 20);
    }

    // Queues a request built by libnl (rtnl_*_build_*_request).
    void add(nl_msg* built, std::size_t tag) {
        MsgPtr msg(built);
        nlmsghdr* nlh = nlmsg_hdr(msg.get());
        std::size_t len = NLMSG_ALIGN(nlh->nlmsg_len);
        if (!buf_.empty() && buf_.size() + len > kChunk) flush();
        nlh->nlmsg_flags |= NLM_F_REQUEST;
        nlh->nlmsg_flags &= ~static_cast<std::uint16_t>(NLM_F_ACK);
        nlh->nlmsg_pid = nl_socket_get_local_port(sock_);
        nlh->nlmsg_seq = nl_socket_use_seq(sock_);
        last_ = buf_.size();
        buf_.insert(buf_.end(), reinterpret_cast<const char*>(nlh),
                    reinterpret_cast<const char*>(nlh) + len);
        pending_.emplace(nlh->nlmsg_seq, tag);
        ++sent_;
    }

    // Sends what is queued and collects its errors.
    void flush() {
        if (buf_.empty()) return;
        auto* last = reinterpret_cast<nlmsghdr*>(buf_.data() + last_);
        last->nlmsg_flags |= NLM_F_ACK;
        std::uint32_t last_seq = last->nlmsg_seq;
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;
        while (::sendto(fd_, buf_.data(), buf_.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                        sizeof kernel) < 0)
            if (errno != EINTR)
                throw_errno(fmt::format("route set: send {} requests ({} bytes)", pending_.size(),
                                        buf_.size()),
                            errno);
        buf_.clear();
        std::vector<char> in(1 << 16);
        bool done = false;
        while (!done) {
            ssize_t n = ::recv(fd_, in.data(), in.size(), 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno(errno == ENOBUFS
                                ? "route set: the kernel's answers overflowed our receive buffer"
                                : "route set: receive answers",
                            errno);
            }
            auto left = static_cast<int>(n);
            for (auto* nlh = reinterpret_cast<nlmsghdr*>(in.data()); NLMSG_OK(nlh, left);
                 nlh = NLMSG_NEXT(nlh, left)) {
                if (nlh->nlmsg_type != NLMSG_ERROR) continue;
                const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(nlh));
                auto it = pending_.find(nlh->nlmsg_seq);
                if (it == pending_.end()) continue;  // not ours (an earlier run's stray answer)
                if (e->error != 0) failures_.push_back(Failure{it->second, -e->error});
                if (nlh->nlmsg_seq == last_seq) done = true;
            }
        }
        pending_.clear();
    }

    std::size_t sent() const { return sent_; }
    const std::vector<Failure>& failures() const { return failures_; }

private:
    void grow(int opt_force, int opt, int want) {
        // FORCE needs CAP_NET_ADMIN (which we have); fall back to the capped variant.
        if (::setsockopt(fd_, SOL_SOCKET, opt_force, &want, sizeof want) != 0)
            ::setsockopt(fd_, SOL_SOCKET, opt, &want, sizeof want);
    }

    static constexpr std::size_t kChunk = 64 * 1024;
    nl_sock* sock_;
    int fd_;
    std::vector<char> buf_;
    std::size_t last_ = 0;
    std::map<std::uint32_t, std::size_t> pending_;
    std::size_t sent_ = 0;
    std::vector<Failure> failures_;
};

// The same text libnl gives for a kernel errno (what rtnl_route_add used to report).
std::string nl_text(int error) { return nl_geterror(nl_syserr2nlerr(error)); }

// A delete of something already gone: ESRCH for routes, ENOENT for rules.
bool already_gone(int error) { return error == ESRCH || error == ENOENT; }

nl_msg* route_request(const Route& r, bool add, int flags) {
    auto nl = to_nl_route(r, add);
    nl_msg* msg = nullptr;
    int err = add ? rtnl_route_build_add_request(nl.get(), flags, &msg)
                  : rtnl_route_build_del_request(nl.get(), flags, &msg);
    if (err < 0)
        throw_failed(fmt::format("route set: build request for route {}: {}", r.dst.str(),
                                 nl_geterror(err)));
    return msg;
}

nl_msg* rule_request(const Rule& r, bool add, int flags) {
    auto nl = to_nl_rule(r);
    nl_msg* msg = nullptr;
    int err = add ? rtnl_rule_build_add_request(nl.get(), flags, &msg)
                  : rtnl_rule_build_delete_request(nl.get(), flags, &msg);
    if (err < 0)
        throw_failed(fmt::format("route set: build request for rule {}: {}", format_rule(r),
                                 nl_geterror(err)));
    return msg;
}

// Fails with the first failure from index `from` on, described by `what(tag)`.
template <typename What>
[[noreturn]] void throw_failure(const RtnlBatch& b, std::size_t from, What what) {
    const auto& f = b.failures()[from];
    std::string msg = what(f.tag) + ": " + nl_text(f.error);
    if (b.failures().size() > from + 1)
        msg += fmt::format(" (and {} more)", b.failures().size() - from - 1);
    throw Error(Exit::failed, msg, f.error);
}

// The rules phase, last: adds the rules that are not there yet (they make the table live).
void add_rules(RtnlBatch& batch, const std::vector<Rule>& old_rules,
               const std::vector<Rule>& rules) {
    std::size_t tolerated = batch.failures().size();
    for (std::size_t i = 0; i < rules.size(); ++i) {
        const Rule& r = rules[i];
        bool present = std::any_of(old_rules.begin(), old_rules.end(), [&](const Rule& o) {
            return o.family == r.family && o.priority == r.priority && o.action == r.action &&
                   o.table == r.table;
        });
        if (present) continue;
        batch.add(rule_request(r, true, NLM_F_CREATE | NLM_F_EXCL), i);
    }
    batch.flush();
    if (batch.failures().size() > tolerated)
        throw_failure(batch, tolerated, [&](std::size_t i) {
            const Rule& r = rules[i];
            return fmt::format("route set: add rule '{}' ({})", format_rule(r),
                               family_name(r.family));
        });
    testing::test_point("route-set-rules");
}

}  // namespace

namespace {

Route table_route(Family f, const Cidr& dst, std::uint8_t type) {
    Route r;
    r.family = f;
    r.dst = dst;
    r.table = kRouteTable;
    r.type = type;
    r.protocol = kRouteProtocol;
    r.scope = RT_SCOPE_UNIVERSE;  // wider than a gateway check asks for: it looks past them
    // The metric the kernel would give the route anyway (IPv6 turns 0 into 1024), so what is
    // read back compares equal to what was planned.
    r.metric = f == Family::v6 ? 1024 : 0;
    return r;
}

}  // namespace

void for_each_planned_route(const AllowList& allow, const std::function<void(const Route&)>& emit) {
    for (Family f : {Family::v4, Family::v6}) {
        const Cidr all{IpAddr{f, 0}, 0};
        const auto& ranges = allow.ranges(f);
        const bool whole = ranges.size() == 1 && ranges.front().first == all.first() &&
                           ranges.front().last == all.last();
        // The refusal first: on a re-run over the earlier layout it must be in the table before
        // that layout's catch-all rule goes (apply_route_set).
        if (!whole) emit(table_route(f, all, RTN_UNREACHABLE));
        // The allowed CIDRs come sorted and disjoint, one range at a time: nothing as long as
        // the allow-list is ever held here.
        for (const auto& range : ranges)
            for (const Cidr& a : range.to_cidrs()) emit(table_route(f, a, RTN_THROW));
    }
}

std::vector<Rule> route_set_rules() {
    std::vector<Rule> rules;
    for (Family f : {Family::v4, Family::v6})
        rules.push_back(
            Rule{f, kRulePriorityLookup, kRouteTable, FR_ACT_TO_TBL, kRouteProtocol, false});
    return rules;
}

RoutePlan plan_route_set(const AllowList& allow) {
    RoutePlan plan;
    plan.routes.reserve(2 + allow.ranges(Family::v4).size() + allow.ranges(Family::v6).size());
    for_each_planned_route(allow, [&](const Route& r) { plan.routes.push_back(r); });
    plan.rules = route_set_rules();
    return plan;
}

bool legacy_route_set(const Snapshot& snap) {
    return std::any_of(snap.rules.begin(), snap.rules.end(),
                       [](const Rule& r) { return ours(r) && legacy_rule(r); });
}

RoutePlan installed_route_set(const Snapshot& snap) {
    RoutePlan p;
    for (const auto& r : snap.routes)
        if (r.table == kRouteTable) p.routes.push_back(r);
    for (const auto& r : snap.rules)
        if (ours(r)) p.rules.push_back(r);
    return p;
}

namespace {

// Deletes our rules that the plan has no place for (the earlier layout's catch-all): only once
// the table refuses by itself, so nothing is let through meanwhile.
void delete_obsolete_rules(RtnlBatch& batch, const std::vector<Rule>& old_rules,
                           const std::vector<Rule>& rules) {
    std::size_t tolerated = batch.failures().size();
    std::vector<std::size_t> sent;
    for (std::size_t i = 0; i < old_rules.size(); ++i) {
        const Rule& o = old_rules[i];
        bool wanted = std::any_of(rules.begin(), rules.end(), [&](const Rule& r) {
            return o.family == r.family && o.priority == r.priority && o.action == r.action &&
                   o.table == r.table;
        });
        if (!wanted) batch.add(rule_request(o, false, 0), i);
    }
    batch.flush();
    for (std::size_t k = tolerated; k < batch.failures().size(); ++k)
        if (!already_gone(batch.failures()[k].error))
            throw_failure(batch, k, [&](std::size_t i) {
                return fmt::format("route set: delete obsolete rule '{}' ({})",
                                   format_rule(old_rules[i]), family_name(old_rules[i].family));
            });
    testing::test_point("route-set-obsolete-rules");
}

}  // namespace

void apply_route_set(nl_sock* sock, const Snapshot& before, const RoutePlan& plan) {
    // Order matters under traffic: a forbidden destination must be refused, and an allowed one
    // routed, at every moment. So: (1) the unreachable routes (the table now refuses by itself),
    // (2) the earlier layout's catch-all rule goes, (3) the throw routes, (4) stale routes,
    // (5) the lookup rules if missing. Routes go in with NLM_F_REPLACE (a copied route of the
    // earlier layout becomes a throw route in place, never delete-then-add). The kernel handles
    // the requests of one send in order, and each phase is flushed before the next.
    // What an earlier run installed (as in installed_route_set, without copying the routes).
    std::vector<const Route*> old_routes;
    std::vector<Rule> old_rules;
    for (const auto& r : before.routes)
        if (r.table == kRouteTable) old_routes.push_back(&r);
    for (const auto& r : before.rules)
        if (ours(r)) old_rules.push_back(r);
    // Sorted views (of pointers: the lists can be as long as the allow-list), so a re-run with
    // thousands of routes is a merge, not a quadratic scan, and routes that are already exactly
    // right are not sent again.
    auto by_all = [](const Route* a, const Route* b) { return route_all(*a) < route_all(*b); };
    auto by_key = [](const Route* a, const Route* b) { return route_key(*a) < route_key(*b); };
    std::vector<const Route*> have = old_routes, want;
    want.reserve(plan.routes.size());
    for (const auto& r : plan.routes) want.push_back(&r);
    std::sort(have.begin(), have.end(), by_all);
    std::sort(want.begin(), want.end(), by_key);
    RtnlBatch batch(sock);
    // Requests are named by their index, described only on failure.
    auto add_routes = [&](bool refusing) {
        std::size_t tolerated = batch.failures().size();
        for (std::size_t i = 0; i < plan.routes.size(); ++i) {
            const Route& r = plan.routes[i];
            if ((r.type == RTN_UNREACHABLE) != refusing) continue;
            if (std::binary_search(have.begin(), have.end(), &r, by_all))
                continue;  // already installed
            batch.add(route_request(r, true, NLM_F_CREATE | NLM_F_REPLACE), i);
        }
        batch.flush();
        if (batch.failures().size() > tolerated)
            throw_failure(batch, tolerated, [&](std::size_t i) {
                return fmt::format("route set: add route {}", format_route(plan.routes[i], before));
            });
    };
    add_routes(true);
    delete_obsolete_rules(batch, old_rules, plan.rules);
    add_routes(false);
    testing::test_point("route-set-routes");
    std::size_t tolerated = batch.failures().size();
    for (std::size_t i = 0; i < old_routes.size(); ++i) {
        const Route& r = *old_routes[i];
        if (std::binary_search(want.begin(), want.end(), &r, by_key)) continue;  // replaced or kept
        batch.add(route_request(r, false, 0), i);
    }
    batch.flush();
    for (std::size_t k = tolerated; k < batch.failures().size(); ++k)
        if (!already_gone(batch.failures()[k].error))
            throw_failure(batch, k, [&](std::size_t i) {
                return fmt::format("route set: delete stale route {}",
                                   format_route(*old_routes[i], before));
            });
    testing::test_point("route-set-stale");
    add_rules(batch, old_rules, plan.rules);
}

namespace {

TableRoute compact(const Route& r) {
    TableRoute t;
    t.dst = r.dst.addr.value;
    t.metric = r.metric;
    t.family = r.family;
    t.prefix = static_cast<std::uint8_t>(r.dst.prefix);
    t.type = r.type;
    t.protocol = r.protocol;
    t.scope = r.scope;
    t.nexthop = r.gateway || r.prefsrc || r.multipath;
    return t;
}

Route expand(const TableRoute& t, std::uint32_t table) {
    Route r;
    r.family = t.family;
    r.dst = Cidr{IpAddr{t.family, t.dst}, t.prefix};
    r.table = table;
    r.type = t.type;
    r.protocol = t.protocol;
    r.scope = t.scope;
    r.metric = t.metric;
    return r;
}

// The same route, as route_all() sees it: our routes are never unicast, so a unicast route (the
// earlier layout's copy of main) or one with a nexthop never is.
bool same_route(const TableRoute& a, const TableRoute& b) {
    return a.key() == b.key() && a.type == b.type && a.scope == b.scope && a.type != RTN_UNICAST &&
           !a.nexthop && !b.nexthop;
}

}  // namespace

RouteSetChanges apply_route_set_diff(nl_sock* sock, const Snapshot& before,
                                     std::deque<TableRoute> have, const AllowList& allow,
                                     const std::function<void(const Route&)>& seen) {
    std::vector<Rule> old_rules;
    for (const auto& r : before.rules)
        if (ours(r)) old_rules.push_back(r);
    auto by_key = [](const TableRoute& a, const TableRoute& b) { return a.key() < b.key(); };
    if (!std::is_sorted(have.begin(), have.end(), by_key))
        std::sort(have.begin(), have.end(), by_key);
    // One merge, as the plan streams by: it comes sorted by key (family v4 before v6; per family
    // the default route first, then the CIDRs of sorted, disjoint ranges in ascending order), so
    // only what must be added is ever held.
    std::vector<Route> add_refusing, add_throw;
    std::vector<bool> matched(have.size(), false);
    std::size_t j = 0, planned = 0;
    std::optional<TableRoute> prev;
    for_each_planned_route(allow, [&](const Route& r) {
        seen(r);
        ++planned;
        const TableRoute w = compact(r);
        if (prev && !by_key(*prev, w)) throw std::logic_error("route set: the plan is not sorted");
        prev = w;
        while (j < have.size() && by_key(have[j], w)) ++j;  // stale: not matched
        bool same = false;
        if (j < have.size() && !by_key(w, have[j])) {  // the same key: replaced in place or kept
            matched[j] = true;
            same = same_route(w, have[j]);
            ++j;
        }
        if (!same) (r.type == RTN_UNREACHABLE ? add_refusing : add_throw).push_back(r);
    });
    RtnlBatch batch(sock);
    auto add_routes = [&](const std::vector<Route>& which) {
        std::size_t tolerated = batch.failures().size();
        for (std::size_t k = 0; k < which.size(); ++k)
            batch.add(route_request(which[k], true, NLM_F_CREATE | NLM_F_REPLACE), k);
        batch.flush();
        if (batch.failures().size() > tolerated)
            throw_failure(batch, tolerated, [&](std::size_t k) {
                return fmt::format("route set: add route {}", format_route(which[k], before));
            });
    };
    // apply_route_set's order: refusal first, then the earlier layout's rule goes, then the throw
    // routes, then what is stale, then the lookup rules if missing.
    add_routes(add_refusing);
    std::vector<Rule> rules = route_set_rules();
    delete_obsolete_rules(batch, old_rules, rules);
    add_routes(add_throw);
    testing::test_point("route-set-routes");
    std::size_t tolerated = batch.failures().size();
    std::size_t stale = 0;
    for (std::size_t k = 0; k < have.size(); ++k)
        if (!matched[k]) {
            batch.add(route_request(expand(have[k], kRouteTable), false, 0), k);
            ++stale;
        }
    batch.flush();
    for (std::size_t k = tolerated; k < batch.failures().size(); ++k)
        if (!already_gone(batch.failures()[k].error))
            throw_failure(batch, k, [&](std::size_t x) {
                return fmt::format("route set: delete stale route {}",
                                   format_route(expand(have[x], kRouteTable), before));
            });
    testing::test_point("route-set-stale");
    add_rules(batch, old_rules, rules);
    return RouteSetChanges{planned, add_refusing.size() + add_throw.size(), stale};
}

std::size_t apply_fresh_route_set(nl_sock* sock, const Snapshot& before, const AllowList& allow,
                                  const std::function<void(const Route&)>& seen) {
    // The same phases as apply_route_set, with nothing to replace: every route is new, none is
    // stale. The routes go to the kernel as they are planned, a chunk at a time (the
    // unreachable ones first). An earlier layout's catch-all rule with an empty table (restrict
    // of a namespace that had no routes yet) goes once the table is complete.
    std::vector<Rule> old_rules;
    for (const auto& r : before.routes)
        if (r.table == kRouteTable)
            throw_failed("route set: the namespace already has routes in table 28275");
    for (const auto& r : before.rules)
        if (ours(r)) old_rules.push_back(r);
    RtnlBatch batch(sock);
    std::size_t n = 0;
    for_each_planned_route(allow, [&](const Route& r) {
        if (testing::g_hooks.mutate_route) {  // tests only (testpoint.hpp)
            Route m = r;
            testing::g_hooks.mutate_route(m);
            batch.add(route_request(m, true, NLM_F_CREATE | NLM_F_REPLACE), n++);
        } else {
            batch.add(route_request(r, true, NLM_F_CREATE | NLM_F_REPLACE), n++);
        }
        seen(r);
    });
    batch.flush();
    if (!batch.failures().empty())
        throw_failure(batch, 0, [&](std::size_t i) {
            // Only on failure: plan again up to the route that failed, to name it.
            std::string name;
            std::size_t k = 0;
            for_each_planned_route(allow, [&](const Route& r) {
                if (k++ == i) name = format_route(r, before);
            });
            return fmt::format("route set: add route {}", name);
        });
    testing::test_point("route-set-routes");
    testing::test_point("route-set-stale");
    std::vector<Rule> rules = route_set_rules();
    delete_obsolete_rules(batch, old_rules, rules);
    add_rules(batch, old_rules, rules);
    return n;
}

RouteSetRemoval remove_route_set(nl_sock* sock, const Snapshot& snap) {
    // Rules first: from then on the table is unused, whatever happens next. The unreachable
    // rules go before the lookup rules: the other way round, there would be a moment with only
    // "unreachable" left ahead of main, refusing even allowed destinations (restrict
    // --no-route-set replacing a route set under traffic).
    RouteSetRemoval removed;
    RoutePlan cur = installed_route_set(snap);
    std::stable_partition(cur.rules.begin(), cur.rules.end(),
                          [](const Rule& r) { return r.action != FR_ACT_TO_TBL; });
    std::vector<std::string> errors;
    RtnlBatch batch(sock);
    for (std::size_t i = 0; i < cur.rules.size(); ++i)
        batch.add(rule_request(cur.rules[i], false, 0), i);
    batch.flush();
    std::size_t failed_rules = batch.failures().size();
    removed.rules = cur.rules.size() - failed_rules;
    testing::test_point("release-rules");
    for (std::size_t i = 0; i < cur.routes.size(); ++i)
        batch.add(route_request(cur.routes[i], false, 0), i);
    batch.flush();
    removed.routes = cur.routes.size() - (batch.failures().size() - failed_rules);
    for (std::size_t k = 0; k < batch.failures().size(); ++k) {
        const auto& f = batch.failures()[k];
        if (already_gone(f.error)) continue;
        std::string what =
            k < failed_rules
                ? fmt::format("delete rule '{}'", format_rule(cur.rules[f.tag]))
                : fmt::format("delete route {}", format_route(cur.routes[f.tag], snap));
        errors.push_back(what + ": " + nl_text(f.error));
    }
    // Keep going on errors (remove as much as possible), then report them all.
    if (!errors.empty()) {
        std::string all = "route set: " + errors.front();
        for (std::size_t i = 1; i < errors.size(); ++i) all += "; " + errors[i];
        throw_failed(all);
    }
    return removed;
}

std::vector<std::string> route_set_drift(const Snapshot& snap, const RoutePlan& want) {
    RoutePlan have = installed_route_set(snap);
    std::vector<std::string> out;
    auto same_rule = [](const Rule& a, const Rule& b) {
        return a.family == b.family && a.priority == b.priority && a.action == b.action &&
               (a.action != FR_ACT_TO_TBL || a.table == b.table);
    };
    auto has_rule = [&](const std::vector<Rule>& in, const Rule& r) {
        return std::any_of(in.begin(), in.end(), [&](const Rule& o) { return same_rule(o, r); });
    };
    for (const auto& r : want.rules)
        if (!has_rule(have.rules, r))
            out.push_back(
                fmt::format("rule '{}' ({}) is missing", format_rule(r), family_name(r.family)));
    for (const auto& r : have.rules)
        if (!has_rule(want.rules, r))
            out.push_back(
                fmt::format("unexpected rule '{}' ({})", format_rule(r), family_name(r.family)));
    auto by_all = [](const Route& a, const Route& b) { return route_all(a) < route_all(b); };
    std::vector<Route> h = have.routes, w = want.routes;
    std::sort(h.begin(), h.end(), by_all);
    std::sort(w.begin(), w.end(), by_all);
    std::vector<Route> missing, extra;
    std::set_difference(w.begin(), w.end(), h.begin(), h.end(), std::back_inserter(missing),
                        by_all);
    std::set_difference(h.begin(), h.end(), w.begin(), w.end(), std::back_inserter(extra), by_all);
    // A drifted table can be as large as the allow-list: name a few routes, count the rest.
    auto report = [&](const std::vector<Route>& rs, const char* what) {
        for (std::size_t i = 0; i < rs.size() && i < 3; ++i)
            out.push_back(fmt::format("{} route {}", what, format_route(rs[i], snap)));
        if (rs.size() > 3)
            out.push_back(fmt::format("... and {} more {} routes", rs.size() - 3, what));
    };
    report(missing, "missing");
    report(extra, "unexpected");
    return out;
}

std::vector<std::string> render_route_set(const RoutePlan& plan, const Snapshot& snap) {
    std::vector<std::string> out;
    for (const auto& r : plan.routes)
        out.push_back(fmt::format("ip -{} route replace {} proto {}",
                                  r.family == Family::v4 ? 4 : 6, format_route(r, snap),
                                  kRouteProtocol));
    for (const auto& r : plan.rules) {
        std::string action =
            r.action == FR_ACT_TO_TBL ? fmt::format("lookup {}", r.table) : "unreachable";
        out.push_back(fmt::format("ip -{} rule add priority {} {} proto {}",
                                  r.family == Family::v4 ? 4 : 6, r.priority, action,
                                  kRouteProtocol));
    }
    return out;
}

}  // namespace nsegress
