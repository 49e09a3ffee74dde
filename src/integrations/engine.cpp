#include "nsegress/engine.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "nsegress/error.hpp"
#include "nsegress/untrusted.hpp"

extern char** environ;

namespace nsegress {

namespace {

const char* cli_name(Engine e) { return e == Engine::docker ? "docker" : "podman"; }

struct Run {
    bool spawned = false;  // false: the CLI is not installed
    int status = -1;       // exit status, -1 when killed or timed out
    std::string out, err;
};

// Runs argv with stdout/stderr captured, for at most timeout_ms. No shell, no stdin.
Run run(const std::vector<std::string>& argv, int timeout_ms) {
    Run r;
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe", errno);
    Fd out_r(out[0]), out_w(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) throw_errno("pipe", errno);
    Fd err_r(err[0]), err_w(err[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
    // Ours are all close-on-exec; this also keeps from the child whatever our own caller left
    // open without it (a runtime's descriptors, a shell's): the CLI gets 0, 1 and 2, nothing else.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    out_w.reset();
    err_w.reset();
    if (rc == ENOENT) return r;
    if (rc != 0) throw_errno("run " + argv[0], rc);
    r.spawned = true;

    timespec start{};
    clock_gettime(CLOCK_MONOTONIC, &start);
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
        timespec now{};
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= timeout_ms) {
            ::kill(pid, SIGKILL);
            break;
        }
        if (::poll(fds, 2, static_cast<int>(timeout_ms - elapsed)) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                std::string& dst = i == 0 ? r.out : r.err;
                if (dst.size() < 65536) dst.append(buf, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

std::string first_line(const std::string& s) {
    auto end = s.find('\n');
    std::string line = s.substr(0, end);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    return line;
}

// sudo resets the environment: a DOCKER_HOST (rootless docker, a remote daemon) does not reach
// us, and docker asks the default daemon, which does not know the container.
std::string sudo_hint() {
    if (!std::getenv("SUDO_USER") || std::getenv("DOCKER_HOST")) return {};
    return "; run by sudo, which drops DOCKER_HOST: for a container of another daemon use "
           "'sudo -E' or a docker context of root's ('sudo docker context use NAME')";
}

}  // namespace

std::optional<Engine> parse_engine(const std::string& name) {
    if (name == "docker") return Engine::docker;
    if (name == "podman") return Engine::podman;
    return std::nullopt;
}

pid_t parse_inspect_output(const std::string& name, const std::string& out) {
    std::istringstream in(out);
    long long pid = -1;
    std::string running;
    if (!(in >> pid >> running))
        throw_failed("container " + quote(name) + ": unexpected inspect output " +
                     quote(first_line(out)));
    if (running != "true" || pid <= 0) throw_failed("container " + quote(name) + " is not running");
    if (pid == 1)
        throw_failed("container " + quote(name) +
                     " reports PID 1: refusing (that is the host's init)");
    // Checked before the narrowing cast: 4294967297 would otherwise become PID 1.
    if (pid > 4194304)  // PID_MAX_LIMIT
        throw_failed("container " + quote(name) + ": inspect reports PID " + std::to_string(pid) +
                     ", larger than any PID");
    return static_cast<pid_t>(pid);
}

void resolve_container(TargetSpec& spec, std::optional<Engine> engine) {
    if (!spec.container) return;
    const std::string& name = *spec.container;
    if (name.empty() || name.front() == '-')
        throw_usage("--container: invalid name " + quote(name));
    std::vector<Engine> order =
        engine ? std::vector<Engine>{*engine} : std::vector<Engine>{Engine::docker, Engine::podman};
    std::string failures;
    auto note = [&](Engine e, const std::string& why) {
        failures += std::string(failures.empty() ? "" : "; ") + cli_name(e) + ": " + why;
    };
    for (Engine e : order) {
        // podman run by a non-root user is rootless podman: even `inspect` creates its state
        // (~/.local/share/containers, a `podman pause` process that stays). nsegress needs root
        // anyway (the caller checks the privileges first); it never starts that state.
        if (e == Engine::podman && ::geteuid() != 0) {
            note(e,
                 "not asked: as a non-root user it would start rootless podman state "
                 "(run nsegress as root)");
            continue;
        }
        Run r = run({cli_name(e), "inspect", "--type", "container", "--format",
                     "{{.State.Pid}} {{.State.Running}}", "--", name},
                    10000);
        if (!r.spawned) {
            note(e, "not installed");
            continue;
        }
        if (r.status == 0) {
            spec.pid = parse_inspect_output(name, r.out);
            return;
        }
        std::string why = first_line(r.err.empty() ? r.out : r.err);
        if (r.status < 0) why = "timed out";
        // The daemon answered: the container does not exist. That is the answer (asking podman
        // too cost 300 ms and gave a mixed message); --engine podman asks podman instead.
        if (e == Engine::docker && why.find("No such container") != std::string::npos)
            throw_failed("no such container " + quote(name) + " (docker: " + printable(why, 500) +
                         ")" + (engine ? "" : "; for a podman container give --engine podman") +
                         sudo_hint());
        note(e, why);
    }
    throw_failed("cannot resolve container " + quote(name) + " (" + printable(failures, 1000) +
                 ")" + sudo_hint());
}

std::optional<DaemonInfo> docker_daemon_info() {
    Run r =
        run({"docker", "info", "--format", "{{.DockerRootDir}}|{{json .SecurityOptions}}"}, 10000);
    if (!r.spawned || r.status != 0) return std::nullopt;
    std::string line = first_line(r.out);
    auto bar = line.find('|');
    if (bar == std::string::npos) return std::nullopt;
    DaemonInfo d;
    d.root_dir = line.substr(0, bar);
    d.security_options = line.substr(bar + 1);
    d.userns_remap = d.security_options.find("name=userns") != std::string::npos;
    return d;
}

std::optional<std::string> container_network_mode(const std::string& name,
                                                  std::optional<Engine> engine) {
    std::vector<Engine> order =
        engine ? std::vector<Engine>{*engine} : std::vector<Engine>{Engine::docker, Engine::podman};
    for (Engine e : order) {
        Run r = run({cli_name(e), "inspect", "--type", "container", "--format",
                     "{{.HostConfig.NetworkMode}}", "--", name},
                    10000);
        if (r.spawned && r.status == 0) return first_line(r.out);
    }
    return std::nullopt;
}

}  // namespace nsegress
