#include "nsegress/verify.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <sys/ioctl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "nsegress/inspect.hpp"
#include "nsegress/names.hpp"
#include <poll.h>
#include "nsegress/fd.hpp"
#include "nsegress/handle.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

const char* status_name(CheckStatus s) {
    switch (s) {
        case CheckStatus::pass:
            return "pass";
        case CheckStatus::fail:
            return "fail";
        case CheckStatus::warn:
            return "warn";
    }
    return "?";
}

namespace {

std::optional<std::uint64_t> status_hex(const std::string& status, const std::string& key) {
    std::istringstream in(status);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(key + ":", 0) != 0) continue;
        try {
            return std::stoull(line.substr(key.size() + 1), nullptr, 16);
        } catch (...) {
            return std::nullopt;
        }
    }
    return std::nullopt;
}

struct Member {
    pid_t pid;
    std::string comm;
    std::uint64_t cap_eff = 0;
    ino_t userns = 0;
};

// Processes whose network namespace is `ns`.
std::vector<Member> members_of(const Netns& ns) {
    std::vector<Member> out;
    CHandle<DIR, ::closedir> d(::opendir("/proc"));
    if (!d) return out;
    while (dirent* e = ::readdir(d.get())) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        std::string base = std::string("/proc/") + e->d_name;
        struct stat st {};
        if (::stat((base + "/ns/net").c_str(), &st) != 0) continue;
        if (st.st_ino != ns.id().ino || st.st_dev != ns.id().dev) continue;
        Member m{static_cast<pid_t>(std::atoi(e->d_name)), "", 0, 0};
        auto status = read_text_file(base + "/status");
        if (!status) continue;
        // The process chose its own name (prctl PR_SET_NAME): escape it before printing it.
        m.comm = printable(status_field(*status, "Name"), 64);
        m.cap_eff = status_hex(*status, "CapEff").value_or(0);
        struct stat us {};
        if (::stat((base + "/ns/user").c_str(), &us) == 0) m.userns = us.st_ino;
        out.push_back(m);
    }
    return out;
}

// The user namespace owning the netns and its ancestors: a capability held in any of them
// is a capability over the netns.
std::set<ino_t> powerful_userns(const Netns& ns) {
    std::set<ino_t> out;
    Fd cur(::ioctl(ns.fd().get(), NS_GET_USERNS));
    while (cur) {
        struct stat st {};
        if (::fstat(cur.get(), &st) != 0) break;
        out.insert(st.st_ino);
        cur = Fd(::ioctl(cur.get(), NS_GET_PARENT));  // EPERM at the top of what we may see
    }
    return out;
}

bool usable(Family f, const Snapshot& s) {
    for (const auto& a : s.addresses) {
        if (a.addr.family != f) continue;
        bool loop = f == Family::v4 ? (a.addr.value >> 24) == 127 : a.addr.value == 1;
        bool link_local = f == Family::v6 && (a.addr.value >> 118) == 0x3fa;
        if (!loop && !link_local) return true;
    }
    for (const auto& r : s.routes)
        if (r.family == f && r.table != RT_TABLE_LOCAL && r.type == RTN_UNICAST && r.is_default())
            return true;
    return false;
}

std::string join_names(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
    return out;
}

EgressCoverage egress_coverage(const Netns& ns) {
    EgressCoverage out;
    try {
        NlSock rtnl;
        nft::MnlSocket nfnl;
        ns.run_inside([&] {
            rtnl = open_rtnl_socket();
            nfnl = nft::open_nfnl_socket();
        });
        Snapshot snap = inspect(rtnl.get(), inspect_links);
        auto hooks = nft::list_egress_hooks(nfnl.get());
        std::set<std::string> tables;
        for (const auto& l : snap.links) {
            if (l.loopback) continue;
            bool found = false;
            for (const auto& h : hooks)
                if (h.device == l.name) {
                    found = true;
                    tables.insert("netdev " + h.table);
                }
            (found ? out.covered : out.uncovered).push_back(l.name);
        }
        for (const auto& t : tables) out.detail += (out.detail.empty() ? "table " : ", table ") + t;
        out.readable = true;
    } catch (const Error& e) {
        out.detail = e.what();
    }
    return out;
}

std::string flat_map(const std::string& map) {
    std::string flat;
    std::istringstream in(map);
    std::string a, b, c;
    while (in >> a >> b >> c) flat += (flat.empty() ? "" : "; ") + a + " " + b + " " + c;
    return flat;
}

}  // namespace

std::optional<unsigned long> host_uid_of_root(const std::string& uid_map);

// The seed lab, beyond the network: each check says what it looked at.
template <class ProcFile, class Add>
void lab_checks(const VerifyOptions& opt, std::optional<pid_t> pid, ProcFile& proc_file, Add& add) {
    auto uid_map = proc_file("uid_map"), gid_map = proc_file("gid_map"),
         status = proc_file("status");
    if (!pid || !uid_map || !gid_map || !status) {
        add("lab-container-root", CheckStatus::fail, "no process to read from");
        return;
    }
    // Container root: the process's uid, as its own user namespace sees it, is 0.
    std::istringstream us(status_field(*status, "Uid"));
    unsigned long host_uid = 0;
    us >> host_uid;
    std::optional<unsigned long> inside;
    {
        std::istringstream in(*uid_map);
        unsigned long i, o, c;
        while (in >> i >> o >> c)
            if (host_uid >= o && host_uid < o + c) inside = i + (host_uid - o);
    }
    add("lab-container-root", inside == 0ul ? CheckStatus::pass : CheckStatus::fail,
        fmt::format("pid {}: host uid {} is uid {} in its user namespace (uid_map: {})", *pid,
                    host_uid, inside ? std::to_string(*inside) : std::string("unmapped"),
                    flat_map(*uid_map)));
    // uid_map and gid_map: 0 to a non-root host id, inside the remap user's subordinate ranges.
    auto subuid = read_text_file("/etc/subuid").value_or(""),
         subgid = read_text_file("/etc/subgid").value_or("");
    auto hu = host_uid_of_root(*uid_map), hg = host_uid_of_root(*gid_map);
    auto ou = hu ? subid_owner(subuid, *hu, root_range(*uid_map)) : std::nullopt;
    auto og = hg ? subid_owner(subgid, *hg, root_range(*gid_map)) : std::nullopt;
    bool maps_ok = hu && *hu != 0 && hg && *hg != 0 && ou && og;
    add("lab-id-maps", maps_ok ? CheckStatus::pass : CheckStatus::fail,
        fmt::format("uid_map {} {}; gid_map {} {}", flat_map(*uid_map),
                    !hu || *hu == 0 ? "maps 0 to host root or not at all"
                    : ou ? "lies inside /etc/subuid's entry of '" + printable(*ou, 64) + "'"
                         : "is in no /etc/subuid entry",
                    flat_map(*gid_map),
                    !hg || *hg == 0 ? "maps 0 to host root or not at all"
                    : og ? "lies inside /etc/subgid's entry of '" + printable(*og, 64) + "'"
                         : "is in no /etc/subgid entry"));
    // The daemon and its data directory: the engine's own answer.
    if (!opt.daemon) {
        add("lab-daemon-userns-remap", CheckStatus::fail,
            "not checked: no docker daemon answered `docker info` (give --container of a docker "
            "container)");
    } else {
        add("lab-daemon-userns-remap",
            opt.daemon->userns_remap ? CheckStatus::pass : CheckStatus::fail,
            fmt::format("docker info: SecurityOptions {}",
                        printable(opt.daemon->security_options, 300)));
        const std::string& dir = opt.daemon->root_dir;
        std::string want = hu && hg ? fmt::format("{}.{}", *hu, *hg) : "?";
        struct stat st {};
        std::string base = dir.substr(dir.rfind('/') + 1);
        if (::stat(dir.c_str(), &st) != 0) {
            add("lab-data-dir", CheckStatus::fail,
                fmt::format("DockerRootDir {}: {}", printable(dir, 300), std::strerror(errno)));
        } else {
            bool named = base == want;
            bool owned = (hu && st.st_uid == *hu) || (hg && st.st_gid == *hg);
            bool closed = (st.st_mode & 044) == 0;
            add("lab-data-dir", named && owned && closed ? CheckStatus::pass : CheckStatus::fail,
                fmt::format("DockerRootDir {}: {}, owner {}:{}, mode {:04o}{}{}{}",
                            printable(dir, 300),
                            named ? "named after the remapped ids"
                                  : "not <uid>.<gid> of the remapped ids (" + want + ")",
                            st.st_uid, st.st_gid, st.st_mode & 07777,
                            owned ? "" : " (not the remapped ids)",
                            closed ? ", not group/world readable" : " (group/world readable)", ""));
        }
    }
    // A root-owned host directory, as container root: only the permission is asked (access(2)
    // with the container's credentials), nothing is written.
    std::string why;
    auto w = writable_as(*pid, "/etc", why);
    if (!w)
        add("lab-host-dir", CheckStatus::fail, "not checked: " + why);
    else
        add("lab-host-dir", *w ? CheckStatus::fail : CheckStatus::pass,
            fmt::format("/etc (root-owned, on the host) is {}writable by pid {}'s credentials{}",
                        *w ? "" : "not ", *pid, *w ? ": container root is host root there" : ""));
}

std::string describe_procs(const std::vector<BypassRisks::Proc>& who) {
    std::string out;
    for (std::size_t i = 0; i < who.size() && i < 5; ++i)
        out += fmt::format("{}{} ({})", i ? ", " : "", who[i].pid, who[i].comm);
    if (who.size() > 5) out += fmt::format(" and {} more", who.size() - 5);
    return out;
}

BypassRisks bypass_risks(const Netns& ns) {
    BypassRisks out;
    auto members = members_of(ns);
    auto power = powerful_userns(ns);
    out.processes = members.size();
    for (const auto& m : members) {
        if (!power.count(m.userns))
            continue;  // caps in a child user namespace do not reach the netns
        if (m.cap_eff & (1ull << CAP_NET_ADMIN)) out.net_admin.push_back({m.pid, m.comm});
        if (m.cap_eff & (1ull << CAP_NET_RAW)) out.net_raw.push_back({m.pid, m.comm});
    }
    return out;
}

std::optional<IpAddr> outside_destination(Family f, const AllowList& allow) {
    // Reserved for documentation / benchmarking / discard: no one to leak to.
    static const char* v4[] = {"192.0.2.1", "203.0.113.1", "198.18.0.1", "240.0.0.1"};
    static const char* v6[] = {"2001:db8:ffff::1", "100::1", "3fff:ffff::1", "fdff:ffff::1"};
    for (const char* c : f == Family::v4 ? std::vector<const char*>(std::begin(v4), std::end(v4))
                                         : std::vector<const char*>(std::begin(v6), std::end(v6))) {
        IpAddr a = parse_ip(c);
        if (!allow.contains(a)) return a;
    }
    return std::nullopt;
}

std::optional<std::string> subid_owner(const std::string& text, unsigned long start,
                                       unsigned long count) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto a = line.find(':'), b = line.find(':', a == std::string::npos ? a : a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        try {
            unsigned long s = std::stoul(line.substr(a + 1, b - a - 1)),
                          n = std::stoul(line.substr(b + 1));
            if (start >= s && start + count <= s + n) return line.substr(0, a);
        } catch (...) {
        }
    }
    return std::nullopt;
}

unsigned long root_range(const std::string& map) {
    std::istringstream in(map);
    unsigned long inside, outside, count;
    while (in >> inside >> outside >> count)
        if (inside == 0) return count;
    return 0;
}

std::optional<unsigned long> host_uid_of_root(const std::string& uid_map) {
    std::istringstream in(uid_map);
    unsigned long inside, outside, count;
    while (in >> inside >> outside >> count)
        if (inside == 0 && count > 0) return outside;
    return std::nullopt;
}

namespace {

std::string xml_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        switch (c) {
            case '&':
                o += "&amp;";
                break;
            case '<':
                o += "&lt;";
                break;
            case '>':
                o += "&gt;";
                break;
            case '"':
                o += "&quot;";
                break;
            case '\'':
                o += "&apos;";
                break;
            default:
                if (static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t') o += c;
        }
    }
    return o;
}

}  // namespace

const char* group_name(CheckGroup g) {
    switch (g) {
        case CheckGroup::target:
            return "nsegress.verify.target";
        case CheckGroup::reach:
            return "nsegress.verify.reach";
        case CheckGroup::block:
            return "nsegress.verify.block";
        case CheckGroup::outside:
            return "nsegress.verify.outside";
        case CheckGroup::conntrack:
            return "nsegress.verify.conntrack";
        case CheckGroup::bypass:
            return "nsegress.verify.bypass";
        case CheckGroup::process:
            return "nsegress.verify.process";
        case CheckGroup::lab:
            return "nsegress.verify.lab";
    }
    return "nsegress.verify.lab";
}

std::string junit_report(const std::vector<JunitSuite>& suites) {
    std::size_t tests = 0, failures = 0, errors = 0;
    for (const auto& s : suites) {
        tests += s.error.empty() ? s.checks.size() : 1;
        errors += !s.error.empty();
        for (const auto& c : s.checks) failures += c.status == CheckStatus::fail;
    }
    std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    out += fmt::format("<testsuites tests=\"{}\" failures=\"{}\" errors=\"{}\">\n", tests, failures,
                       errors);
    for (const auto& s : suites) {
        std::size_t f = 0;
        for (const auto& c : s.checks) f += c.status == CheckStatus::fail;
        if (!s.error.empty()) {
            out += fmt::format(
                "  <testsuite name=\"{}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n",
                xml_escape(s.name));
            out += "    <testcase classname=\"nsegress.verify.target\" name=\"target\">\n";
            out += fmt::format("      <error message=\"{}\"/>\n", xml_escape(s.error));
            out += "    </testcase>\n  </testsuite>\n";
            continue;
        }
        out += fmt::format(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\">\n",
            xml_escape(s.name), s.checks.size(), f);
        for (const auto& c : s.checks) {
            out += fmt::format("    <testcase classname=\"{}\" name=\"{}\">\n", group_name(c.group),
                               xml_escape(c.name));
            if (c.status == CheckStatus::fail)
                out += fmt::format("      <failure message=\"{}\"/>\n", xml_escape(c.detail));
            else
                out += fmt::format("      <system-out>{}: {}</system-out>\n",
                                   c.status == CheckStatus::warn ? "WARN" : "PASS",
                                   xml_escape(c.detail));
            out += "    </testcase>\n";
        }
        out += "  </testsuite>\n";
    }
    out += "</testsuites>\n";
    return out;
}

std::string junit_report(const std::string& target_label, const std::vector<Check>& checks) {
    return junit_report(std::vector<JunitSuite>{{target_label, checks, ""}});
}

void validate_targets(const AllowList& allow, const std::vector<IpAddr>& reach,
                      const std::vector<IpAddr>& block, const char* reach_flag,
                      const char* block_flag) {
    for (const auto& b : block)
        if (allow.contains(b))
            throw_usage(fmt::format(
                "{} {} is inside the allow-list: a correct policy lets it through, so this "
                "check could only fail (remove it, or narrow the allow-list)",
                block_flag, b.str()));
    for (const auto& r : reach)
        if (!allow.contains(r))
            throw_usage(fmt::format(
                "{} {} is outside every allowed CIDR: a correct policy refuses it, so this "
                "check could only fail (add its CIDR to the allow-list, or drop it)",
                reach_flag, r.str()));
}

void validate_targets(const std::vector<AllowEntry>& allow, const std::vector<IpAddr>& reach,
                      const std::vector<IpAddr>& block, const char* reach_flag,
                      const char* block_flag) {
    if (reach.empty() && block.empty())
        return;  // nothing to check: no Policy of 10^5 entries to build
    const Policy p(allow);
    validate_targets(p.all(), {}, block, reach_flag, block_flag);
    validate_targets(p.destinations(), reach, {}, reach_flag, block_flag);
}

namespace {

// The first nameserver of the container's resolv.conf (its own mount namespace, through its
// pid), as its resolver library would ask.
std::optional<IpAddr> container_resolver(std::optional<pid_t> pid) {
    if (!pid) return std::nullopt;
    auto text = read_text_file(fmt::format("/proc/{}/root/etc/resolv.conf", *pid));
    if (!text) return std::nullopt;
    std::istringstream in(*text);
    for (std::string line; std::getline(in, line);) {
        std::istringstream ls(line);
        std::string key, value;
        if (ls >> key >> value && key == "nameserver")
            if (auto a = IpAddr::parse(value.substr(0, value.find('%')))) return a;
    }
    return std::nullopt;
}

sockaddr_storage to_sockaddr(const IpAddr& a, std::uint16_t port, socklen_t& len) {
    sockaddr_storage sa{};
    auto b = a.bytes();
    if (a.family == Family::v4) {
        auto& s = reinterpret_cast<sockaddr_in&>(sa);
        s.sin_family = AF_INET;
        s.sin_port = htons(port);
        std::memcpy(&s.sin_addr, b.data(), 4);
        len = sizeof s;
    } else {
        auto& s = reinterpret_cast<sockaddr_in6&>(sa);
        s.sin6_family = AF_INET6;
        s.sin6_port = htons(port);
        std::memcpy(&s.sin6_addr, b.data(), 16);
        len = sizeof s;
    }
    return sa;
}

// One UDP question from inside the namespace: the reply, empty when none came in 3 s.
std::vector<std::uint8_t> ask_inside(const Netns& ns, const IpAddr& server,
                                     const std::vector<std::uint8_t>& q) {
    Fd fd;
    ns.run_inside([&] {
        fd = Fd(::socket(server.family == Family::v4 ? AF_INET : AF_INET6,
                         SOCK_DGRAM | SOCK_CLOEXEC, 0));
    });
    if (!fd) return {};
    socklen_t len = 0;
    auto sa = to_sockaddr(server, 53, len);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0) return {};
    if (::send(fd.get(), q.data(), q.size(), 0) < 0) return {};
    pollfd pf{fd.get(), POLLIN, 0};
    if (::poll(&pf, 1, 3000) <= 0) return {};
    std::vector<std::uint8_t> out(65536);
    const ssize_t n = ::recv(fd.get(), out.data(), out.size(), 0);
    if (n <= 0) return {};
    out.resize(static_cast<std::size_t>(n));
    return out;
}

// A TCP connection from inside the namespace: "connected", "refused by the host" (it got there),
// or why not.
std::string connect_inside(const Netns& ns, const IpAddr& a, std::uint16_t port) {
    Fd fd;
    ns.run_inside([&] {
        fd = Fd(::socket(a.family == Family::v4 ? AF_INET : AF_INET6,
                         SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    });
    if (!fd) return "no socket";
    socklen_t len = 0;
    auto sa = to_sockaddr(a, port, len);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) == 0) return "connected";
    if (errno != EINPROGRESS) return std::strerror(errno);
    pollfd pf{fd.get(), POLLOUT, 0};
    if (::poll(&pf, 1, 3000) <= 0) return "no answer in 3 s";
    int err = 0;
    socklen_t elen = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen);
    if (err == 0) return "connected";
    if (err == ECONNREFUSED) return "refused by the host";
    return std::strerror(err);
}

}  // namespace

VerifyResult cmd_verify(const VerifyOptions& opt) {
    VerifyResult res;
    require_privileges(priv_enter | priv_net_raw);
    // Outside every entry's destination, whatever its ports (the probes are ICMP echoes).
    const AllowList allow = Policy(opt.allow).destinations();
    validate_targets(opt.allow, opt.reach, opt.block, "--reach", "--block");
    Netns ns = open_target(opt.target, HostCheck::report);
    std::vector<Check> checks;
    auto add = [&](CheckGroup g, std::string name, CheckStatus st, std::string detail) {
        checks.push_back(Check{std::move(name), st, std::move(detail), g});
    };

    // The host's namespace, whoever runs verify: the engine's own answer, our own view of the
    // namespace, and the engine's daemons living in it (Docker-in-Docker, lab VMs).
    auto members = members_of(ns);
    std::string host_why = ns.host_reason();
    if (host_why.empty() && opt.network_mode &&
        (*opt.network_mode == "host" || opt.network_mode->rfind("container:", 0) == 0))
        host_why =
            *opt.network_mode == "host"
                ? "the engine says its NetworkMode is 'host'"
                : fmt::format(
                      "the engine says its NetworkMode is '{}': another container's namespace",
                      printable(*opt.network_mode, 200));
    if (host_why.empty())
        for (const auto& m : members)
            if (m.comm == "dockerd" || m.comm == "containerd" || m.comm == "podman")
                host_why = fmt::format(
                    "process {} ({}), the container engine's own daemon, lives in it: it is "
                    "the host's namespace as far as the lab is concerned",
                    m.pid, m.comm);
    bool host = !host_why.empty();
    add(CheckGroup::target, "netns-not-host", host ? CheckStatus::fail : CheckStatus::pass,
        host ? fmt::format("the namespace is the host's: {} (a container run with --net=host?)",
                           host_why)
             : fmt::format("netns inode {} is the container's own ({}no engine daemon lives in it)",
                           ns.id().ino,
                           opt.network_mode
                               ? "NetworkMode '" + printable(*opt.network_mode, 200) + "', "
                               : ""));

    // Whose identity the probes take: the target process, else a process of the namespace.
    std::optional<pid_t> as_pid = opt.target.pid;
    if (!as_pid && !members.empty()) as_pid = members.front().pid;
    BypassRisks risks = bypass_risks(ns);

    if (!host) {
        NlSock rtnl;
        std::string arp;
        ns.run_inside([&] {
            rtnl = open_rtnl_socket();
            arp = read_text_file("/proc/thread-self/net/arp").value_or("");
        });
        Snapshot snap = inspect(rtnl.get(), inspect_links | inspect_addresses | inspect_routes);
        std::vector<IpAddr> neighbours;
        {
            std::istringstream in(arp);
            std::string line;
            std::getline(in, line);  // header
            while (std::getline(in, line)) {
                std::istringstream ls(line);
                std::string ip, hw, flags;
                if (!(ls >> ip >> hw >> flags) || flags == "0x0") continue;
                if (auto a = IpAddr::parse(ip)) neighbours.push_back(*a);
            }
        }
        // Name entries: resolved as the container would (its resolver, from inside), the
        // answer's addresses reached on the entry's first TCP port, and a made-up name under the
        // same domain refused.
        const Policy named(opt.allow);
        for (const auto& e : named.names()) {
            const std::string check = "name " + e.name;
            auto server = opt.resolver ? opt.resolver : container_resolver(as_pid);
            if (!server) {
                add(CheckGroup::reach, check, CheckStatus::warn,
                    "the container's resolver is unknown (give --resolver, or --pid of a process "
                    "with a nameserver in its resolv.conf)");
                continue;
            }
            const std::string asked =
                e.name.starts_with("*.") ? "nsegress-verify" + e.name.substr(1) : e.name;
            std::vector<IpAddr> addrs;
            std::string rcodes;
            for (std::uint16_t t : {std::uint16_t{1}, std::uint16_t{28}}) {
                auto q = dns_query(static_cast<std::uint16_t>(0x6e00 + t), asked, t);
                auto r = ask_inside(ns, *server, q);
                auto rc = dns_rcode(r.data(), r.size());
                rcodes += fmt::format("{}{}={}", rcodes.empty() ? "" : " ", t == 1 ? "A" : "AAAA",
                                      rc ? std::to_string(*rc) : "no answer");
                if (auto pq = parse_dns_query(q.data(), q.size()))
                    if (auto as = dns_answer_addresses(r.data(), r.size(), *pq))
                        for (const auto& a : *as) addrs.push_back(a.addr);
            }
            if (addrs.empty()) {
                add(CheckGroup::reach, check, CheckStatus::fail,
                    fmt::format("{} asked of {}: no address ({})", asked, server->str(), rcodes));
                continue;
            }
            std::optional<std::uint16_t> port;
            for (const auto& p : e.ports)
                if (p.proto == IpProto::tcp) port = p.first;
            if (e.ports.empty()) port = opt.grade.tcp_port;
            std::string detail = fmt::format("{} -> ", asked);
            bool ok = true;
            for (const auto& a : addrs) {
                detail += a.str();
                if (port) {
                    auto how = connect_inside(ns, a, *port);
                    ok = ok && (how == "connected" || how == "refused by the host");
                    detail += fmt::format(" (tcp/{}: {})", *port, how);
                }
                detail += " ";
            }
            auto other = dns_query(0x6e99, "nsegress-verify-other.invalid", 1);
            auto r = ask_inside(ns, *server, other);
            auto rc = dns_rcode(r.data(), r.size());
            const bool refused = rc && *rc == 5;  // the names proxy's answer, never the resolver's
            detail += fmt::format("; a name outside the policy: {}", rc ? (*rc == 5   ? "REFUSED"
                                                                           : *rc == 3 ? "NXDOMAIN"
                                                                                      : "answered")
                                                                        : "no answer");
            add(CheckGroup::reach, check, ok && refused ? CheckStatus::pass : CheckStatus::fail,
                detail);
        }
        if (opt.reach.empty())
            add(CheckGroup::target, "reach-targets", CheckStatus::warn,
                "no --reach given: a namespace that refuses everything would pass (give an allowed "
                "host that must answer)");
        auto derived = derive_outside_targets(snap, allow, neighbours);
        std::vector<GradeProbe> probes;
        auto add_probes = [&](const IpAddr& a, Expect e) {
            probes.push_back({a, Proto::icmp, e, 0});
            probes.push_back({a, Proto::tcp, e, opt.grade.tcp_port});
            probes.push_back({a, Proto::udp, e, opt.grade.udp_port});
        };
        for (const auto& a : opt.reach) add_probes(a, Expect::reach);
        for (const auto& a : opt.block) add_probes(a, Expect::block);
        for (const auto& d : derived) add_probes(d.addr, Expect::block);
        std::string identity;
        bool as_process = false, blind = false;
        GradeOptions go = opt.grade;
        go.timeout_ms = opt.probe_options.timeout_ms;
        go.count = opt.probe_options.count;
        for (const auto& r : snap.routes)
            if (r.gateway) go.next_hops.push_back(*r.gateway);
        for (const auto& l : snap.links) go.ifnames[l.ifindex] = printable(l.name, 32);
        auto results = run_grade_probes(ns, as_pid, probes, go, identity, as_process, blind);
        add(CheckGroup::target, "probe-identity",
            as_process ? CheckStatus::pass : CheckStatus::warn,
            as_process ? "probes sent as the container: " + identity
                       : "probes sent with " + identity +
                             ": rules keyed on socket owner, cgroup or mark were not exercised as "
                             "the workload would");
        res.probes = results;
        res.observer_blind = blind;
        auto label = [](const GradeResult& r) {
            return r.probe.proto == Proto::icmp
                       ? std::string("icmp")
                       : fmt::format("{}/{}", proto_name(r.probe.proto), r.probe.port);
        };
        // One check per reach/block target, all three protocols in it.
        std::size_t i = 0;
        auto target_check = [&](const std::string& name, bool block) {
            bool ok = true;
            std::string detail;
            for (int k = 0; k < 3; ++k, ++i) {
                const auto& r = results[i];
                ok = ok && r.ok();
                detail += fmt::format("{}{}: {}{}", k ? "; " : "", label(r),
                                      r.ok() ? "" : (block ? "NOT REFUSED, " : "NOT REACHED, "),
                                      r.detail);
            }
            add(block ? CheckGroup::block : CheckGroup::reach, name,
                ok ? CheckStatus::pass : CheckStatus::fail, detail);
        };
        for (const auto& a : opt.reach) target_check("reach " + a.str(), false);
        for (const auto& a : opt.block) target_check("block " + a.str(), true);
        for (Family f : {Family::v4, Family::v6}) {
            std::string name = fmt::format("{}-outside-refused", f == Family::v4 ? "ipv4" : "ipv6");
            if (!usable(f, snap)) {
                add(CheckGroup::outside, name, CheckStatus::pass,
                    fmt::format("no {} address or default route: nothing can leave",
                                family_name(f)));
                continue;
            }
            std::size_t total = 0;
            std::string leaks, tried;
            for (std::size_t d = 0; d < derived.size(); ++d) {
                if (derived[d].addr.family != f) continue;
                ++total;
                std::string bad;
                for (int k = 0; k < 3; ++k) {
                    const auto& r = results[i + 3 * d + k];
                    if (!r.ok())
                        bad += fmt::format("{}{}: {}", bad.empty() ? "" : ", ", label(r), r.detail);
                }
                tried += fmt::format("{}{} ({})", tried.empty() ? "" : ", ", derived[d].addr.str(),
                                     derived[d].why);
                if (!bad.empty())
                    leaks += fmt::format("{}{} ({}) -- {}", leaks.empty() ? "" : "; ",
                                         derived[d].addr.str(), derived[d].why, bad);
            }
            if (total == 0)
                add(CheckGroup::outside, name, CheckStatus::pass,
                    fmt::format("the allow-list covers every derived {} target", family_name(f)));
            else if (leaks.empty())
                add(CheckGroup::outside, name, CheckStatus::pass,
                    fmt::format(
                        "{} address(es) outside the allow-list refused over ICMP, TCP and UDP: {}",
                        total, tried));
            else
                add(CheckGroup::outside, name, CheckStatus::fail,
                    fmt::format(
                        "{} traffic outside the allow-list is not refused inside the namespace: {}",
                        family_name(f), leaks));
        }

        // The forged-reply technique, with the capabilities the container really holds.
        std::vector<IpAddr> forge_targets = opt.block;
        for (const auto& d : derived) forge_targets.push_back(d.addr);
        std::vector<IpAddr> via = opt.reach;
        for (const auto& r : snap.routes)
            if (r.table == 254 && r.is_default() && r.gateway) via.push_back(*r.gateway);
        std::optional<pid_t> raw_pid;
        if (!risks.net_raw.empty()) raw_pid = risks.net_raw.front().pid;
        for (const auto& r : risks.net_raw)
            if (as_pid && r.pid == *as_pid) raw_pid = r.pid;  // the target itself, when it holds it
        auto forged = try_forged_replies(ns, as_pid, snap, forge_targets, via, raw_pid);
        std::string fdetail, leaked;
        for (const auto& f : forged) {
            fdetail += fmt::format("{}{}: {}", fdetail.empty() ? "" : "; ", f.technique, f.detail);
            if (f.leaked) leaked += (leaked.empty() ? "" : ", ") + f.technique;
        }
        res.forged_replies = forged;
        if (risks.net_raw.empty())
            fdetail += (fdetail.empty() ? "" : "; ") +
                       std::string("raw forgeries not tried: no process holds CAP_NET_RAW");
        add(CheckGroup::conntrack, "forged-reply",
            leaked.empty() ? CheckStatus::pass : CheckStatus::fail,
            leaked.empty()
                ? fdetail
                : fmt::format(
                      "a forged packet to the namespace's own address made the forbidden peer the "
                      "connection's originator, and the \"reply\" to it left ({}): {}",
                      leaked, fdetail));
        std::string lo = loopback_problem(ns, as_pid, snap);
        add(CheckGroup::conntrack, "loopback", lo.empty() ? CheckStatus::pass : CheckStatus::warn,
            lo.empty() ? "the container reaches its own loopback (127.0.0.1, ::1)"
                       : "the container cannot reach its own loopback, which local services and "
                         "many programs need: " +
                             lo);
        // A port outside the allowed ones, on an address a port-scoped entry allows: one empty
        // UDP datagram from a socket opened inside, which the policy must refuse at once.
        if (auto pp = port_outside(Policy(opt.allow))) {
            Fd udp;
            ns.run_inside(
                [&] { udp = Fd(::socket(to_af(pp->addr.family), SOCK_DGRAM | SOCK_CLOEXEC, 0)); });
            int err = udp ? 0 : errno;
            if (udp) {
                sockaddr_storage ss{};
                socklen_t len = 0;
                auto b = pp->addr.bytes();
                if (pp->addr.family == Family::v4) {
                    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
                    sin->sin_family = AF_INET;
                    sin->sin_port = htons(pp->port);
                    std::memcpy(&sin->sin_addr, b.data(), 4);
                    len = sizeof *sin;
                } else {
                    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
                    sin6->sin6_family = AF_INET6;
                    sin6->sin6_port = htons(pp->port);
                    std::memcpy(&sin6->sin6_addr, b.data(), 16);
                    len = sizeof *sin6;
                }
                if (::sendto(udp.get(), "", 0, 0, reinterpret_cast<sockaddr*>(&ss), len) < 0)
                    err = errno;
            }
            const std::string where =
                fmt::format("udp {}:{} (an allowed address, a port outside its entries)",
                            pp->addr.str(), pp->port);
            if (err == EPERM || err == EACCES)
                add(CheckGroup::outside, "ports-outside-refused", CheckStatus::pass,
                    where + ": refused-policy " + std::strerror(err));
            else if (err == 0)
                add(CheckGroup::outside, "ports-outside-refused", CheckStatus::fail,
                    where + ": sent -- ports are not enforced inside the namespace");
            else
                add(CheckGroup::outside, "ports-outside-refused", CheckStatus::fail,
                    where + ": " + std::strerror(err));
        }
    } else {
        for (const auto& a : opt.reach)
            add(CheckGroup::reach, "reach " + a.str(), CheckStatus::fail,
                "not probed from the host's namespace");
        for (const auto& a : opt.block)
            add(CheckGroup::block, "block " + a.str(), CheckStatus::fail,
                "not probed from the host's namespace");
    }

    // Bypass risks: who in the namespace could undo or go around the policy.
    if (!risks.net_admin.empty())
        add(CheckGroup::bypass, "bypass-net-admin", CheckStatus::fail,
            fmt::format(
                "process {} holds CAP_NET_ADMIN over this network namespace and can delete or "
                "rewrite the policy",
                describe_procs(risks.net_admin)));
    else
        add(CheckGroup::bypass, "bypass-net-admin", CheckStatus::pass,
            fmt::format(
                "no process in the namespace holds CAP_NET_ADMIN over it ({} process(es) checked)",
                risks.processes));
    // Packet sockets are caught only at the netdev egress hook: is every interface covered?
    // It is reported (JSON netdev_egress, and in bypass-net-raw's text), not judged by itself.
    EgressCoverage cover = host ? EgressCoverage{false, {}, {}, "not read in the host's namespace"}
                                : egress_coverage(ns);
    const bool all_covered = cover.readable && cover.uncovered.empty();
    std::string coverage =
        !cover.readable ? "netdev egress filters unknown: " + cover.detail
        : cover.uncovered.empty()
            ? (cover.covered.empty()
                   ? std::string("no interface but loopback")
                   : "every interface has a netdev egress filter (" + cover.detail + ")")
            : "no netdev egress filter on " + join_names(cover.uncovered);
    // AF_XDP sockets (copy mode) transmit through __dev_direct_xmit: no netfilter hook at all,
    // the netdev egress hook included. Nothing inside the namespace can filter them, so a
    // CAP_NET_RAW holder is never "caught", whatever the coverage.
    if (!risks.net_raw.empty())
        add(CheckGroup::bypass, "bypass-net-raw", CheckStatus::warn,
            fmt::format(
                "process {} holds CAP_NET_RAW: packet sockets sit below the IP layer ({}), and "
                "AF_XDP sockets pass no netfilter hook at all, so nothing inside the namespace "
                "filters them; drop CAP_NET_RAW or refuse socket(AF_XDP) with seccomp",
                describe_procs(risks.net_raw),
                all_covered ? "the netdev egress filter catches ordinary packet sockets"
                            : coverage));
    else
        add(CheckGroup::bypass, "bypass-net-raw", CheckStatus::pass,
            fmt::format("no process in the namespace holds CAP_NET_RAW over it; {}", coverage));
    res.netdev_egress = cover;

    // The container's process, for the per-process checks.
    std::optional<pid_t> pid = as_pid;
    auto proc_file = [&](const char* file) -> std::optional<std::string> {
        if (!pid) return std::nullopt;
        auto text = read_text_file(fmt::format("/proc/{}/{}", *pid, file));
        // /proc/PID can be a recycled PID: trust it only while our pidfd's process lives.
        if (ns.pidfd() && !pidfd_alive(ns.pidfd().get())) return std::nullopt;
        return text;
    };
    if (opt.expect_userns_remap || opt.lab_profile) {
        auto map = proc_file("uid_map");
        if (!map) {
            add(CheckGroup::process, "userns-remap", CheckStatus::fail,
                "no process to read a uid map from");
        } else {
            std::string flat;
            std::istringstream in(*map);
            std::string a, b, c;
            while (in >> a >> b >> c) flat += (flat.empty() ? "" : "; ") + a + " " + b + " " + c;
            auto host_uid = host_uid_of_root(*map);
            if (host_uid && *host_uid != 0)
                add(CheckGroup::process, "userns-remap", CheckStatus::pass,
                    fmt::format("uid 0 in the container is uid {} on the host (pid {} uid_map: {})",
                                *host_uid, *pid, flat));
            else
                add(CheckGroup::process, "userns-remap", CheckStatus::fail,
                    fmt::format("uid 0 in the container is {} on the host (pid {} uid_map: {})",
                                host_uid ? "uid 0, i.e. root," : "not mapped", *pid, flat));
        }
    }
    if (opt.expect_no_new_privs || opt.lab_profile) {
        auto status = proc_file("status");
        std::string nnp = status ? status_field(*status, "NoNewPrivs") : "";
        if (!status)
            add(CheckGroup::process, "no-new-privs", CheckStatus::fail,
                "no process to read NoNewPrivs from");
        else if (nnp == "1")
            add(CheckGroup::process, "no-new-privs", CheckStatus::pass,
                fmt::format("pid {}: NoNewPrivs: 1", *pid));
        else
            add(CheckGroup::process, "no-new-privs", CheckStatus::fail,
                fmt::format("pid {}: NoNewPrivs: {} (setuid binaries can still gain privileges)",
                            *pid, nnp.empty() ? "?" : nnp));
    }

    if (opt.lab_profile) {
        auto add_lab = [&](std::string name, CheckStatus st, std::string detail) {
            add(CheckGroup::lab, std::move(name), st, std::move(detail));
        };
        lab_checks(opt, pid, proc_file, add_lab);
    }

    const auto fails = std::count_if(checks.begin(), checks.end(),
                                     [](const Check& c) { return c.status == CheckStatus::fail; });
    // The pid is the one verify resolved (a container's), not only one given by --pid.
    res.target = TargetInfo{ns.label(), pid, opt.target.netns_path, opt.target.container,
                            static_cast<std::uint64_t>(ns.id().ino)};
    res.allow = allow;
    if (fails) {
        res.exit = Exit::verify;
        res.error = fmt::format("{} check(s) failed", fails);
    }
    res.checks = std::move(checks);
    return res;
}

}  // namespace nsegress
