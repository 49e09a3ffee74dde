#include "nsegress/cidr.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <tuple>

#include "nsegress/error.hpp"
#include "nsegress/fd.hpp"
#include "nsegress/untrusted.hpp"

namespace nsegress {

namespace {

// Mask of the host bits of a prefix.
u128 host_mask(Family f, unsigned prefix) {
    unsigned host_bits = bits_of(f) - prefix;
    if (host_bits == 0) return 0;
    if (host_bits >= 128) return ~u128{0};
    return (u128{1} << host_bits) - 1;
}

std::string_view trim(std::string_view s) {
    const char* ws = " \t\r\n";
    auto b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

}  // namespace

int to_af(Family f) { return f == Family::v4 ? AF_INET : AF_INET6; }
unsigned bits_of(Family f) { return f == Family::v4 ? 32 : 128; }
const char* family_name(Family f) { return f == Family::v4 ? "IPv4" : "IPv6"; }

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
    // inet_pton wants a terminated string and rejects anything but the plain forms, which is
    // what we want: no "1.2.3" shorthands, no zone ids, no surrounding blanks.
    if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
    std::string s(text);
    unsigned char buf[16];
    if (s.find(':') == std::string::npos) {
        if (inet_pton(AF_INET, s.c_str(), buf) == 1) return from_bytes(Family::v4, buf);
    } else if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
        return from_bytes(Family::v6, buf);
    }
    return std::nullopt;
}

IpAddr IpAddr::from_bytes(Family f, const void* network_order) {
    IpAddr a;
    a.family = f;
    const auto* p = static_cast<const std::uint8_t*>(network_order);
    std::size_t n = f == Family::v4 ? 4 : 16;
    for (std::size_t i = 0; i < n; ++i) a.value = (a.value << 8) | p[i];
    return a;
}

std::array<std::uint8_t, 16> IpAddr::bytes() const {
    std::array<std::uint8_t, 16> out{};
    std::size_t n = size();
    u128 v = value;
    for (std::size_t i = 0; i < n; ++i) {
        out[n - 1 - i] = static_cast<std::uint8_t>(v & 0xff);
        v >>= 8;
    }
    return out;
}

namespace {
// Dotted quad into `out` (at least 16 bytes), without inet_ntop's sprintf: an allow-list of 10^5
// entries is formatted twice per restrict (the report's lists). Returns the end.
char* put_ipv4(char* out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) {
        unsigned o = (v >> shift) & 0xff;
        if (o >= 100) *out++ = static_cast<char>('0' + o / 100);
        if (o >= 10) *out++ = static_cast<char>('0' + o / 10 % 10);
        *out++ = static_cast<char>('0' + o % 10);
        if (shift) *out++ = '.';
    }
    return out;
}
}  // namespace

std::string IpAddr::str() const {
    char buf[INET6_ADDRSTRLEN];
    if (family == Family::v4)
        return std::string(buf, put_ipv4(buf, static_cast<std::uint32_t>(value)));
    auto b = bytes();
    inet_ntop(to_af(family), b.data(), buf, sizeof buf);
    return buf;
}

IpAddr Cidr::last() const {
    return IpAddr{addr.family, addr.value | host_mask(addr.family, prefix)};
}

bool Cidr::contains(const IpAddr& a) const {
    return a.family == addr.family && a.value >= addr.value && a.value <= last().value;
}

bool Cidr::contains(const Cidr& c) const { return c.prefix >= prefix && contains(c.addr); }

std::string Cidr::str() const {
    if (addr.family != Family::v4 || prefix > 32) return addr.str() + "/" + std::to_string(prefix);
    char buf[24];
    char* end = put_ipv4(buf, static_cast<std::uint32_t>(addr.value));
    *end++ = '/';
    if (prefix >= 10) *end++ = static_cast<char>('0' + prefix / 10);
    *end++ = static_cast<char>('0' + prefix % 10);
    return std::string(buf, end);
}

IpAddr parse_ip(std::string_view text) {
    auto a = IpAddr::parse(text);
    if (!a) throw_usage("invalid IP address " + quote(text));
    return *a;
}

Cidr parse_cidr(std::string_view text) {
    auto bad = [&](const std::string& why) -> Cidr {
        throw_usage("invalid CIDR " + quote(text) + (why.empty() ? "" : ": " + why));
    };
    if (text.empty()) return bad("empty");
    auto slash = text.find('/');
    auto a = IpAddr::parse(text.substr(0, slash));
    if (!a) return bad("not an IPv4 or IPv6 address");
    unsigned bits = bits_of(a->family);
    unsigned prefix = bits;
    if (slash != std::string_view::npos) {
        auto p = text.substr(slash + 1);
        // (isdigit on a plain char is undefined for bytes >= 0x80)
        if (p.empty() || p.size() > 3 ||
            !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return bad("prefix length must be a number");
        prefix = static_cast<unsigned>(std::stoul(std::string(p)));
        if (prefix > bits)
            return bad("prefix length " + std::to_string(prefix) + " exceeds " +
                       std::to_string(bits));
    }
    if (a->value & host_mask(a->family, prefix)) {
        Cidr net{IpAddr{a->family, a->value & ~host_mask(a->family, prefix)}, prefix};
        return bad("host bits set (did you mean " + net.str() + "?)");
    }
    return Cidr{*a, prefix};
}

std::optional<Cidr> Range::as_cidr() const {
    auto cidrs = to_cidrs();
    if (cidrs.size() == 1) return cidrs.front();
    return std::nullopt;
}

std::vector<Cidr> Range::to_cidrs() const {
    std::vector<Cidr> out;
    Family f = first.family;
    unsigned bits = bits_of(f);
    u128 lo = first.value, hi = last.value;
    while (true) {
        // The largest prefix starting at lo that is aligned and does not pass hi.
        unsigned prefix = bits;
        while (prefix > 0) {
            u128 m = host_mask(f, prefix - 1);
            if ((lo & m) != 0 || (lo | m) > hi) break;
            --prefix;
        }
        out.push_back(Cidr{IpAddr{f, lo}, prefix});
        u128 end = lo | host_mask(f, prefix);
        if (end >= hi) break;
        lo = end + 1;
    }
    return out;
}

std::string Range::str() const {
    if (auto c = as_cidr()) return c->str();
    return first.str() + "-" + last.str();
}

AllowList::AllowList(const std::vector<Cidr>& cidrs) {
    // Bulk: sort, then one merge pass per family -- O(n log n) for 100k CIDRs, where inserting
    // them one by one into a sorted vector would move memory quadratically. Sorted and merged in
    // place, in lists sized exactly, so a 10^5 list is held once, not copied.
    inputs_ = cidrs.size();
    std::size_t n4 = 0;
    for (const auto& c : cidrs) n4 += c.addr.family == Family::v4;
    v4_.reserve(n4);
    v6_.reserve(cidrs.size() - n4);
    for (const auto& c : cidrs)
        (c.addr.family == Family::v4 ? v4_ : v6_).push_back(Range{c.first(), c.last()});
    merge_sorted(v4_, Family::v4);
    merge_sorted(v6_, Family::v6);
}

AllowList AllowList::from_ranges(std::vector<Range> ranges) {
    AllowList a;
    a.inputs_ = ranges.size();
    for (auto& r : ranges) (r.first.family == Family::v4 ? a.v4_ : a.v6_).push_back(r);
    merge_sorted(a.v4_, Family::v4);
    merge_sorted(a.v6_, Family::v6);
    return a;
}

void AllowList::merge_sorted(std::vector<Range>& list_ref, Family f) {
    auto* list = &list_ref;
    {
        std::sort(list->begin(), list->end(),
                  [](const Range& x, const Range& y) { return x.first.value < y.first.value; });
        const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
        std::size_t kept = 0;
        for (std::size_t i = 0; i < list->size(); ++i) {
            const Range& r = (*list)[i];
            Range* last = kept ? &(*list)[kept - 1] : nullptr;
            // Overlapping or adjacent to the last range: extend it (no wrap: last < all-ones).
            if (last && last->last.value != top && r.first.value <= last->last.value + 1)
                last->last.value = std::max(last->last.value, r.last.value);
            else if (last && last->last.value >= r.first.value)
                continue;  // the last range already reaches the top of the address space
            else
                (*list)[kept++] = r;
        }
        list->resize(kept);
    }
}

void AllowList::add(const Cidr& c) { add(Range{c.first(), c.last()}); }

void AllowList::add(const Range& r) {
    ++inputs_;
    insert(r.first.family == Family::v4 ? v4_ : v6_, r);
}

void AllowList::insert(std::vector<Range>& list, Range r) {
    // Keep the list sorted and coalesced: find every range that overlaps or touches r, fold
    // them into r and replace them. Input order does not matter.
    auto touches = [&](const Range& x) {
        bool x_before = x.last.value < r.first.value && x.last.value + 1 < r.first.value;
        bool x_after = x.first.value > r.last.value && x.first.value - 1 > r.last.value;
        return !x_before && !x_after;
    };
    auto lo = std::lower_bound(list.begin(), list.end(), r, [](const Range& x, const Range& y) {
        return x.last.value < y.first.value;
    });
    if (lo != list.begin() && touches(*std::prev(lo))) --lo;
    auto hi = lo;
    while (hi != list.end() && touches(*hi)) {
        r.first.value = std::min(r.first.value, hi->first.value);
        r.last.value = std::max(r.last.value, hi->last.value);
        ++hi;
    }
    lo = list.erase(lo, hi);
    list.insert(lo, r);
}

bool AllowList::contains(const IpAddr& a) const {
    const auto& list = ranges(a.family);
    auto it = std::lower_bound(list.begin(), list.end(), a, [](const Range& x, const IpAddr& v) {
        return x.last.value < v.value;
    });
    return it != list.end() && it->first.value <= a.value;
}

void for_each_allow_line(std::string_view text, const std::string& source,
                         const std::function<void(std::string_view)>& each) {
    std::size_t line_no = 0;
    const std::string where = printable(source);  // once, not per line (10^5 lines)
    while (!text.empty()) {
        ++line_no;
        auto nl = text.find('\n');
        auto line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
        line = trim(line);
        if (line.empty()) continue;
        try {
            each(line);
        } catch (const Error& e) {
            throw e.in(where + ":" + std::to_string(line_no));  // the context made only when needed
        }
    }
}

std::vector<Cidr> parse_allow_text(std::string_view text, const std::string& source) {
    std::vector<Cidr> out;
    for_each_allow_line(text, source,
                        [&](std::string_view line) { out.push_back(parse_cidr(line)); });
    return out;
}

std::string read_allow_file_text(const std::string& path) {
    // A directory opens fine with ifstream and then reads as empty -- which would silently
    // mean "allow nothing". Only regular files and pipes (e.g. <(generate-list)) are lists.
    // Opened non-blocking: a blocking open of a FIFO without a writer waits forever.
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) throw_usage("cannot read allow-file " + quote(path) + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode))) {
        throw_usage("allow-file " + quote(path) + " is not a regular file");
    }
    const bool fifo = S_ISFIFO(st.st_mode);
    auto fail_read = [&](int err) {
        throw_usage("cannot read allow-file " + quote(path) + ": " + std::strerror(err));
    };
    std::string text;
    char buf[65536];
    bool waited_for_writer = false;
    while (true) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN && fifo) {
            // A writer is there and has not written (everything) yet: wait for it.
            pollfd p{fd.get(), POLLIN, 0};
            if (::poll(&p, 1, -1) < 0 && errno != EINTR) fail_read(errno);
            continue;
        }
        if (n < 0) fail_read(errno);
        if (n == 0 && fifo && text.empty()) {
            // No writer, or one that wrote nothing. A writer blocked in its own open() of a
            // named FIFO connects just after ours: give it a moment (poll wakes up as soon as
            // it writes or goes away), never forever. An empty list refuses everything; that
            // must be said with a regular file, not by a pipe that delivered nothing.
            pollfd p{fd.get(), POLLIN, 0};
            if (!waited_for_writer) {
                waited_for_writer = true;
                int r = ::poll(&p, 1, 1000);
                if (r < 0 && errno != EINTR) fail_read(errno);
                if (r != 0) continue;
            }
            throw_usage(
                "allow-file " + quote(path) +
                " is a pipe with no writer, or one that wrote nothing (an empty allow-list must be "
                "a regular empty file)");
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    if (text.find('\0') != std::string::npos)
        throw_usage("allow-file " + quote(path) + " is not a text file");
    return text;
}

std::vector<Cidr> parse_allow_file(const std::string& path) {
    return parse_allow_text(read_allow_file_text(path), path);
}

}  // namespace nsegress
