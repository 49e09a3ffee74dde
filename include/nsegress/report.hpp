// Human-readable rendering of the commands' JSON documents.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace nsegress {

std::string render_human(const nlohmann::json& doc);

}  // namespace nsegress
