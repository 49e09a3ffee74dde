#pragma once
// Shared by the unit tests of the allow-entry grammar (test_policy.cpp, test_names.cpp).

#include <doctest/doctest.h>

#include <string>

#include "nsegress/error.hpp"
#include "nsegress/policy.hpp"

namespace nsegress::test {

// The error an entry is refused with (a usage error, exit 1); empty when it is accepted.
inline std::string entry_error(const char* text) {
    try {
        parse_allow_entry(text);
    } catch (const Error& e) {
        CHECK(e.exit_code() == Exit::usage);
        return e.what();
    }
    return "";
}

}  // namespace nsegress::test
