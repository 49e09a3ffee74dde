#include "nsegress/names.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "nsegress/untrusted.hpp"

// Last: ldns's C headers (stdbool.h) confuse clang 14 in nlohmann/json's headers after them.
#include <ldns/ldns.h>

#include "nsegress/handle.hpp"

namespace nsegress {

namespace {

using PktPtr = CHandle<ldns_pkt, ldns_pkt_free>;

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string fmt_char(char c) {
    return "the character " + quote(std::string_view(&c, 1)) +
           " (names are letters, digits, '-', '_' and '.')";
}

bool label_ok(std::string_view l, std::string& why) {
    if (l.empty()) {
        why = "an empty label";
        return false;
    }
    if (l.size() > 63) {
        why = "a label longer than 63 characters";
        return false;
    }
    for (char c : l)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            why = fmt_char(c);
            return false;
        }
    if (l.front() == '-' || l.back() == '-') {
        why = "a label starting or ending with '-'";
        return false;
    }
    return true;
}

// The domain name of an ldns rdf, lower case, without the trailing dot.
std::string dname_text(const ldns_rdf* d) {
    std::string out;
    if (!d || ldns_rdf_get_type(d) != LDNS_RDF_TYPE_DNAME) return out;
    const std::uint8_t* p = ldns_rdf_data(d);
    const std::size_t n = ldns_rdf_size(d);
    std::size_t i = 0;
    while (i < n && p[i] != 0) {
        const std::size_t len = p[i];
        if (i + 1 + len > n) return {};
        if (!out.empty()) out += '.';
        for (std::size_t j = 0; j < len; ++j) {
            const char c = static_cast<char>(p[i + 1 + j]);
            // A byte that cannot be in a policy's name (a dot inside a label, a control
            // character) is kept escaped, so that it can never match a pattern.
            if (c == '.' || static_cast<unsigned char>(c) < 0x21 ||
                static_cast<unsigned char>(c) > 0x7e)
                out += '\\' + std::to_string(static_cast<unsigned char>(c));
            else
                out += lower(c);
        }
        i += 1 + len;
    }
    return out;
}

}  // namespace

bool looks_like_name(std::string_view w) {
    if (w.find(':') != std::string_view::npos || w.find('/') != std::string_view::npos)
        return false;
    return std::any_of(w.begin(), w.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*' || c == '_' || c == '-';
    });
}

std::optional<std::string> parse_name_pattern(std::string_view word, std::string& why) {
    std::string s;
    s.reserve(word.size());
    for (char c : word) s += lower(c);
    if (!s.empty() && s.back() == '.') s.pop_back();
    std::string_view rest = s;
    bool wildcard = false;
    if (rest.starts_with("*.")) {
        wildcard = true;
        rest.remove_prefix(2);
    }
    if (rest.size() > 253 - (wildcard ? 2 : 0)) {
        why = "a name longer than 253 characters";
        return std::nullopt;
    }
    std::size_t labels = 0;
    bool numeric_last = true;
    for (std::size_t b = 0;;) {
        const auto e = rest.find('.', b);
        const std::string_view l =
            rest.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b);
        std::string lwhy;
        if (!label_ok(l, lwhy)) {
            why = (l == "*" || l.find('*') != std::string_view::npos)
                      ? "'*' is only allowed as the whole first label (\"*.example.com\")"
                      : "not a DNS name: " + lwhy;
            return std::nullopt;
        }
        ++labels;
        // A top-level domain starts with a letter (RFC 3696 2: never all-numeric; real ones are
        // letters or "xn--"): "10.0.0.90-80" is a mistyped range, not a name to resolve.
        numeric_last = l.empty() || !((l[0] >= 'a' && l[0] <= 'z'));
        if (e == std::string_view::npos) break;
        b = e + 1;
    }
    if (labels < 2) {
        why = wildcard ? "a wildcard needs a domain of two or more labels (\"*.example.com\")"
                       : "a name needs two or more labels (\"api.example.com\")";
        return std::nullopt;
    }
    if (numeric_last) {
        why = "not a DNS name (its last label does not start with a letter) nor an address";
        return std::nullopt;
    }
    return s;
}

bool name_matches(std::string_view pattern, std::string_view qname) {
    if (!pattern.starts_with("*.")) return pattern == qname;
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    if (qname.size() <= suffix.size() + 0 || !qname.ends_with(suffix)) return false;
    const std::string_view label = qname.substr(0, qname.size() - suffix.size());
    // The label the wildcard stands for is made of what a name's label is made of: never an
    // escaped byte (a dot or NUL inside a label, dname_text), never '.'.
    if (label.empty() || label.size() > 63) return false;
    return std::all_of(label.begin(), label.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    });
}

std::vector<NameSlot> name_slots(const std::vector<AllowEntry>& names, std::string_view qname) {
    bool all = false, any = false;
    for (const auto& e : names) {
        if (!name_matches(e.name, qname)) continue;
        any = true;
        all = all || e.ports.empty();
    }
    std::vector<NameSlot> out;
    if (!any) return out;
    for (IpProto p : kPortProtos) {
        // Every boundary of any name entry's ranges of this protocol.
        std::set<std::uint32_t> bounds{0, 65536};
        for (const auto& e : names)
            for (const auto& s : e.ports)
                if (s.proto == p) {
                    bounds.insert(s.first);
                    bounds.insert(std::uint32_t{s.last} + 1);
                }
        const std::uint8_t pn = static_cast<std::uint8_t>(p);
        for (auto it = bounds.begin(); std::next(it) != bounds.end(); ++it) {
            const std::uint32_t lo = *it, hi = *std::next(it) - 1;
            bool allowed = all;
            for (const auto& e : names) {
                if (allowed) break;
                if (!name_matches(e.name, qname)) continue;
                for (const auto& s : e.ports)
                    if (s.proto == p && s.first <= lo && hi <= s.last) allowed = true;
            }
            if (allowed)
                out.push_back(NameSlot{pn, pn, static_cast<std::uint16_t>(lo),
                                       static_cast<std::uint16_t>(hi)});
        }
    }
    if (all) {
        // Every other protocol, any "port" (whatever the two bytes at the transport offset hold).
        const std::uint8_t gaps[][2] = {{0, 5}, {7, 16}, {18, 131}, {133, 255}};
        for (const auto& g : gaps) out.push_back(NameSlot{g[0], g[1], 0, 65535});
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::optional<DnsQuestion> parse_dns_query(const std::uint8_t* data, std::size_t len) {
    ldns_pkt* raw = nullptr;
    if (!data || len < 12 || ldns_wire2pkt(&raw, data, len) != LDNS_STATUS_OK) return std::nullopt;
    PktPtr pkt(raw);
    if (ldns_pkt_qr(pkt.get()) || ldns_pkt_get_opcode(pkt.get()) != LDNS_PACKET_QUERY)
        return std::nullopt;
    const ldns_rr_list* qs = ldns_pkt_question(pkt.get());
    if (!qs || ldns_rr_list_rr_count(qs) != 1) return std::nullopt;
    const ldns_rr* q = ldns_rr_list_rr(qs, 0);
    if (ldns_rr_get_class(q) != LDNS_RR_CLASS_IN) return std::nullopt;
    DnsQuestion out;
    out.id = ldns_pkt_id(pkt.get());
    out.rd = ldns_pkt_rd(pkt.get());
    out.edns = ldns_pkt_edns(pkt.get());
    out.qname = dname_text(ldns_rr_owner(q));
    out.qtype = static_cast<std::uint16_t>(ldns_rr_get_type(q));
    return out;
}

std::vector<std::uint8_t> dns_error_reply(const std::uint8_t* query, std::size_t len,
                                          std::uint8_t rcode) {
    if (!query || len < 12) return {};
    ldns_pkt* raw = nullptr;
    if (ldns_wire2pkt(&raw, query, len) == LDNS_STATUS_OK) {
        PktPtr q(raw);
        PktPtr r(ldns_pkt_new());
        if (r && !ldns_pkt_qr(q.get())) {
            ldns_pkt_set_id(r.get(), ldns_pkt_id(q.get()));
            ldns_pkt_set_qr(r.get(), true);
            ldns_pkt_set_opcode(r.get(), ldns_pkt_get_opcode(q.get()));
            ldns_pkt_set_rd(r.get(), ldns_pkt_rd(q.get()));
            ldns_pkt_set_ra(r.get(), true);
            ldns_pkt_set_rcode(r.get(), rcode);
            const ldns_rr_list* qs = ldns_pkt_question(q.get());
            for (std::size_t i = 0; qs && i < ldns_rr_list_rr_count(qs) && i < 1; ++i)
                ldns_pkt_push_rr(r.get(), LDNS_SECTION_QUESTION,
                                 ldns_rr_clone(ldns_rr_list_rr(qs, i)));
            std::uint8_t* wire = nullptr;
            std::size_t size = 0;
            if (ldns_pkt2wire(&wire, r.get(), &size) == LDNS_STATUS_OK && wire) {
                std::vector<std::uint8_t> out(wire, wire + size);
                std::free(wire);
                return out;
            }
            std::free(wire);
        }
    }
    // Unparseable: the header alone, its id kept, QR set, no sections.
    if (query[2] & 0x80) return {};  // never answer a response
    std::vector<std::uint8_t> out(query, query + 12);
    out[2] = static_cast<std::uint8_t>(0x80 | (query[2] & 0x79));  // QR, opcode, RD
    out[3] = static_cast<std::uint8_t>(0x80 | (rcode & 0x0f));     // RA, rcode
    std::fill(out.begin() + 4, out.end(), 0);
    return out;
}

std::optional<std::vector<AnswerAddress>> dns_answer_addresses(const std::uint8_t* data,
                                                               std::size_t len,
                                                               const DnsQuestion& q) {
    ldns_pkt* raw = nullptr;
    if (!data || len < 12 || ldns_wire2pkt(&raw, data, len) != LDNS_STATUS_OK) return std::nullopt;
    PktPtr pkt(raw);
    if (!ldns_pkt_qr(pkt.get()) || ldns_pkt_id(pkt.get()) != q.id) return std::nullopt;
    const ldns_rr_list* qs = ldns_pkt_question(pkt.get());
    if (!qs || ldns_rr_list_rr_count(qs) != 1) return std::nullopt;
    const ldns_rr* qr = ldns_rr_list_rr(qs, 0);
    if (dname_text(ldns_rr_owner(qr)) != q.qname || ldns_rr_get_type(qr) != q.qtype)
        return std::nullopt;
    std::multimap<std::string, std::string> cnames;
    std::multimap<std::string, AnswerAddress> addrs;
    const ldns_rr_list* an = ldns_pkt_answer(pkt.get());
    for (std::size_t i = 0; an && i < ldns_rr_list_rr_count(an); ++i) {
        const ldns_rr* rr = ldns_rr_list_rr(an, i);
        if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || ldns_rr_rd_count(rr) < 1) continue;
        const std::string owner = dname_text(ldns_rr_owner(rr));
        const ldns_rdf* rd = ldns_rr_rdf(rr, 0);
        switch (ldns_rr_get_type(rr)) {
            case LDNS_RR_TYPE_CNAME:
                cnames.emplace(owner, dname_text(rd));
                break;
            case LDNS_RR_TYPE_A:
                if (ldns_rdf_get_type(rd) == LDNS_RDF_TYPE_A && ldns_rdf_size(rd) == 4) {
                    const std::uint8_t* b = ldns_rdf_data(rd);
                    u128 v =
                        (u128{b[0]} << 24) | (u128{b[1]} << 16) | (u128{b[2]} << 8) | u128{b[3]};
                    addrs.emplace(owner, AnswerAddress{IpAddr{Family::v4, v}, ldns_rr_ttl(rr)});
                }
                break;
            case LDNS_RR_TYPE_AAAA:
                if (ldns_rdf_get_type(rd) == LDNS_RDF_TYPE_AAAA && ldns_rdf_size(rd) == 16) {
                    const std::uint8_t* b = ldns_rdf_data(rd);
                    u128 v = 0;
                    for (int k = 0; k < 16; ++k) v = (v << 8) | u128{b[k]};
                    addrs.emplace(owner, AnswerAddress{IpAddr{Family::v6, v}, ldns_rr_ttl(rr)});
                }
                break;
            default:
                break;
        }
    }
    // The chain: the question's name and every name a CNAME on the chain points to.
    std::vector<AnswerAddress> out;
    std::set<std::string> seen;
    std::vector<std::string> todo{q.qname};
    for (int hops = 0; !todo.empty() && hops < 17; ++hops) {
        std::vector<std::string> next;
        for (const auto& n : todo) {
            if (!seen.insert(n).second) continue;
            auto [a, b] = addrs.equal_range(n);
            for (auto it = a; it != b; ++it) out.push_back(it->second);
            auto [c, d] = cnames.equal_range(n);
            for (auto it = c; it != d; ++it) next.push_back(it->second);
        }
        todo = std::move(next);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::vector<std::uint8_t> dns_query(std::uint16_t id, const std::string& qname,
                                    std::uint16_t qtype) {
    ldns_pkt* raw = nullptr;
    if (ldns_pkt_query_new_frm_str(&raw, qname.c_str(), static_cast<ldns_rr_type>(qtype),
                                   LDNS_RR_CLASS_IN, LDNS_RD) != LDNS_STATUS_OK)
        return {};
    PktPtr q(raw);
    ldns_pkt_set_id(q.get(), id);
    std::uint8_t* wire = nullptr;
    std::size_t size = 0;
    std::vector<std::uint8_t> out;
    if (ldns_pkt2wire(&wire, q.get(), &size) == LDNS_STATUS_OK && wire)
        out.assign(wire, wire + size);
    std::free(wire);
    return out;
}

std::vector<std::uint8_t> dns_forward_query(const DnsQuestion& q, std::uint16_t id) {
    // Only names made of what a policy name can hold (or the root): the text is the name.
    if (q.qname.find('\\') != std::string::npos) return {};
    for (char c : q.qname)
        if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return {};
    const std::string text = q.qname + ".";
    ldns_rdf* made = nullptr;
    if (ldns_str2rdf_dname(&made, text.c_str()) != LDNS_STATUS_OK || !made) return {};
    CHandle<ldns_rdf, ldns_rdf_deep_free> owner(made);
    PktPtr pkt(ldns_pkt_new());
    CHandle<ldns_rr, ldns_rr_free> rr(ldns_rr_new());
    if (!pkt || !rr) return {};
    ldns_rr_set_owner(rr.get(), owner.release());  // the record owns its name now
    ldns_rr_set_type(rr.get(), static_cast<ldns_rr_type>(q.qtype));
    ldns_rr_set_class(rr.get(), LDNS_RR_CLASS_IN);
    ldns_rr_set_question(rr.get(), true);
    if (!ldns_pkt_push_rr(pkt.get(), LDNS_SECTION_QUESTION, rr.get())) return {};
    rr.release();  // the packet owns the record now
    ldns_pkt_set_id(pkt.get(), id);
    ldns_pkt_set_opcode(pkt.get(), LDNS_PACKET_QUERY);
    ldns_pkt_set_rd(pkt.get(), q.rd);
    if (q.edns) {
        ldns_pkt_set_edns_udp_size(pkt.get(), kForwardEdnsSize);
        ldns_pkt_set_edns_version(pkt.get(), 0);
        ldns_pkt_set_edns_do(pkt.get(), false);
    }
    std::uint8_t* wire = nullptr;
    std::size_t size = 0;
    std::vector<std::uint8_t> out;
    if (ldns_pkt2wire(&wire, pkt.get(), &size) == LDNS_STATUS_OK && wire)
        out.assign(wire, wire + size);
    std::free(wire);
    // What was built must read back as exactly the question that was judged.
    auto back = parse_dns_query(out.data(), out.size());
    if (!back || back->qname != q.qname || back->qtype != q.qtype || back->id != id) return {};
    return out;
}

std::vector<std::uint8_t> dns_with_id(std::vector<std::uint8_t> msg, std::uint16_t id) {
    if (msg.size() >= 2) {
        msg[0] = static_cast<std::uint8_t>(id >> 8);
        msg[1] = static_cast<std::uint8_t>(id);
    }
    return msg;
}

std::vector<IpAddr> resolv_conf_nameservers(std::string_view text) {
    std::vector<IpAddr> out;
    std::size_t pos = 0;
    while (pos < text.size() && out.size() < 8) {
        std::size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
        std::size_t i = 0;
        while (i < line.size() && ws(line[i])) ++i;
        constexpr std::string_view kw = "nameserver";
        if (line.substr(i, kw.size()) != kw) continue;
        i += kw.size();
        if (i >= line.size() || !ws(line[i])) continue;
        while (i < line.size() && ws(line[i])) ++i;
        std::size_t j = i;
        while (j < line.size() && !ws(line[j]) && line[j] != '#' && line[j] != ';') ++j;
        std::string_view word = line.substr(i, j - i);
        // "fe80::1%eth0": a zone is not ours to honour; such a resolver is skipped.
        if (auto a = IpAddr::parse(word))
            if (std::find(out.begin(), out.end(), *a) == out.end()) out.push_back(*a);
    }
    return out;
}

bool is_loopback(const IpAddr& a) {
    if (a.family == Family::v4) return (a.value >> 24) == 127;
    if (a.value == 1) return true;
    const u128 mapped = (u128{0xffff} << 32) | (u128{127} << 24);
    return (a.value >> 24) == (mapped >> 24);
}

std::vector<IpAddr> trusted_resolvers(const std::vector<IpAddr>& from_operator,
                                      const std::vector<IpAddr>& from_resolv_conf,
                                      bool engine_wrote_it) {
    if (!from_operator.empty()) return from_operator;
    std::vector<IpAddr> out;
    for (const auto& a : from_resolv_conf)
        if (engine_wrote_it || !is_loopback(a)) out.push_back(a);
    return out;
}

std::vector<IpAddr> upstream_candidates(const std::vector<IpAddr>& trusted,
                                        const std::optional<IpAddr>& original) {
    if (original && std::find(trusted.begin(), trusted.end(), *original) != trusted.end())
        return {*original};
    return trusted;
}

std::optional<std::uint8_t> dns_rcode(const std::uint8_t* data, std::size_t len) {
    if (!data || len < 12 || !(data[2] & 0x80)) return std::nullopt;
    return static_cast<std::uint8_t>(data[3] & 0x0f);
}

std::uint32_t name_timeout(std::uint32_t ttl) {
    return std::min(std::max(ttl, kNameTtlFloor), kNameTtlCap) + kNameGrace;
}

bool name_element_covers(std::uint64_t expires_ms, std::uint32_t ttl) {
    const std::uint64_t need_s =
        std::min(std::max(ttl, kNameTtlFloor), kNameTtlCap) + kNameGrace / 2;
    return expires_ms >= need_s * 1000;
}

}  // namespace nsegress
