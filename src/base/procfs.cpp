#include "nsegress/procfs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "nsegress/fd.hpp"

namespace nsegress {

std::optional<std::string> read_text_file(const std::string& path) {
    // Not std::ifstream: it opens without O_CLOEXEC, and every fd of ours must have it.
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) return std::nullopt;
    std::string text;
    char buf[4096];
    while (true) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return std::nullopt;
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    return text;
}

bool write_text_file(const std::string& path, const std::string& text) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644));
    if (!fd) return false;
    std::size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return ::close(fd.release()) == 0;
}

std::string status_field(const std::string& status_text, const std::string& key) {
    std::istringstream in(status_text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(key + ":", 0) != 0) continue;
        auto v = line.substr(key.size() + 1);
        auto b = v.find_first_not_of(" \t");
        auto e = v.find_last_not_of(" \t\r");
        return b == std::string::npos ? "" : v.substr(b, e - b + 1);
    }
    return {};
}

namespace {

std::string read_all(const Fd& fd) {
    std::string text;
    char buf[8192];
    ssize_t n;
    off_t off = 0;
    while ((n = ::pread(fd.get(), buf, sizeof buf, off)) > 0) {
        text.append(buf, static_cast<std::size_t>(n));
        off += n;
    }
    return text;
}

std::optional<std::uint64_t> to_u64(const std::string& v) {
    try {
        std::size_t used = 0;
        std::uint64_t out = std::stoull(v, &used);
        if (used == v.size()) return out;
    } catch (const std::exception&) {
    }
    return std::nullopt;
}

}  // namespace

std::optional<std::uint64_t> snmp_pair_value(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string header;
    while (std::getline(in, header)) {
        std::string values;
        if (!std::getline(in, values)) break;
        if (header.rfind("Ip: ", 0) != 0) continue;
        std::istringstream hs(header), vs(values);
        std::string h, v;
        while (hs >> h && vs >> v)
            if (h == key) return to_u64(v);
    }
    return std::nullopt;
}

std::optional<std::uint64_t> snmp6_value(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string k, v;
        if (ls >> k >> v && k == key) return to_u64(v);
    }
    return std::nullopt;
}

NetSnmp NetSnmp::open_here() {
    NetSnmp s;
    s.snmp_ = Fd(::open("/proc/thread-self/net/snmp", O_RDONLY | O_CLOEXEC));
    s.snmp6_ = Fd(::open("/proc/thread-self/net/snmp6", O_RDONLY | O_CLOEXEC));
    return s;
}

NoRouteCounters NetSnmp::out_no_routes() const {
    NoRouteCounters c;
    if (snmp_) c.ipv4 = snmp_pair_value(read_all(snmp_), "OutNoRoutes");
    if (snmp6_) c.ipv6 = snmp6_value(read_all(snmp6_), "Ip6OutNoRoutes");
    return c;
}

}  // namespace nsegress
