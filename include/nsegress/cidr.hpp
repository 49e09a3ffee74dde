// Addresses, prefixes and the normalized allow-list.
//
// Everything here is pure: no I/O except parse_allow_file(). Addresses are kept as a 128-bit
// number per family so that merging, containment and interval ends are plain arithmetic.
#pragma once

#include <functional>

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nsegress {

enum class Family : std::uint8_t { v4 = 4, v6 = 6 };

using u128 = unsigned __int128;

int to_af(Family f);                // AF_INET / AF_INET6
unsigned bits_of(Family f);         // 32 / 128
const char* family_name(Family f);  // "IPv4" / "IPv6"

struct IpAddr {
    Family family = Family::v4;
    u128 value = 0;  // host order; IPv4 uses the low 32 bits

    static std::optional<IpAddr> parse(std::string_view text);
    static IpAddr from_bytes(Family f, const void* network_order);
    // 4 or 16 bytes in network order.
    std::array<std::uint8_t, 16> bytes() const;
    std::size_t size() const { return family == Family::v4 ? 4 : 16; }
    std::string str() const;
    auto operator<=>(const IpAddr&) const = default;
};

struct Cidr {
    IpAddr addr;  // the network address (host bits are zero)
    unsigned prefix = 0;

    IpAddr first() const { return addr; }
    IpAddr last() const;
    bool contains(const IpAddr& a) const;
    bool contains(const Cidr& c) const;
    std::string str() const;  // always "addr/prefix"
    auto operator<=>(const Cidr&) const = default;
};

// Parses "a.b.c.d/n", "x::y/n" or a bare address (a host: /32 or /128). Host bits set in the
// address are rejected: "192.168.1.5/24" is almost always a typo for one of two things.
// Throws Error(Exit::usage) naming the offending text.
Cidr parse_cidr(std::string_view text);
IpAddr parse_ip(std::string_view text);  // throws Error(Exit::usage)

// A closed interval [first, last] of one family.
struct Range {
    IpAddr first, last;
    std::optional<Cidr> as_cidr() const;  // when the range is exactly one prefix
    std::vector<Cidr> to_cidrs() const;   // the minimal prefix cover
    std::string str() const;              // "a/n" when a prefix, else "a-b"
    auto operator<=>(const Range&) const = default;
};

// The allow-list, normalized: per family, sorted, non-overlapping and with adjacent ranges
// coalesced (the kernel refuses overlapping intervals in an interval set).
class AllowList {
public:
    AllowList() = default;
    explicit AllowList(const std::vector<Cidr>& cidrs);
    // Bulk, from ranges of either family (sorted and merged in one pass per family).
    static AllowList from_ranges(std::vector<Range> ranges);
    // Bulk, from CIDRs handed over one at a time: `each(add)` calls add(cidr) for every one of
    // them, n4 and n6 of each family. No list of them is made first (10^5 CIDRs: 4.8 MiB).
    template <class Each>
    static AllowList from_each(std::size_t n4, std::size_t n6, Each&& each) {
        AllowList a;
        a.v4_.reserve(n4);
        a.v6_.reserve(n6);
        each([&a](const Cidr& c) {
            ++a.inputs_;
            (c.addr.family == Family::v4 ? a.v4_ : a.v6_).push_back(Range{c.first(), c.last()});
        });
        merge_sorted(a.v4_, Family::v4);
        merge_sorted(a.v6_, Family::v6);
        return a;
    }

    void add(const Cidr& c);
    void add(const Range& r);
    const std::vector<Range>& ranges(Family f) const { return f == Family::v4 ? v4_ : v6_; }
    bool empty() const { return v4_.empty() && v6_.empty(); }
    bool has(Family f) const { return !ranges(f).empty(); }
    bool contains(const IpAddr& a) const;
    std::size_t input_count() const { return inputs_; }
    bool operator==(const AllowList& o) const { return v4_ == o.v4_ && v6_ == o.v6_; }

private:
    static void merge_sorted(std::vector<Range>& list, Family f);
    void insert(std::vector<Range>& list, Range r);
    std::vector<Range> v4_, v6_;
    std::size_t inputs_ = 0;
};

// One CIDR per line; '#' starts a comment; blank lines are ignored. Errors name the source and
// line number ("allow.txt:3: invalid CIDR '10.0.0.300/8'").
std::vector<Cidr> parse_allow_text(std::string_view text, const std::string& source);
// The lines of an allow-file, `#` comments and blanks skipped, each trimmed: an Error thrown by
// `each` becomes a usage error naming `source` and the line number.
void for_each_allow_line(std::string_view text, const std::string& source,
                         const std::function<void(std::string_view)>& each);
std::vector<Cidr> parse_allow_file(const std::string& path);  // Exit::usage when unreadable
// The text of an allow-file (a regular file or a pipe, no NUL bytes); Exit::usage otherwise.
std::string read_allow_file_text(const std::string& path);

}  // namespace nsegress
