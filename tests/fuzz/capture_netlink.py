#!/usr/bin/env python3
"""Capture raw netlink dump replies as fuzz seeds (run inside a lab namespace, as root).

    capture_netlink.py rtnl OUTDIR    links, addresses, routes, rules (+ one file with all)
    capture_netlink.py nft OUTDIR     rules and set elements of table inet nsegress
    capture_netlink.py ct OUTDIR      the conntrack table

Each file holds the bytes the kernel returned, message after message, up to and including
NLMSG_DONE: exactly what the parsers under tests/fuzz are fed. testenv/... never runs this;
tests/fuzz/capture_seeds.sh does, in a sealed lab, to refresh the committed seeds.
"""
import os
import socket
import struct
import sys

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def dump(proto, msg_type, body, seq):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
    try:
        s.bind((0, 0))
        s.send(struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out = b""
        while True:
            data = s.recv(1 << 20)
            out += data
            off, done = 0, False
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                off += (length + 3) & ~3
            if done:
                return out
    finally:
        s.close()


def write(outdir, name, data):
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)


def rtnl(outdir):
    ifinfomsg = struct.pack("=BxHiII", 0, 0, 0, 0, 0)
    ifaddrmsg = struct.pack("=BBBBI", 0, 0, 0, 0, 0)
    rtmsg = struct.pack("=BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    fib_rule_hdr = struct.pack("=BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    parts = [("links", 18, ifinfomsg), ("addresses", 22, ifaddrmsg), ("routes", 26, rtmsg), ("rules", 34, fib_rule_hdr)]
    everything = b""
    for i, (name, kind, body) in enumerate(parts):
        data = dump(NETLINK_ROUTE, kind, body, i + 1)
        write(outdir, name, data)
        everything += data
    write(outdir, "all", everything)


def nfgenmsg(family):
    return struct.pack("=BBH", family, 0, 0)


def nft(outdir):
    NFPROTO_INET, SUBSYS = 1, 10
    GETRULE, GETSETELEM = 7, 13
    table = attr(1, b"nsegress\0")
    write(outdir, "rules", dump(NETLINK_NETFILTER, (SUBSYS << 8) | GETRULE, nfgenmsg(NFPROTO_INET) + table, 1))
    for i, s in enumerate(("allow4", "allow6")):
        body = nfgenmsg(NFPROTO_INET) + table + attr(2, s.encode() + b"\0")
        write(outdir, "setelem-" + s, dump(NETLINK_NETFILTER, (SUBSYS << 8) | GETSETELEM, body, 2 + i))


def ct(outdir):
    write(outdir, "flows", dump(NETLINK_NETFILTER, (1 << 8) | 1, nfgenmsg(socket.AF_UNSPEC), 1))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("rtnl", "nft", "ct"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    globals()[sys.argv[1]](sys.argv[2])
