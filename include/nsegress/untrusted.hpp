// Helpers for text that comes from outside: command-line values, allow-files, the OCI state,
// CNI netconf, container names, paths.
//
// Such text ends up in error messages (one line on a hook's stderr, a --json document) and in
// JSON that is parsed and printed again. Two things must hold whatever it contains: an error
// stays one printable line, and no input can exhaust the stack of a recursive JSON operation
// (nlohmann's copy and dump recurse once per nesting level).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nsegress {

// `text` in single quotes for an error message: control characters, DEL, bytes >= 0x80 and the
// backslash itself are escaped (\n, \xff, \\), and anything past `max` bytes
// is cut and marked with "...". The result is one line of printable ASCII.
std::string quote(std::string_view text, std::size_t max = 200);
// The same without the quotes (for "file:line:" prefixes).
std::string printable(std::string_view text, std::size_t max = 200);

// Deeper JSON than this is refused. OCI states and CNI netconfs nest a handful of levels.
inline constexpr int kMaxJsonDepth = 64;

enum class JsonProblem { none, invalid, too_deep };

// Parses untrusted JSON into `out` without exceptions; nesting deeper than kMaxJsonDepth is
// refused (and not even built).
JsonProblem parse_untrusted_json(std::string_view text, nlohmann::json& out);

// The document as text, never throwing: invalid UTF-8 that reached a string (a path, an error
// quoting raw input) is replaced by U+FFFD instead of aborting the output. indent as dump().
std::string dump_json(const nlohmann::json& doc, int indent = -1);

}  // namespace nsegress
