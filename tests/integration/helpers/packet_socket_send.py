#!/usr/bin/python3
"""Send crafted frames from an AF_PACKET socket (below the IP layer; needs CAP_NET_RAW).

usage: packet_socket_send.py IFNAME DST_MAC SRC_IP DST_IP COUNT [PROTO]

SRC_IP and DST_IP of one family: IPv4 frames carry UDP to port 5002, IPv6 frames an empty
payload (next header 59). PROTO is what the socket claims the frame is (sll_protocol, which
becomes skb->protocol): "ip", "ip6" (default: the frame's real EtherType) or "arp", to check
that a filter reads the frame and not this claim. Prints how many sends succeeded.
"""
import ipaddress
import socket
import struct
import sys

ifname, dst_mac, src, dst, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
claim = sys.argv[6] if len(sys.argv) > 6 else None
src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)

with open(f"/sys/class/net/{ifname}/address") as f:
    src_mac = bytes.fromhex(f.read().strip().replace(":", ""))
dst_mac = bytes.fromhex(dst_mac.replace(":", ""))


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


if src.version == 4:
    ethertype = 0x0800
    payload = b"nsegress packet socket"
    udp = struct.pack("!HHHH", 40000, 5002, 8 + len(payload), 0) + payload  # checksum 0: none
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src.packed, dst.packed)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    packet = hdr + udp
else:
    ethertype = 0x86DD
    packet = struct.pack("!IHBB16s16s", 0x60000000, 0, 59, 64, src.packed, dst.packed)

frame = dst_mac + src_mac + struct.pack("!H", ethertype) + packet
proto = {"ip": 0x0800, "ip6": 0x86DD, "arp": 0x0806, None: ethertype}[claim]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
sent = 0
for _ in range(count):
    try:
        s.sendto(frame, (ifname, proto))
        sent += 1
    except OSError as e:
        print(f"send: {e}", file=sys.stderr)
print(sent)
