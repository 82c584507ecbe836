"""The train stage of two versions of litpipe, side by side with the raw loop, on the seeds'
MLP: ``python bench/stage_versions.py OTHER_CHECKOUT --rounds 8``.

OTHER_CHECKOUT is another copy of the repository (``git worktree add /tmp/base HEAD~3``);
its stage runs with its own ``src`` first on ``PYTHONPATH``. Each round runs the raw loop
(bench/raw_loop.py), the other version's train stage and this one's, in turn, with the
harness's MLP params (bench/harness.py); prints each epoch, the medians, and the medians of
the per-round ratios (runs seconds apart: this machine's speed drifts between minutes).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import harness as H  # bench/ is the script's directory, first on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--profile", default="native", choices=sorted(H.PROFILES))
    args = ap.parse_args()
    profile = H.PROFILES[args.profile]
    other = args.other.resolve()
    mlp = {**H.MLP, "trainer.max_epochs": args.epochs}
    paths = {
        "raw": lambda: H.script_epochs("raw_loop.py", args.epochs, profile, "--processed",
                                       str(H.ROOT / "data/processed")),
        "other": lambda: H.train_stage(mlp, {**profile, "PYTHONPATH": str(other / "src")},
                                       root=other)[0],
        "this": lambda: H.train_stage(mlp, profile)[0],
    }
    runs: dict[str, list[list[float]]] = {k: [] for k in paths}
    for r in range(args.rounds):
        for name, run in paths.items():
            runs[name].append(run())
            print(f"round {r + 1}: {name:5s} " + " ".join(f"{x:.3f}" for x in runs[name][-1]),
                  flush=True)
    for name, rs in runs.items():
        print(f"{name:5s} median epoch {statistics.median(x for t in rs for x in t):.3f} s")
    for a, b in (("raw", "other"), ("raw", "this"), ("other", "this")):
        per = [statistics.median(y) / statistics.median(x)
               for x, y in zip(runs[a], runs[b], strict=True)]
        print(f"{b}/{a}: median of per-round ratios {statistics.median(per):.3f}")


if __name__ == "__main__":
    main()
