"""How fast ``litpipe gate`` answers, side by side with ``dvc metrics diff`` (same machine,
same run: machines here are noisy, so only the ratios in one run mean much).

CI calls the gate on every pull request, and a developer before every push; it must answer
in well under a second, which it can only do by never importing torch, lightning or mlflow.
This bench makes a regression of that visible:

* wall time of fresh processes (median and min of N): a bare interpreter, ``litpipe gate``
  against ``HEAD`` (reads the work tree's and the committed metrics, like CI does), the same
  via ``python -m litpipe.cli``, and ``dvc metrics diff HEAD`` (what the gate replaces);
* ``python -X importtime -c 'import litpipe.gate.cli'``: total import time and the slowest
  top-level imports, and whether any of torch/lightning/mlflow got imported;
* the gate in-process after its imports: the cost of its git calls and the checks alone.

    .venv/bin/python bench/bench_gate.py [-n 10] [--repo .]

Needs a git repository whose work tree and ``HEAD`` both hold ``reports/metrics.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "torchvision")


def wall(cmd: list[str], repo: Path, n: int) -> tuple[float, float, int]:
    """Median and min seconds of ``n`` runs of ``cmd`` (after one warm-up), and its exit."""
    code = subprocess.run(cmd, cwd=repo, capture_output=True).returncode  # warm the page cache
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=repo, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), code


def import_profile(repo: Path) -> tuple[float, list[tuple[float, str]], list[str]]:
    """``import litpipe.gate.cli``: its cumulative seconds, the slowest of what it imports
    (two levels down, indented as ``-X importtime`` nests them), and any heavy module."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import litpipe.gate.cli"],
                          cwd=repo, capture_output=True, text=True, check=True)
    total = 0.0
    below: list[tuple[float, str]] = []
    seen: list[str] = []
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
    for line in proc.stderr.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        seconds, depth, name = int(m.group(2)) / 1e6, (len(m.group(3)) - 1) // 2, m.group(4)
        seen.append(name)
        if name == "litpipe.gate.cli":
            total = seconds
        elif depth in (1, 2):  # litpipe.gate.cli' imports, and theirs
            below.append((seconds, "  " * (depth - 1) + name))
    heavy = sorted({n for n in seen if n.split(".")[0] in HEAVY})
    return total, sorted(below, reverse=True)[:8], heavy


def in_process(repo: Path, n: int) -> float:
    """Median seconds of ``gates.main`` once imported (git calls, JSON, checks, table)."""
    from litpipe.gate.cli import main

    args = ["--repo", str(repo), "--baseline", "HEAD"]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs per command")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    repo = args.repo.resolve()
    if not (repo / "reports/metrics.json").exists():
        sys.exit(f"{repo}/reports/metrics.json not found: run `dvc repro` first")

    cases = {
        "python -c pass (interpreter)": [sys.executable, "-c", "pass"],
        "litpipe gate --baseline HEAD": [str(BIN / "litpipe"), "gate", "--baseline", "HEAD"],
        "python -m litpipe.cli gate --baseline HEAD": [sys.executable, "-m", "litpipe.cli",
                                                       "gate", "--baseline", "HEAD"],
        "dvc metrics diff HEAD": [str(BIN / "dvc"), "metrics", "diff", "HEAD"],
    }
    print(f"repo: {repo}; {args.n} runs each, fresh processes")
    print(f"{'command':44s} {'median s':>9s} {'min s':>7s}  exit")
    results = {}
    for name, cmd in cases.items():
        med, best, code = wall(cmd, repo, args.n)
        results[name] = med
        print(f"{name:44s} {med:9.3f} {best:7.3f}  {code}")
    gate_s = results["litpipe gate --baseline HEAD"]
    dvc_s = results["dvc metrics diff HEAD"]
    print(f"\ndvc metrics diff / litpipe gate: {dvc_s / gate_s:.1f}x; "
          f"gate under 1 s: {'yes' if gate_s < 1.0 else 'NO'}")

    total, top, heavy = import_profile(repo)
    print(f"\npython -X importtime -c 'import litpipe.gate.cli': {total:.3f} s cumulative; "
          "slowest of its imports:")
    for seconds, name in top:
        print(f"  {seconds:7.3f} s  {name}")
    print(f"torch/lightning/mlflow imported: {', '.join(heavy) if heavy else 'none'}")

    print(f"\nlitpipe.gate.cli.main in-process (after imports), median: "
          f"{in_process(repo, args.n) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
