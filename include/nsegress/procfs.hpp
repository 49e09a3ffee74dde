// Small /proc readers shared by the target guard and verify, and the one file nsegress writes
// (verify --junit). Every fd is opened close-on-exec.
#pragma once

#include <optional>
#include <string>

namespace nsegress {

// The whole file, or nothing when it cannot be opened (gone, or not ours to read).
std::optional<std::string> read_text_file(const std::string& path);

// Creates or truncates `path` (0644, close-on-exec) and writes `text`; false on any failure.
bool write_text_file(const std::string& path, const std::string& text);

// The value of "Key:\tvalue" in /proc/PID/status text, trimmed; empty when absent.
std::string status_field(const std::string& status_text, const std::string& key);

}  // namespace nsegress
