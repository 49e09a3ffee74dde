// nsegress-runtime: an OCI runtime wrapper (for dockerd, which has no hook API).
//
// dockerd runs a registered runtime as `PATH RUNTIME-ARGS... RUNC-GLOBALS... SUBCOMMAND ARGS...`.
// The wrapper takes its own options from the front (the `hook` policy options, --runtime,
// --nsegress, --hook-timeout), and execs the real runtime with the rest, untouched. On `create`,
// `run` and `restore` it first adds a createRuntime hook `nsegress hook POLICY...` to the
// bundle's config.json (replacing one it added before: idempotent), written atomically. Every
// other subcommand passes straight through.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nsegress {

// The marker in the env of the hook this wrapper adds: how a second pass finds it.
inline constexpr const char* kRuntimeHookMarker = "NSEGRESS_HOOK_BY=nsegress-runtime";
inline constexpr std::size_t kMaxBundleConfig = 64u << 20;  // larger config.json is refused

struct RuntimePolicy {
    std::vector<std::string> allow;        // as given (validated by validate_policy)
    std::vector<std::string> allow_files;  // absolute paths
    std::vector<std::string> probe_reach, probe_block;
    std::vector<std::string> resolvers;  // --resolver: passed on to the hook
    bool route_set = true;
    bool netdev_egress = false;
    bool audit = false;
    std::string runtime;    // --runtime: the real runtime (absolute); empty: find runc
    std::string nsegress;   // --nsegress: the hook binary (absolute); empty: next to the wrapper
    int hook_timeout = 10;  // seconds
};

struct RuntimeCall {
    RuntimePolicy policy;
    std::vector<std::string> rest;  // what the real runtime gets (argv[1..])
    // Found in `rest`: the subcommand (empty if none), the global --log and --log-format
    // (where runc, and so this wrapper, reports errors to containerd), and for create/run/restore
    // the bundle (--bundle/-b; empty: the current directory).
    std::string subcommand;
    std::string log_path, log_format;
    std::string bundle;
    bool edits_bundle() const {
        return subcommand == "create" || subcommand == "run" || subcommand == "restore";
    }
};

// Splits the wrapper's argv[1..]. The wrapper's options come first (any order, `--opt V` or
// `--opt=V`); the first argument that is not one of them, or a `--` (dropped), ends them.
// Error(Exit::usage) for a wrapper option without its value or a relative path.
RuntimeCall split_runtime_args(const std::vector<std::string>& argv);

// Checks what the hook would refuse later (CIDRs, IPs, allow-files readable and valid), and
// that there is a policy at all. Error(Exit::usage) with one line.
void validate_policy(const RuntimePolicy& p);

// The hook entry for config.json's hooks.createRuntime.
nlohmann::ordered_json runtime_hook_entry(const RuntimePolicy& p, const std::string& nsegress_path);

// Adds `entry` to config["hooks"]["createRuntime"], after removing any hook that carries the
// marker (a second pass replaces instead of adding). Everything else stays as it was.
void add_runtime_hook(nlohmann::ordered_json& config, const nlohmann::ordered_json& entry);

// The same on config.json's text: parse (bounded depth), edit, serialize.
std::string edit_config_text(std::string_view text, const nlohmann::ordered_json& entry);

// Reads BUNDLE/config.json, edits it, writes it back atomically (a temporary file in the same
// directory, same mode and owner, rename). Error(Exit::failed) naming the file.
void edit_bundle_config(const std::string& bundle, const nlohmann::ordered_json& entry);

// One line in the format of runc's --log (json: {"level":"error","msg":...,"time":...}), which
// containerd reads back for its error message.
std::string runtime_log_line(const std::string& format, const std::string& msg,
                             long long unix_seconds);

}  // namespace nsegress
