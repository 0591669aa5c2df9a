# SPDX-License-Identifier: GPL-2.0-or-later
"""Turn the benchmark driver's raw results into bench/results/REPORT.md,
report.png and results.json (run by bench/run.sh)."""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess

LIBS = ["ours", "c10", "c72"]
LABEL = {"ours": "ours", "c10": "C 10.0.2", "c72": "C 7.2"}


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def spread(v):
    """(min, max) relative to the median, in percent."""
    v = [x for x in v if x is not None]
    if len(v) < 2:
        return None
    m = statistics.median(v)
    if m == 0:  # e.g. CPU time below the 10 ms tick in a short window
        return None
    return (100.0 * (min(v) - m) / m, 100.0 * (max(v) - m) / m)


def fmt(x, unit=""):
    if x is None:
        return "–"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M{unit}"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k{unit}"
    if x >= 100:
        return f"{x:.0f}{unit}"
    return f"{x:.2f}{unit}"


def fmt_sp(v):
    s = spread(v)
    if s is None:
        return ""
    return f" ({s[0]:+.0f}/{s[1]:+.0f}%)"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(x):
    return "–" if x is None else f"{x:.2f}"


def section(rows, rate_name, cost_name, with_ir=True):
    """Markdown table: medians (spread) per library + ratios ours/C."""
    head = f"| workload | {rate_name} ours | C 10.0.2 | C 7.2 | {cost_name} ours | C 10.0.2 | C 7.2 |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if with_ir:
        head += " instr/req ours | C 10.0.2 | C 7.2 |"
        sep += "---:|---:|---:|"
    head += " ratio rate ours/C10 | ours/C7.2 | ratio cost ours/C10 | ours/C7.2 |"
    sep += "---:|---:|---:|---:|"
    if with_ir:
        head += " ratio instr ours/C10 | ours/C7.2 |"
        sep += "---:|---:|"
    out = [head, sep]
    for r in rows:
        libs = r["libs"]
        cells = [r["workload"]]
        m = {}
        for key in ["rps", "cpu_ns"]:
            for lib in LIBS:
                st = libs.get(lib, {})
                v = st.get(key) or []
                m[(key, lib)] = med(v)
                if not v:
                    cells.append("n/a" + (f" ({st['note']})" if st.get("note") else ""))
                else:
                    cells.append(fmt(m[(key, lib)]) + fmt_sp(v))
        if with_ir:
            for lib in LIBS:
                ir = libs.get(lib, {}).get("ir")
                m[("ir", lib)] = ir
                cells.append(fmt(ir))
        keys = ["rps", "cpu_ns"] + (["ir"] if with_ir else [])
        for key in keys:
            for c in ["c10", "c72"]:
                cells.append(fr(ratio(m[(key, "ours")], m[(key, c)])))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


CLIBS = ["ours", "c-original"]


LIB_FN_RE = re.compile(r"libvhost-user|vhost-user-glib|:(vu_|_vu_|vug_|virtqueue_|vhost_user::|vhost_user_glib::|<vhost_user)")


def lib_instr(path):
    """Self instructions in the library's functions (C: libvhost-user*.c;
    ours: vu_*/vug_* entry points and vhost_user::*, inlined code included)."""
    if not os.path.exists(path):
        return None
    total = 0
    for line in sh(f"callgrind_annotate --auto=no --inclusive=no --threshold=100 '{path}'").splitlines():
        m = FUNC_RE.match(line)
        if m and "PROGRAM TOTALS" not in line and LIB_FN_RE.search(m.group(2)):
            total += int(m.group(1).replace(",", ""))
    return total


def consumer_lib_ir(raw, row, lib, n):
    gen, kind = row["workload"].split()[:2]
    depth = row["workload"].rsplit("qd", 1)[1]
    a = lib_instr(os.path.join(raw, f"cg-cons-{gen}-{lib}-{kind}-{depth}-0"))
    b = lib_instr(os.path.join(raw, f"cg-cons-{gen}-{lib}-{kind}-{depth}-n"))
    return None if a is None or b is None else (b - a) / n


def consumer_section(rows, raw, n):
    """Real consumers: ours vs the C original of the same QEMU generation."""
    out = ["| workload | IOPS ours | IOPS C | CPU ns/req ours | C | instr/req ours | C "
           "| library instr/req ours | C | ratio IOPS ours/C | ratio CPU ours/C | ratio instr ours/C "
           "| ratio library instr ours/C |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        libs = r["libs"]
        cells = [r["workload"]]
        m = {}
        for key in ["rps", "cpu_ns"]:
            for lib in CLIBS:
                st = libs.get(lib, {})
                v = st.get(key) or []
                m[(key, lib)] = med(v)
                if not v:
                    cells.append("n/a" + (f" ({st['note']})" if st.get("note") else ""))
                else:
                    cells.append(fmt(m[(key, lib)]) + fmt_sp(v))
        for lib in CLIBS:
            m[("ir", lib)] = libs.get(lib, {}).get("ir")
            cells.append(fmt(m[("ir", lib)]))
        for lib in CLIBS:
            m[("lib", lib)] = consumer_lib_ir(raw, r, lib, n)
            cells.append(fmt(m[("lib", lib)]))
        for key in ["rps", "cpu_ns", "ir", "lib"]:
            cells.append(fr(ratio(m[(key, "ours")], m[(key, "c-original")])))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def mem_section(path):
    """Heap in use (mallinfo2 uordblks, bytes) after each step, from mem.txt."""
    if not os.path.exists(path):
        return None
    d = {}
    for line in open(path):
        parts = line.rstrip("\n").split("|", 2)
        if len(parts) != 3:
            continue
        lib, args, out = parts
        kv = dict(t.split("=", 1) for t in out.split() if "=" in t)
        d[(lib, args)] = kv if "init" in kv else {"error": out}

    def g(lib, args, key):
        kv = d.get((lib, args), {})
        return int(kv[key]) if key in kv else None

    def cell(x):
        return "n/a" if x is None else f"{x:,}"

    def per(x, n):
        return "n/a" if x is None else f"{x / n:.1f}"

    out = ["| library | sizeof(VuDev) (caller's) | heap after vu_init, 1 queue | 64 queues | per extra queue "
           "| SET_MEM_TABLE 8 regions (+heap) | per region | ADD_MEM_REG 32 regions (+heap) | per region "
           "| ADD_MEM_REG 256 regions (+heap) | per region |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lib in LIBS:
        q1, q64 = g(lib, "-q 1", "init"), g(lib, "-q 64", "init")
        mt, a32, a256 = g(lib, "-q 1 -m", "memtable"), g(lib, "-q 1 -a 32", "addreg"), g(lib, "-q 1 -a 256", "addreg")
        note256 = d.get((lib, "-q 1 -a 256"), {}).get("error")
        out.append("| " + " | ".join([
            LABEL[lib], cell(g(lib, "-q 1", "sizeof_vudev")), cell(q1), cell(q64),
            "n/a" if None in (q1, q64) else f"{(q64 - q1) / 63:.1f}",
            cell(mt), per(mt, 8), cell(a32), per(a32, 32),
            ("n/a (max 32 slots)" if note256 else cell(a256)), per(a256, 256)]) + " |")
    return "\n".join(out)


def load_results(raw):
    """results.json plus any results-<sections>.json of later --only runs;
    a non-empty section of a later file replaces the earlier one."""
    files = sorted(f for f in os.listdir(raw) if f.startswith("results") and f.endswith(".json"))
    files.sort(key=lambda f: (f != "results.json", os.path.getmtime(os.path.join(raw, f))))
    res = None
    if not files:  # e.g. `run.sh --only mem` without an earlier run
        return {"mode": "-", "reps": 0, "seconds": 0, "callgrind_requests": 0, "micro_requests": 0}
    for f in files:
        r = json.load(open(os.path.join(raw, f)))
        if res is None:
            res = r
            continue
        for k in ["blk", "micro", "ctrl"]:
            if r.get(k):
                res[k] = r[k]
        if r.get("consumers"):
            # per workload: a later run replaces rows of the same name
            rows = {row["workload"]: row for row in res.get("consumers") or []}
            for row in r["consumers"]:
                rows[row["workload"]] = row
            res["consumers"] = sorted(rows.values(), key=lambda row: (
                row["workload"].split()[0] != "7.2", row["workload"].split()[1],
                int(row["workload"].rsplit("qd", 1)[1])))
            res["consumer_image"] = r.get("consumer_image")
    for key in ["blk", "micro"]:  # results of older drivers: rows in workload order
        for i, row in enumerate(res.get(key) or []):
            row.setdefault("index", i)
    return res


FUNC_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def hotspots(path, per, top=15):
    """Self instructions per function (inlined code attributed to the
    function it was inlined into), per request."""
    if not os.path.exists(path):
        return []
    txt = sh(f"callgrind_annotate --auto=no --inclusive=no --threshold=100 '{path}'")
    agg = {}
    for line in txt.splitlines():
        m = FUNC_RE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        n = int(m.group(1).replace(",", ""))
        name = m.group(2)
        name = re.sub(r"\s+\[[^\]]*\]\s*$", "", name)  # object file
        if ":" in name:
            name = name.split(":", 1)[1] if not name.startswith("???") else name
        name = re.sub(r"\.(isra|constprop|part)\.\d+", "", name)
        agg[name] = agg.get(name, 0) + n
    total = sum(agg.values()) or 1
    items = sorted(agg.items(), key=lambda kv: -kv[1])[:top]
    return [(f, n / per, 100.0 * n / total) for f, n in items]


# ---- library-bound instructions of the blk backend ---------------------------

# The request path the issue-10 goals count: pop -> push -> notify, the element's
# malloc (inside pop) and free (the backend frees it: one free per request) included.
PATH_FNS = ("vu_queue_pop", "vu_queue_push", "vu_queue_notify", "free")


CALLS_RE = re.compile(r"^\s*[\d,]+\s+\(\s*[\d.]+%\)\s+<\s.*\(([\d,]+)x\)")
STAR_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\*\s+(.*)$")


def inclusive(path, fns):
    """{function: (inclusive instructions, calls)} for the functions named
    `fns` in one callgrind file. callgrind_annotate also lists the parts
    inlined from other files under the same function name: the whole
    function is the largest entry."""
    if not os.path.exists(path):
        return None
    out = {f: (0, 0) for f in fns}
    calls = 0
    txt = sh(f"callgrind_annotate --auto=no --inclusive=yes --tree=caller --threshold=100 '{path}'")
    for line in txt.splitlines():
        m = CALLS_RE.match(line)
        if m:
            calls += int(m.group(1).replace(",", ""))
            continue
        m = STAR_RE.match(line)
        if m:
            name = re.sub(r"\s+\[[^\]]*\]\s*$", "", m.group(2))
            name = name.split(":", 1)[1] if ":" in name else name
            if name in out and int(m.group(1).replace(",", "")) > out[name][0]:
                out[name] = (int(m.group(1).replace(",", "")), calls)
        if not line.strip() or m:
            calls = 0
    return out


def blk_path_ir(raw, row, lib, n):
    """Instructions per request of pop/push/notify/free in the blk backend
    (an n-request callgrind run minus a zero-request run)."""
    wi = row.get("index")
    if wi is None or not n:
        return None
    a = inclusive(os.path.join(raw, f"cg-blk-{lib}-{wi}-0"), PATH_FNS)
    b = inclusive(os.path.join(raw, f"cg-blk-{lib}-{wi}-n"), PATH_FNS)
    if a is None or b is None:
        return None
    d = {f: (b[f][0] - a[f][0], b[f][1] - a[f][1]) for f in PATH_FNS}
    # free: the backend frees more than the element (its own buffers), so
    # one average free per request rather than all of them
    free_calls = d["free"][1]
    free_one = d["free"][0] / free_calls if free_calls > 0 else 0
    return sum(d[f][0] for f in PATH_FNS if f != "free") / n + free_one


def pair_ratios(o, c):
    """ours/C of each interleaved pair (rep i of ours with rep i of C)."""
    return [x / y for x, y in zip(o or [], c or []) if x and y]


# ---- issue 10's goals, computed ---------------------------------------------

# Memory limits: bench/results/MEMORY.md (main at cbd7101, heap in use of bench/mem.c):
# 21,216 bytes after vu_init with 1 queue, 31,808 with 64 (168.1 per extra queue), 0 per region.
MEM_LIMITS = {"init_q1": 21216, "init_q64": 31808, "per_region": 0}

LIB_SHAPES = [  # blk workloads the instruction goals cover
    "poll qd1 chain3 r1 eidx-on", "poll qd16 chain3 r1 eidx-on", "poll qd64 chain3 r1 eidx-on",
    "wait qd1 chain3 r1 eidx-on", "wait qd16 chain3 r1 eidx-on", "wait qd64 chain3 r1 eidx-on",
    "poll qd16 indirect16 r1 eidx-on", "poll qd16 seg64 r1 eidx-on", "poll qd16 chain3 r8 eidx-on",
    "poll qd16 chain3 r256 eidx-on", "poll qd16 chain3 r1 eidx-off", "wait qd16 chain3 r1 eidx-off",
    "poll qd16 chain3 r1 eidx-on inflight"]


def verdict(x, limit, higher_is_better):
    if x is None:
        return "n/a"
    ok = x >= limit if higher_is_better else x <= limit
    return "**PASS**" if ok else "**FAIL**"


def goals(res, raw):
    """Markdown rows: goal | shape | measured | limit | verdict, and the tally."""
    rows, tally = [], {"**PASS**": 0, "**FAIL**": 0, "n/a": 0}

    def add(goal, shape, value, limit, hib, detail=""):
        v = verdict(value, limit, hib)
        tally[v] += 1
        shown = fr(value) if isinstance(limit, float) or value is None else f"{value:,.0f}"
        rows.append(f"| {goal} | {shape} | {shown}{detail} | {'≥' if hib else '≤'} {limit:,} | {v} |")

    n = res.get("callgrind_requests", 0)
    blk = {r["workload"]: r for r in res.get("blk", [])}
    micro = {r["workload"]: r for r in res.get("micro", [])}
    for shape in LIB_SHAPES:
        r = blk.get(shape)
        lim = 0.5 if shape == "poll qd64 chain3 r1 eidx-on" else 0.6
        if r is None:
            add("instr/req, split (blk pop/push/notify/free)", shape, None, lim, False)
            continue
        o, c = blk_path_ir(raw, r, "ours", n), blk_path_ir(raw, r, "c10", n)
        add("instr/req, split (blk pop/push/notify/free)", shape, ratio(o, c), lim, False,
            f" ({fmt(o)} vs {fmt(c)})")
    # packed rings: ours packed vs C split (blk, then the in-process microbenchmark)
    for shape in LIB_SHAPES:
        r, split = blk.get(shape + " packed"), blk.get(shape)
        lim = 0.5 if shape == "poll qd64 chain3 r1 eidx-on" else 0.6
        if r is None or split is None:
            add("instr/req, packed ours vs split C (blk)", shape + " packed", None, lim, False)
            continue
        o, c = blk_path_ir(raw, r, "ours", n), blk_path_ir(raw, split, "c10", n)
        note = r["libs"].get("ours", {}).get("note")
        add("instr/req, packed ours vs split C (blk)", shape + " packed", ratio(o, c), lim, False,
            f" ({fmt(o)} vs {fmt(c)})" if o else (f" ({note})" if note else ""))
    for name, r in micro.items():
        if not name.endswith(" packed"):
            continue
        split = micro.get(name[: -len(" packed")], {}).get("libs", {})
        o = r["libs"].get("ours", {}).get("ir")
        c = split.get("c10", {}).get("ir")
        lim = 0.5 if name.startswith("qd64 chain3 r1 eidx-on") else 0.6
        note = r["libs"].get("ours", {}).get("note")
        add("instr/req, packed ours vs split C (micro)", name, ratio(o, c), lim, False,
            f" ({fmt(o)} vs {fmt(c)})" if o else (f" ({note})" if note else ""))
    # throughput: median of the interleaved pairs' ratios (pinned runs)
    for name, r in blk.items():
        want = (1.15 if name.startswith("poll ") else
                1.0 if name in ("wait qd1 chain3 r1 eidx-on", "wait qd1 chain3 r1 eidx-on packed") else None)
        if want is None:
            continue
        c_rps = r["libs"].get("c10", {}).get("rps")
        if name.endswith(" packed"):
            # C's split twin, measured in the same rounds (older runs: the split row's)
            c_rps = (r["libs"].get("c10-split-twin", {}).get("rps")
                     or blk.get(name[: -len(" packed")], {}).get("libs", {}).get("c10", {}).get("rps"))
        pr = pair_ratios(r["libs"].get("ours", {}).get("rps"), c_rps)
        m = med(pr)
        det = ""
        if pr:
            det = f" ({len(pr)} pairs, {min(pr):.2f}–{max(pr):.2f})"
            if len(pr) < 5:
                det += " — fewer than 5 pairs: not conclusive"
        if not pr and r["libs"].get("ours", {}).get("note"):
            det = f" ({r['libs']['ours']['note']})"
        add("req/s ours/C, pinned", name, m, want, True, det)
    # real consumers, 7.2 builds: the library's own instructions and IOPS
    cn = n // 4
    for r in res.get("consumers", []):
        if not r["workload"].startswith("7.2 "):
            continue
        libs = r["libs"]
        add("consumer library instr/req", r["workload"],
            ratio(consumer_lib_ir(raw, r, "ours", cn), consumer_lib_ir(raw, r, "c-original", cn)), 0.7, False)
        add("consumer IOPS ours/C", r["workload"],
            ratio(med(libs.get("ours", {}).get("rps") or []), med(libs.get("c-original", {}).get("rps") or [])),
            1.0, True)
    if not any(r["workload"].startswith("7.2 ") for r in res.get("consumers", [])):
        add("consumer library instr/req", "7.2 contrib-blk, qsd", None, 0.7, False, " (no consumer run)")
        add("consumer IOPS ours/C", "7.2 contrib-blk, qsd", None, 1.0, True, " (no consumer run)")
    # memory, bytes (absolute, not ratios)
    mem = mem_values(os.path.join(raw, "mem.txt"))
    q1, q64 = mem.get(("-q 1", "init")), mem.get(("-q 64", "init"))
    add("heap after vu_init, 1 queue (bytes)", "ours", q1, MEM_LIMITS["init_q1"], False)
    add("heap after vu_init, 64 queues (bytes)", "ours", q64, MEM_LIMITS["init_q64"], False)
    for args, key, k in [("-q 1 -m", "memtable", 8), ("-q 1 -a 32", "addreg", 32), ("-q 1 -a 256", "addreg", 256)]:
        x = mem.get((args, key))
        add("heap per region (bytes)", f"ours, {k} regions", None if x is None else x / k,
            MEM_LIMITS["per_region"], False)
    head = ["| goal | shape | measured ours/C (ours vs C 10.0.2) | limit | verdict |",
            "|---|---|---:|---:|---|"]
    summary = (f"{tally['**PASS**']} met, {tally['**FAIL**']} missed, {tally['n/a']} not measured "
               f"(of {len(rows)}).")
    return summary, "\n".join(head + rows)


def mem_values(path):
    """ours' mem.txt values: {(args, key): int}."""
    d = {}
    if not os.path.exists(path):
        return d
    for line in open(path):
        parts = line.rstrip("\n").split("|", 2)
        if len(parts) == 3 and parts[0] == "ours":
            for t in parts[2].split():
                if "=" in t:
                    k, v = t.split("=", 1)
                    try:
                        d[(parts[1], k)] = int(v)
                    except ValueError:
                        pass
    return d


def hotspots_by_file(path, per, top=20):
    """Self instructions per request by (source file, function): the code
    inlined into one exported function, split by the file it comes from."""
    if not os.path.exists(path):
        return []
    txt = sh(f"callgrind_annotate --auto=no --inclusive=no --threshold=100 '{path}'")
    agg = {}
    for line in txt.splitlines():
        m = FUNC_RE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r"\s+\[[^\]]*\]\s*$", "", m.group(2))
        f, _, fn = name.rpartition(":")
        f = "/".join(f.split("/")[-2:])
        key = f"{f}:{fn}"
        agg[key] = agg.get(key, 0) + int(m.group(1).replace(",", ""))
    items = sorted(agg.items(), key=lambda kv: -kv[1])[:top]
    return [(k, n / per) for k, n in items]


def profile_side_by_side(raw, per, top=20, ours="hotspot-qd64-ours.callgrind", c="hotspot-qd64-c10.callgrind"):
    """Per-function self instructions per request, ours and C 10.0.2 side by side."""
    a, b = hotspots(os.path.join(raw, ours), per, top), hotspots(os.path.join(raw, c), per, top)
    if not a and not b:
        return None
    ta = sum(h[1] for h in hotspots(os.path.join(raw, ours), per, 10**6))
    tb = sum(h[1] for h in hotspots(os.path.join(raw, c), per, 10**6))
    out = ["| # | ours: function | instr/req | C 10.0.2: function | instr/req |", "|---:|---|---:|---|---:|"]
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else ("", None, 0)
        y = b[i] if i < len(b) else ("", None, 0)
        out.append(f"| {i + 1} | `{x[0][:80]}` | {fmt(x[1])} | `{y[0][:80]}` | {fmt(y[1])} |")
    out.append(f"| | **total** | **{ta:.0f}** | **total** | **{tb:.0f}** |")
    return "\n".join(out)


def plot(res, out_png, raw):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("blk", "vhost-user-blk --null backend"), ("micro", "in-process pop/push/notify"),
              ("ctrl", "control plane"), ("consumers", "real consumers, ours/C same gen (green: library instr)")]
    fig, axes = plt.subplots(1, 4, figsize=(26, 8))
    for ax, (key, title) in zip(axes, panels):
        rows = res.get(key, [])
        names, series = [], {"rate": [], "cpu": [], "ir": []}
        for r in rows:
            libs = r["libs"]
            o = libs.get("ours", {})
            c = libs.get("c-original" if key == "consumers" else "c10", {})
            names.append(r["workload"])
            series["rate"].append(ratio(med(o.get("rps") or []), med(c.get("rps") or [])))
            series["cpu"].append(ratio(med(o.get("cpu_ns") or []), med(c.get("cpu_ns") or [])))
            if key == "consumers":  # the library's own instructions (see section 4)
                n = res["callgrind_requests"] // 4
                series["ir"].append(ratio(consumer_lib_ir(raw, r, "ours", n), consumer_lib_ir(raw, r, "c-original", n)))
            else:
                series["ir"].append(ratio(o.get("ir"), c.get("ir")))
        y = list(range(len(names)))
        h = 0.27
        for k, (s, lab) in enumerate([("rate", "rate ours/C10 (>1 better)"), ("cpu", "CPU per op ours/C10 (<1 better)"), ("ir", "instructions/req ours/C10 (<1 better)")]):
            vals = [v if v is not None else 0 for v in series[s]]
            if key == "ctrl" and s == "ir":
                continue
            ax.barh([i + (k - 1) * h for i in y], vals, height=h, label=lab)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("libvhost-user: this library vs QEMU 10.0.2's C original (ratios of medians; "
                 "real consumers: vs the C original of the same QEMU generation)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    res = load_results(a.raw)
    json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)

    load = sh("cut -d' ' -f1-3 /proc/loadavg")
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    info = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- mode: {res['mode']} (blk throughput: one backend per library kept connected, "
        f"{res.get('blk_rounds', res['reps'])} rounds of {res.get('blk_window', res['seconds'])} s windows, "
        "each library once per round, the order reversed every other round; micro and consumers: "
        f"{res['reps']} repetitions per library, interleaved, "
        f"{res['seconds']} s windows; callgrind: {res['callgrind_requests']} requests (blk), "
        f"{res['callgrind_requests'] * 5} (micro), minus a zero-request baseline)",
        f"- machine: {cpu}, {os.cpu_count()} CPUs, {platform.release()}, "
        f"load average at report time: {load}",
        f"- compilers: {sh('gcc --version | head -1')}; {sh('rustc --version')}",
        f"- commit measured: {open(os.path.join(a.raw, 'commit.txt')).read().strip() if os.path.exists(os.path.join(a.raw, 'commit.txt')) else '?'}"
        f" (report written at {sh('git -C ' + os.path.dirname(os.path.abspath(__file__)) + ' rev-parse --short HEAD')})",
    ]
    pin = res.get("pin")
    pinned = (f"Pinned: frontend on CPU {pin[0]}, backend on CPU {pin[1]} (blk and consumers: the driver's thread and "
              f"the backend process, `sched_setaffinity` as `taskset -c` does; micro: its frontend and backend threads)."
              if pin else "Not pinned (fewer than 2 CPUs, or `--pin none`).")
    info.append(f"- pinning: {pinned}")
    md = ["# libvhost-user benchmark: this library vs the C original", "", *info, "",
          "Libraries: **ours** (release, `cargo build --release`), **C 10.0.2** and **C 7.2** "
          "(QEMU's `subprojects/libvhost-user` from Debian's source packages, `gcc -O2 -g`). "
          "The same C programs are linked against each: `bench/blk-backend.c` "
          "(examples-c/vhost-user-blk.c unchanged, `--null`, plus an INFLIGHT_SHMFD offer) and `bench/micro.c`.",
          "",
          "Cells: median (min/max relative to the median). Ratios are ours/C of the medians: "
          "rate > 1 is better for us; CPU per op and instructions per request < 1 are better for us. "
          "CPU time is the backend's utime+stime from /proc/<pid>/stat (10 ms ticks; thread CPU clock for micro). "
          "Instructions: `valgrind --tool=callgrind` (`perf stat -e instructions` is not supported on this VM). "
          "Throughput and CPU numbers are noisy on a shared 2-core VM (other jobs ran concurrently); "
          "the instruction counts are deterministic up to timing-dependent polling.",
          "",
          "Workload names: `poll`/`wait` = frontend busy-polls the used ring (interrupts suppressed) / waits on the call eventfd; "
          "`qdN` = requests in flight; `chain3` = header+4 KiB+status direct chain, `indirect16` = 16-entry indirect table, "
          "`seg64` = 64-descriptor direct chain; `rN` = guest memory regions (buffers spread round-robin; 256 via ADD_MEM_REG); "
          "`eidx` = VIRTIO_RING_F_EVENT_IDX; `inflight` = INFLIGHT_SHMFD tracking. Queue size 1024.",
          ""]
    summary, gtable = goals(res, a.raw)
    md += ["## 0. Goals of issue 10 (computed from this run)", "",
           f"**{summary}** Instruction goals: ours/C 10.0.2 of the instructions per request in "
           "`vu_queue_pop` + `vu_queue_push` + `vu_queue_notify` + `free` (inclusive: the element's malloc "
           "and free included) of the blk backend (callgrind, n requests minus a zero-request run); packed rows: "
           "the in-process microbenchmark, ours on packed rings vs C on split rings. Throughput goals: "
           "median over the interleaved pairs of ours/C req/s (round or rep i of ours with the same of C 10.0.2), "
           "frontend and backend pinned to different CPUs; in parentheses the pairs' range. "
           "Consumer goals: the 7.2 builds (section 4). Memory: absolute bytes (section 5) against "
           "bench/results/MEMORY.md (main at cbd7101).", "", gtable, ""]
    n = res.get("callgrind_requests", 0)
    lib_rows = ["| workload | pop/push/notify/free instr/req ours | C 10.0.2 | C 7.2 | ratio ours/C10 | ours/C7.2 |",
                "|---|---:|---:|---:|---:|---:|"]
    for r in res.get("blk", []):
        v = {lib: blk_path_ir(a.raw, r, lib, n) for lib in LIBS}
        lib_rows.append(f"| {r['workload']} | {fmt(v['ours'])} | {fmt(v['c10'])} | {fmt(v['c72'])} | "
                        f"{fr(ratio(v['ours'], v['c10']))} | {fr(ratio(v['ours'], v['c72']))} |")
    md += ["## 1. vhost-user-blk --null backend driven over a unix socket", "",
           f"{pinned}", "",
           section(res.get("blk", []), "req/s", "CPU ns/req"), "",
           "The library's request path alone (inclusive instructions of `vu_queue_pop`, `vu_queue_push`, "
           "`vu_queue_notify` and `free`, per request):", "", "\n".join(lib_rows), ""]
    md += ["## 2. In-process microbenchmark: vu_queue_pop → vu_queue_push → vu_queue_notify", "",
           "Frontend thread busy-polls and re-publishes; backend thread loops pop/push/notify. "
           "Instructions: single-threaded `--inline` mode, callgrind `--toggle-collect=bench_backend_drain` "
           "(library + malloc/free of the element only).", "",
           section(res.get("micro", []), "req/s", "CPU ns/req"), ""]
    md += ["## 3. Control plane", "",
           "Device start = connect, SET_OWNER, features, protocol features, SET_MEM_TABLE (1 region), "
           "SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE, GET_VRING_BASE, disconnect (NEED_REPLY on all). "
           "CPU = backend CPU per operation.", "",
           section(res.get("ctrl", []), "ops/s", "CPU ns/op", with_ir=False), ""]

    md += ["## 4. Real consumers: QEMU's contrib vhost-user-blk and qemu-storage-daemon, unchanged", "",
           "The consumer tier's binaries (tests/consumers/run.sh: QEMU's own sources built unchanged against each "
           "library, `<gen>/<lib>`), driven by the benchmark's frontend: 4 KiB random reads over a 1 GiB device, "
           "N requests kept in flight (submit up to the depth, reap completions, resubmit with a new random sector), "
           "frontend busy-polls the used ring with EVENT_IDX. Every completion's used length is checked (4096 + 1). "
           "contrib vhost-user-blk serves a sparse 1 GiB image file "
           f"on tmpfs (`{res.get('consumer_image') or '/dev/shm'}`; its O_DIRECT open works on this kernel's tmpfs; "
           "holes read as zeros, so no device time); qemu-storage-daemon exports "
           "`--blockdev driver=null-co,size=1G,read-zeroes=on` as `type=vhost-user-blk` (read-only, main loop). "
           "Neither offers REPLY_ACK or MQ: protocol features = CONFIG. CPU = the consumer process (all threads). "
           f"Instructions: callgrind of the whole consumer process, {res['callgrind_requests'] // 4} requests minus "
           "a zero-request run: the whole process (QEMU's block layer, coroutines, main loop) and, separately, the library's "
           "share (self instructions of libvhost-user's functions, inlined code included). "
           "Ratios compare ours with the C original of the same QEMU generation. "
           "Note on 10.0: QEMU 10.0's build compiles libvhost-user.c with `-ftrivial-auto-var-init=zero` "
           "(7.2's does not, nor does this benchmark's own C build in sections 1-2), so the C original's "
           "`vu_queue_map_desc` and `vu_log_queue_fill` memset their on-stack descriptor/iovec arrays "
           "(`[VIRTQUEUE_MAX_SIZE]`, tens of KiB) on every request; callgrind counts each `rep stosb` "
           "iteration, hence the ~50k instr/req of C 10.0 in the whole-process column. The library column "
           "excludes libc (memset, malloc) for both and so compares the libraries' own code.", "",
           consumer_section(res.get("consumers", []), a.raw, res["callgrind_requests"] // 4), ""]
    note = os.path.join(a.raw, "consumers-note.txt")
    if os.path.exists(note):
        md[-1:-1] = ["", open(note).read().strip()]
    ms = mem_section(os.path.join(a.raw, "mem.txt"))
    if ms:
        mc = os.path.join(a.raw, "mem-commit.txt")
        mc = open(mc).read().strip() if os.path.exists(mc) else "?"
        md += ["## 5. Memory footprint", "", f"Measured at commit {mc}.", "",
               "Heap in use (glibc `mallinfo2().uordblks`, bytes, chunk overhead included) of `bench/mem.c` linked "
               "against each library: after `vu_init(max_queues)`, then the increase caused by SET_MEM_TABLE with "
               "8 regions or by ADD_MEM_REG one region at a time (memfd regions of 2 MiB; mappings are not heap). "
               "`VuDev` itself is allocated by the caller (7.2 embeds its 32 regions in it; 10.0 and ours allocate "
               "the 509-slot `VuDevRegion` array at vu_init).", "", ms, ""]
        extra = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "MEMORY.md")
        if os.path.exists(extra):
            md += ["Allocation sites: see [MEMORY.md](MEMORY.md).", ""]

    per = res["callgrind_requests"] * 5
    prof = profile_side_by_side(a.raw, per)
    if prof:
        md += ["## 6a. Per-function profile, chain3 depth 64 (micro qd64 chain3 r1 eidx-on)", "",
               "Self instructions per request of the measured backend work (`bench_backend_drain`: pop, push, "
               "notify, free; callgrind `--toggle-collect`), inlined code counted in the function it was inlined "
               "into; the top 20 of each library, totals over all functions.", "", prof, ""]
    byfile = hotspots_by_file(os.path.join(a.raw, "hotspot-qd64-ours.callgrind"), per)
    if byfile:
        md += ["**ours by source file** (the same profile; code inlined into an exported function "
               "attributed to the file it comes from):", "",
               "| instr/req | source file:function |", "|---:|---|"]
        md += [f"| {n:.1f} | `{k[:110]}` |" for k, n in byfile]
        md.append("")
    prof = profile_side_by_side(a.raw, per, ours="hotspot-qd64-packed-ours.callgrind")
    if prof and os.path.exists(os.path.join(a.raw, "hotspot-qd64-packed-ours.callgrind")):
        md += ["**Packed rings** (ours packed vs C 10.0.2 split, same shape):", "", prof, ""]
    md += ["## 6. Where the instructions go (micro, qd16 chain3 r1 eidx-on)", "",
           "Self instructions per request by function (inlined code counted in the function it was inlined into; "
           "`callgrind_annotate --inclusive=no`). Raw annotate output: see the raw results directory.", ""]
    for lib in ["ours", "c10"]:
        hs = hotspots(os.path.join(a.raw, f"hotspot-{lib}.callgrind"), per)
        if not hs:
            continue
        md += [f"**{LABEL[lib]}** (total {sum(h[1] for h in hs):.0f} instr/req in the top {len(hs)})", "",
               "| instr/req | % | function |", "|---:|---:|---|"]
        md += [f"| {n:.1f} | {p:.1f} | `{f[:110]}` |" for f, n, p in hs]
        md.append("")
    hs = hotspots(os.path.join(a.raw, "hotspot-seg64-ours.callgrind"), per, top=10)
    if hs:
        md += ["**ours, seg64** (64-descriptor chains)", "", "| instr/req | % | function |", "|---:|---:|---|"]
        md += [f"| {n:.1f} | {p:.1f} | `{f[:110]}` |" for f, n, p in hs]
        md.append("")
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ANALYSIS.md")
    if os.path.exists(notes):
        md += ["See [ANALYSIS.md](ANALYSIS.md) for the hotspot analysis.", ""]
    md += ["![ratios](report.png)", ""]
    open(os.path.join(a.out, "REPORT.md"), "w").write("\n".join(md))
    try:
        plot(res, os.path.join(a.out, "report.png"), a.raw)
    except Exception as e:  # the table is the primary output
        print(f"plot failed: {e}")


if __name__ == "__main__":
    main()
