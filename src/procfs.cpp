#include "nsegress/procfs.hpp"

#include <fstream>
#include <sstream>

namespace nsegress {

std::optional<std::string> read_text_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
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
