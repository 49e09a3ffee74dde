#!/usr/bin/python3
"""DNS queries and resolve-then-connect loops from inside the container (python3-dnslib).

    dns_client.py query SERVER NAME TYPE [--tcp]
        prints the rcode name and the addresses: "NOERROR 192.168.1.10 ..." / "REFUSED",
        or "TIMEOUT" / "ECONNREFUSED" when no answer came
    dns_client.py loop SERVER NAME TYPE PORT COUNT
        COUNT times: resolve NAME, connect at once (TCP) to every address of the answer; prints
        "cycles=N first_failures=F unresolved=U addresses=K" and one line per failure
"""
import errno
import socket
import struct
import sys

from dnslib import QTYPE, RCODE, DNSRecord


def ask(server, name, qtype, tcp=False, timeout=3.0):
    q = DNSRecord.question(name, qtype)
    data = q.pack()
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.connect((server, 53))
        if tcp:
            s.sendall(struct.pack("!H", len(data)) + data)
            hdr = s.recv(2)
            if len(hdr) < 2:
                return "CLOSED", []
            n = struct.unpack("!H", hdr)[0]
            resp = b""
            while len(resp) < n:
                chunk = s.recv(n - len(resp))
                if not chunk:
                    return "CLOSED", []
                resp += chunk
        else:
            s.send(data)
            resp = s.recv(65535)
    except socket.timeout:
        return "TIMEOUT", []
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)), []
    finally:
        s.close()
    r = DNSRecord.parse(resp)
    addrs = [str(rr.rdata) for rr in r.rr if QTYPE.get(rr.rtype) in ("A", "AAAA")]
    return RCODE.get(r.header.rcode), addrs


def connect(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((addr, port))
        return "ok"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()


def main():
    cmd = sys.argv[1]
    if cmd == "query":
        server, name, qtype = sys.argv[2:5]
        rcode, addrs = ask(server, name, qtype, tcp="--tcp" in sys.argv)
        print(" ".join([rcode] + addrs))
        return
    if cmd == "loop":
        server, name, qtype, port, count = sys.argv[2:7]
        failures = unresolved = 0
        seen = set()
        for i in range(int(count)):
            rcode, addrs = ask(server, name, qtype)
            if rcode != "NOERROR" or not addrs:
                unresolved += 1
                print(f"cycle {i}: {rcode}")
                continue
            for a in addrs:
                seen.add(a)
                r = connect(a, int(port))
                if r != "ok":
                    failures += 1
                    print(f"cycle {i}: connect {a}:{port}: {r}")
        print(f"cycles={count} first_failures={failures} unresolved={unresolved} addresses={len(seen)}")
        return
    sys.exit(f"unknown command {cmd}")


main()
