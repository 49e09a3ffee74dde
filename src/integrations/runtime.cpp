#include "nsegress/runtime.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "nsegress/cidr.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/error.hpp"
#include "nsegress/fd.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

using nlohmann::ordered_json;

namespace {

// "--name=value" / "-name=value" / "--name" / "-name" -> name (without dashes), inline value.
struct Flag {
    std::string_view name;
    std::optional<std::string_view> value;
};

std::optional<Flag> as_flag(std::string_view a) {
    if (a.size() < 2 || a[0] != '-') return std::nullopt;
    a.remove_prefix(a[1] == '-' ? 2 : 1);
    if (a.empty()) return std::nullopt;  // "--"
    Flag f;
    if (auto eq = a.find('='); eq != std::string_view::npos) {
        f.name = a.substr(0, eq);
        f.value = a.substr(eq + 1);
    } else {
        f.name = a;
    }
    return f;
}

bool one_of(std::string_view s, std::initializer_list<std::string_view> set) {
    return std::find(set.begin(), set.end(), s) != set.end();
}

// runc's global options that take a value (runc 1.1; crun's are a subset of these forms).
// runc's global options that take a value (runc 1.1), and crun's.
bool global_takes_value(std::string_view name) {
    return one_of(name,
                  {"log", "log-format", "root", "criu", "rootless", "cgroup-manager", "log-level"});
}

// The subcommands of runc and crun.
bool known_subcommand(std::string_view s) {
    return one_of(s, {"checkpoint", "create", "delete", "events", "exec",    "features", "init",
                      "kill",       "list",   "pause",  "ps",     "restore", "resume",   "run",
                      "spec",       "start",  "state",  "update", "help",    "h",        "mounts"});
}
// Options of create, run and restore that take a value (so that a value is not taken for the
// container id, and a value that looks like --bundle is not taken for one).
bool sub_takes_value(std::string_view name) {
    return one_of(name, {"bundle", "b", "console-socket", "pid-file", "preserve-fds", "image-path",
                         "work-path", "parent-path", "manage-cgroups-mode", "empty-ns",
                         "lsm-profile", "lsm-mount-context"});
}

}  // namespace

RuntimeCall split_runtime_args(const std::vector<std::string>& argv) {
    RuntimeCall call;
    RuntimePolicy& p = call.policy;
    std::size_t i = 0;
    for (; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a.rfind("--", 0) != 0) break;
        auto f = as_flag(a);
        if (!f) break;
        const bool takes_value =
            one_of(f->name, {"allow", "allow-file", "probe-reach", "probe-block", "resolver",
                             "runtime", "nsegress", "hook-timeout"});
        const bool is_switch = one_of(f->name, {"no-route-set", "netdev-egress", "audit"});
        if (!takes_value && !is_switch) break;  // not ours: the real runtime's arguments start here
        if (is_switch) {
            if (f->value) throw_usage(fmt::format("--{} takes no value", f->name));
            if (f->name == "no-route-set")
                p.route_set = false;
            else if (f->name == "netdev-egress")
                p.netdev_egress = true;
            else
                p.audit = true;
            continue;
        }
        std::string value;
        if (f->value) {
            value = std::string(*f->value);
        } else if (i + 1 < argv.size()) {
            value = argv[++i];
        } else {
            throw_usage(fmt::format("--{} needs a value", f->name));
        }
        if (f->name == "allow") {
            p.allow.push_back(value);
        } else if (f->name == "allow-file" || f->name == "runtime" || f->name == "nsegress") {
            // The wrapper runs with the shim's working directory (the bundle): no relative paths.
            if (value.empty() || value[0] != '/')
                throw_usage(
                    fmt::format("--{}: {} must be an absolute path", f->name, quote(value)));
            if (f->name == "allow-file")
                p.allow_files.push_back(value);
            else if (f->name == "runtime")
                p.runtime = value;
            else
                p.nsegress = value;
        } else if (f->name == "probe-reach") {
            p.probe_reach.push_back(value);
        } else if (f->name == "probe-block") {
            p.probe_block.push_back(value);
        } else if (f->name == "resolver") {
            p.resolvers.push_back(value);
        } else {  // hook-timeout
            int v = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
            if (value.empty() || ec != std::errc() || end != value.data() + value.size() || v < 1 ||
                v > 3600)
                throw_usage("--hook-timeout: " + quote(value) +
                            " must be a whole number of seconds from 1 to 3600");
            p.hook_timeout = v;
        }
    }
    call.rest.assign(argv.begin() + static_cast<std::ptrdiff_t>(i), argv.end());

    // The real runtime's global options, then its subcommand.
    const auto& r = call.rest;
    std::size_t j = 0;
    for (; j < r.size(); ++j) {
        if (r[j] == "--") {
            ++j;
            break;
        }
        auto f = as_flag(r[j]);
        if (!f) break;
        std::string value;
        if (global_takes_value(f->name)) {
            if (f->value)
                value = std::string(*f->value);
            else if (j + 1 < r.size())
                value = r[++j];
        }
        if (f->name == "log") call.log_path = value;
        if (f->name == "log-format") call.log_format = value;
    }
    if (j < r.size()) call.subcommand = r[j];
    // An option the wrapper does not know that takes a value would make its value look like
    // the subcommand, and a `create` behind it would run without the hook: refuse to guess.
    if (!call.subcommand.empty() && !known_subcommand(call.subcommand)) {
        for (std::size_t k = j + 1; k < r.size(); ++k)
            if (r[k] == "create" || r[k] == "run" || r[k] == "restore")
                throw_usage(fmt::format(
                    "cannot tell the runtime's subcommand: {} is not one, and {} follows "
                    "(an option of the real runtime that takes a value?)",
                    quote(call.subcommand), quote(r[k])));
    }
    if (!call.edits_bundle()) return call;

    // The bundle: the last --bundle/-b wins (Go's flag package; urfave/cli also takes options
    // after the container id).
    for (std::size_t k = j + 1; k < r.size(); ++k) {
        if (r[k] == "--") break;
        auto f = as_flag(r[k]);
        if (!f || !sub_takes_value(f->name)) continue;
        std::string value;
        if (f->value)
            value = std::string(*f->value);
        else if (k + 1 < r.size())
            value = r[++k];
        if (f->name == "bundle" || f->name == "b") call.bundle = value;
    }
    return call;
}

void validate_policy(const RuntimePolicy& p) {
    if (p.allow.empty() && p.allow_files.empty() && !p.audit)
        throw_usage(
            "no policy: give --allow ENTRY, --allow-file FILE or --audit in the runtime's "
            "runtimeArgs");
    for (const auto& a : p.allow)  // one entry of the grammar (policy.hpp) per --allow
        in_context("--allow", [&] { return parse_allow_entry(a); });
    for (const auto& f : p.allow_files) read_allow_entries_file(f);
    for (const auto* list : {&p.probe_reach, &p.probe_block, &p.resolvers}) {
        for (const auto& ip : *list)
            in_context(list == &p.probe_reach   ? "--probe-reach"
                       : list == &p.probe_block ? "--probe-block"
                                                : "--resolver",
                       [&] { return parse_ip(ip); });
    }
}

ordered_json runtime_hook_entry(const RuntimePolicy& p, const std::string& nsegress_path) {
    ordered_json args = ordered_json::array({"nsegress", "hook"});
    for (const auto& a : p.allow) {
        args.push_back("--allow");
        args.push_back(parse_allow_entry(a).str());  // normalized, one argument per entry
    }
    for (const auto& f : p.allow_files) {
        args.push_back("--allow-file");
        args.push_back(f);
    }
    for (const auto& ip : p.probe_reach) {
        args.push_back("--probe-reach");
        args.push_back(parse_ip(ip).str());
    }
    for (const auto& ip : p.probe_block) {
        args.push_back("--probe-block");
        args.push_back(parse_ip(ip).str());
    }
    for (const auto& ip : p.resolvers) {
        args.push_back("--resolver");
        args.push_back(parse_ip(ip).str());
    }
    if (!p.route_set) args.push_back("--no-route-set");
    if (p.netdev_egress) args.push_back("--netdev-egress");
    if (p.audit) args.push_back("--audit");
    ordered_json e;
    e["path"] = nsegress_path;
    e["args"] = std::move(args);
    e["env"] = ordered_json::array({kRuntimeHookMarker});
    e["timeout"] = p.hook_timeout;
    return e;
}

void add_runtime_hook(ordered_json& config, const ordered_json& entry) {
    if (!config.is_object()) throw_failed("config.json is not a JSON object");
    auto& hooks = config["hooks"];
    if (hooks.is_null()) hooks = ordered_json::object();
    if (!hooks.is_object()) throw_failed("config.json: 'hooks' is not an object");
    auto& stage = hooks["createRuntime"];
    if (stage.is_null()) stage = ordered_json::array();
    if (!stage.is_array()) throw_failed("config.json: 'hooks.createRuntime' is not an array");
    auto ours = [](const ordered_json& h) {
        if (!h.is_object()) return false;
        auto env = h.find("env");
        if (env == h.end() || !env->is_array()) return false;
        return std::any_of(env->begin(), env->end(), [](const ordered_json& v) {
            return v.is_string() && v.get<std::string>() == kRuntimeHookMarker;
        });
    };
    ordered_json kept = ordered_json::array();
    for (auto& h : stage)
        if (!ours(h)) kept.push_back(std::move(h));
    kept.push_back(entry);
    stage = std::move(kept);
}

std::string edit_config_text(std::string_view text, const ordered_json& entry) {
    if (text.size() > kMaxBundleConfig)
        throw_failed(fmt::format("config.json is larger than {} bytes", kMaxBundleConfig));
    bool too_deep = false;
    ordered_json::parser_callback_t cb = [&](int depth, ordered_json::parse_event_t event,
                                             ordered_json&) {
        if ((event == ordered_json::parse_event_t::object_start ||
             event == ordered_json::parse_event_t::array_start) &&
            depth > kMaxJsonDepth) {
            too_deep = true;
            return false;
        }
        return true;
    };
    ordered_json config = ordered_json::parse(text, cb, /*allow_exceptions=*/false);
    if (too_deep)
        throw_failed(fmt::format("config.json nests deeper than {} levels", kMaxJsonDepth));
    if (config.is_discarded()) throw_failed("config.json is not valid JSON");
    add_runtime_hook(config, entry);
    return config.dump(-1, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
}

void edit_bundle_config(const std::string& bundle, const ordered_json& entry) {
    const std::string dir = bundle.empty() ? std::string(".") : bundle;
    const std::string path = dir + "/config.json";
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_errno("open " + quote(path), errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        throw_failed(quote(path) + " is not a regular file");
    }
    std::string text;
    char buf[65536];
    while (text.size() <= kMaxBundleConfig) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int err = errno;
            throw_errno("read " + quote(path), err);
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    fd.reset();
    std::string out;
    try {
        out = edit_config_text(text, entry);
    } catch (const Error& e) {
        throw e.in(quote(path), Exit::failed);
    }

    std::string tmp = dir + "/.config.json.nsegress-XXXXXX";
    Fd t(::mkostemp(tmp.data(), O_CLOEXEC));
    if (!t) throw_errno("create a temporary file in " + quote(dir), errno);
    auto fail = [&](const std::string& what, int err) {
        t.reset();
        ::unlink(tmp.c_str());
        throw_errno(what, err);
    };
    std::size_t off = 0;
    while (off < out.size()) {
        ssize_t n = ::write(t.get(), out.data() + off, out.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("write " + quote(tmp), errno);
        off += static_cast<std::size_t>(n);
    }
    if (::fchmod(t.get(), st.st_mode & 07777) != 0) fail("chmod " + quote(tmp), errno);
    if ((st.st_uid != ::geteuid() || st.st_gid != ::getegid()) &&
        ::fchown(t.get(), st.st_uid, st.st_gid) != 0)
        fail("chown " + quote(tmp), errno);
    // No fsync: the rename is what makes the edit atomic for runc, which reads the file next.
    // A bundle does not outlive a crash of the host in any useful way (containerd keeps it on
    // tmpfs, /run), and a file cut short by one would not parse: runc refuses it, fail closed.
    if (::close(t.release()) != 0) {  // a failed close is a failed write
        int err = errno;
        ::unlink(tmp.c_str());
        throw_errno("close " + quote(tmp), err);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw_errno("rename " + quote(tmp) + " to " + quote(path), err);
    }
}

std::string runtime_log_line(const std::string& format, const std::string& msg,
                             long long unix_seconds) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (format == "json") {
        ordered_json line;
        line["level"] = "error";
        line["msg"] = msg;
        line["time"] = when;
        return line.dump(-1, ' ', false, ordered_json::error_handler_t::replace) + "\n";
    }
    // logrus's text format, as runc writes it without --log-format json.
    return fmt::format(
        "time=\"{}\" level=error msg={}\n", when,
        nlohmann::json(msg).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace nsegress
