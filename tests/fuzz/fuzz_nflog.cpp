// nfnetlink_log messages (nsegress watch): the receive buffer split into messages, each packet's
// IP and transport headers, and the --summary allow-file built from them. The packet bytes are
// whatever a process in the watched namespace chose to send.
#include "fuzz_common.hpp"

#include <netinet/in.h>

#include "nsegress/nflog.hpp"
#include "nsegress/policy.hpp"
#include "nsegress/watch.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> bytes(data, size);
    // The payload alone, as if it were a logged packet.
    if (auto p = nflog::parse_ip_packet(bytes)) {
        fuzz::check(p->src.family == p->family && p->dst.family == p->family,
                    "address of the wrong family");
        fuzz::check(!p->fragment || !p->dport, "a fragment with a transport port");
    }
    // The buffer as the socket would hand it over, and the summary of what it logged.
    SummaryBuilder summary;
    std::vector<IpAddr> seen;
    for (const auto& item : nflog::parse_buffer(bytes)) {
        if (item.kind != nflog::Item::packet || !item.event.packet) continue;
        summary.add(*item.event.packet);
        seen.push_back(item.event.packet->dst);
        fuzz::check(item.event.payload_len <= size, "payload longer than the buffer");
    }
    if (seen.empty()) return 0;
    std::string text = render_allow_file({"fuzz"}, AllowList{}, summary.entries());
    // As printed, the summary is a valid allow-file (entries of the grammar) that allows nothing
    // beyond the current list (empty here): every observed destination waits, commented out, for
    // review.
    fuzz::check(parse_allow_entries(text, "summary").empty(),
                "the unreviewed summary allows something");
    // Reviewed (every kSummaryDisabled prefix removed), it covers what was seen: every
    // destination, and every TCP/UDP port seen there.
    std::string reviewed;
    const std::string disabled = kSummaryDisabled;
    for (std::size_t pos = 0; pos < text.size();) {
        std::size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (line.compare(0, disabled.size(), disabled) == 0) line.erase(0, disabled.size());
        reviewed += line + "\n";
        pos = nl == std::string::npos ? text.size() : nl + 1;
    }
    Policy back(parse_allow_entries(reviewed, "summary"));
    AllowList dests = back.destinations();
    for (const auto& dst : seen)
        fuzz::check(dests.contains(dst), "an observed destination is not allowed", dst.str());
    for (const auto& item : nflog::parse_buffer(bytes)) {
        if (item.kind != nflog::Item::packet || !item.event.packet) continue;
        const auto& p = *item.event.packet;
        if (!p.dport || *p.dport == 0 || (p.protocol != IPPROTO_TCP && p.protocol != IPPROTO_UDP))
            continue;
        fuzz::check(
            back.allows(p.dst, p.protocol == IPPROTO_TCP ? IpProto::tcp : IpProto::udp, *p.dport),
            "an observed port is not allowed", p.dst.str());
    }
    return 0;
}
