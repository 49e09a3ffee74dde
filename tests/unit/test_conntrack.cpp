#include <doctest/doctest.h>

#include "nsegress/conntrack.hpp"

using namespace nsegress;

TEST_CASE("only flows initiated from inside towards forbidden destinations are dropped") {
    AllowList allow({parse_cidr("192.168.1.0/24")});
    std::vector<IpAddr> local{parse_ip("172.31.0.2"), parse_ip("127.0.0.1"),
                              parse_ip("fd00:31::2")};
    auto flow = [](const char* s, const char* d) { return FlowTuple{parse_ip(s), parse_ip(d)}; };
    CHECK(is_forbidden_flow(flow("172.31.0.2", "198.51.100.10"), allow, local));
    CHECK(is_forbidden_flow(flow("fd00:31::2", "2001:db8:2::10"), allow, local));
    CHECK_FALSE(is_forbidden_flow(flow("172.31.0.2", "192.168.1.10"), allow, local));   // allowed
    CHECK_FALSE(is_forbidden_flow(flow("198.51.100.10", "172.31.0.2"), allow, local));  // inbound
    CHECK_FALSE(is_forbidden_flow(flow("127.0.0.1", "127.0.0.1"), allow, local));       // loopback
    CHECK_FALSE(is_forbidden_flow(flow("172.31.0.2", "172.31.0.2"), allow, local));     // to self
}
