#!/usr/bin/python3
"""Send a steady UDP stream to several targets until a stop file appears.

usage: udp_stream.py STOPFILE OUT.json PORT INTERVAL_S ADDR...

One datagram per target per interval, each from its own unconnected socket. For every target it
records how many sendto() calls succeeded and, per errno name, how many failed (EPERM: an nft
reject; EHOSTUNREACH: the route set's unreachable route). Writes OUT.json when stopped, and
OUT.json.started after the first round.
"""
import errno
import json
import os
import socket
import sys
import time

stop, out, port, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
targets = sys.argv[5:]
socks = {}
stats = {}
for t in targets:
    fam = socket.AF_INET6 if ":" in t else socket.AF_INET
    socks[t] = socket.socket(fam, socket.SOCK_DGRAM)
    stats[t] = {"ok": 0, "errors": {}}
rounds = 0
while not os.path.exists(stop):
    for t in targets:
        try:
            socks[t].sendto(b"nsegress-stream %d" % rounds, (t, port))
            stats[t]["ok"] += 1
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            stats[t]["errors"][name] = stats[t]["errors"].get(name, 0) + 1
    rounds += 1
    if rounds == 1:
        with open(out + ".started", "w") as f:
            f.write("started\n")
    time.sleep(interval)
with open(out, "w") as f:
    json.dump({"rounds": rounds, "targets": stats}, f)
