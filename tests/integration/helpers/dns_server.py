#!/usr/bin/python3
"""A small authoritative DNS server for the lab (python3-dnslib), UDP and TCP port 53.

    dns_server.py --log FILE [--ttl N] NAME=SPEC ...

SPEC is a comma-separated list of answers for NAME:
    4:ADDR        an A record            6:ADDR   an AAAA record
    cname:TARGET  a CNAME (the target's records follow in the answer, as a resolver sends them)
    rot4:A-B      one A record per query, rotating through ADDR A..B (last octet), TTL 1
    rot6:A-B      one AAAA record per query, rotating (last group, hex), TTL 1
Every other name: NXDOMAIN. Every query received is logged as one line "PROTO NAME TYPE" before it
is answered, so a test can prove a query never arrived. Serves until killed.
    --raw-log FILE   also every message received, as "PROTO HEX" (what exactly arrived)
    --any-a ADDR     an attacker's server: every A question, whatever the name, gets ADDR
    --any-aaaa ADDR  and every AAAA question this one
"""
import argparse
import ipaddress
import socket
import socketserver
import sys
import threading

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

p = argparse.ArgumentParser()
p.add_argument("--log", required=True)
p.add_argument("--ttl", type=int, default=300)
p.add_argument("--port", type=int, default=53)
p.add_argument("--bind", action="append", default=[],
               help="an address to serve on (repeatable): answers then come from the address asked")
p.add_argument("--raw-log")
p.add_argument("--any-a")
p.add_argument("--any-aaaa")
p.add_argument("zone", nargs="*")
args = p.parse_args()

zone = {}
for item in args.zone:
    name, spec = item.split("=", 1)
    zone[name.lower().rstrip(".")] = spec.split(",")
counters = {}
lock = threading.Lock()
log = open(args.log, "a", buffering=1)
raw = open(args.raw_log, "a", buffering=1) if args.raw_log else None


def rotate(name, kind, rng):
    first, last = rng.split("-")
    with lock:
        i = counters.get((name, kind), 0)
        counters[(name, kind)] = i + 1
    if kind == "rot4":
        a = ipaddress.ip_address(first)
        n = int(last) - int(str(a).split(".")[-1]) + 1
        return A(str(a + (i % n)))
    a = ipaddress.ip_address(first)
    n = int(last, 16) - int(str(a).split(":")[-1] or "0", 16) + 1
    return AAAA(str(a + (i % n)))


def records(name, qtype, depth=0):
    out = []
    for item in zone.get(name, []):
        kind, value = item.split(":", 1)
        if kind == "cname" and depth < 8:
            out.append(RR(name, QTYPE.CNAME, rdata=CNAME(value), ttl=args.ttl))
            out.extend(records(value.lower().rstrip("."), qtype, depth + 1))
        elif kind == "4" and qtype in ("A", "ANY"):
            out.append(RR(name, QTYPE.A, rdata=A(value), ttl=args.ttl))
        elif kind == "6" and qtype in ("AAAA", "ANY"):
            out.append(RR(name, QTYPE.AAAA, rdata=AAAA(value), ttl=args.ttl))
        elif kind == "rot4" and qtype in ("A", "ANY"):
            out.append(RR(name, QTYPE.A, rdata=rotate(name, kind, value), ttl=1))
        elif kind == "rot6" and qtype in ("AAAA", "ANY"):
            out.append(RR(name, QTYPE.AAAA, rdata=rotate(name, kind, value), ttl=1))
    return out


def answer(data, proto):
    if raw:
        raw.write(f"{proto} {data.hex()}\n")
    try:
        q = DNSRecord.parse(data)
    except Exception:
        log.write(f"{proto} <malformed> -\n")
        return None
    name = str(q.q.qname).lower().rstrip(".")
    qtype = QTYPE.get(q.q.qtype, str(q.q.qtype))
    log.write(f"{proto} {name} {qtype}\n")
    r = q.reply()
    if name not in zone:
        r.header.rcode = RCODE.NXDOMAIN
    for rr in [] if args.any_a or args.any_aaaa else records(name, qtype):
        r.add_answer(rr)
    if qtype == "A" and args.any_a:
        r.header.rcode = RCODE.NOERROR
        r.add_answer(RR(name, QTYPE.A, rdata=A(args.any_a), ttl=300))
    if qtype == "AAAA" and args.any_aaaa:
        r.header.rcode = RCODE.NOERROR
        r.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(args.any_aaaa), ttl=300))
    return r.pack()


class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        out = answer(data, "udp")
        if out:
            sock.sendto(out, self.client_address)


class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            hdr = self.request.recv(2)
            if len(hdr) < 2:
                return
            n = int.from_bytes(hdr, "big")
            data = b""
            while len(data) < n:
                chunk = self.request.recv(n - len(data))
                if not chunk:
                    return
                data += chunk
            out = answer(data, "tcp")
            if not out:
                return
            self.request.sendall(len(out).to_bytes(2, "big") + out)


def servers(addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET

    class U(socketserver.ThreadingUDPServer):
        address_family = fam
        allow_reuse_address = True

    class T(socketserver.ThreadingTCPServer):
        address_family = fam
        allow_reuse_address = True
        daemon_threads = True

    return U((addr, args.port), Udp), T((addr, args.port), Tcp)


all_servers = []
for addr in args.bind or ["0.0.0.0"]:
    all_servers.extend(servers(addr))
for s in all_servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdout.close()
all_servers[0].serve_forever()
