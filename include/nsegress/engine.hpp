// --container NAME: ask the container engine's CLI for the container's PID.
//
// Docker has no hook mechanism, so "restrict after docker run" is the Docker recipe; this saves
// the `docker inspect` step. The CLI is run directly (no shell) with the caller's environment,
// so DOCKER_HOST / CONTAINER_HOST select the daemon as they do for the user.
#pragma once

#include <optional>
#include <string>

#include "nsegress/netns.hpp"

namespace nsegress {

enum class Engine { docker, podman };

std::optional<Engine> parse_engine(const std::string& name);  // "docker" / "podman"

// Fills spec.pid from spec.container. Without an engine: docker, then podman, whichever
// answers. Exit::failed with a clear message when the container does not exist or does not run.
void resolve_container(TargetSpec& spec, std::optional<Engine> engine);

// The engine's HostConfig.NetworkMode of a container ("host", "container:ID", "bridge", ...),
// nullopt when no engine answers.
std::optional<std::string> container_network_mode(const std::string& name,
                                                  std::optional<Engine> engine);

// What `docker info` says about the daemon (the one DOCKER_HOST selects).
struct DaemonInfo {
    std::string root_dir;          // DockerRootDir: <data-root>/<uid>.<gid> under userns-remap
    std::string security_options;  // as JSON text
    bool userns_remap = false;     // "name=userns" among them
};
std::optional<DaemonInfo> docker_daemon_info();

// Parses `inspect --format '{{.State.Pid}} {{.State.Running}}'` output; exposed for tests.
// Throws Error(Exit::failed) naming the container when it is not running.
pid_t parse_inspect_output(const std::string& name, const std::string& out);

}  // namespace nsegress
