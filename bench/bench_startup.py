"""Stage start-up cost, measured side by side in one run (machines here are noisy).

For each entry, a fresh interpreter imports what that stage needs before doing any work;
the median of N runs is reported, plus the ratio to a bare ``python -c pass``. The download
stage and ``litpipe validate`` must stay torch-free; this makes a regression visible.

    python bench/bench_startup.py [-n 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python (baseline)": "pass",
    "validate params (every stage, first)": "from litpipe.params import load_params; "
                                            "load_params('params.yaml')",
    "download stage imports": "import litpipe.stage, litpipe.data.download",
    "gate imports": "import litpipe.gate.cli",
    "import torch": "import torch",
    "import lightning": "import lightning",
    "import mlflow": "import mlflow",
}


def measure(code: str, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_free(code: str) -> bool:
    probe = f"{code}; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return out.stdout.strip().endswith("False")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    base = measure("pass", args.n)
    print(f"{'what':40s} {'median s':>9s} {'x python':>9s}  torch-free")
    for name, code in CASES.items():
        try:
            t = measure(code, args.n)
        except subprocess.CalledProcessError:
            print(f"{name:40s} {'(failed)':>9s}")
            continue
        print(f"{name:40s} {t:9.3f} {t / base:9.1f}  {torch_free(code)}")


if __name__ == "__main__":
    main()
