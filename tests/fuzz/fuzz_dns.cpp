// DNS messages the names proxy reads: questions from the container (anyone in it) and answers
// from resolvers (anyone on the path). Invariants: a question's name never contains a dot inside
// a label or a control character unescaped; an error reply is a response with the query's id; the
// addresses of an answer belong to the question's chain only (checked by construction: they come
// from records whose owner is on it); nothing crashes, leaks or loops.
#include "fuzz_common.hpp"

#include "nsegress/names.hpp"

using namespace nsegress;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::vector<AllowEntry> names{
        parse_allow_entry("api.example.com tcp/443"),
        parse_allow_entry("*.cdn.example.com tcp/80 udp/53-60")};
    auto q = parse_dns_query(data, size);
    if (q) {
        for (char c : q->qname)
            fuzz::check(
                static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f,
                "a question's name holds an unprintable byte", q->qname);
        auto slots = name_slots(names, q->qname);
        for (std::size_t i = 1; i < slots.size(); ++i)
            fuzz::check(slots[i - 1].proto_last < slots[i].proto_first ||
                            (slots[i - 1].proto_first == slots[i].proto_first &&
                             slots[i - 1].port_last < slots[i].port_first),
                        "name slots overlap", q->qname);
        // The same bytes read as an answer to their own question.
        (void)dns_answer_addresses(data, size, *q);
        // What goes to a resolver: built afresh, exactly the judged question or nothing; never
        // a byte of the client's message beyond it.
        auto fwd = dns_forward_query(*q, 0x5a5a);
        if (!fwd.empty()) {
            auto back = parse_dns_query(fwd.data(), fwd.size());
            fuzz::check(
                back && back->qname == q->qname && back->qtype == q->qtype && back->id == 0x5a5a,
                "the forwarded query is not the judged question", q->qname);
            fuzz::check(fwd.size() <= 12 + 255 + 4 + 11, "the forwarded query carries more");
            fuzz::check(q->qname.find('\\') == std::string::npos,
                        "a name with an escaped byte was forwarded", q->qname);
        }
    }
    for (std::uint8_t rcode : {1, 2, 5}) {
        auto r = dns_error_reply(data, size, rcode);
        if (r.empty()) continue;
        fuzz::check(r.size() >= 12 && r[0] == data[0] && r[1] == data[1],
                    "an error reply lost the query's id");
        fuzz::check((r[2] & 0x80) != 0, "an error reply is not a response");
        fuzz::check((r[3] & 0x0f) == rcode, "an error reply has another rcode");
    }
    // As an answer to a fixed question.
    DnsQuestion fixed{static_cast<std::uint16_t>(size >= 2 ? (data[0] << 8 | data[1]) : 0),
                      "api.example.com", 1};
    if (auto addrs = dns_answer_addresses(data, size, fixed))
        for (const auto& a : *addrs)
            fuzz::check(a.addr.family == Family::v4 || a.addr.family == Family::v6, "family");
    return 0;
}
