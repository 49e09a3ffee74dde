// Human-readable rendering of the commands' JSON documents.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace nsegress {

std::string render_human(const nlohmann::json& doc);
// One line for a watch event ("attempt" or "lost"); empty for other events.
std::string render_watch_event(const nlohmann::json& event);

}  // namespace nsegress
