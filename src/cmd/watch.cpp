#include "nsegress/watch.hpp"

#include "verbs.hpp"
#include "nsegress/names_proxy.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include <fstream>

#include <fmt/format.h>

#include "nsegress/error.hpp"
#include "nsegress/inspect.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/routeset.hpp"

namespace nsegress {

using nlohmann::json;

// ---- Summary
// ---------------------------------------------------------------------------------------

std::string seen_label(const nflog::PacketInfo& p) {
    std::string proto = nflog::protocol_name(p.protocol);
    if (p.dport) return fmt::format("{}/{}", proto, *p.dport);
    if (p.icmp_type) return proto + " " + nflog::icmp_type_name(p.family, *p.icmp_type);
    if (p.fragment) return proto + " (fragment)";
    return proto;
}

void SummaryBuilder::add(const nflog::PacketInfo& p) {
    ++by_host_[p.dst][seen_label(p)];
    ++attempts_;
}

std::vector<SummaryEntry> SummaryBuilder::entries() const {
    std::vector<Cidr> hosts;
    hosts.reserve(by_host_.size());
    for (const auto& [ip, _] : by_host_) hosts.push_back(Cidr{ip, bits_of(ip.family)});
    AllowList merged(hosts);  // adjacent hosts coalesce into ranges
    std::vector<SummaryEntry> out;
    for (Family f : {Family::v4, Family::v6}) {
        for (const auto& range : merged.ranges(f)) {
            for (const auto& cidr : range.to_cidrs()) {
                SummaryEntry e;
                e.cidr = cidr;
                for (auto it = by_host_.lower_bound(cidr.first());
                     it != by_host_.end() && it->first.family == f &&
                     it->first.value <= cidr.last().value;
                     ++it) {
                    ++e.hosts;
                    for (const auto& [label, n] : it->second) {
                        e.seen[label] += n;
                        e.attempts += n;
                    }
                }
                out.push_back(std::move(e));
            }
        }
    }
    return out;
}

namespace {

std::string seen_text(const std::map<std::string, std::uint64_t>& seen) {
    std::vector<std::pair<std::string, std::uint64_t>> v(seen.begin(), seen.end());
    std::stable_sort(v.begin(), v.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    constexpr std::size_t kShown = 12;
    std::string out;
    for (std::size_t i = 0; i < v.size() && i < kShown; ++i)
        out += fmt::format("{}{} x{}", i ? ", " : "", v[i].first, v[i].second);
    if (v.size() > kShown) out += fmt::format(", and {} more", v.size() - kShown);
    return out;
}

}  // namespace

std::string suggested_entry(const SummaryEntry& e) {
    std::vector<PortSpec> specs;
    for (const auto& [label, n] : e.seen) {
        const std::string_view l = label;
        if (l == "icmp echo-request" || l == "icmpv6 echo-request") {
            specs.push_back(PortSpec{l[4] == 'v' ? IpProto::icmpv6 : IpProto::icmp});
            continue;
        }
        try {
            auto one = parse_allow_entry(e.cidr.str() + " " + label);  // "tcp/443", "udp/53"
            if (one.ports.size() == 1) {
                specs.push_back(one.ports[0]);
                continue;
            }
        } catch (const Error&) {
        }
        return e.cidr.str();  // gre, fragments, other ICMP types: no port spec says them
    }
    return AllowEntry(e.cidr, specs).str();
}

bool already_allowed(const Policy& current, const std::string& suggestion) {
    std::vector<AllowEntry> all;
    for (const auto& e : current.entries()) all.push_back(parse_allow_entry(e));
    all.push_back(parse_allow_entry(suggestion));
    return Policy(all) == current;
}

std::string render_allow_file(const std::vector<std::string>& header, const AllowList& current,
                              const std::vector<SummaryEntry>& observed) {
    return render_allow_file(header, Policy(current), observed);
}

std::string render_allow_file(const std::vector<std::string>& header, const Policy& current,
                              const std::vector<SummaryEntry>& observed, const NameHints& hints) {
    std::string out;
    for (const auto& h : header) out += "# " + h + "\n";
    const auto kept = current.entries();
    if (!kept.empty()) {
        out += "# allowed by the current policy (kept):\n";
        for (const auto& e : kept) out += e + "\n";
    }
    std::string names;
    for (const auto& [name, n] : hints.refused)
        names += fmt::format("{}{:<24} # asked {} time(s), refused by the names proxy\n",
                             kSummaryDisabled, name, n);
    if (!names.empty())
        names =
            "# names the container asked for, refused by the names proxy: REVIEW each one, and add "
            "the\n"
            "# ports it needs (\"NAME tcp/443\"; without ports a name allows all traffic to its "
            "addresses)\n" +
            names;
    if (observed.empty()) {
        out += "# observed: nothing\n" + names;
        return out;
    }
    // What the current allow-list does not cover is commented out: a raw `--summary > f` fed
    // to --allow-file must not silently allow whatever the container tried (the forbidden host,
    // the gateway, ...). Someone reads the list and uncomments what the container needs.
    std::string inside, outside;
    for (const auto& e : observed) {
        std::string hosts = e.hosts > 1 ? fmt::format(" to {} hosts", e.hosts) : "";
        std::string entry = suggested_entry(e);
        // An address a name's answer gave: the name is the better entry (addresses rotate).
        if (e.cidr.prefix == (e.cidr.addr.family == Family::v4 ? 32 : 128))
            if (auto it = hints.answered.find(e.cidr.addr); it != hints.answered.end()) {
                const auto sp = entry.find(' ');
                entry = it->second + (sp == std::string::npos ? "" : entry.substr(sp));
            }
        std::string line = fmt::format("{:<24} # {} attempt(s){}: {}\n", entry, e.attempts, hosts,
                                       seen_text(e.seen));
        if (already_allowed(current, entry))
            inside += line;
        else
            outside += std::string(kSummaryDisabled) + line;
    }
    if (!outside.empty())
        out +=
            "# observed outside the current allow-list: REVIEW each one. They are commented "
            "out ('#- ');\n# remove the '#- ' of each destination the container must reach "
            "(sed 's/^#- //' takes all):\n" +
            outside;
    if (!inside.empty()) out += "# observed, already allowed by the current allow-list:\n" + inside;
    return out + names;
}

// ---- Events
// ----------------------------------------------------------------------------------------

std::string iso_time(std::int64_t sec, long nsec) {
    time_t t = static_cast<time_t>(sec);
    struct tm tm {};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:03}Z", buf, nsec / 1000000);
}

// ---- The command
// -----------------------------------------------------------------------------------

namespace {

// SIGINT and SIGTERM are blocked and read from a signalfd, so that they end the poll loop
// cleanly instead of killing the process mid-line. The old mask comes back on destruction.
// (A signal the parent set to be ignored, as a non-interactive shell does for `&` jobs and
// SIGINT, stays ignored: use SIGTERM there.)
class SignalFd {
public:
    SignalFd() {
        sigemptyset(&set_);
        sigaddset(&set_, SIGINT);
        sigaddset(&set_, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &set_, &old_) != 0) throw_errno("block SIGINT/SIGTERM", errno);
        fd_ = Fd(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!fd_) {
            int err = errno;
            sigprocmask(SIG_SETMASK, &old_, nullptr);
            throw_errno("signalfd", err);
        }
    }
    ~SignalFd() {
        signalfd_siginfo si;
        while (::read(fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        }
        sigprocmask(SIG_SETMASK, &old_, nullptr);
    }
    SignalFd(const SignalFd&) = delete;
    SignalFd& operator=(const SignalFd&) = delete;
    int fd() const { return fd_.get(); }
    // The signal that arrived, or 0.
    int take() {
        signalfd_siginfo si{};
        if (::read(fd_.get(), &si, sizeof si) != static_cast<ssize_t>(sizeof si)) return 0;
        return static_cast<int>(si.ssi_signo);
    }

private:
    sigset_t set_{}, old_{};
    Fd fd_;
};

double now_mono() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::string now_iso() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return iso_time(ts.tv_sec, ts.tv_nsec);
}

}  // namespace

WatchReport cmd_watch(const WatchOptions& opt, const WatchSink& sink) {
    SignalFd signals;  // first: a Ctrl-C from here on ends the watch cleanly
    WatchReport rep;
    require_privileges(priv_enter | priv_net_admin);  // binding an nflog group needs CAP_NET_ADMIN
    Netns ns = open_target(opt.target);
    rep.target = target_info(ns, opt.target);

    nflog::Socket log;
    nft::MnlSocket nfnl;
    NlSock rtnl;
    ns.run_inside([&] {
        log = nflog::Socket::open();
        nfnl = nft::open_nfnl_socket();
        rtnl = open_rtnl_socket();
    });
    log.set_receive_buffer(opt.receive_buffer);
    log.bind_group(nft::kNflogGroup, ns.describe());
    // After the bind: every packet the counter below misses is one we receive (see `lost`).
    rep.before = nft::read_policy(nfnl.get());
    const nft::PolicyState& before = rep.before;

    auto notice = [&](std::string text) {
        if (sink.notice) sink.notice(text);
        rep.notices.push_back(std::move(text));
    };
    if (!before.present)
        notice(
            fmt::format("{} has no nsegress policy: nothing is logged until `nsegress restrict` "
                        "(or `restrict --audit`) installs one; listening anyway",
                        ns.describe()));
    else if (!before.deny_log)
        notice(
            fmt::format("the policy of {} has no deny log (installed by an older nsegress): run "
                        "`nsegress restrict` again to add it; listening anyway",
                        ns.describe()));
    // The route set refuses forbidden destinations at the routing decision, before a packet
    // exists: there is nothing for netfilter to log, and its unreachable route fails with
    // EHOSTUNREACH, which no kernel counter counts (OutNoRoutes counts only ENETUNREACH, a
    // destination with no route at all). So watch can neither log nor count them, and says so.
    RoutePlan routes =
        installed_route_set(inspect(rtnl.get(), inspect_rules | inspect_routes | inspect_links));
    const bool route_set = !routes.rules.empty();
    if (route_set && before.present && before.mode == nft::Mode::enforce)
        notice(
            "a route set is installed: it refuses forbidden destinations before any packet exists, "
            "so "
            "those refusals are neither logged nor counted (no kernel counter counts them); for a "
            "complete deny log, restrict with --no-route-set (the nftables policy alone still "
            "refuses "
            "them)");
    rep.route_set = route_set;
    if (sink.ready) sink.ready(WatchReady{rep.target, route_set, before});

    const double start = now_mono();
    std::optional<double> deadline;
    if (opt.duration_s) deadline = start + *opt.duration_s;

    nflog::LossCounter loss;
    SummaryBuilder summary;
    std::uint64_t received = 0, unparsed = 0, foreign = 0, overruns = 0, lost_tail = 0;

    auto handle = [&](const std::vector<std::uint8_t>& buf) {
        std::string time = now_iso();
        for (const auto& item : nflog::parse_buffer(buf)) {
            if (item.kind != nflog::Item::packet) continue;
            const nflog::LogEvent& ev = item.event;
            // Group 28275 is ours in this namespace, but a hand-written rule may log to it too.
            if (ev.group != nft::kNflogGroup || !nflog::mode_of_prefix(ev.prefix)) {
                ++foreign;
                continue;
            }
            ++received;
            if (ev.seq) {
                if (std::uint64_t gap = loss.observe(*ev.seq); gap > 0 && sink.event)
                    sink.event(WatchLost{time, gap, "the log socket overflowed (ENOBUFS)"});
            }
            if (!ev.packet) {
                ++unparsed;
                continue;
            }
            summary.add(*ev.packet);
            if (sink.event) sink.event(WatchAttempt{time, ev});
        }
    };
    auto drain = [&] {
        while (true) {
            bool overrun = false;
            auto buf = log.receive(overrun);
            if (overrun) {
                ++overruns;
                continue;
            }
            if (buf.empty()) return;
            handle(buf);
        }
    };

    // The names proxy's questions (a policy with names): its log is read as it grows, each
    // question an event {"event":"name", "name", "type", "verdict", ...}.
    std::ifstream names_log(names_log_path(ns.id()));
    if (names_log) names_log.seekg(0, std::ios::end);
    std::string names_partial;
    auto read_names = [&] {
        if (!names_log) return;
        std::string chunk;
        for (std::string line; std::getline(names_log, line);) {
            if (names_log.eof()) {  // no newline yet: the rest comes later
                names_partial += line;
                break;
            }
            line = names_partial + line;
            names_partial.clear();
            try {
                auto j = json::parse(line);
                if (!j.contains("name") || !sink.event) continue;
                WatchName ev{now_iso(), json::object()};
                for (const char* k :
                     {"name", "type", "verdict", "transport", "resolver", "addresses"})
                    if (j.contains(k)) ev.fields[k] = j[k];
                sink.event(ev);
            } catch (const std::exception&) {
            }
        }
        names_log.clear();  // eof: keep reading as the file grows
    };

    std::string reason;
    const int pidfd = ns.pidfd() ? ns.pidfd().get() : -1;
    while (reason.empty()) {
        int timeout_ms = names_log ? 250 : -1;
        if (deadline) {
            double left = *deadline - now_mono();
            if (left <= 0) {
                reason = "duration";
                break;
            }
            int until = static_cast<int>(std::ceil(left * 1000));
            timeout_ms = timeout_ms < 0 ? until : std::min(timeout_ms, until);
        }
        pollfd fds[3] = {{log.fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}, {pidfd, POLLIN, 0}};
        int n = ::poll(fds, pidfd >= 0 ? 3 : 2, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll the nflog socket", errno);
        }
        if (fds[0].revents & (POLLIN | POLLERR)) drain();
        if (fds[1].revents & POLLIN) {
            if (int sig = signals.take())
                reason = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
        }
        if (pidfd >= 0 && (fds[2].revents & POLLIN)) reason = "target process exited";
        read_names();
    }
    const double elapsed = now_mono() - start;

    // The policy's log counter says how many packets were handed to the group meanwhile; what we
    // neither received nor saw a gap for was lost at the end (an overrun after the last message
    // we read leaves no gap). Read the counter first, then drain: never over-reports.
    rep.after = nft::read_policy(nfnl.get());
    const nft::PolicyState& after = rep.after;
    drain();
    std::optional<std::uint64_t> logged;
    if (before.present && after.present && before.deny_log && after.deny_log &&
        after.logged.packets >= before.logged.packets)
        logged = after.logged.packets - before.logged.packets;
    if (logged && *logged > received + loss.lost()) {
        lost_tail = *logged - received - loss.lost();
        if (sink.event)
            sink.event(
                WatchLost{now_iso(), lost_tail,
                          "the log socket overflowed (ENOBUFS) after the last message read"});
    }

    rep.reason = reason;
    rep.duration_s = std::round(elapsed * 1000) / 1000;
    rep.attempts = summary.attempts();
    rep.received = received;
    rep.lost = loss.lost() + lost_tail;
    rep.overruns = overruns;
    rep.unparsed = unparsed;
    rep.foreign = foreign;
    rep.logged_meanwhile = logged;
    if (opt.summary) {
        auto entries = summary.entries();
        std::uint64_t lost = loss.lost() + lost_tail;
        std::vector<std::string> header{
            fmt::format(
                "nsegress watch --summary: {} attempt(s) to {} destination(s) in {:.1f} s from {}",
                summary.attempts(), summary.destinations(), elapsed, ns.describe()),
            "an --allow-file for `nsegress restrict` once reviewed (it replaces the allow-list: "
            "the current one is kept below)",
            fmt::format(
                "only the first packet of each flow is logged, at most {}/s after a burst of {}",
                nft::kLogRatePerSecond, nft::kLogBurst)};
        if (lost > 0)
            header.push_back(
                fmt::format("WARNING: {} logged attempt(s) were lost (socket overrun): this list "
                            "may be incomplete",
                            lost));
        const nft::PolicyState& cur = after.present ? after : before;
        // The names of the policy live in the proxy's state, not in the kernel's sets (read
        // only for a policy with names: a state file alone may be a dead namespace's).
        const NamesInfo ni = cur.names ? read_names_info(ns.id()) : NamesInfo{};
        Policy current = verbs::installed_policy(cur, ni);
        NameHints hints;
        if (cur.names) {
            for (const auto& [name, addrs] : ni.answered)
                for (const auto& a : addrs) {
                    try {
                        hints.answered[parse_ip(a)] = name;
                    } catch (const Error&) {
                    }
                }
            for (const auto& r : read_refused_names(ns.id())) {
                auto it = std::find_if(hints.refused.begin(), hints.refused.end(),
                                       [&](const auto& x) { return x.first == r.name; });
                if (it == hints.refused.end())
                    hints.refused.emplace_back(r.name, r.count);
                else
                    it->second += r.count;
            }
        }
        std::string text = render_allow_file(header, current, entries, hints);
        rep.summary = WatchSummary{std::move(current), std::move(entries), std::move(text),
                                   std::move(hints.refused)};
    }
    return rep;
}

}  // namespace nsegress
