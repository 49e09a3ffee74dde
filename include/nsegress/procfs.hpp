// Small /proc readers shared by the target guard and verify, and the one file nsegress writes
// (verify --junit). Every fd is opened close-on-exec.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "nsegress/fd.hpp"

namespace nsegress {

// The whole file, or nothing when it cannot be opened (gone, or not ours to read).
std::optional<std::string> read_text_file(const std::string& path);

// Creates or truncates `path` (0644, close-on-exec) and writes `text`; false on any failure.
bool write_text_file(const std::string& path, const std::string& text);

// The value of "Key:\tvalue" in /proc/PID/status text, trimmed; empty when absent.
std::string status_field(const std::string& status_text, const std::string& key);

// The namespace's Ip OutNoRoutes / Ip6OutNoRoutes counters: locally generated traffic whose
// routing decision failed with ENETUNREACH (no route at all). Not what the route set refuses:
// its unreachable route fails with EHOSTUNREACH, which the kernel does not count. Namespace-wide.
struct NoRouteCounters {
    std::optional<std::uint64_t> ipv4, ipv6;
};

// /proc/thread-self/net/snmp{,6} opened by the calling thread: open it *inside* the target
// namespace (the files show the namespace of the thread at open time); reading later, from
// anywhere, still reads that namespace's counters.
class NetSnmp {
public:
    static NetSnmp open_here();
    NoRouteCounters out_no_routes() const;

private:
    Fd snmp_, snmp6_;
};

// Pure parsers of those files' text, for tests: "Ip: ..." header/value line pairs (snmp) and
// "Key value" lines (snmp6).
std::optional<std::uint64_t> snmp_pair_value(const std::string& text, const std::string& key);
std::optional<std::uint64_t> snmp6_value(const std::string& text, const std::string& key);

}  // namespace nsegress
