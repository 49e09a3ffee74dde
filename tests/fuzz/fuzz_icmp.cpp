// ICMP and ICMPv6 messages read by the probe's raw sockets: anything any host or router can send
// into the namespace. The first byte picks the family.
#include "fuzz_common.hpp"

#include "nsegress/icmp.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    Family f = data[0] & 1 ? Family::v6 : Family::v4;
    // An exact-size heap copy, so a read past the end is caught.
    std::vector<std::uint8_t> packet(data + 1, data + size);
    auto m = icmp::parse(f, packet);
    if (!m) return 0;
    fuzz::check(m->family == f, "message of the other family");
    if (m->kind == icmp::Kind::echo_reply) {
        fuzz::check(!m->quoted_dst, "an echo reply with a quoted destination");
    } else {
        fuzz::check(m->quoted_dst && m->quoted_dst->family == f,
                    "an error without a quoted destination");
        fuzz::check(!icmp::describe_error(*m).empty(), "empty error description");
        fuzz::check(icmp::concerns(*m, IpAddr{f, 7}, *m->quoted_dst, m->id),
                    "an error about our echo not recognised");
    }
    IpAddr other{f, 12345};
    if (m->kind == icmp::Kind::echo_reply)
        fuzz::check(!icmp::concerns(*m, other, IpAddr{f, 54321}, m->id),
                    "a reply from another host concerns us");
    return 0;
}
