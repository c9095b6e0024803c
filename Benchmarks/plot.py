"""Charts bus bandwidth against message size from chorus-bench style JSON files (one row per line).

Usage: plot.py OUT.png FILE.json [FILE.json ...]
One line per (library, transport, peers, dtype, op, in_place) found in the files.
"""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(row):
    place = " in-place" if row.get("in_place") else ""
    return f'{row.get("library", "chorus")} {row["transport"]} {row["peers"]}p {row["dtype"]} {row["op"]}{place}'


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    series = defaultdict(list)
    for path in sys.argv[2:]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    series[label(row)].append((row["bytes"], row["busbw_GBps"]))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title("all-reduce bus bandwidth (loopback)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[1], dpi=110)
    print(f"wrote {sys.argv[1]}")


if __name__ == "__main__":
    main()
