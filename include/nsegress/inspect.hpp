// What a network namespace looks like: links, addresses, routes and rules, read over rtnetlink
// with libnl-route-3 and handed out as plain structs (libnl types never leave inspect.cpp and
// routeset.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <deque>
#include <tuple>
#include <vector>

#include "nsegress/cidr.hpp"

struct nl_sock;

namespace nsegress {

struct NlSockDeleter {
    void operator()(nl_sock* s) const;
};
using NlSock = std::unique_ptr<nl_sock, NlSockDeleter>;

// A connected NETLINK_ROUTE socket (close-on-exec). Call inside the target netns.
NlSock open_rtnl_socket();

struct Link {
    int ifindex = 0;
    std::string name;
    bool up = false;
    bool loopback = false;
    std::string kind;      // "veth", "bridge"... empty for physical/loopback
    unsigned arptype = 0;  // ARPHRD_*: 1 (ARPHRD_ETHER) for Ethernet-framed links
    unsigned mtu = 0;
};

struct Address {
    int ifindex = 0;
    IpAddr addr;
    unsigned prefix = 0;
    int scope = 0;  // RT_SCOPE_*
};

struct Route {
    Family family = Family::v4;
    Cidr dst;  // 0.0.0.0/0 or ::/0 for default
    std::uint32_t table = 254;
    std::uint8_t type = 1;  // RTN_UNICAST...
    std::uint8_t protocol = 0;
    std::uint8_t scope = 0;
    std::uint32_t metric = 0;
    std::optional<IpAddr> gateway;
    int oif = 0;
    std::optional<IpAddr> prefsrc;
    bool onlink = false;
    bool multipath = false;  // more than one nexthop; only the first is kept here
    bool is_default() const { return dst.prefix == 0; }
};

struct Rule {
    Family family = Family::v4;
    std::uint32_t priority = 0;
    std::uint32_t table = 0;
    std::uint8_t action = 1;  // FR_ACT_TO_TBL
    std::uint8_t protocol = 0;
    bool has_selector = false;  // any from/to/iif/oif/fwmark...: we only plan from plain rules
};

// A route of the route set's table, as inspect_route_set_compact reads it: what tells two of
// its routes apart and whether they are the same (throw and unreachable routes have no nexthop),
// in 32 bytes instead of a Route's 176; restrict reads 10^5 of them on a re-run.
struct TableRoute {
    u128 dst = 0;
    std::uint32_t metric = 0;
    Family family = Family::v4;
    std::uint8_t prefix = 0;
    std::uint8_t type = 0;
    std::uint8_t protocol = 0;
    std::uint8_t scope = 0;
    bool nexthop = false;  // a gateway, source or several nexthops: not one of ours
    auto key() const { return std::tie(family, dst, prefix, metric); }
};

struct Snapshot {
    std::vector<Link> links;
    std::vector<Address> addresses;
    std::vector<Route> routes;
    std::vector<Rule> rules;
    // With compact_table: the routes of that table are here, not in `routes` (a deque: grown
    // in blocks, never copied whole to grow, so 10^5 of them cost their 3 MiB and no more).
    std::uint32_t compact_table = 0;
    std::deque<TableRoute> table_routes;

    const Link* link(int ifindex) const;
    std::string link_name(int ifindex) const;  // "if7" when unknown
    // The main table's default route of a family, lowest metric first.
    const Route* default_route(Family f) const;
    bool is_local_address(const IpAddr& a) const;
};

enum Inspect : unsigned {
    inspect_links = 1,
    inspect_addresses = 2,
    inspect_routes = 4,
    inspect_rules = 8,
    inspect_all = 15,
};

// One dump per requested object type. With `compact_table`, the routes of that table are read
// into Snapshot::table_routes only (restrict's re-run over a route set of 10^5 routes).
Snapshot inspect(nl_sock* sock, unsigned what = inspect_all, std::uint32_t compact_table = 0);

// What inspect() does with the replies, on raw bytes: rtnetlink messages as dumps return them
// (RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWRULE; NLMSG_DONE and other types are
// skipped), appended to `snap` and sorted as inspect() sorts. Malformed input (a route prefix
// longer than its family, a nexthop of length 0...) is an Error(Exit::failed), never a crash
// or a hang, whether or not a kernel could have sent it. For tests and fuzzing.
void parse_rtnl_messages(std::span<const std::uint8_t> bytes, Snapshot& snap);

std::string route_type_name(std::uint8_t type);               // "unicast", "unreachable", ...
std::string table_name(std::uint32_t table);                  // "main", "local", "28275"
std::string format_route(const Route& r, const Snapshot& s);  // `ip route` style, one line
std::string format_rule(const Rule& r);                       // `ip rule` style, one line

}  // namespace nsegress
