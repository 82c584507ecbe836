"""Start-up cost of ``import litpipe.data.download``, and proof that it stays torch-free.

The download stage must start in well under a second: it runs first in every fresh
pipeline and whenever data params change. Each run is a fresh interpreter with
``-X importtime``; the median of N runs is reported with the largest direct imports, so a
regression (say, something pulling in torch) shows up with its culprit.

    python bench/bench_download_import.py [-n 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections import defaultdict

MODULE = "litpipe.data.download"
HEAVY = ("torch", "lightning", "mlflow", "torchvision")


def one_run() -> tuple[int, dict[str, int], list[str]]:
    """(total µs, direct children µs, heavy modules loaded) for one fresh interpreter."""
    code = (f"import sys, {MODULE}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=True)
    total, children = 0, {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|"))
        if not cumulative.isdigit():
            continue
        depth = (len(line.split("|")[2]) - len(line.split("|")[2].lstrip())) // 2
        if name == MODULE:
            total = int(cumulative)
        elif depth == 1:  # imported directly by the top-level statement's module chain
            children[name] = int(cumulative)
    heavy = [m for m in proc.stdout.strip().split(",") if m]
    return total, children, heavy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=7, help="runs (median reported)")
    args = ap.parse_args()
    totals: list[int] = []
    per_child: dict[str, list[int]] = defaultdict(list)
    heavy_seen: set[str] = set()
    for _ in range(args.n):
        total, children, heavy = one_run()
        totals.append(total)
        heavy_seen.update(heavy)
        for name, us in children.items():
            per_child[name].append(us)
    print(f"import {MODULE}: median {statistics.median(totals) / 1000:.0f} ms "
          f"(min {min(totals) / 1000:.0f}, max {max(totals) / 1000:.0f}; {args.n} runs)")
    top = sorted(per_child.items(), key=lambda kv: -statistics.median(kv[1]))[:8]
    for name, values in top:
        print(f"  {statistics.median(values) / 1000:7.1f} ms  {name}")
    print(f"heavy modules loaded: {sorted(heavy_seen) or 'none'}")
    return 1 if heavy_seen else 0


if __name__ == "__main__":
    sys.exit(main())
