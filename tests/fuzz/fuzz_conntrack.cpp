// ctnetlink dump replies: the original tuple of each flow, and the decision to drop it.
// Flows are what the namespace's processes (and their peers) made.
#include "fuzz_common.hpp"

#include "nsegress/conntrack.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const AllowList allow(
        std::vector<Cidr>{parse_cidr("192.168.1.0/24"), parse_cidr("2001:db8:1::/64")});
    static const std::vector<IpAddr> local{parse_ip("172.31.0.2"), parse_ip("fd00:31::2"),
                                           parse_ip("127.0.0.1")};
    fuzz::for_each_message({data, size}, [&](const nlmsghdr* nlh) {
        auto t = parse_conntrack_message(nlh);
        if (!t) return;
        bool doomed = is_forbidden_flow(*t, allow, local);
        if (doomed)
            fuzz::check(!allow.contains(t->dst),
                        "a flow to an allowed destination would be dropped", t->dst.str());
    });
    return 0;
}
