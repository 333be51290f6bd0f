#!/usr/bin/env python3
"""Plots of docs/BENCHMARKS.md, as SVG written by hand (standard library only).

- docs/plots/ceremony-vs-n.svg: key generation and reshare (both suites, t = 2n/3 + 1) against n, from
  the simulator's cost model of this 2-core machine (`kms-simnet sim --scale N --cores 2`, time to keys
  in virtual seconds) and the CPU the simulated run took (every node's cryptography, one process).
  Beside them, real processes on this machine (`kms-simnet up --nodes N`, then `kms-simnet reshare`):
  wall time until all N nodes hold keys, and from the approvals until the new epoch is active on all N.
- docs/plots/fetch-latency.svg: the distribution of end-to-end fetch latencies, five real nodes, t = 3
  (`fetch_bench --samples`).

Run from the repository root after `cargo build --release -p kms-simnet` and
`cargo build --release -p kms-tests --example fetch_bench`:

    python3 scripts/plot-benchmarks.py            # measure, then plot (a few minutes)
    python3 scripts/plot-benchmarks.py --replot   # plot docs/plots/data.json again
    python3 scripts/plot-benchmarks.py --real     # measure only the real-process runs, keep the rest
    python3 scripts/plot-benchmarks.py --fetch    # measure only the fetch latencies, keep the rest
"""
import json
import os
import subprocess
import sys
import re
import shutil
import tempfile
import time

SIZES = [4, 8, 16, 32, 48, 64]
REAL_SIZES = [4, 16, 32, 48, 64]


def measure_real():
    """Real processes: `kms-simnet up` of n nodes (t = 2n/3 + 1), then one reshare to n new shares."""
    rows = []
    for n in REAL_SIZES:
        d = tempfile.mkdtemp(prefix=f"kms-plot-{n}-")
        up = subprocess.Popen(
            ["target/release/kms-simnet", "up", "--nodes", str(n), "--threshold", str(2 * n // 3 + 1), "--dir", d],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        row = {"n": n}
        try:
            for line in up.stdout:
                m = re.search(r"all \d+ nodes ready ([0-9.]+) s after", line)
                if m:
                    row["dkg_s"] = float(m.group(1))
                if line.startswith("running;"):
                    break
            if "dkg_s" not in row:
                raise SystemExit(f"n = {n}: the network did not come up")
            time.sleep(5)  # the descriptor signing and the peers' evidence settle
            r = subprocess.run(["target/release/kms-simnet", "reshare", "--dir", d],
                               check=True, capture_output=True, text=True)
            out = r.stdout + r.stderr
            m = re.search(r"active on all \d+ members ([0-9.]+) s after the approvals", out)
            row["reshare_s"] = float(m.group(1))
        finally:
            subprocess.run(["target/release/kms-simnet", "down", "--dir", d], capture_output=True)
            up.kill()
            up.wait()
            shutil.rmtree(d, ignore_errors=True)
        print("real", row, file=sys.stderr)
        rows.append(row)
    return rows
OUT = "docs/plots"


def measure():
    data = {"ceremony": [], "fetch_ms": []}
    for n in SIZES:
        row = {"n": n}
        for kind, extra in (("dkg", []), ("reshare", ["--reshare"])):
            cmd = ["target/release/kms-simnet", "sim", "--scale", str(n), "--cores", "2"] + extra
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            row[kind] = {"virtual_s": out["virtual_ms"] / 1e3, "cpu_s": out["cpu_seconds"]}
            print(kind, n, row[kind], file=sys.stderr)
        data["ceremony"].append(row)
    data["fetch_ms"] = measure_fetch()
    data["real"] = measure_real()
    return data


def measure_fetch():
    """1000 sequential fetches from five real nodes, t = 3 (`fetch_bench --samples`), in ms."""
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        subprocess.run(
            ["target/release/examples/fetch_bench", "--fetches", "1000", "--samples", f.name],
            check=True,
            capture_output=True,
        )
        return [float(x) for x in open(f.name).read().split()]


def chart(title, xlabel, ylabel, series, xmax, ymax, xticks, yticks):
    """series: [(label, colour, [(x, y)], dashed)]"""
    w, h, l, r, t, b = 640, 400, 70, 20, 40, 50
    px = lambda x: l + (w - l - r) * x / xmax
    py = lambda y: h - b - (h - t - b) * y / ymax
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
         f'<line x1="{l}" y1="{h - b}" x2="{w - r}" y2="{h - b}" stroke="black"/>',
         f'<line x1="{l}" y1="{t}" x2="{l}" y2="{h - b}" stroke="black"/>',
         f'<text x="{(l + w - r) / 2}" y="{h - 12}" text-anchor="middle">{xlabel}</text>',
         f'<text x="16" y="{(t + h - b) / 2}" text-anchor="middle" transform="rotate(-90 16 {(t + h - b) / 2})">{ylabel}</text>']
    for x in xticks:
        s.append(f'<line x1="{px(x)}" y1="{h - b}" x2="{px(x)}" y2="{h - b + 5}" stroke="black"/>')
        s.append(f'<text x="{px(x)}" y="{h - b + 18}" text-anchor="middle">{x:g}</text>')
    for y in yticks:
        s.append(f'<line x1="{l}" y1="{py(y)}" x2="{w - r}" y2="{py(y)}" stroke="#ddd"/>')
        s.append(f'<text x="{l - 6}" y="{py(y) + 4}" text-anchor="end">{y:g}</text>')
    for i, (label, colour, points, dashed) in enumerate(series):
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        s.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        if len(points) < 20:
            s += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in points]
        s.append(f'<line x1="{l + 14}" y1="{t + 12 + 18 * i}" x2="{l + 38}" y2="{t + 12 + 18 * i}" stroke="{colour}" stroke-width="2"{dash}/>')
        s.append(f'<text x="{l + 44}" y="{t + 16 + 18 * i}">{label}</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def nice(v):
    for step in (1, 2, 5, 10, 20, 50, 100):
        if v / step <= 8:
            return step
    return 200


def plot(data):
    rows = data["ceremony"]
    real = data.get("real", [])
    ymax = max(max(r["dkg"]["virtual_s"], r["reshare"]["virtual_s"], r["dkg"]["cpu_s"], r["reshare"]["cpu_s"]) for r in rows)
    ymax = max([ymax] + [max(r["dkg_s"], r["reshare_s"]) for r in real])
    step = nice(ymax)
    ymax = step * (int(ymax / step) + 1)
    series = [
        ("key generation: time to keys, 2 cores (model)", "#1f77b4", [(r["n"], r["dkg"]["virtual_s"]) for r in rows], False),
        ("reshare: time to keys, 2 cores (model)", "#d62728", [(r["n"], r["reshare"]["virtual_s"]) for r in rows], False),
        ("key generation: CPU of the run", "#1f77b4", [(r["n"], r["dkg"]["cpu_s"]) for r in rows], True),
        ("reshare: CPU of the run", "#d62728", [(r["n"], r["reshare"]["cpu_s"]) for r in rows], True),
    ]
    if real:
        series += [
            ("key generation: real processes, wall", "#17becf", [(r["n"], r["dkg_s"]) for r in real], False),
            ("reshare: real processes, wall", "#ff7f0e", [(r["n"], r["reshare_s"]) for r in real], False),
        ]
    svg = chart("Ceremonies against n (t = 2n/3 + 1, both suites)", "nodes n", "seconds", series, 64, ymax,
                [4, 8, 16, 32, 48, 64], list(range(0, int(ymax) + 1, step)))
    open(os.path.join(OUT, "ceremony-vs-n.svg"), "w").write(svg)
    lat = sorted(data["fetch_ms"])
    if lat:
        xmax = lat[int(len(lat) * 0.999) - 1] * 1.1
        pts = [(x, 100.0 * (i + 1) / len(lat)) for i, x in enumerate(lat) if x <= xmax]
        xs = nice(xmax)
        svg = chart(f"Fetch latency, 5 nodes, t = 3 ({len(lat)} fetches)", "milliseconds", "% of fetches at most",
                    [("cumulative share of fetches", "#2ca02c", pts, False)], xs * (int(xmax / xs) + 1), 100,
                    list(range(0, int(xmax) + xs, xs)), [0, 25, 50, 75, 90, 99, 100][:-1] + [100])
        open(os.path.join(OUT, "fetch-latency.svg"), "w").write(svg)


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "data.json")
    if "--replot" in sys.argv:
        data = json.load(open(path))
    elif "--real" in sys.argv:
        data = json.load(open(path))
        data["real"] = measure_real()
        json.dump(data, open(path, "w"), indent=1)
    elif "--fetch" in sys.argv:
        data = json.load(open(path))
        data["fetch_ms"] = measure_fetch()
        json.dump(data, open(path, "w"), indent=1)
    else:
        data = measure()
        json.dump(data, open(path, "w"), indent=1)
    plot(data)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
