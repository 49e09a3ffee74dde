#!/usr/bin/env python3
"""bench/gen_cidrs.py: a deterministic allow-list for the 100k benchmark.

Usage: gen_cidrs.py N4 N6 SEED OUTDIR [NPORTS]

Writes into OUTDIR:
  cidrs.txt        N4 IPv4 /24s + N6 IPv6 /48s (nsegress --allow-file format), sorted
  cidrs_changed.txt  the same list with 1% of the IPv4 /24s replaced by others (the LAN stays):
                   the input of an incremental re-restrict
  ports.txt        NPORTS port-scoped entries "10.A.B.1 tcp/P udp/53" (default N4 / 10): two
                   elements each of the concatenated sets allowp4
  ipt4.rules       iptables-restore input: the same IPv4 CIDRs as a linear ACCEPT list in OUTPUT
  ipt6.rules       ip6tables-restore input: the same for the IPv6 CIDRs
The lab's allowed LAN 192.168.1.0/24 is always one of the IPv4 CIDRs (the datapath test connects
to 192.168.1.10); the other CIDRs are random, pairwise disjoint and never adjacent (even /24 and
/48 indices only), so no tool can merge them into fewer intervals. Lab, private, loopback and
multicast ranges are left out, so the forbidden lab host 198.51.100.10 stays forbidden.
"""
import ipaddress
import os
import random
import sys

LAN4 = "192.168.1.0/24"
# First octets never drawn: 0, 10, 127, 169 (link-local), 172 (lab 172.30/172.31), 192, 198
# (lab 198.51.100), 203 (TEST-NET-3) and 224+ (multicast, reserved).
SKIP4 = {0, 10, 127, 169, 172, 192, 198, 203}


def main():
    n4, n6, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    nports = int(sys.argv[5]) if len(sys.argv) > 5 else max(1, n4 // 10)
    rnd = random.Random(seed)
    octets = [o for o in range(1, 224) if o not in SKIP4]
    v4 = set()
    while len(v4) < n4 - 1:
        # first octet, second octet, an even third octet: a /24 that never touches another one
        v4.add((rnd.choice(octets) << 24) | (rnd.randrange(256) << 16) | (rnd.randrange(128) << 9))
    v4 = sorted(v4 | {int(ipaddress.IPv4Address(LAN4.split("/")[0]))})
    v6 = set()
    while len(v6) < n6:
        # 2a00::/8 .. 2aff::/8 with an even third group: disjoint, non-adjacent /48s
        v6.add((0x2A00 + rnd.randrange(256), rnd.randrange(1 << 16), rnd.randrange(1 << 15) << 1))
    v6 = sorted(v6)
    c4 = [f"{ipaddress.IPv4Address(a)}/24" for a in v4]
    c6 = [str(ipaddress.IPv6Network(f"{a:x}:{b:x}:{c:x}::/48")) for a, b, c in v6]
    with open(os.path.join(out, "cidrs.txt"), "w") as f:
        f.write(f"# bench/gen_cidrs.py {n4} {n6} seed {seed}: {len(c4)} IPv4 /24 + {len(c6)} IPv6 /48\n")
        f.write("\n".join(c4 + c6) + "\n")
    # 1% of the IPv4 entries (never the LAN) replaced by /24s of the same scheme not in the list.
    lan = int(ipaddress.IPv4Address(LAN4.split("/")[0]))
    drop = set(a for i, a in enumerate(v4) if i % 100 == 50 and a != lan)
    taken = set(v4)
    new = set()
    while len(new) < len(drop):
        a = (rnd.choice(octets) << 24) | (rnd.randrange(256) << 16) | (rnd.randrange(128) << 9)
        if a not in taken:
            new.add(a)
    changed = sorted((set(v4) - drop) | new)
    with open(os.path.join(out, "cidrs_changed.txt"), "w") as f:
        f.write(f"# cidrs.txt with {len(drop)} IPv4 /24s replaced\n")
        f.write("\n".join([f"{ipaddress.IPv4Address(a)}/24" for a in changed] + c6) + "\n")
    with open(os.path.join(out, "ports.txt"), "w") as f:
        f.write(f"# {nports} port-scoped entries\n")
        for i in range(nports):
            f.write(f"10.{(i >> 8) & 255}.{i & 255}.1 tcp/{1024 + i % 60000} udp/53\n")
    # The iptables peers mirror the nsegress chain: lo and replies first, the list, then reject.
    for name, cidrs, rej in (("ipt4.rules", c4, "icmp-admin-prohibited"), ("ipt6.rules", c6, "icmp6-adm-prohibited")):
        with open(os.path.join(out, name), "w") as f:
            f.write("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n")
            f.write("-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -m conntrack --ctdir REPLY -j ACCEPT\n")
            f.writelines(f"-A OUTPUT -d {c} -j ACCEPT\n" for c in cidrs)
            f.write(f"-A OUTPUT -j REJECT --reject-with {rej}\nCOMMIT\n")


if __name__ == "__main__":
    main()
