// Allow-file text (--allow-file), and what becomes of it: the normalized AllowList (bulk and
// one by one must agree), the minimal CIDR cover, the interval-set element encoding and its
// decoding (what `status` reads back from the kernel), and the compiled nft batch.
#include "fuzz_common.hpp"

#include "nsegress/nft.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<Cidr> cidrs;
    try {
        cidrs = parse_allow_text(fuzz::text_of(data, size), "fuzz.allow");
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::usage);
        return 0;
    }
    AllowList bulk(cidrs);
    AllowList one_by_one, reversed;
    for (const auto& c : cidrs) one_by_one.add(c);
    for (auto it = cidrs.rbegin(); it != cidrs.rend(); ++it) reversed.add(*it);
    fuzz::check_normalized(bulk);
    fuzz::check_normalized(one_by_one);
    fuzz::check(bulk == one_by_one && bulk == reversed, "bulk and incremental allow-lists differ");
    fuzz::check(bulk.input_count() == cidrs.size(), "input count");
    for (const auto& c : cidrs)
        fuzz::check(bulk.contains(c.first()) && bulk.contains(c.last()),
                    "an allowed CIDR is not contained", c.str());

    for (Family f : {Family::v4, Family::v6}) {
        const u128 top = f == Family::v4 ? u128{0xffffffffu} : ~u128{0};
        std::vector<nft::ElementKey> keys;
        for (const auto& r : bulk.ranges(f)) {
            // the minimal cover is contiguous and spans exactly the range
            auto cover = r.to_cidrs();
            fuzz::check(
                !cover.empty() && cover.front().first() == r.first && cover.back().last() == r.last,
                "CIDR cover does not span the range", r.str());
            for (std::size_t i = 1; i < cover.size(); ++i)
                fuzz::check(cover[i - 1].last().value + 1 == cover[i].first().value,
                            "CIDR cover has a gap", r.str());
            // encoded as nft::compile_policy encodes interval sets
            keys.push_back({r.first, false});
            if (r.last.value != top) keys.push_back({IpAddr{f, r.last.value + 1}, true});
        }
        fuzz::check(nft::elements_to_ranges(f, keys) == bulk.ranges(f),
                    "set elements do not decode to the ranges they encode");
    }
    if (bulk.ranges(Family::v4).size() + bulk.ranges(Family::v6).size() <= 2048) {
        auto batch = nft::compile_policy(bulk, 1);
        fuzz::check(!batch.bytes.empty() && batch.messages.size() >= 9, "empty batch");
        fuzz::check(!nft::render_policy(bulk).empty(), "empty rendering");
    }
    return 0;
}
