#!/usr/bin/env python3
"""bench/report.py: the table of bench/run.sh, from its raw samples.

Usage: report.py RAWDIR --command CMD --runs N --runs-small N --n N --commit REV

RAWDIR holds one file per metric and tool (written by run.sh):
  m<k>.<tool>   measure lines "<wall_s> <cpu_s> <user_s> <sys_s> <maxrss_kib> <exit>", or for
                metric 3 one connections/s value per line, for m5.rtt one RTT in ms per line.
Prints medians and min-max per tool, then every target of issue 17 (numbered as in the issue) with
its ratio and yes/no; a target whose metric was not run, or that needs what this branch does not
have, is listed as "not measured" with the reason.
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
    ap.add_argument("--ports", type=int, default=0)
    ap.add_argument("--many", type=int, default=500)
    a = ap.parse_args()
    raw = a.raw
    n = a.n
    out = []
    w = out.append
    W = 64  # label column

    w(f"nsegress benchmark, {datetime.date.today()}, commit {a.commit}, kernel {platform.release()}, "
      f"{os.cpu_count()} CPUs")
    w(f"runs per tool: {a.runs_small} (metrics 1, 4, 5, 6, 8), {a.runs} (metrics 2, 3, 7); large list: {n} CIDRs "
      f"({n - n // 100} IPv4 /24 + {n // 100} IPv6 /48)")
    w(f"command: {a.command}")
    targets = {}  # issue-17 number -> [(label, measured text, target text, met)]
    missing = {}  # issue-17 number -> why it is not measured

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

    def add(num, label, measured, target, met):
        targets.setdefault(num, []).append((label, measured, target, met))

    def ratio_target(num, label, a_, b_, limit, unit="x", less=True, strict=False):
        r = a_ / b_
        met = (r < limit if strict else r <= limit) if less else r >= limit
        op = ("<" if strict else "<=") if less else ">="
        # Three decimals where two would show the limit itself ("0.90x >= 0.9x  NO").
        shown = f"{r:.2f}" if abs(round(r, 2) - limit) > 1e-9 else f"{r:.3f}"
        add(num, label, f"{shown}{unit}", f"{op} {limit:g}{unit}", met)

    # 1
    g = measured_section("1  restrict, 1 CIDR, fresh namespace", [
        ("nsegress restrict --no-probe", "m1.nsegress"),
        ("nsenter nft -f + ip -4/-6 -batch (same policy, routes)", "m1.peer"),
    ])
    if "m1.nsegress" in g and "m1.peer" in g:
        ratio_target(1, "restrict 1 CIDR: nsegress / (nft -f + ip -batch), wall",
                     g["m1.nsegress"]["wall"], g["m1.peer"]["wall"], 0.15)

    # 2
    g = measured_section(f"2  allow-list of {n} CIDRs, fresh namespace", [
        ("nsegress restrict (policy + route set)", "m2.nsegress"),
        ("nsegress restrict again, same list (no change)", "m2.nsegress_again"),
        ("nsegress restrict again, 1% of the list changed", "m2.nsegress_changed"),
        ("nsegress restrict --no-route-set (policy only)", "m2.nsegress_norouteset"),
        ("nsenter nft -f (the same policy and set)", "m2.nft"),
        ("nsenter nft -f + ip -batch (same set + route set)", "m2.nft_ip"),
        ("nsenter iptables-nft-restore (linear list)", "m2.iptnft"),
        ("nsenter iptables-legacy-restore (linear list)", "m2.iptlegacy"),
    ])
    if "m2.nft_ip" in g and "m2.nsegress" in g:
        ratio_target(2, f"{n} CIDRs + route set: nsegress / (nft -f + ip -batch), wall",
                     g["m2.nsegress"]["wall"], g["m2.nft_ip"]["wall"], 0.5)
        ratio_target(2, f"{n} CIDRs + route set: nsegress / (nft -f + ip -batch), peak RSS",
                     g["m2.nsegress"]["rss"], g["m2.nft_ip"]["rss"], 0.5)
    if "m2.nft" in g and "m2.nsegress_norouteset" in g:
        ratio_target(3, f"{n} CIDRs --no-route-set: nsegress / nft -f, wall",
                     g["m2.nsegress_norouteset"]["wall"], g["m2.nft"]["wall"], 0.45)
        ratio_target(3, f"{n} CIDRs --no-route-set: nsegress / nft -f, peak RSS",
                     g["m2.nsegress_norouteset"]["rss"], g["m2.nft"]["rss"], 0.45)
    if "m2.nsegress_again" in g and "m2.nsegress" in g:
        ratio_target(4, "re-restrict, same list / first restrict, wall",
                     g["m2.nsegress_again"]["wall"], g["m2.nsegress"]["wall"], 0.05)
        ratio_target(4, "re-restrict, same list / first restrict, peak RSS",
                     g["m2.nsegress_again"]["rss"], g["m2.nsegress"]["rss"], 1.0)
    if "m2.nsegress_changed" in g and "m2.nsegress" in g:
        ratio_target(5, "re-restrict, 1% changed / first restrict, wall",
                     g["m2.nsegress_changed"]["wall"], g["m2.nsegress"]["wall"], 0.10)

    # 3
    dp = [("no policy", "m3.none"), (f"nsegress, {n} CIDRs (policy + route set)", "m3.nsegress"),
          ("nsegress, 1 CIDR", "m3.nsegress1"),
          (f"floor: the {n}-CIDR sets alone, stateless (nft -f)", "m3.bare"),
          (f"nsegress, {n} CIDRs + notrack for allowed (not shipped)", "m3.notrack"),
          (f"iptables-legacy, linear list of {n} rules", "m3.iptlegacy"),
          ("Docker-like (host end masquerades): no policy", "m3.nat_none"),
          (f"Docker-like: nsegress, {n} CIDRs (policy + route set)", "m3.nat_nsegress")]
    data = [(label, key, load(raw, key)) for label, key in dp]
    if any(d for _, _, d in data):
        meds = {key: med(col(d, 0)) for _, key, d in data if d}
        w("")
        w(f"{'3  new TCP connections/s to an allowed host':<{W}} {'conn/s: median [min-max]':<28} {'vs none':>8}")
        for label, key, d in data:
            if not d:
                continue
            xs = col(d, 0)
            base = meds.get("m3.nat_none" if key.startswith("m3.nat_") else "m3.none")
            rel = f"{med(xs) / base:.2f}x" if base else "-"
            w(f"  {label:<{W - 2}} {spread(xs):<28} {rel:>8}")
        if "m3.nsegress" in meds and "m3.none" in meds:
            ratio_target(6, f"datapath, {n} CIDRs: nsegress / no policy, conn/s",
                         meds["m3.nsegress"], meds["m3.none"], 0.90, less=False)
        if "m3.nat_nsegress" in meds and "m3.nat_none" in meds:
            ratio_target(7, f"datapath, Docker-like topology: nsegress / no policy, conn/s",
                         meds["m3.nat_nsegress"], meds["m3.nat_none"], 0.95, less=False)

    # 4
    g = measured_section("4  runc run of a busybox container (`true`)", [
        ("without a hook", "m4.plain"),
        ("with a no-op createRuntime hook (/bin/true)", "m4.noop"),
        ("with `nsegress hook --allow CIDR` at createRuntime", "m4.hook"),
    ])
    if "m4.plain" in g and "m4.hook" in g:
        d = g["m4.hook"]["wall"] - g["m4.plain"]["wall"]
        add(8, "runc run with - without the createRuntime hook, median", f"{d:+.2f} ms", "<= +3 ms", d <= 3)

    # 5
    g = measured_section("5  restrict + probe (reach 192.168.1.10, block 198.51.100.10), fresh ns", [
        ("nsegress restrict --probe-reach --probe-block", "m5.nsegress"),
        ("nsenter nft -f + ip -batch + ping reach + ping block", "m5.peer"),
    ])
    rtt = load(raw, "m5.rtt")
    if rtt:
        w(f"  {'reach RTT as nsegress measured it (ms)':<{W - 2}} {spread(col(rtt, 0)):<28}")

    # 6
    g = measured_section("6  docker run --rm of a busybox `true` (dockerd 20.10, userns-remap)", [
        ("default runtime (runc)", "m6.plain"),
        ("--runtime nsegress-runtime --allow CIDR", "m6.wrapper"),
    ])
    if "m6.plain" in g and "m6.wrapper" in g:
        d = g["m6.wrapper"]["wall"] - g["m6.plain"]["wall"]
        add(9, "docker run: nsegress-runtime - runc, median", f"{d:+.2f} ms", "<= +15 ms", d <= 15)

    # 7
    g = measured_section(f"7  {a.ports} port-scoped entries (2 elements each), fresh namespace", [
        ("nsegress restrict --no-route-set", "m7.nsegress"),
        ("nsenter nft -f (the same policy and concatenated sets)", "m7.nft"),
        ("nsegress restrict (policy + route set)", "m7.nsegress_routes"),
    ])
    if "m7.nsegress" in g and "m7.nft" in g:
        ratio_target(10, f"{a.ports} port-scoped entries: nsegress / nft -f, wall",
                     g["m7.nsegress"]["wall"], g["m7.nft"]["wall"], 0.5)

    # 9: names
    plain, names = load(a.raw, "m9.plain"), load(a.raw, "m9.names")
    if plain and names:
        def pct(xs, q):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(q * len(xs)))]
        p_us, n_us = col(plain, 0), col(names, 0)
        w("")
        w(f"9  names: {len(n_us)} lookups, answer time in ms (p50 / p99 / max)")
        for label, xs in (("no policy", p_us), ("through the names proxy", n_us)):
            w(f"  {label:<{W}} {pct(xs, .5) / 1000:>8.3f} {pct(xs, .99) / 1000:>8.3f} {max(xs) / 1000:>8.3f}")
        d50 = (pct(n_us, .5) - pct(p_us, .5)) / 1000
        d99 = (pct(n_us, .99) - pct(p_us, .99)) / 1000
        add(11, "names: answer delay added, p50", f"{d50:+.3f} ms", "<= 0.5 ms", d50 <= 0.5)
        add(11, "names: answer delay added, p99", f"{d99:+.3f} ms", "<= 2 ms", d99 <= 2)
        counts = load(a.raw, "m9.names.counts")
        if counts:
            ok_, fail_, refused_ = counts[0]
            add(11, f"names: refused first connections (of {int(ok_)}; {int(fail_)} unanswered)",
                f"{int(refused_)}", "0", refused_ == 0 and fail_ == 0)
    else:
        missing[11] = "names: DNS answer delay p50 <= 0.5 ms, p99 <= 2 ms, 0 refused first connections: not measured (metric 9 not run)"
    proxy_mem = load(a.raw, "m9.proxy_kib")

    # 8
    g = measured_section(f"8  restrict 1 CIDR, fresh namespace, with other restricted namespaces", [
        ("the 1st (no other restricted namespace)", "m8.first"),
        (f"the {a.many + 1}st ({a.many} others restricted)", "m8.many"),
    ])
    if "m8.first" in g and "m8.many" in g:
        ratio_target(12, f"restrict of the {a.many + 1}st / of the 1st, wall",
                     g["m8.many"]["wall"], g["m8.first"]["wall"], 1.2)
    proxies_mem = load(a.raw, "m9.proxies_kib")
    if proxy_mem:
        pss, priv = proxy_mem[0]
        w("")
        w("9  names: the names proxy's memory (PSS, private in brackets)")
        w(f"  {'one namespace alone (its code charged to it whole)':<{W}} {pss / 1024:>8.2f} MiB"
          f" [{priv / 1024:.2f}]")
        if proxies_mem:
            n, tpss, tpriv = proxies_mem[0]
            w(f"  {f'{int(n)} namespaces, per namespace (total / {int(n)})':<{W}} "
              f"{tpss / n / 1024:>8.2f} MiB [{tpriv / n / 1024:.2f}]")
            add(12, f"the names proxy per namespace, {int(n)} namespaces: PSS",
                f"{tpss / n / 1024:.2f} MiB", "<= 1 MiB", tpss / n <= 1024)
        else:
            add(12, f"the names proxy, one namespace alone: PSS (private {priv / 1024:.2f} MiB)",
                f"{pss / 1024:.2f} MiB", "<= 1 MiB", pss <= 1024)
    else:
        missing[12] = "the name service <= 1 MiB per namespace: not measured (metric 9 not run)"

    w("")
    w(f"{'Targets (issue 17)':<{W + 7}} {'measured':>10} {'target':>10}  met")
    for num in range(1, 13):
        for label, m, t, ok in targets.get(num, []):
            w(f"  {num:<3}{label:<{W + 2}} {m:>10} {t:>10}  {'yes' if ok else 'NO'}")
        if num in missing:
            w(f"  {num:<3}{missing[num]}")
        elif num not in targets:
            w(f"  {num:<3}not measured in this run (its metric was not selected or did not finish)")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
