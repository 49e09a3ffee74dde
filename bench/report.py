#!/usr/bin/env python3
"""bench/report.py: the table of bench/run.sh, from its raw samples.

Usage: report.py RAWDIR --command CMD --runs N --runs-small N --n N --commit REV

RAWDIR holds one file per metric and tool (written by run.sh):
  m<k>.<tool>   measure lines "<wall_s> <cpu_s> <user_s> <sys_s> <maxrss_kib> <exit>", or for
                metric 3 one connections/s value per line, for m5.rtt one RTT in ms per line.
Prints medians and min-max per tool, then every target of issue 5 with its ratio and yes/no.
A metric that was not run is left out.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys


def load(raw, key):
    path = os.path.join(raw, key)
    if not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                rows.append([float(x) for x in parts])
    return rows or None


def col(rows, i, scale=1.0):
    return [r[i] * scale for r in rows]


def med(xs):
    return statistics.median(xs)


def fmt(x):
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def spread(xs):
    return f"{fmt(med(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--command", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--runs-small", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--commit", default="unknown")
    a = ap.parse_args()
    raw = a.raw
    n = a.n
    out = []
    w = out.append
    W = 64  # label column

    w(f"nsegress benchmark, {datetime.date.today()}, commit {a.commit}, kernel {platform.release()}, "
      f"{os.cpu_count()} CPUs")
    w(f"runs per tool: {a.runs_small} (metrics 1, 4, 5, 6), {a.runs} (metrics 2, 3); large list: {n} CIDRs "
      f"({n - n // 100} IPv4 /24 + {n // 100} IPv6 /48)")
    w(f"command: {a.command}")
    targets = []  # (label, measured text, target text, met)

    def measured_section(title, rows):
        """rows: (label, key); measure files. Prints wall / cpu / peak RSS."""
        data = [(label, load(raw, key)) for label, key in rows]
        if not any(d for _, d in data):
            return {}
        w("")
        w(f"{title:<{W}} {'wall ms: median [min-max]':<28} {'cpu ms':>8} {'peak RSS MiB':>13}")
        got = {}
        for (label, d), (_, key) in zip(data, rows):
            if not d:
                continue
            wall, cpu, rss = col(d, 0, 1000), col(d, 1, 1000), col(d, 4, 1 / 1024)
            w(f"  {label:<{W - 2}} {spread(wall):<28} {fmt(med(cpu)):>8} {fmt(med(rss)):>13}")
            got[key] = {"wall": med(wall), "rss": med(rss), "walls": wall}
        return got

    def ratio_target(label, num, den, limit, unit="x", less=True, strict=False):
        r = num / den
        met = (r < limit if strict else r <= limit) if less else r >= limit
        op = ("<" if strict else "<=") if less else ">="
        targets.append((label, f"{r:.2f}{unit}", f"{op} {limit:g}{unit}", met))

    # 1
    g = measured_section("1  restrict, 1 CIDR, fresh namespace", [
        ("nsegress restrict --no-probe", "m1.nsegress"),
        ("nsenter nft -f + ip -4/-6 -batch (same policy, routes)", "m1.peer"),
    ])
    if "m1.nsegress" in g and "m1.peer" in g:
        ratio_target("1  restrict 1 CIDR: nsegress / (nft -f + ip), wall",
                     g["m1.nsegress"]["wall"], g["m1.peer"]["wall"], 0.25)

    # 2
    g = measured_section(f"2  allow-list of {n} CIDRs, fresh namespace", [
        ("nsegress restrict (policy + route set)", "m2.nsegress"),
        ("nsegress restrict again, same list (no change)", "m2.nsegress_again"),
        ("nsegress restrict --no-route-set (policy only)", "m2.nsegress_norouteset"),
        ("nsenter nft -f (the same policy and set)", "m2.nft"),
        ("nsenter nft -f + ip -batch (same set + route set)", "m2.nft_ip"),
        ("nsenter iptables-nft-restore (linear list)", "m2.iptnft"),
        ("nsenter iptables-legacy-restore (linear list)", "m2.iptlegacy"),
    ])
    if "m2.nft" in g:
        nft = g["m2.nft"]
        if "m2.nsegress" in g:
            ratio_target(f"2  {n} CIDRs: nsegress (+ route set) / nft -f, wall", g["m2.nsegress"]["wall"], nft["wall"], 0.5)
            ratio_target(f"2  {n} CIDRs: nsegress (+ route set) / nft -f, peak RSS", g["m2.nsegress"]["rss"], nft["rss"], 0.5)
        if "m2.nsegress_norouteset" in g:
            ratio_target(f"2  {n} CIDRs: nsegress --no-route-set / nft -f, wall",
                         g["m2.nsegress_norouteset"]["wall"], nft["wall"], 0.5)
            ratio_target(f"2  {n} CIDRs: nsegress --no-route-set / nft -f, peak RSS",
                         g["m2.nsegress_norouteset"]["rss"], nft["rss"], 0.5)
    if "m2.nft_ip" in g and "m2.nsegress" in g:
        ratio_target(f"2  {n} CIDRs: nsegress (+ route set) / (nft -f + ip -batch), wall",
                     g["m2.nsegress"]["wall"], g["m2.nft_ip"]["wall"], 0.5)
    if "m2.nsegress_again" in g and "m2.nsegress" in g:
        ratio_target(f"2  {n} CIDRs: re-restrict (no change) / restrict, wall",
                     g["m2.nsegress_again"]["wall"], g["m2.nsegress"]["wall"], 1.0, strict=True)

    # 3
    dp = [("no policy", "m3.none"), (f"nsegress, {n} CIDRs (policy + route set)", "m3.nsegress"),
          ("nsegress, 1 CIDR", "m3.nsegress1"),
          (f"floor: the {n}-CIDR sets alone, stateless (nft -f)", "m3.bare"),
          (f"iptables-legacy, linear list of {n} rules", "m3.iptlegacy")]
    data = [(label, key, load(raw, key)) for label, key in dp]
    if any(d for _, _, d in data):
        base = load(raw, "m3.none")
        base_med = med(col(base, 0)) if base else None
        w("")
        w(f"{'3  new TCP connections/s to an allowed host':<{W}} {'conn/s: median [min-max]':<28} {'vs none':>8}")
        for label, key, d in data:
            if not d:
                continue
            xs = col(d, 0)
            rel = f"{med(xs) / base_med:.2f}x" if base_med else "-"
            w(f"  {label:<{W - 2}} {spread(xs):<28} {rel:>8}")
        nsg = load(raw, "m3.nsegress")
        if base and nsg:
            ratio_target(f"3  datapath, {n} CIDRs: nsegress / no policy, conn/s",
                         med(col(nsg, 0)), base_med, 0.95, less=False)

    # 4
    g = measured_section("4  runc run of a busybox container (`true`)", [
        ("without a hook", "m4.plain"),
        ("with a no-op createRuntime hook (/bin/true)", "m4.noop"),
        ("with `nsegress hook --allow CIDR` at createRuntime", "m4.hook"),
    ])
    if "m4.plain" in g and "m4.hook" in g:
        d = g["m4.hook"]["wall"] - g["m4.plain"]["wall"]
        targets.append(("4  OCI hook: runc run with - without the hook, median", f"{d:+.2f} ms", "<= 5 ms", d <= 5))

    # 5
    g = measured_section("5  restrict + probe (reach 192.168.1.10, block 198.51.100.10), fresh ns", [
        ("nsegress restrict --probe-reach --probe-block", "m5.nsegress"),
        ("nsenter nft -f + ip -batch + ping reach + ping block", "m5.peer"),
    ])
    rtt = load(raw, "m5.rtt")
    if rtt:
        w(f"  {'reach RTT as nsegress measured it (ms)':<{W - 2}} {spread(col(rtt, 0)):<28}")
    if "m5.nsegress" in g and rtt and len(rtt) == len(g["m5.nsegress"]["walls"]):
        over = med([wall - r for wall, r in zip(g["m5.nsegress"]["walls"], col(rtt, 0))])
        targets.append(("5  restrict + probe: wall - reach RTT, median", f"{over:.2f} ms", "<= 10 ms", over <= 10))

    # 6
    g = measured_section("6  docker run --rm of a busybox `true` (dockerd 20.10, userns-remap)", [
        ("default runtime (runc)", "m6.plain"),
        ("--runtime nsegress-runtime --allow CIDR", "m6.wrapper"),
    ])
    if "m6.plain" in g and "m6.wrapper" in g:
        d = g["m6.wrapper"]["wall"] - g["m6.plain"]["wall"]
        targets.append(("6  docker run: nsegress-runtime - default runtime, median (issue 17)",
                        f"{d:+.2f} ms", "<= 15 ms", d <= 15))

    if targets:
        w("")
        w(f"{'Targets (issue 5)':<{W + 7}} {'measured':>10} {'target':>10}  met")
        for label, m, t, ok in targets:
            w(f"  {label:<{W + 5}} {m:>10} {t:>10}  {'yes' if ok else 'NO'}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
