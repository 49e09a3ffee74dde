#include "nsegress/procfs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace nsegress
