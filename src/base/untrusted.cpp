#include "nsegress/untrusted.hpp"

#include <algorithm>

namespace nsegress {

using nlohmann::json;

std::string printable(std::string_view text, std::size_t max) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    std::size_t n = std::min(text.size(), max);
    for (std::size_t i = 0; i < n; ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        switch (c) {
            case '\n':
                out += "\\n";
                continue;
            case '\r':
                out += "\\r";
                continue;
            case '\t':
                out += "\\t";
                continue;
            case '\\':
                out += "\\\\";
                continue;
            default:
                break;
        }
        if (c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (text.size() > max) out += "...";
    return out;
}

std::string quote(std::string_view text, std::size_t max) {
    return "'" + printable(text, max) + "'";
}

JsonProblem parse_untrusted_json(std::string_view text, json& out) {
    bool too_deep = false;
    // Returning false at the start of a too-deep array or object discards it, so the parser
    // never builds the deep part (the parse itself is iterative and does not recurse).
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json&) {
        if ((event == json::parse_event_t::object_start ||
             event == json::parse_event_t::array_start) &&
            depth > kMaxJsonDepth) {
            too_deep = true;
            return false;
        }
        return true;
    };
    json j = json::parse(text, cb, /*allow_exceptions=*/false);
    if (j.is_discarded()) return too_deep ? JsonProblem::too_deep : JsonProblem::invalid;
    if (too_deep) return JsonProblem::too_deep;
    out = std::move(j);
    return JsonProblem::none;
}

std::string dump_json(const json& doc, int indent) {
    return doc.dump(indent, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

}  // namespace nsegress
