// Other people's egress policies: base chains of any table but nsegress's own that hook the
// output path (inet/ip/ip6 output and postrouting, netdev egress), and legacy iptables tables.
// `status` lists them as "not nsegress's"; `release` says it removed nothing of theirs.
#pragma once

#include <string>
#include <vector>

struct mnl_socket;

namespace nsegress {

struct ForeignHook {
    std::string family;  // "inet", "ip", "ip6", "netdev"
    std::string table, chain;
    std::string hook;  // "output", "postrouting", "egress"
    int priority = 0;
    std::string device;  // netdev egress
    std::string policy;  // "accept" / "drop"
};

// Every base chain hooking output/postrouting/egress, except nsegress's own tables.
std::vector<ForeignHook> foreign_output_hooks(mnl_socket* nfnl);
// Call inside the namespace: the legacy (x_tables) iptables/ip6tables tables it has loaded,
// as "iptables filter", "ip6tables mangle"... (iptables-nft's show up as nft tables instead).
std::vector<std::string> legacy_iptables_tables();

// Both, as status and release report them ("foreign").
struct ForeignPolicies {
    std::vector<ForeignHook> chains;
    std::vector<std::string> legacy_iptables;
    bool empty() const { return chains.empty() && legacy_iptables.empty(); }
};

}  // namespace nsegress
