#!/usr/bin/python3
"""Send one IPv6 router advertisement on an interface (run inside the router's namespace).

usage: send_ra.py IFNAME PREFIX/64 [ROUTER_LIFETIME_S]

To ff02::1 from the interface's link-local address, hop limit 255 (RFC 4861), advertising this
router as a default router and PREFIX as on-link and autonomous (SLAAC). The kernel fills in the
ICMPv6 checksum of raw ICMPv6 sockets.
"""
import ipaddress
import socket
import struct
import sys

ifname, prefix = sys.argv[1], ipaddress.IPv6Network(sys.argv[2])
lifetime = int(sys.argv[3]) if len(sys.argv) > 3 else 1800
ifindex = socket.if_nametoindex(ifname)

# type 134, code 0, checksum 0 (kernel), cur hop limit 64, flags 0, router lifetime,
# reachable time 0, retrans timer 0
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, lifetime, 0, 0)
# Prefix information: type 3, length 4 (x8 bytes), prefix length, flags L|A, valid 3600 s,
# preferred 1800 s, reserved, prefix
ra += struct.pack("!BBBBIII", 3, 4, prefix.prefixlen, 0xC0, 3600, 1800, 0) + prefix.network_address.packed

s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
s.sendto(ra, ("ff02::1", 0, 0, ifindex))
