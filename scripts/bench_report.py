#!/usr/bin/env python3
"""Summarises scripts/bench.sh's raw.jsonl: medians (with min-max) over repeats for each library,
transport, rank count, collective and size; ratios against Open MPI and Gloo; the targets of the
performance issue checked against the machine's limits; a markdown report, a JSON summary and
gnuplot PNGs. Usage: bench_report.py OUTDIR"""
import collections
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "raw.jsonl")) if l.strip()]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# Limits.
copy = [r["copy_gbps"] for r in rows if r.get("lib") == "membw"]
def loopback(sockets, mode):
    return [r["gbps"] for r in rows if r.get("lib") == "tcp_loopback" and r["sockets"] == sockets
            and r.get("mode", "oneway") == mode]


tcp1, tcp4 = loopback(1, "oneway"), loopback(4, "oneway")
# Both ends sending 64 MiB at once over one socket, one thread each (bench_tcp_throughput bidi):
# the traffic of a 2-rank all-reduce without its reduction; per direction.
tcp_bidi = loopback(1, "bidi")
cacheline = [(r["repeat"], r["roundtrip_ns"]) for r in rows
             if r.get("lib") == "cacheline" and r.get("transport") != "cells"]
pair_cacheline = [(r["repeat"], r["roundtrip_ns"]) for r in rows
                  if r.get("lib") == "cacheline" and r.get("transport") == "cells"]
# Two ranks each read their input and write their output at least once: 2N bytes of memory
# traffic per rank for an N-byte all-reduce (slots and peers' data may stay in cache), so busbw
# (= algbw for two ranks) cannot exceed half the per-stream copy bandwidth.
mem_bound = med(copy) / 2 if copy else float("nan")

# Measurements: key -> list of (p50, busbw) over repeats.
series = collections.defaultdict(list)
by_pair = collections.defaultdict(dict)  # key -> {repeat: p50}
# The 8-byte all-reduce run as back-to-back pairs (bench.sh's "phase":"pairs"):
# (transport, lib) -> {pair: p50}.
pair8 = collections.defaultdict(dict)
for r in rows:
    if "collective" not in r:
        continue
    if r.get("phase") == "pairs":
        pair8[(r["transport"], r["lib"])][r["repeat"]] = r["p50_us"]
        continue
    lib = r["lib"]
    algo = r.get("algo", "")
    key = (r["collective"], r["transport"], r["ranks"], lib, algo if lib == "gloo" else "", r["size"])
    series[key].append((r["p50_us"], r["busbw"], r.get("p99_us", 0.0)))
    by_pair[key][r["repeat"]] = r["p50_us"]


def stat(coll, transport, ranks, lib, size, algo=""):
    v = series.get((coll, transport, ranks, lib, algo, size))
    if not v:
        return None
    p50 = [x[0] for x in v]
    bw = [x[1] for x in v]
    return {"p50": med(p50), "p50_min": min(p50), "p50_max": max(p50), "busbw": med(bw),
            "busbw_min": min(bw), "busbw_max": max(bw), "n": len(v)}


def gloo_best(coll, ranks, size):
    best = None
    for key in series:
        if key[0] == coll and key[2] == ranks and key[3] == "gloo" and key[5] == size:
            s = stat(coll, "tcp", ranks, "gloo", size, key[4])
            if s and (best is None or s["busbw"] > best[1]["busbw"]):
                best = (key[4], s)
    return best


def sizes(coll, transport, ranks):
    return sorted({k[5] for k in series if k[0] == coll and k[1] == transport and k[2] == ranks})


def fmt_size(b):
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= f and b % f == 0:
            return f"{b // f} {unit}"
    return f"{b} B"


def cell(s, field="p50", digits=2):
    if not s:
        return "-"
    lo, hi = s[field + "_min"], s[field + "_max"]
    return f"{s[field]:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


lines = []
summary = {"date": datetime.date.today().isoformat(), "machine": {}, "limits": {}, "tables": {},
           "targets": []}
cpu = "unknown"
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
except OSError:
    pass
summary["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}
summary["limits"] = {"copy_gbps_per_stream": med(copy), "allreduce2_mem_bound_busbw": mem_bound,
                     "tcp_loopback_1_socket_gbps": med(tcp1), "tcp_loopback_4_sockets_gbps": med(tcp4),
                     "tcp_loopback_exchange_gbps_per_direction": med(tcp_bidi) if tcp_bidi else None,
                     "cacheline_roundtrip_ns_per_repeat": [ns for _, ns in sorted(cacheline)]}
lines.append(f"# weft vs Open MPI and Gloo — {summary['date']}")
lines.append("")
def most_runs(colls):
    return max((s["n"] for k in series if k[0] in colls
                for s in [stat(*k[:4], k[5], k[4])] if s), default=0)


lines.append(f"Machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}. All-reduce: "
             f"medians of {most_runs(('allreduce',))} interleaved repeats; broadcast, all-gather "
             f"and reduce-scatter: {most_runs(('broadcast', 'allgather', 'reducescatter'))} pairs "
             "of back-to-back runs; min–max in parentheses; time is the slowest rank's "
             "per-iteration p50.")
lines.append("")
baseline_cc = os.environ.get("BENCH_BASELINE_CC", "")
baselines = (f"Open MPI's and Gloo's TCP sockets were given {baseline_cc} too (`--baseline-cc`)"
             if baseline_cc else "Open MPI and Gloo keep the host's default")
lines.append("Limits measured in the same run: memory copy bandwidth per stream with two streams "
             f"**{med(copy):.1f} GB/s** (so a 2-rank all-reduce's bus bandwidth is bounded by "
             f"**{mem_bound:.1f} GB/s**: each rank must at least read its input and write its "
             f"output); loopback TCP **{med(tcp1):.2f} GB/s** with one socket, **{med(tcp4):.2f} GB/s** "
             "with four (256 MiB streamed with cubic congestion control, which weft's TCP transport "
             f"uses on loopback; {baselines})"
             + (f"; and **{med(tcp_bidi):.2f} GB/s** each way when both ends of one socket send "
                "64 MiB at once, one thread each writing and reading as the socket allows: the "
                "traffic of a 2-rank all-reduce without its reduction, so the 2-rank TCP table's "
                "\"% of exchange\" column holds a 2-rank all-reduce's bus bandwidth against it"
                if tcp_bidi else "") + ".")
if cacheline:
    trips = ", ".join(f"{ns:.0f}" for _, ns in sorted(cacheline))
    lines.append("")
    lines.append(f"Cache-line round trip between CPUs 0 and 1 at the start of each repeat "
                 f"(`bench_cacheline`): {trips} ns. This VM's host runs its two vCPUs either "
                 "together (~100 ns) or apart (~500 ns) and moves them while it runs; every "
                 "intra-host number moves with it, so compare the libraries within a repeat.")
lines.append("")

targets = summary["targets"]


def target(name, ok, detail):
    targets.append({"target": name, "met": bool(ok), "detail": detail})


def pair_ratios(w, m):
    """Open MPI time / weft time per pair ({pair: p50} of each library), in pair order."""
    return [m[k] / w[k] for k in sorted(w) if k in m and w[k] > 0]


def paired8(transport):
    """The pair ratios of the 8-byte runs."""
    return pair_ratios(pair8.get((transport, "weft"), {}), pair8.get((transport, "openmpi"), {}))


def latency_target(name, transport, w, m):
    # Judged on the back-to-back pairs where the run has them (the sweep's one run per library
    # per repeat can catch the two in different host states); the sweep's medians beside.
    sweep = f"sweep: weft {w['p50']:.2f} µs vs Open MPI {m['p50']:.2f} µs"
    ratios = paired8(transport)
    if not ratios:
        target(name, w["p50"] <= m["p50"], sweep)
        return
    paired = med(ratios)
    target(name, paired >= 1.0,
           f"{paired:.2f}x, median of {len(ratios)} pairs ({min(ratios):.2f}-{max(ratios):.2f}, "
           f"weft {med(list(pair8[(transport, 'weft')].values())):.2f} µs vs Open MPI "
           f"{med(list(pair8[(transport, 'openmpi')].values())):.2f} µs); {sweep}")


for transport in ("shm", "tcp"):
    for ranks in (2, 4):
        ss = sizes("allreduce", transport, ranks)
        if not ss:
            continue
        title = f"All-reduce, float32 sum, {ranks} ranks, {'shared memory' if transport == 'shm' else 'TCP loopback'}"
        lines.append(f"## {title}")
        lines.append("")
        hdr = "| size | weft p50 µs | Open MPI p50 µs |"
        sep = "|---:|---:|---:|"
        if transport == "tcp":
            hdr += " Gloo best p50 µs (algo) |"
            sep += "---:|"
        hdr += " weft busbw GB/s | Open MPI busbw GB/s | weft / Open MPI |"
        sep += "---:|---:|---:|"
        if transport == "tcp":
            hdr += " weft / Gloo best |"
            sep += "---:|"
        if transport == "shm" and ranks == 2:
            hdr += " % of memory bound |"
            sep += "---:|"
        if transport == "tcp" and ranks == 2 and tcp_bidi:
            hdr += " % of exchange |"
            sep += "---:|"
        lines += [hdr, sep]
        table = []
        for size in ss:
            w = stat("allreduce", transport, ranks, "weft", size)
            m = stat("allreduce", transport, ranks, "openmpi", size)
            g = gloo_best("allreduce", ranks, size) if transport == "tcp" else None
            ratio = (w["busbw"] / m["busbw"]) if w and m and m["busbw"] > 0 else (m["p50"] / w["p50"] if w and m else float("nan"))
            row = f"| {fmt_size(size)} | {cell(w)} | {cell(m)} |"
            if transport == "tcp":
                row += f" {cell(g[1]) + ' ' + g[0] if g else '-'} |"
            row += f" {cell(w, 'busbw', 3)} | {cell(m, 'busbw', 3)} | {ratio:.2f}× |"
            gr = None
            if transport == "tcp":
                gr = ((w["busbw"] / g[1]["busbw"]) if w and g and g[1]["busbw"] > 0
                      else (g[1]["p50"] / w["p50"] if w and g else float("nan")))
                row += f" {gr:.2f}× |"
            if transport == "shm" and ranks == 2:
                row += f" {100 * w['busbw'] / mem_bound:.0f}% |" if w else " - |"
            if transport == "tcp" and ranks == 2 and tcp_bidi:
                row += f" {100 * w['busbw'] / med(tcp_bidi):.0f}% |" if w else " - |"
            lines.append(row)
            table.append({"size": size, "weft": w, "openmpi": m,
                          "gloo_best": {"algo": g[0], **g[1]} if g else None})
            # Targets (issue: benchmarks side by side with Open MPI and Gloo).
            if not (w and m):
                continue
            lat_ratio = w["p50"] / m["p50"]
            if transport == "shm" and ranks == 2 and size == 8:
                latency_target("shm 2 ranks: 8 B latency no worse than Open MPI", "shm", w, m)
            if transport == "shm" and ranks == 2 and size in (16 << 20, 64 << 20, 256 << 20):
                target(f"shm 2 ranks: busbw at {fmt_size(size)} >= 2x Open MPI", ratio >= 2.0,
                       f"{ratio:.2f}x ({w['busbw']:.2f} vs {m['busbw']:.2f} GB/s)")
                target(f"shm 2 ranks: busbw at {fmt_size(size)} >= 40% of the memory bound",
                       w["busbw"] >= 0.4 * mem_bound,
                       f"{100 * w['busbw'] / mem_bound:.0f}% ({w['busbw']:.2f} of {mem_bound:.2f} GB/s)")
            if transport == "tcp" and ranks == 2 and size == 8:
                latency_target("tcp 2 ranks: 8 B latency no worse than Open MPI TCP", "tcp", w, m)
            if transport == "tcp" and ranks == 2 and size == 64 << 20:
                target("tcp 2 ranks: busbw at 64 MiB >= 1.5x Gloo's best", gr is not None and gr >= 1.5,
                       f"{gr:.2f}x vs Gloo {g[0] if g else '?'}")
                target("tcp 2 ranks: busbw at 64 MiB >= 2x Open MPI TCP", ratio >= 2.0, f"{ratio:.2f}x")
            if ranks == 4:
                target(f"4 ranks {transport}: {fmt_size(size)} no slower than Open MPI", lat_ratio <= 1.0,
                       f"weft {w['p50']:.1f} µs vs Open MPI {m['p50']:.1f} µs")
        summary["tables"][f"allreduce_{transport}_{ranks}"] = table
        lines.append("")

if pair8:
    lines.append("## All-reduce, 8 B, 2 ranks, back-to-back pairs")
    lines.append("")
    lines.append("The latency targets' cell run as pairs of runs (2000 timed iterations each) "
                 "alongside the broadcast cells below; the verdict is the median of the pairs' "
                 "ratios (Open MPI time / weft time).")
    lines.append("")
    lines.append("| transport | weft p50 µs | Open MPI p50 µs | Open MPI / weft, median of pairs (min–max) | pairs weft ahead |")
    lines.append("|---|---:|---:|---:|---:|")
    p8 = {}
    for transport in ("shm", "tcp"):
        ratios = paired8(transport)
        if not ratios:
            continue
        wv = list(pair8[(transport, "weft")].values())
        mv = list(pair8[(transport, "openmpi")].values())
        lines.append(f"| {transport} | {med(wv):.2f} ({min(wv):.2f}–{max(wv):.2f}) | "
                     f"{med(mv):.2f} ({min(mv):.2f}–{max(mv):.2f}) | {med(ratios):.2f}× "
                     f"({min(ratios):.2f}–{max(ratios):.2f}) | "
                     f"{sum(1 for x in ratios if x >= 1.0)} of {len(ratios)} |")
        p8[transport] = {"weft": wv, "openmpi": mv, "pair_ratios": ratios}
    summary["tables"]["allreduce_8B_pairs"] = p8
    lines.append("")

lines.append("## Broadcast, all-gather, reduce-scatter (p50 µs, weft / Open MPI)")
lines.append("")
lines.append("Each cell is a pair of runs back to back (20 timed iterations each), repeated; the "
             "library that goes first alternates. The verdict is the median over the pairs of "
             "each pair's ratio (Open MPI time / weft time): the host moves the vCPUs every few "
             "minutes, which swings both libraries 2-4x, and a pair sees one state where medians "
             "taken separately may mix states. Ratio of the two medians alongside.")
if pair_cacheline:
    lines.append("")
    lines.append("Cache-line round trip at the start of each pair set: " +
                 ", ".join(f"{ns:.0f} ns" for _, ns in sorted(pair_cacheline)) + ".")
lines.append("")
lines.append("| collective | transport | ranks | size | weft p50 µs | Open MPI p50 µs | "
             "Open MPI / weft, median of pairs (min–max) | pairs weft ahead | ratio of medians |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
pair_cells = []
for coll in ("broadcast", "allgather", "reducescatter"):
    for transport in ("shm", "tcp"):
        for ranks in (2, 4):
            for size in sizes(coll, transport, ranks):
                w = stat(coll, transport, ranks, "weft", size)
                m = stat(coll, transport, ranks, "openmpi", size)
                if not (w and m):
                    continue
                ratios = pair_ratios(by_pair[(coll, transport, ranks, "weft", "", size)],
                                     by_pair[(coll, transport, ranks, "openmpi", "", size)])
                paired = med(ratios)
                ahead = sum(1 for x in ratios if x >= 1.0)
                of_medians = m["p50"] / w["p50"]
                lines.append(f"| {coll} | {transport} | {ranks} | {fmt_size(size)} | {cell(w)} | "
                             f"{cell(m)} | {paired:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | "
                             f"{ahead} of {len(ratios)} | {of_medians:.2f}× |")
                pair_cells.append({"collective": coll, "transport": transport, "ranks": ranks,
                                   "size": size, "weft": w, "openmpi": m, "pair_ratios": ratios,
                                   "median_pair_ratio": paired, "ratio_of_medians": of_medians})
                target(f"{coll} {transport} {ranks} ranks {fmt_size(size)}: no slower than Open MPI",
                       paired >= 1.0,
                       f"{paired:.2f}x, median of {len(ratios)} pairs ({min(ratios):.2f}-"
                       f"{max(ratios):.2f}; ratio of medians {of_medians:.2f}x)")
summary["tables"]["collective_pairs"] = pair_cells
lines.append("")

# The 2-rank shared-memory targets repeat by repeat, next to where the host had the vCPUs: the
# libraries are interleaved within a repeat, so a repeat's ratio is a fair comparison, while the
# medians above mix the host's states.
KEY_SIZES = (8, 16 << 20, 64 << 20, 256 << 20)
if cacheline and series.get(("allreduce", "shm", 2, "weft", "", 8)):
    by_repeat = collections.defaultdict(dict)
    for r in rows:
        if (r.get("collective") == "allreduce" and r.get("transport") == "shm"
                and r.get("ranks") == 2 and r.get("size") in KEY_SIZES):
            by_repeat[r["repeat"]][(r["lib"], r["size"])] = r
    lines.append("## 2 ranks, shared memory, repeat by repeat")
    lines.append("")
    lines.append("weft's advantage (Open MPI time / weft time, within each repeat) against where the "
                 "host had the two vCPUs when the repeat began (together: cache-line round trip "
                 "under 300 ns).")
    lines.append("")
    lines.append("| repeat | cache-line round trip | vCPUs | " +
                 " | ".join(fmt_size(s) for s in KEY_SIZES) + " |")
    lines.append("|---:|---:|---|" + "---:|" * len(KEY_SIZES))
    per_repeat = []
    for rep, ns in sorted(cacheline):
        got = by_repeat.get(rep, {})
        cells = []
        for size in KEY_SIZES:
            w, m = got.get(("weft", size)), got.get(("openmpi", size))
            cells.append(f"{m['p50_us'] / w['p50_us']:.2f}×" if w and m else "-")
        state = "together" if ns < 300 else "apart"
        per_repeat.append({"repeat": rep, "roundtrip_ns": ns, "vcpus": state,
                           "speedup": dict(zip(map(str, KEY_SIZES), cells))})
        lines.append(f"| {rep} | {ns:.0f} ns | {state} | " + " | ".join(cells) + " |")
    summary["shm_2ranks_by_repeat"] = per_repeat
    lines.append("")

lines.append("## Targets")
lines.append("")
met = sum(t["met"] for t in targets)
lines.append(f"{met} of {len(targets)} met.")
lines.append("")
for t in targets:
    lines.append(f"- {'met' if t['met'] else 'MISSED'}: {t['target']} — {t['detail']}")
lines.append("")

open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1, default=str)

# Plots: busbw and latency against size, one line per library, for the 2-rank runs.
for transport in ("shm", "tcp"):
    libs = [("weft", ""), ("openmpi", "")]
    if transport == "tcp":
        libs += [("gloo", a) for a in sorted({k[4] for k in series if k[3] == "gloo"})]
    datafiles = []
    for lib, algo in libs:
        path = os.path.join(out, f"plot_{transport}_{lib}{'_' + algo if algo else ''}.dat")
        with open(path, "w") as f:
            for size in sizes("allreduce", transport, 2):
                s = stat("allreduce", transport, 2, lib, size, algo)
                if s:
                    f.write(f"{size} {s['busbw']} {s['p50']}\n")
        datafiles.append((path, lib + (" " + algo if algo else "")))
    for what, col, ylabel, logy in (("busbw", 2, "bus bandwidth (GB/s)", False), ("latency", 3, "p50 time (µs)", True)):
        png = os.path.join(out, f"allreduce_{transport}_2ranks_{what}.png")
        plots = ", ".join(f"'{p}' using 1:{col} with linespoints title '{t}'" for p, t in datafiles)
        script = (f"set terminal pngcairo size 900,540\nset output '{png}'\nset logscale x 2\n"
                  + ("set logscale y 10\n" if logy else "")
                  + f"set xlabel 'message size (bytes)'\nset ylabel '{ylabel}'\nset key left top\n"
                  f"set title 'all-reduce, 2 ranks, {transport}, {summary['date']}'\nplot {plots}\n")
        try:
            subprocess.run(["gnuplot"], input=script.encode(), check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"bench_report: gnuplot failed: {e}", file=sys.stderr)
print("\n".join(lines))
