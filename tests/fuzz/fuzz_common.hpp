// Shared by the fuzz targets: invariant checks that abort (so libFuzzer reports them as a crash
// with the input that broke them), and the property every error message must have.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <libmnl/libmnl.h>

#include "nsegress/cidr.hpp"
#include "nsegress/error.hpp"

namespace fuzz {

[[noreturn]] inline void broken(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "fuzz invariant broken: %s%s%s\n", what, detail.empty() ? "" : ": ",
                 detail.c_str());
    std::abort();
}

inline void check(bool ok, const char* what, const std::string& detail = {}) {
    if (!ok) broken(what, detail);
}

// Errors end up on a hook's stderr (one line) and in --json documents: printable ASCII only.
inline void check_message(const std::string& msg) {
    check(!msg.empty(), "empty error message");
    for (unsigned char c : msg)
        if (c < 0x20 || c >= 0x7f) broken("error message is not one printable line", msg);
}

inline void check_error(const nsegress::Error& e, nsegress::Exit expected) {
    if (e.exit_code() != expected)
        broken("unexpected exit category",
               std::to_string(static_cast<int>(e.exit_code())) + " " + e.what());
    check_message(e.what());
}

inline std::string_view text_of(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

// The allow-list's normal form: per family sorted, each range well-formed, no two ranges
// overlapping or touching (they would have been merged).
inline void check_normalized(const nsegress::AllowList& allow) {
    using namespace nsegress;
    for (Family f : {Family::v4, Family::v6}) {
        const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
        const auto& rs = allow.ranges(f);
        for (std::size_t i = 0; i < rs.size(); ++i) {
            check(rs[i].first.family == f && rs[i].last.family == f, "range of the wrong family",
                  rs[i].str());
            check(rs[i].first.value <= rs[i].last.value, "inverted range", rs[i].str());
            check(rs[i].last.value <= top, "range past the address space", rs[i].str());
            if (i > 0)
                check(rs[i - 1].last.value != top && rs[i - 1].last.value + 1 < rs[i].first.value,
                      "ranges overlap, touch or are unsorted", rs[i - 1].str() + " " + rs[i].str());
            check(allow.contains(rs[i].first) && allow.contains(rs[i].last),
                  "range end not contained", rs[i].str());
            if (rs[i].first.value > 0)
                check(!allow.contains(IpAddr{f, rs[i].first.value - 1}),
                      "address below a range contained", rs[i].str());
        }
    }
}

// Takes fuzz input apart for structured targets (libFuzzer mutates it as plain bytes). Reads past
// the end yield zeros, so every input is a valid, if short, description.
class Bytes {
public:
    Bytes(const std::uint8_t* data, std::size_t size) : p_(data), left_(size) {}
    bool empty() const { return left_ == 0; }
    std::uint8_t u8() { return left_ ? (--left_, *p_++) : 0; }
    std::uint32_t u32() {
        return std::uint32_t{u8()} | std::uint32_t{u8()} << 8 | std::uint32_t{u8()} << 16 |
               std::uint32_t{u8()} << 24;
    }
    std::uint64_t u64() { return std::uint64_t{u32()} | std::uint64_t{u32()} << 32; }
    // A length byte (at most `max`), then that many bytes.
    std::vector<std::uint8_t> blob(std::size_t max) {
        std::size_t n = std::min<std::size_t>(u8(), max);
        n = std::min(n, left_);
        std::vector<std::uint8_t> out(p_, p_ + n);
        p_ += n;
        left_ -= n;
        return out;
    }
    std::string str(std::size_t max) {
        auto b = blob(max);
        return std::string(b.begin(), b.end());
    }

private:
    const std::uint8_t* p_;
    std::size_t left_;
};

// Every netlink message of a buffer (bounds-checked), in a copy that is 4-byte aligned as a
// receive buffer is.
template <typename Fn>
void for_each_message(std::span<const std::uint8_t> bytes, Fn fn) {
    std::vector<std::uint32_t> buf((bytes.size() + 3) / 4);
    if (!bytes.empty()) std::memcpy(buf.data(), bytes.data(), bytes.size());
    // Not mnl_nlmsg_ok(): it compares (int)nlmsg_len, so a length >= 2^31 passes as negative.
    // The kernel never sends one; arbitrary bytes do.
    std::size_t off = 0;
    while (bytes.size() - off >= sizeof(nlmsghdr)) {
        auto* nlh =
            reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(buf.data()) + off);
        if (nlh->nlmsg_len < sizeof(nlmsghdr) || nlh->nlmsg_len > bytes.size() - off) break;
        fn(nlh);
        off += MNL_ALIGN(nlh->nlmsg_len);
        if (off >= bytes.size()) break;
    }
}

}  // namespace fuzz
