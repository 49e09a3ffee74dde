// nsegress-runtime: splitting dockerd's command line, and editing the bundle's config.json.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nsegress/error.hpp"
#include "nsegress/hook.hpp"
#include "nsegress/runtime.hpp"

using namespace nsegress;
using nlohmann::ordered_json;
using V = std::vector<std::string>;

namespace {

Exit split_error(const V& argv) {
    try {
        split_runtime_args(argv);
    } catch (const Error& e) {
        return e.exit_code();
    }
    return Exit::ok;
}

Exit policy_error(const RuntimePolicy& p) {
    try {
        validate_policy(p);
    } catch (const Error& e) {
        return e.exit_code();
    }
    return Exit::ok;
}

RuntimePolicy lan_policy() {
    RuntimePolicy p;
    p.allow = {"192.168.1.0/24"};
    return p;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

}  // namespace

TEST_CASE("runtime args: the wrapper's options first, then runc's, untouched") {
    // What dockerd's runtime script and containerd's shim produce.
    V argv = {"--allow",
              "192.168.1.0/24",
              "--allow=10.0.0.0/8",
              "--no-route-set",
              "--audit",
              "--root",
              "/run/docker/runtime-runc/moby",
              "--log",
              "/run/x/log.json",
              "--log-format",
              "json",
              "create",
              "--bundle",
              "/run/x",
              "--pid-file",
              "/run/x/init.pid",
              "abc123"};
    auto c = split_runtime_args(argv);
    CHECK(c.policy.allow == V{"192.168.1.0/24", "10.0.0.0/8"});
    CHECK_FALSE(c.policy.route_set);
    CHECK(c.policy.audit);
    CHECK_FALSE(c.policy.netdev_egress);
    CHECK(c.rest == V(argv.begin() + 5, argv.end()));
    CHECK(c.subcommand == "create");
    CHECK(c.edits_bundle());
    CHECK(c.log_path == "/run/x/log.json");
    CHECK(c.log_format == "json");
    CHECK(c.bundle == "/run/x");
}

TEST_CASE("runtime args: every other subcommand passes through") {
    for (const char* sub : {"state", "start", "kill", "delete", "exec", "ps", "update", "features",
                            "pause", "resume", "events", "checkpoint", "list", "spec"}) {
        auto c = split_runtime_args({"--allow", "192.168.1.0/24", "--root", "/r", sub, "abc"});
        CHECK(c.subcommand == sub);
        CHECK_FALSE(c.edits_bundle());
        CHECK(c.rest == V{"--root", "/r", sub, "abc"});
    }
    auto v = split_runtime_args({"--allow", "192.168.1.0/24", "--version"});
    CHECK(v.subcommand.empty());
    CHECK(v.rest == V{"--version"});
    auto none = split_runtime_args({});
    CHECK(none.rest.empty());
    CHECK(none.subcommand.empty());
    // `--` ends the wrapper's options and is not passed on.
    auto dd = split_runtime_args({"--allow", "10.0.0.0/8", "--", "--allow", "x"});
    CHECK(dd.policy.allow == V{"10.0.0.0/8"});
    CHECK(dd.rest == V{"--allow", "x"});
    // Only a prefix is ours: a later --allow belongs to the real runtime.
    auto late = split_runtime_args({"--debug", "--allow", "10.0.0.0/8", "state", "x"});
    CHECK(late.policy.allow.empty());
    CHECK(late.rest.size() == 5);
    CHECK(late.subcommand == "10.0.0.0/8");  // what runc would see, and refuse
    // crun's global options with values.
    auto crun = split_runtime_args(
        {"--cgroup-manager", "systemd", "--log-level", "debug", "create", "-b", "/b", "x"});
    CHECK(crun.subcommand == "create");
    CHECK(crun.bundle == "/b");
    // An unknown option whose value hides a create: refused, never passed through unhooked.
    CHECK(split_error({"--allow", "10.0.0.0/8", "--unknown-opt", "value", "create", "--bundle",
                       "/b", "x"}) == Exit::usage);
    CHECK(split_runtime_args({"--unknown-opt", "value", "state", "x"}).subcommand ==
          "value");  // harmless
}

TEST_CASE("runtime args: the bundle, in every form runc accepts") {
    CHECK(split_runtime_args({"create", "id"}).bundle.empty());  // the current directory
    CHECK(split_runtime_args({"create", "-b", "/b", "id"}).bundle == "/b");
    CHECK(split_runtime_args({"create", "-b=/b", "id"}).bundle == "/b");
    CHECK(split_runtime_args({"create", "-bundle", "/b", "id"}).bundle == "/b");
    CHECK(split_runtime_args({"create", "--bundle=/b", "id"}).bundle == "/b");
    CHECK(split_runtime_args({"create", "id", "--bundle", "/b"}).bundle ==
          "/b");  // urfave reorders
    CHECK(split_runtime_args({"run", "--bundle", "/b", "-d", "id"}).bundle == "/b");
    CHECK(split_runtime_args({"restore", "--image-path", "/img", "-b", "/b", "id"}).bundle == "/b");
    CHECK(split_runtime_args({"create", "-b", "/a", "-b", "/b", "id"}).bundle ==
          "/b");  // the last wins
    // A value of another option is not a bundle option.
    CHECK(split_runtime_args({"create", "--pid-file", "--bundle", "id"}).bundle.empty());
    CHECK(split_runtime_args({"create", "--console-socket", "/s", "id"}).bundle.empty());
    // Global options with values, in both forms, before the subcommand.
    auto g = split_runtime_args({"--root=/r", "-log", "/l", "--log-format=text", "--systemd-cgroup",
                                 "--debug", "--rootless", "true", "create", "-b", "/b", "id"});
    CHECK(g.subcommand == "create");
    CHECK(g.log_path == "/l");
    CHECK(g.log_format == "text");
    CHECK(g.bundle == "/b");
}

TEST_CASE("runtime args: errors") {
    CHECK(split_error({"--allow"}) == Exit::usage);
    CHECK(split_error({"--runtime", "runc", "create"}) == Exit::usage);  // relative
    CHECK(split_error({"--allow-file", "lan.allow", "create"}) == Exit::usage);
    CHECK(split_error({"--nsegress=bin/nsegress", "create"}) == Exit::usage);
    CHECK(split_error({"--audit=yes", "create"}) == Exit::usage);
    CHECK(split_error({"--hook-timeout", "0", "create"}) == Exit::usage);
    CHECK(split_error({"--hook-timeout", "5s", "create"}) == Exit::usage);
    CHECK(split_runtime_args({"--hook-timeout", "30", "create"}).policy.hook_timeout == 30);
    auto r = split_runtime_args(
        {"--runtime", "/usr/bin/crun", "--nsegress=/opt/nsegress", "state", "x"});
    CHECK(r.policy.runtime == "/usr/bin/crun");
    CHECK(r.policy.nsegress == "/opt/nsegress");

    RuntimePolicy none;
    CHECK(policy_error(none) == Exit::usage);  // no policy at all: create fails
    none.audit = true;
    CHECK(policy_error(none) == Exit::ok);  // audit everything
    RuntimePolicy bad = lan_policy();
    bad.allow.push_back("300.1.1.1/8");
    CHECK(policy_error(bad) == Exit::usage);
    RuntimePolicy probe = lan_policy();
    probe.probe_block = {"not-an-ip"};
    CHECK(policy_error(probe) == Exit::usage);
    RuntimePolicy file = lan_policy();
    file.allow_files = {"/nonexistent/nsegress.allow"};
    CHECK(policy_error(file) == Exit::usage);
    CHECK(policy_error(lan_policy()) == Exit::ok);
}

TEST_CASE("runtime hook entry: the policy as `nsegress hook` arguments, marked") {
    RuntimePolicy p;
    p.allow = {"192.168.1.0/24", "2001:DB8::/32"};
    p.allow_files = {"/etc/nsegress/lan.allow"};
    p.probe_reach = {"192.168.1.10"};
    p.route_set = false;
    p.netdev_egress = true;
    p.hook_timeout = 20;
    auto e = runtime_hook_entry(p, "/usr/local/sbin/nsegress");
    CHECK(e["path"] == "/usr/local/sbin/nsegress");
    CHECK(e["args"] == ordered_json::array({"nsegress", "hook", "--allow", "192.168.1.0/24",
                                            "--allow", "2001:db8::/32", "--allow-file",
                                            "/etc/nsegress/lan.allow", "--probe-reach",
                                            "192.168.1.10", "--no-route-set", "--netdev-egress"}));
    CHECK(e["env"] == ordered_json::array({kRuntimeHookMarker}));
    CHECK(e["timeout"] == 20);
}

TEST_CASE("config.json: the hook is added once, everything else is kept as it was") {
    const std::string docker =
        R"({"ociVersion":"1.0.2-dev","process":{"args":["sh","-c","echo \u003cok\u003e"],)"
        R"("env":["PATH=/bin","X=\u00e9"]},"root":{"path":"/r"},)"
        R"("hooks":{"prestart":[{"path":"/proc/1/exe","args":["libnetwork-setkey","-exec-root=/x","id","ctl"]}],)"
        R"("createRuntime":[{"path":"/other","args":["other"]}]},)"
        R"("linux":{"resources":{"memory":{"limit":18446744073709551615},"cpu":{"shares":-1}}},)"
        R"("annotations":{"io.nsegress.allow":"192.168.1.10"}})";
    auto entry = runtime_hook_entry(lan_policy(), "/sbin/nsegress");
    std::string once = edit_config_text(docker, entry);
    std::string twice = edit_config_text(once, entry);
    CHECK(once == twice);  // idempotent: a second pass adds no second hook
    auto j = ordered_json::parse(once);
    auto in = ordered_json::parse(docker);
    REQUIRE(j["hooks"]["createRuntime"].size() == 2);
    CHECK(j["hooks"]["createRuntime"][0] ==
          in["hooks"]["createRuntime"][0]);  // the other hook stays first
    CHECK(j["hooks"]["createRuntime"][1] == entry);
    CHECK(j["hooks"]["prestart"] == in["hooks"]["prestart"]);
    // Everything but hooks.createRuntime is the same document, keys in the same order.
    j["hooks"]["createRuntime"].erase(1);
    CHECK(j == in);
    std::vector<std::string> keys, in_keys;
    for (auto& [k, v] : j.items()) keys.push_back(k);
    for (auto& [k, v] : in.items()) in_keys.push_back(k);
    CHECK(keys == in_keys);
    CHECK(once.find("18446744073709551615") != std::string::npos);

    // A different policy replaces the wrapper's hook instead of adding one.
    RuntimePolicy wan;
    wan.allow = {"198.51.100.0/24"};
    auto other =
        ordered_json::parse(edit_config_text(once, runtime_hook_entry(wan, "/sbin/nsegress")));
    REQUIRE(other["hooks"]["createRuntime"].size() == 2);
    CHECK(other["hooks"]["createRuntime"][1]["args"][3] == "198.51.100.0/24");

    // No hooks at all, or null ones.
    for (const char* bare : {R"({"ociVersion":"1.0.2"})", R"({"hooks":null})",
                             R"({"hooks":{"createRuntime":null}})"}) {
        auto b = ordered_json::parse(edit_config_text(bare, entry));
        REQUIRE(b["hooks"]["createRuntime"].size() == 1);
        CHECK(b["hooks"]["createRuntime"][0] == entry);
    }
}

TEST_CASE("config.json: what cannot be edited is an error, never a guess") {
    auto entry = runtime_hook_entry(lan_policy(), "/sbin/nsegress");
    auto error = [&](const std::string& text) {
        try {
            edit_config_text(text, entry);
        } catch (const Error& e) {
            return e.exit_code();
        }
        return Exit::ok;
    };
    CHECK(error("") == Exit::failed);
    CHECK(error("{") == Exit::failed);
    CHECK(error("[]") == Exit::failed);
    CHECK(error(R"({"hooks":[]})") == Exit::failed);
    CHECK(error(R"({"hooks":{"createRuntime":{}}})") == Exit::failed);
    CHECK(error(std::string(100000, '[')) == Exit::failed);  // nesting bomb
}

TEST_CASE("config.json on disk: rewritten atomically, mode kept, no temporary file left") {
    char tmpl[] = "/tmp/nsegress-unit-bundle.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    const std::string path = dir + "/config.json";
    {
        std::ofstream f(path);
        f << R"({"ociVersion":"1.0.2","hooks":{"poststop":[{"path":"/x"}]}})";
    }
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    struct stat before {};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    int held = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // the old inode cannot be reused
    REQUIRE(held >= 0);
    auto entry = runtime_hook_entry(lan_policy(), "/sbin/nsegress");
    edit_bundle_config(dir, entry);
    std::string first = read_file(path);
    edit_bundle_config(dir, entry);
    CHECK(read_file(path) == first);
    struct stat after {};
    REQUIRE(::stat(path.c_str(), &after) == 0);
    CHECK((after.st_mode & 07777) == 0640);
    CHECK(after.st_ino != before.st_ino);  // a new file renamed over the old one
    ::close(held);
    auto j = ordered_json::parse(first);
    CHECK(j["hooks"]["poststop"][0]["path"] == "/x");
    CHECK(j["hooks"]["createRuntime"].size() == 1);
    CHECK_THROWS_AS(edit_bundle_config(dir + "/nosuch", entry), Error);
    // Only config.json is left in the bundle (no temporary file).
    int entries = 0;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++entries;
        ::closedir(d);
    }
    CHECK(entries == 1);
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
}

TEST_CASE("runtime log line: what containerd reads back") {
    auto l = runtime_log_line("json", "nsegress-runtime: bad \"x\"", 0);
    CHECK(l ==
          "{\"level\":\"error\",\"msg\":\"nsegress-runtime: bad "
          "\\\"x\\\"\",\"time\":\"1970-01-01T00:00:00Z\"}\n");
    CHECK(runtime_log_line("text", "m", 0) ==
          "time=\"1970-01-01T00:00:00Z\" level=error msg=\"m\"\n");
}

TEST_CASE(
    "hook plan: io.nsegress.allow narrows an allow-list from the arguments, never widens it") {
    OciState st;
    st.pid = 42;
    HookArgs args;
    args.allow = {parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")};
    args.allow_given = true;
    st.annotations[kAnnotationAllow] = "192.168.1.10, 0.0.0.0/0, 10.0.0.0/8";
    auto p = hook_plan(st, args);
    REQUIRE(p);
    // 0.0.0.0/0 cannot widen; 10.0.0.0/8 is outside; the IPv6 network is not in the annotation.
    REQUIRE(p->allow.size() == 1);
    CHECK(p->allow[0].str() == "192.168.1.0/24");
    st.annotations[kAnnotationAllow] = "192.168.1.10";
    p = hook_plan(st, args);
    REQUIRE(p->allow.size() == 1);
    CHECK(p->allow[0].str() == "192.168.1.10/32");
    st.annotations[kAnnotationAllow] = "10.0.0.0/8";
    p = hook_plan(st, args);
    REQUIRE(p);
    CHECK(p->allow.empty());  // narrowed to nothing: everything refused, not "no policy"
    st.annotations[kAnnotationAllow] = "300.1.1.1";
    CHECK_THROWS_AS(hook_plan(st, args), Error);
    // An empty allow-file given as an argument refuses everything (it is not "no policy").
    HookArgs empty;
    empty.allow_given = true;
    st.annotations.erase(kAnnotationAllow);
    p = hook_plan(st, empty);
    REQUIRE(p);
    CHECK(p->allow.empty());
    CHECK_FALSE(p->audit);
}

TEST_CASE("intersect_allow: exact, across ranges that are not prefixes") {
    auto c = [](const char* s) { return parse_cidr(s); };
    auto strs = [](const auto& v) {
        std::vector<std::string> out;
        for (const auto& x : v) out.push_back(x.str());
        return out;
    };
    CHECK(strs(intersect_allow({c("10.0.0.0/8")}, {c("10.1.0.0/16"), c("10.2.3.4")})) ==
          V{"10.1.0.0/16", "10.2.3.4/32"});
    CHECK(strs(intersect_allow({c("10.0.0.0/24"), c("10.0.1.0/24")},
                               {c("10.0.0.128/25"), c("10.0.1.0/25")})) ==
          V{"10.0.0.128/25", "10.0.1.0/25"});
    CHECK(strs(intersect_allow({c("10.0.0.0/8")}, {c("::/0")})).empty());
    CHECK(strs(intersect_allow({c("::/0")}, {c("2001:db8::/32")})) == V{"2001:db8::/32"});
    CHECK(intersect_allow({}, {c("0.0.0.0/0")}).empty());
}
