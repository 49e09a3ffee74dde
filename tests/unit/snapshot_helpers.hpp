#pragma once
// Building namespace snapshots by hand for unit tests (test_routeset.cpp, test_restrict_plan.cpp).

#include <linux/rtnetlink.h>

#include <cstdint>

#include "nsegress/cidr.hpp"
#include "nsegress/inspect.hpp"

namespace nsegress::test {

// A route as rtnetlink reports it: through `gw` (universe scope) or on-link (link scope).
inline Route route(const char* dst, const char* gw, int oif, std::uint32_t metric = 0,
                   std::uint32_t table = RT_TABLE_MAIN, std::uint8_t type = RTN_UNICAST) {
    Route r;
    r.dst = parse_cidr(dst);
    r.family = r.dst.addr.family;
    if (gw) r.gateway = parse_ip(gw);
    r.oif = oif;
    r.metric = metric;
    r.table = table;
    r.type = type;
    r.scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    return r;
}

}  // namespace nsegress::test
