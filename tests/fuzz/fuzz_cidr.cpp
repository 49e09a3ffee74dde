// CIDR and IP parsing (--allow, --probe-*, allow-file lines, annotations, CNI netconf).
// Properties: whatever parses prints back to itself; whatever is refused is a usage error in
// one printable line.
#include "fuzz_common.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto text = fuzz::text_of(data, size);

    if (auto a = IpAddr::parse(text)) {
        auto again = IpAddr::parse(a->str());
        fuzz::check(again && *again == *a, "IpAddr does not print back to itself", a->str());
        fuzz::check(IpAddr::from_bytes(a->family, a->bytes().data()) == *a,
                    "IpAddr bytes round trip");
    }
    try {
        IpAddr a = parse_ip(text);
        fuzz::check(a.value <= (a.family == Family::v4 ? u128{0xffffffffu} : ~u128{0}),
                    "IPv4 over 32 bits");
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::usage);
    }
    try {
        Cidr c = parse_cidr(text);
        fuzz::check(c.prefix <= bits_of(c.addr.family), "prefix longer than the family", c.str());
        fuzz::check(parse_cidr(c.str()) == c, "CIDR does not print back to itself", c.str());
        fuzz::check(c.first() <= c.last() && c.contains(c.first()) && c.contains(c.last()),
                    "CIDR does not contain its own ends", c.str());
        auto cover = Range{c.first(), c.last()}.to_cidrs();
        fuzz::check(cover.size() == 1 && cover[0] == c, "a CIDR's range is not that CIDR", c.str());
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::usage);
    }
    return 0;
}
