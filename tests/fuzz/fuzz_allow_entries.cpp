// Allow entries with ports and protocols (policy.hpp): an allow-file of entries, the normalized
// Policy they make (disjoint set elements, nothing a CIDR-only entry covers, exactly what the
// entries allow at every range end), its grammar round trip (what status prints parses back to
// the same policy), re-normalization of read-back elements, and the compiled batch.
#include "fuzz_common.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/policy.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<AllowEntry> entries;
    try {
        entries = parse_allow_entries(fuzz::text_of(data, size), "fuzz.allow");
    } catch (const Error& e) {
        fuzz::check_error(e, Exit::usage);
        fuzz::check(std::string(e.what()).find('\n') == std::string::npos, "a multi-line error");
        return 0;
    }
    if (entries.size() > 512) return 0;  // the pairwise checks below are quadratic
    Policy p(entries);
    fuzz::check_normalized(p.all());
    fuzz::check_normalized(p.echo());
    for (Family f : {Family::v4, Family::v6}) {
        const auto& el = p.scoped(f);
        for (std::size_t i = 0; i < el.size(); ++i) {
            fuzz::check(el[i].addrs.first.family == f && el[i].first <= el[i].last &&
                            el[i].addrs.first.value <= el[i].addrs.last.value &&
                            proto_has_ports(el[i].proto),
                        "a malformed element");
            fuzz::check(!covers(p.all(), el[i].addrs), "an element a CIDR-only entry covers");
            for (std::size_t j = i + 1; j < el.size(); ++j) {
                bool addr = el[i].addrs.first.value <= el[j].addrs.last.value &&
                            el[j].addrs.first.value <= el[i].addrs.last.value;
                bool port = el[i].first <= el[j].last && el[j].first <= el[i].last;
                fuzz::check(!(addr && port && el[i].proto == el[j].proto), "overlapping elements");
            }
        }
    }
    // Every entry is allowed at its corners; one port past a port range only if another entry
    // says so (checked against the entries themselves).
    auto entries_allow = [&](const IpAddr& a, IpProto pr, std::uint16_t port) {
        for (const auto& e : entries) {
            if (e.is_name() || !e.dest.contains(a)) continue;  // names: addresses come at run time
            if (e.ports.empty()) return true;
            for (const auto& s : e.ports)
                if (s.proto == pr && (!proto_has_ports(pr) || (port >= s.first && port <= s.last)))
                    return true;
        }
        return false;
    };
    for (const auto& e : entries) {
        if (e.is_name()) continue;  // a name entry has no destination before it is resolved
        for (const IpAddr& a : {e.dest.first(), e.dest.last()}) {
            for (const auto& s : e.ports) {
                for (std::uint32_t port : {std::uint32_t{s.first}, std::uint32_t{s.last},
                                           std::uint32_t{s.last} + 1, std::uint32_t{s.first} - 1}) {
                    if (port > 65535) continue;
                    auto p16 = static_cast<std::uint16_t>(port);
                    fuzz::check(p.allows(a, s.proto, p16) == entries_allow(a, s.proto, p16),
                                "the policy and its entries disagree", e.str());
                }
            }
            fuzz::check(p.destinations().contains(a), "a destination left out", e.str());
        }
    }
    // What status prints parses back to the same policy; elements read back normalize to
    // themselves.
    std::vector<AllowEntry> again;
    for (const auto& line : p.entries()) again.push_back(parse_allow_entry(line));
    fuzz::check(Policy(again) == p, "the printed entries do not parse back to the policy");
    std::vector<PortRange> els = p.scoped(Family::v4);
    els.insert(els.end(), p.scoped(Family::v6).begin(), p.scoped(Family::v6).end());
    // (Elements are the CIDR part: a policy with names holds them beside.)
    if (p.names().empty())
        fuzz::check(Policy(p.all(), els, p.echo()) == p,
                    "normalizing the elements again changed them");
    if (els.size() + p.all().ranges(Family::v4).size() + p.all().ranges(Family::v6).size() <=
        2048) {
        auto batch = nft::compile_policy(p, 1);
        fuzz::check(!batch.bytes.empty(), "empty batch");
        fuzz::check(!nft::render_policy(p).empty(), "empty rendering");
    }
    return 0;
}
