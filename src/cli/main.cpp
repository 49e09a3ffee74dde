// nsegress: command-line parsing and dispatch only. Everything else lives in nsegress_core.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <type_traits>
#include <vector>

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include "nsegress/cni.hpp"
#include "nsegress/commands.hpp"
#include "nsegress/engine.hpp"
#include "nsegress/hook.hpp"
#include "nsegress/names_proxy.hpp"
#include "nsegress/procfs.hpp"
#include "nsegress/render.hpp"
#include "nsegress/reports.hpp"
#include "nsegress/untrusted.hpp"
#include "nsegress/verify.hpp"
#include "nsegress/watch.hpp"

namespace po = boost::program_options;
using namespace nsegress;

namespace {

constexpr const char* kUsage = R"(Usage: nsegress COMMAND [OPTIONS]

Confine what a container may send: an nftables egress allow-list (IPv4 and IPv6, one atomic
batch) and a route set inside the container's network namespace, proven by an ICMP probe.

Commands:
  restrict   install or replace the egress allow-list of a network namespace
  release    remove everything restrict installed
  status     show the namespace, its policy and what the policy allowed and refused
  probe      send ICMP echo probes from inside the namespace
  verify     judge a namespace by behaviour (the lab grader), whoever configured it
  watch      stream what the policy refuses (or, with restrict --audit, would refuse),
             live from the namespace's deny log; --summary suggests an allow-list
  hook       OCI runtime hook: restrict the container whose state is on stdin

Audit first, then enforce:
  nsegress restrict --container web --audit          # let everything through, log the rest
  nsegress watch --container web --duration 600 --summary > web.allow
  # review web.allow: observed destinations are commented out ('#- '); uncomment the ones to allow
  nsegress restrict --container web --allow-file web.allow

Run 'nsegress COMMAND --help' for a command's options. See nsegress(8).
Exit status: 0 success, 1 bad usage or input, 2 the operation failed,
3 a probe or verification did not hold.
)";

struct Parsed {
    po::variables_map vm;
    bool json = false;
};

po::options_description target_options() {
    po::options_description d("Target (exactly one)");
    d.add_options()("pid", po::value<std::string>()->value_name("PID"),
                    "the network namespace of process PID (race-free: pidfd)")(
        "netns", po::value<std::string>()->value_name("PATH"),
        "a network namespace file, e.g. /run/netns/NAME")(
        "container", po::value<std::string>()->value_name("NAME"),
        "a running docker/podman container")(
        "engine", po::value<std::string>()->value_name("docker|podman"),
        "engine for --container (default: docker, then podman)");
    return d;
}

po::options_description common_options(
    const char* json_help = "print one JSON document on stdout") {
    po::options_description d("Output");
    d.add_options()("json", po::bool_switch(), json_help)("help,h", "show this help");
    return d;
}

pid_t parse_pid(const std::string& s) {
    long long v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size())
        throw_usage("--pid: " + quote(s) + " is not a number");
    if (v <= 0) throw_usage("--pid: " + s + " is not a valid PID (must be positive)");
    if (v > 4194304) throw_usage("--pid: " + s + " is larger than any PID");
    return static_cast<pid_t>(v);
}

int parse_int(const std::string& opt, const std::string& s, int lo, int hi) {
    int v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
        throw_usage(
            fmt::format("--{}: {} must be a whole number from {} to {}", opt, quote(s), lo, hi));
    return v;
}

std::vector<std::string> strings(const po::variables_map& vm, const char* key) {
    return vm.count(key) ? vm[key].as<std::vector<std::string>>() : std::vector<std::string>{};
}

// privileges: what the command needs (as it checks them itself). With --container they are
// checked before the engine's CLI runs: a user who cannot restrict anyway gets the same
// "missing privilege" line as with --pid, and no docker/podman is started on their behalf.
TargetSpec target_of(const po::variables_map& vm, unsigned privileges) {
    TargetSpec t;
    int given = static_cast<int>(vm.count("pid") + vm.count("netns") + vm.count("container"));
    if (given > 1) throw_usage("give one target: --pid, --netns or --container");
    if (given == 0) throw_usage("no target: give --pid PID, --netns PATH or --container NAME");
    if (vm.count("engine") && !vm.count("container")) throw_usage("--engine goes with --container");
    if (vm.count("pid")) t.pid = parse_pid(vm["pid"].as<std::string>());
    if (vm.count("netns")) t.netns_path = vm["netns"].as<std::string>();
    if (vm.count("container")) {
        t.container = vm["container"].as<std::string>();
        std::optional<Engine> engine;
        if (vm.count("engine")) {
            engine = parse_engine(vm["engine"].as<std::string>());
            if (!engine)
                throw_usage("--engine: " + quote(vm["engine"].as<std::string>()) +
                            " must be docker or podman");
        }
        require_privileges(privileges);
        resolve_container(t, engine);
    }
    return t;
}

// One entry of the grammar (policy.hpp) per --allow; an allow-file holds one per line.
std::vector<AllowEntry> cidrs(const po::variables_map& vm) {
    std::vector<AllowEntry> out;
    for (const auto& s : strings(vm, "allow")) {
        if (s.find(',') != std::string::npos)
            throw_usage("--allow: " + quote(s) +
                        ": one CIDR per --allow (repeat --allow for each, or use --allow-file)");
        out.push_back(in_context("--allow", [&] { return parse_allow_entry(s); }));
    }
    for (const auto& f : strings(vm, "allow-file")) {
        auto more = read_allow_entries_file(f);
        // Moved, not copied: a 10^5-entry file would otherwise be held twice for a moment.
        if (out.empty())
            out = std::move(more);
        else
            out.insert(out.end(), std::make_move_iterator(more.begin()),
                       std::make_move_iterator(more.end()));
    }
    return out;
}

// The OCI state: at most kMaxOciState bytes (one more is read to detect a larger one).
std::string read_stdin_bounded() {
    std::string text;
    char buf[65536];
    while (text.size() <= kMaxOciState) {
        ssize_t n = ::read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    return text;
}

std::vector<IpAddr> ips(const po::variables_map& vm, const char* key) {
    std::vector<IpAddr> out;
    for (const auto& s : strings(vm, key)) {
        out.push_back(in_context(fmt::format("--{}", key), [&] { return parse_ip(s); }));
    }
    return out;
}

// The policy options restrict and hook share (--allow, --allow-file, --probe-reach,
// --probe-block, --resolver, --no-route-set, --netdev-egress, --audit): declared here, parsed
// into the one policy type by policy_of below. The hook's help says where the OCI annotations
// come in.
po::options_description policy_options(bool hook) {
    using strings_value = std::vector<std::string>;
    po::options_description d(hook ? "Policy (the OCI state JSON on stdin)" : "Policy");
    d.add_options()(
        "allow", po::value<strings_value>()->value_name("ENTRY")->composing(),
        hook
            ? "allow entry, as restrict --allow (an annotation io.nsegress.allow narrows the list; "
              "without --allow/--allow-file, the annotation is the allow-list: entries separated "
              "by commas)"
            : "allow 'DEST [PROTO[/PORT[-PORT]]]...' (one entry per --allow, repeatable): DEST is "
              "a CIDR or a bare IP (/32, /128); PROTO tcp, udp, sctp, icmp or icmpv6 (echo only); "
              "no PROTO: all traffic to DEST")(
        "allow-file", po::value<strings_value>()->value_name("FILE")->composing(),
        hook ? "read allow entries from FILE (as restrict; an empty file refuses everything)"
             : "read entries from FILE: one per line, '#' comments, blank lines")(
        "probe-reach", po::value<strings_value>()->value_name("IP")->composing(),
        hook ? "must answer (else annotation io.nsegress.probe-reach)"
             : "after restricting, this IP must answer a ping (repeatable)")(
        "probe-block", po::value<strings_value>()->value_name("IP")->composing(),
        hook ? "must be refused (else annotation io.nsegress.probe-block)"
             : "after restricting, a ping to this IP must be refused (repeatable)")(
        "resolver", po::value<strings_value>()->value_name("IP")->composing(),
        hook ? "with names: the only resolver the names proxy asks (repeatable; default: the "
               "container's resolv.conf as the engine wrote it)"
             : "with names: the names proxy asks only this resolver (repeatable, in order); "
               "default: the nameservers of the container's /etc/resolv.conf, read now (loopback "
               "ones only from the hook or when given here)")(
        "no-route-set", po::bool_switch(),
        hook ? "install only the nftables policy"
             : "install only the nftables policy, no route set")(
        "netdev-egress", po::bool_switch(),
        hook ? "also filter each interface's netdev egress hook"
             : "also filter each interface's netdev egress hook (catches packet sockets)")(
        "audit", po::bool_switch(),
        hook ? "audit mode, as restrict --audit (else annotation io.nsegress.audit=true)"
             : "audit mode: refuse nothing; count and log (see `nsegress watch`) what the "
               "allow-list would refuse. No route set, no netdev filter; without --allow, "
               "everything is logged");
    return d;
}

PolicySpec policy_of(const po::variables_map& vm) {
    PolicySpec s;
    s.allow = cidrs(vm);
    s.probe_reach = ips(vm, "probe-reach");
    s.probe_block = ips(vm, "probe-block");
    s.resolvers = ips(vm, "resolver");
    s.route_set = !vm["no-route-set"].as<bool>();
    s.audit = vm["audit"].as<bool>();
    s.netdev_egress = vm["netdev-egress"].as<bool>();
    return s;
}

ProbeOptions probe_options(const po::variables_map& vm) {
    ProbeOptions p;
    if (vm.count("count")) p.count = parse_int("count", vm["count"].as<std::string>(), 1, 100);
    if (vm.count("timeout-ms"))
        p.timeout_ms = parse_int("timeout-ms", vm["timeout-ms"].as<std::string>(), 1, 60000);
    return p;
}

std::optional<std::string> error_of(const RestrictReport& r) { return r.error; }
std::optional<std::string> error_of(const ProbeReport& r) { return r.error; }
std::optional<std::string> error_of(const ReleaseReport& r) { return r.error(); }
std::optional<std::string> error_of(const StatusReport&) { return std::nullopt; }
std::optional<std::string> error_of(const VerifyResult& r) { return r.error; }

// A verb's report on stdout, as JSON or as text, and its error on stderr; its exit status.
template <class Report>
int print(const Report& r, bool json) {
    if (json)
        std::cout << dump_json(report_json(r), 2) << "\n";
    else
        std::cout << render_human(r);
    std::cout.flush();
    if (auto e = error_of(r)) std::cerr << "nsegress: " << *e << "\n";
    if constexpr (std::is_same_v<Report, StatusReport>)
        return 0;
    else
        return static_cast<int>(r.exit);
}

// Parses the command's options; returns false when --help was printed.
bool parse(const std::string& command, const std::vector<std::string>& args,
           const po::options_description& desc, const char* synopsis, Parsed& out) {
    // Decide --json before anything can fail, so that even a usage error prints JSON.
    for (const auto& a : args)
        if (a == "--json") out.json = true;
    // Words that are no option's value: boost would drop them silently ("restrict web --allow
    // ..." then said "no target" without naming the ignored word).
    po::options_description all;
    all.add(desc).add_options()("nsegress-positional", po::value<std::vector<std::string>>());
    po::positional_options_description positional;
    positional.add("nsegress-positional", -1);
    po::store(
        po::command_line_parser(args)
            .options(all)
            .positional(positional)
            .style(po::command_line_style::unix_style & ~po::command_line_style::allow_guessing)
            .run(),
        out.vm);
    if (out.vm.count("nsegress-positional") && !out.vm.count("help")) {
        const auto& words = out.vm["nsegress-positional"].as<std::vector<std::string>>();
        throw_usage("unexpected argument " + quote(words.front()) +
                    ": every value goes with an option (a container is --container " +
                    printable(words.front(), 100) + ", a namespace --netns PATH)");
    }
    po::notify(out.vm);
    if (out.vm.count("help")) {
        std::cout << "Usage: nsegress " << command << " " << synopsis << "\n\n" << desc << "\n";
        return false;
    }
    return true;
}

// CNI: the runtime sets CNI_* variables and writes the netconf on stdin, whatever argv says.
int run_as_cni_plugin() {
    std::map<std::string, std::string> env;
    for (const char* key :
         {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"})
        if (const char* v = std::getenv(key)) env[key] = v;
    std::string input = env["CNI_COMMAND"] == "VERSION" ? std::string() : read_stdin_bounded();
    CniOutcome out = run_cni(env, input);
    std::cout << out.stdout_text;
    std::cout.flush();
    return out.exit;
}

// verify: one target, or a whole class (--container repeated, --containers-file), one report.
int run_verify(const std::vector<std::string>& args, Parsed& p) {
    po::options_description desc;
    po::options_description t("Target (--pid or --netns, or one or more containers)");
    t.add_options()("pid", po::value<std::string>()->value_name("PID"),
                    "the network namespace of process PID (race-free: pidfd)")(
        "netns", po::value<std::string>()->value_name("PATH"),
        "a network namespace file, e.g. /run/netns/NAME")(
        "container", po::value<std::vector<std::string>>()->value_name("NAME")->composing(),
        "a running docker/podman container (repeatable: grade several in one run)")(
        "containers-file", po::value<std::string>()->value_name("FILE"),
        "grade the containers named in FILE (one per line, '#' comments)")(
        "engine", po::value<std::string>()->value_name("docker|podman"),
        "engine for --container (default: docker, then podman)");
    po::options_description d("Verify");
    d.add_options()("allow",
                    po::value<std::vector<std::string>>()->value_name("ENTRY")->composing(),
                    "what the namespace is meant to reach, as restrict --allow (repeatable)")(
        "allow-file", po::value<std::vector<std::string>>()->value_name("FILE")->composing(),
        "read allow entries from FILE")("resolver", po::value<std::string>()->value_name("IP"),
                                        "for name entries: the resolver the container asks "
                                        "(default: the nameserver of its resolv.conf)")(
        "reach", po::value<std::vector<std::string>>()->value_name("IP")->composing(),
        "this IP must answer (ICMP echo, TCP, UDP) (repeatable)")(
        "block", po::value<std::vector<std::string>>()->value_name("IP")->composing(),
        "ICMP, TCP and UDP to this IP must be refused inside the namespace (repeatable)")(
        "tcp-port", po::value<std::string>()->value_name("PORT"),
        "port of the TCP probes (default 80)")("udp-port",
                                               po::value<std::string>()->value_name("PORT"),
                                               "port of the UDP probes (default 53)")(
        "expect-userns-remap", po::bool_switch(),
        "uid 0 in the container must map to a non-zero host uid")(
        "expect-no-new-privs", po::bool_switch(),
        "the container's process must have NoNewPrivs set")(
        "lab-profile", po::bool_switch(),
        "the whole seed lab: both expectations above, container root is uid 0 inside, id maps "
        "within the "
        "remap user's /etc/subuid and /etc/subgid, the daemon's userns-remap and data directory, a "
        "root-owned host directory not writable by container root")(
        "count", po::value<std::string>()->value_name("N"), "echoes per probe (default 1)")(
        "timeout-ms", po::value<std::string>()->value_name("MS"),
        "wait for answers (default 1000)")(
        "junit", po::value<std::string>()->value_name("FILE"),
        "also write a JUnit XML report to FILE (always written)");
    desc.add(t).add(d).add(common_options());
    if (!parse("verify", args, desc,
               "(--pid PID | --netns PATH | --container NAME... | --containers-file FILE)\n"
               "        --allow ENTRY [--allow ENTRY]... [--reach IP]... [--block IP]... "
               "[--tcp-port P] [--udp-port P]\n"
               "        [--expect-userns-remap] [--expect-no-new-privs] [--lab-profile] [--json] "
               "[--junit FILE]",
               p))
        return 0;
    const po::variables_map& vm = p.vm;
    std::optional<std::string> junit;
    if (vm.count("junit")) junit = vm["junit"].as<std::string>();
    std::vector<JunitSuite> suites;
    auto write_junit = [&] {
        if (!junit) return;
        if (!write_text_file(*junit, junit_report(suites)))
            throw_errno("write JUnit report " + quote(*junit), errno);
    };
    VerifyOptions o;
    std::vector<std::string> names = strings(vm, "container");
    try {
        if (!vm.count("allow") && !vm.count("allow-file"))
            throw_usage("no allow-list: give --allow ENTRY (what the namespace is meant to reach)");
        o.allow = cidrs(vm);
        o.reach = ips(vm, "reach");
        if (vm.count("resolver")) o.resolver = parse_ip(vm["resolver"].as<std::string>());
        o.block = ips(vm, "block");
        validate_targets(o.allow, o.reach, o.block, "--reach", "--block");
        o.expect_userns_remap = vm["expect-userns-remap"].as<bool>();
        o.expect_no_new_privs = vm["expect-no-new-privs"].as<bool>();
        o.lab_profile = vm["lab-profile"].as<bool>();
        o.probe_options = probe_options(vm);
        if (vm.count("tcp-port"))
            o.grade.tcp_port = static_cast<std::uint16_t>(
                parse_int("tcp-port", vm["tcp-port"].as<std::string>(), 1, 65535));
        if (vm.count("udp-port"))
            o.grade.udp_port = static_cast<std::uint16_t>(
                parse_int("udp-port", vm["udp-port"].as<std::string>(), 1, 65535));
        if (vm.count("containers-file")) {
            const std::string f = vm["containers-file"].as<std::string>();
            auto text = read_text_file(f);
            if (!text)
                throw_usage("--containers-file: cannot read " + quote(f) + ": " +
                            std::strerror(errno));
            std::istringstream in(*text);
            std::string line;
            while (std::getline(in, line)) {
                auto h = line.find('#');
                if (h != std::string::npos) line.resize(h);
                auto b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
                if (b == std::string::npos) continue;
                names.push_back(line.substr(b, e - b + 1));
            }
            if (names.empty())
                throw_usage("--containers-file: " + quote(f) + " names no container");
        }
        int given = static_cast<int>(vm.count("pid") + vm.count("netns")) + (names.empty() ? 0 : 1);
        if (given > 1) throw_usage("give one kind of target: --pid, --netns, or containers");
        if (given == 0) throw_usage("no target: give --pid PID, --netns PATH or --container NAME");
        if (vm.count("engine") && names.empty()) throw_usage("--engine goes with --container");
    } catch (const Error& e) {
        suites.push_back({"nsegress verify", {}, e.what()});
        write_junit();
        throw;
    }
    std::optional<Engine> engine;
    if (vm.count("engine")) {
        engine = parse_engine(vm["engine"].as<std::string>());
        if (!engine)
            throw_usage("--engine: " + quote(vm["engine"].as<std::string>()) +
                        " must be docker or podman");
    }
    struct One {
        std::string name;
        std::optional<VerifyResult> result;
        std::optional<Error> error;
    };
    std::vector<One> graded;
    auto grade = [&](const std::string& name, const std::function<void(VerifyOptions&)>& fill) {
        One one{name, std::nullopt, std::nullopt};
        try {
            VerifyOptions mine = o;
            fill(mine);
            one.result = cmd_verify(mine);
        } catch (const Error& e) {
            one.error = e;
        }
        graded.push_back(std::move(one));
    };
    if (names.empty()) {
        grade(
            vm.count("pid") ? "pid " + vm["pid"].as<std::string>() : vm["netns"].as<std::string>(),
            [&](VerifyOptions& v) {
                if (vm.count("pid")) v.target.pid = parse_pid(vm["pid"].as<std::string>());
                if (vm.count("netns")) v.target.netns_path = vm["netns"].as<std::string>();
            });
    } else {
        for (const auto& n : names)
            grade(n, [&](VerifyOptions& v) {
                v.target.container = n;
                require_privileges(priv_enter | priv_net_raw);  // before any engine CLI runs
                resolve_container(v.target, engine);
                v.network_mode = container_network_mode(n, engine);
                if (v.lab_profile && engine != Engine::podman) v.daemon = docker_daemon_info();
            });
    }
    // The worst outcome decides: a target that could not be graded, then a failed check.
    Exit worst = Exit::ok;
    auto rank = [](Exit e) {
        return e == Exit::ok ? 0 : e == Exit::verify ? 1 : e == Exit::failed ? 2 : 3;
    };
    nlohmann::json all = nlohmann::json::array();
    for (auto& g : graded) {
        Exit ex = g.error ? g.error->exit_code() : g.result->exit;
        if (rank(ex) > rank(worst)) worst = ex;
        if (g.error) {
            suites.push_back({g.name, {}, g.error->what()});
            auto doc = error_document("verify", *g.error);
            doc["target"] = nlohmann::json{{"label", g.name}};
            all.push_back(doc);
            continue;
        }
        suites.push_back({g.name, g.result->checks, ""});
        all.push_back(report_json(*g.result));
    }
    write_junit();
    if (graded.size() == 1) {
        auto& g = graded.front();
        if (g.error) throw *g.error;
        return print(*g.result, p.json);
    }
    if (p.json) {
        nlohmann::json doc{{"command", "verify"},
                           {"ok", worst == Exit::ok},
                           {"exit_code", static_cast<int>(worst)},
                           {"targets", all}};
        std::cout << dump_json(doc, 2) << "\n";
    } else {
        for (std::size_t i = 0; i < graded.size(); ++i) {
            auto& g = graded[i];
            if (i) std::cout << "\n";
            if (g.error)
                std::cout << fmt::format("verify {}: ERROR {}\n", g.name, g.error->what());
            else
                std::cout << render_human(*g.result);
        }
        std::size_t failed = 0, errors = 0;
        for (auto& g : graded) {
            errors += g.error.has_value();
            failed += g.result && g.result->exit != Exit::ok;
        }
        std::cout << fmt::format(
            "\nclass: {} target(s), {} passed, {} failed, {} could not be graded\n", graded.size(),
            graded.size() - failed - errors, failed, errors);
    }
    std::cout.flush();
    return static_cast<int>(worst);
}

int run(int argc, char** argv) {
    if (std::getenv("CNI_COMMAND")) return run_as_cni_plugin();
    if (argc < 2) {
        std::cerr << kUsage;
        return static_cast<int>(Exit::usage);
    }
    std::string command = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (command == "--help" || command == "-h" || command == "help") {
        std::cout << kUsage;
        return 0;
    }
    if (command == "--version" || command == "-V") {
        std::cout << "nsegress " << NSEGRESS_VERSION << "\n";
        return 0;
    }

    Parsed p;
    for (const auto& a : args)
        if (a == "--json") p.json = true;
    try {
        po::options_description desc;
        desc.add(target_options());
        if (command == "restrict") {
            po::options_description d("Restrict");
            d.add_options()("count", po::value<std::string>()->value_name("N"),
                            "echoes per probe target (default 1)")(
                "timeout-ms", po::value<std::string>()->value_name("MS"),
                "wait for answers (default 1000)")("no-probe", po::bool_switch(), "do not probe")(
                "dry-run", po::bool_switch(), "print the ruleset and route set; change nothing");
            desc.add(policy_options(false)).add(d).add(common_options());
            if (!parse(command, args, desc,
                       "(--pid PID | --netns PATH | --container NAME [--engine docker|podman])\n"
                       "        (--allow ENTRY... | --allow-file FILE... | --audit) [--probe-reach "
                       "IP]...\n"
                       "        [--probe-block IP]... [--resolver IP]... [--no-probe] "
                       "[--no-route-set] [--netdev-egress]\n"
                       "        [--dry-run] [--json]",
                       p))
                return 0;
            RestrictOptions o;
            // Enforcing needs an explicit list (an empty one would cut everything off); auditing
            // with none is the natural start: log everything the container sends.
            if (!p.vm.count("allow") && !p.vm.count("allow-file") && !p.vm["audit"].as<bool>())
                throw_usage(
                    "no allow-list: give --allow ENTRY and/or --allow-file FILE "
                    "(an empty allow-file refuses everything), or --audit to only watch");
            static_cast<PolicySpec&>(o) =
                policy_of(p.vm);  // input errors first: they need no target
            o.probe = !p.vm["no-probe"].as<bool>();
            o.dry_run = p.vm["dry-run"].as<bool>();
            // the privileges cmd_restrict checks (keep the two in step)
            o.target = target_of(p.vm, priv_enter | (o.dry_run ? 0u : unsigned{priv_net_admin}) |
                                           (o.probe && !o.dry_run ? unsigned{priv_net_raw} : 0u));
            o.probe_options = probe_options(p.vm);
            if (!o.probe && (!o.probe_reach.empty() || !o.probe_block.empty()))
                throw_usage("--no-probe contradicts --probe-reach/--probe-block");
            // The operator's own contradictions, before anything is committed (in audit mode
            // nothing is refused, so a reach target outside the list is what one checks there).
            if (!o.audit)
                validate_targets(o.allow, o.probe_reach, o.probe_block, "--probe-reach",
                                 "--probe-block");
            return print(run_restrict(std::move(o)), p.json);
        }
        if (command == "release" || command == "status") {
            desc.add(common_options());
            if (!parse(command, args, desc,
                       "(--pid PID | --netns PATH | --container NAME) [--json]", p))
                return 0;
            auto t = target_of(p.vm, priv_enter | priv_net_admin);
            return command == "release" ? print(cmd_release(t), p.json)
                                        : print(cmd_status(t), p.json);
        }
        if (command == "watch") {
            po::options_description d("Watch");
            d.add_options()(
                "duration", po::value<std::string>()->value_name("S"),
                "stop after S seconds (default: until SIGINT/SIGTERM, or the --pid process exits)")(
                "summary", po::bool_switch(),
                "at the end, print an --allow-file covering what was observed (attempt lines "
                "become '#' comments, so the whole output is a valid allow-file)")(
                "buffer", po::value<std::string>()->value_name("BYTES"),
                "receive buffer of the log socket (default 4194304); losses are counted and "
                "reported");
            desc.add(d).add(common_options(
                "print JSON lines on stdout: one object per attempt, then the end document"));
            if (!parse(command, args, desc,
                       "(--pid PID | --netns PATH | --container NAME) [--duration S] [--summary]\n"
                       "        [--buffer BYTES] [--json]",
                       p))
                return 0;
            WatchOptions o;
            if (p.vm.count("duration")) {
                const std::string s = p.vm["duration"].as<std::string>();
                double v = 0;
                auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
                if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !(v > 0) ||
                    v > 31536000)
                    throw_usage("--duration: " + quote(s) +
                                " must be a number of seconds, more than 0");
                o.duration_s = v;
            }
            if (p.vm.count("buffer"))
                o.receive_buffer =
                    parse_int("buffer", p.vm["buffer"].as<std::string>(), 1024, 1 << 30);
            o.summary = p.vm["summary"].as<bool>();
            o.target = target_of(p.vm, priv_enter | priv_net_admin);
            const bool as_json = p.json;
            const bool commented = o.summary && !as_json;
            WatchSink sink;
            sink.ready = [&](const WatchReady& r) {
                std::cerr << "nsegress watch: " << render_human(r);
                std::cerr.flush();
            };
            sink.event = [&](const WatchEvent& ev) {
                if (as_json) {
                    std::cout << dump_json(event_json(ev), -1) << "\n";
                } else if (std::holds_alternative<WatchLost>(ev)) {
                    std::cerr << "nsegress watch: " << render_human(ev);
                } else if (auto line = render_human(ev); !line.empty()) {
                    std::cout << (commented ? "# " : "") << line;
                }
                std::cout.flush();
            };
            sink.notice = [&](const std::string& text) {
                std::cerr << "nsegress watch: " << text << "\n";
            };
            const WatchReport r = cmd_watch(o, sink);
            if (as_json) {
                std::cout << dump_json(report_json(r), -1) << "\n";
            } else {
                std::cerr << "nsegress watch: " << render_human(r);
                if (r.summary) {
                    std::cout << r.summary->allow_file;
                    // stdout usually goes to a file: say on the terminal that it needs a review.
                    std::size_t pending = 0;
                    for (const auto& e : r.summary->observed)
                        if (!already_allowed(r.summary->current, suggested_entry(e))) ++pending;
                    if (pending > 0)
                        std::cerr << fmt::format(
                            "nsegress watch: the summary comments out ('{}') the {} observed "
                            "destination(s) outside the current allow-list: review it, and "
                            "uncomment only what the container must reach\n",
                            kSummaryDisabled, pending);
                }
            }
            std::cout.flush();
            return static_cast<int>(r.exit);
        }
        if (command == "probe") {
            po::options_description d("Probe");
            d.add_options()("target",
                            po::value<std::vector<std::string>>()->value_name("IP")->composing(),
                            "ping this IP from inside the namespace (repeatable)")(
                "expect", po::value<std::string>()->value_name("reach|block"),
                "what must happen (default: reach); exit 3 otherwise")(
                "count", po::value<std::string>()->value_name("N"),
                "echoes per target (default 1)")("timeout-ms",
                                                 po::value<std::string>()->value_name("MS"),
                                                 "wait for answers (default 1000)");
            desc.add(d).add(common_options());
            if (!parse(command, args, desc,
                       "(--pid PID | --netns PATH | --container NAME) --target IP [--expect "
                       "reach|block]\n"
                       "        [--count N] [--timeout-ms MS] [--json]",
                       p))
                return 0;
            ProbeCommandOptions o;
            o.target = target_of(p.vm, priv_enter | priv_net_raw);
            o.targets = ips(p.vm, "target");
            if (o.targets.empty()) throw_usage("no --target given");
            if (p.vm.count("expect")) {
                auto e = p.vm["expect"].as<std::string>();
                if (e == "reach")
                    o.expect = Expect::reach;
                else if (e == "block")
                    o.expect = Expect::block;
                else
                    throw_usage("--expect: " + quote(e) + " must be reach or block");
            }
            o.probe_options = probe_options(p.vm);
            return print(cmd_probe(o), p.json);
        }
        if (command == "verify") return run_verify(args, p);
        if (command == "hook") {
            po::options_description d;
            d.add(policy_options(true));
            d.add(common_options());
            if (!parse(command, args, d,
                       "[--allow ENTRY]... [--allow-file FILE]... [--probe-reach IP]... "
                       "[--probe-block IP]...\n"
                       "        [--resolver IP]... [--no-route-set] [--netdev-egress] [--audit] < "
                       "state.json",
                       p))
                return 0;
            HookArgs h;
            static_cast<PolicySpec&>(h) = policy_of(p.vm);
            h.allow_given = p.vm.count("allow") || p.vm.count("allow-file");
            auto r = cmd_hook(read_stdin_bounded(), h);
            if (p.json) std::cout << dump_json(r.doc, 2) << "\n";
            // A runtime shows a hook's stderr when it fails: exactly one line.
            if (!r.doc["error"].is_null())
                std::cerr << "nsegress hook: " << r.doc["error"].get<std::string>() << "\n";
            return static_cast<int>(r.exit);
        }
        if (command == "names-proxy") {
            // Started by restrict (names_proxy.hpp); also by hand or a supervisor to restart a
            // proxy that died: `nsegress names-proxy --state /run/nsegress/names-DEV-INO.json`.
            po::options_description d("Names proxy");
            d.add_options()("state", po::value<std::string>()->value_name("FILE")->required(),
                            "the state file restrict wrote")(
                "ready-fd", po::value<int>()->default_value(-1)->value_name("N"),
                "write '1' to fd N once listening");
            if (!parse(command, args, d, "--state FILE [--ready-fd N]", p)) return 0;
            // The proxy's own, smaller executable when there is one (names_proxy.hpp).
            exec_names_proxy(p.vm["state"].as<std::string>(), p.vm["ready-fd"].as<int>());
            return run_names_proxy(p.vm["state"].as<std::string>(), p.vm["ready-fd"].as<int>());
        }
        if (command == "names-supervise") {
            po::options_description d("Names proxy supervisor");
            d.add_options()("state",
                            po::value<std::vector<std::string>>()->value_name("FILE")->composing(),
                            "watch only this state file (repeatable; default: every "
                            "/run/nsegress/names-*.json)");
            if (!parse(command, args, d, "[--state FILE]...", p)) return 0;
            return run_names_supervisor(p.vm.count("state")
                                            ? p.vm["state"].as<std::vector<std::string>>()
                                            : std::vector<std::string>{});
        }
        throw_usage("unknown command " + quote(command) + " (see nsegress --help)");
    } catch (const po::error& e) {
        // (boost's text quotes the offending argument as given: it may hold anything)
        Error err(Exit::usage, fmt::format("{}: {} (see nsegress {} --help)", command,
                                           printable(e.what(), 500), command));
        if (p.json)
            std::cout << dump_json(error_document(command, err), command == "watch" ? -1 : 2)
                      << "\n";
        std::cerr << (command == "hook" ? "nsegress hook: " : "nsegress: ") << err.what() << "\n";
        return static_cast<int>(Exit::usage);
    } catch (const Error& e) {
        if (p.json)
            std::cout << dump_json(error_document(command, e), command == "watch" ? -1 : 2) << "\n";
        std::cerr << (command == "hook" ? "nsegress hook: " : "nsegress: ") << e.what() << "\n";
        return static_cast<int>(e.exit_code());
    } catch (const std::exception& e) {
        Error err(Exit::failed, std::string("internal error: ") + printable(e.what(), 500));
        if (p.json)
            std::cout << dump_json(error_document(command, err), command == "watch" ? -1 : 2)
                      << "\n";
        std::cerr << "nsegress: " << err.what() << "\n";
        return static_cast<int>(Exit::failed);
    }
}

// libnl reads NLDBG and NLCB in its constructors: debug lines on stderr (where a hook must print
// exactly one) and callbacks that print or alter every message. The caller's environment must
// not change what nsegress does, so drop them before any library initializes: the
// executable's .preinit_array runs before every shared library's constructors. That is also
// before libc adopts envp as `environ` (unsetenv() would change nothing yet), so the entries are
// removed from envp itself.
void drop_library_debug_env(int, char**, char** envp) {
    if (!envp) return;
    char** out = envp;
    for (char** in = envp; *in; ++in)
        if (std::strncmp(*in, "NLDBG=", 6) != 0 && std::strncmp(*in, "NLCB=", 5) != 0) *out++ = *in;
    *out = nullptr;
}
[[gnu::section(".preinit_array"),
  gnu::used]] void (*const preinit_drop_env)(int, char**, char**) = drop_library_debug_env;

// A caller may start us with stdin, stdout or stderr closed. Our first socket would then become
// fd 1, and the report would be written into a netlink socket: keep 0-2 taken (by /dev/null).
bool ensure_std_fds() {
    for (int fd = 0; fd < 3; ++fd) {
        if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        // Not O_CLOEXEC: these are the standard streams, meant to be inherited.
        int got = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (got != fd) return false;  // lower fds are open, so open() must return exactly fd
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (!ensure_std_fds()) return static_cast<int>(Exit::failed);
    return run(argc, argv);
}
