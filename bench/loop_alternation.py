"""The seeds' MLP through five training paths in ONE process, one epoch each in turn:
``python bench/loop_alternation.py --rounds 8`` (bench/harness.py runs it per CPU profile).

The paths: the tutorials' (bench/seeds_path.py), litpipe's train stage (stages/train.py, run
here with ``runpy`` in a scratch directory, with the harness's MLP params), litpipe's module
under a bare Lightning Trainer (bench/lightning_loop.py), the floor of any loop under
Lightning's automatic optimisation (``minimal``: the raw loop's arithmetic as a
LightningModule, bench/lightning_loop.py ``--minimal``) and a hand-written PyTorch loop
(bench/raw_loop.py). Each round fits each path for one epoch from a fresh model, so every
path's epochs are first epochs, measured seconds apart by the same process.

Why one process: on a shared 2-core VM the speed of a process drifts with the neighbours'
load, and two processes started a minute apart land on different minutes. Running the paths
in separate processes, the raw loop's epoch moved by up to 2x within one harness run
(docs/performance.md), more than the differences measured. Here the paths share the
process, its memory layout and its minute; the fastest epoch of each path over many rounds
is the estimate that noise, which only ever adds time, moves least.

Prints one JSON line: ``{"epoch_s": {path: [one epoch time per round]}}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import runpy
import sys
from pathlib import Path
from unittest import mock

import harness
import lightning_loop
import raw_loop
import seeds_path
import torch

ROOT = Path(__file__).resolve().parents[1]


def litpipe_epoch(processed: Path) -> float:
    """One epoch of litpipe's train stage (stages/train.py, as DVC runs it, but in this
    process) on the harness's MLP params; its ``epoch_time_s`` from its MLflow run."""
    with (harness.scratch_stage({**harness.MLP, "trainer.max_epochs": 1}, processed) as tmp,
          contextlib.chdir(tmp),
          mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": harness.tracking_uri(tmp)}),
          contextlib.redirect_stdout(io.StringIO())):
        runpy.run_path(str(ROOT / "stages/train.py"), run_name="__main__")
        (epoch_s,), _ = harness.stage_metrics(tmp)
    return epoch_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--processed", type=Path, default=ROOT / "data/processed")
    ap.add_argument("--raw", type=Path, default=ROOT / "data/raw/fashion_mnist")
    ap.add_argument("--paths", default="seeds,litpipe,lightning,minimal,raw",
                    help="comma-separated subset of the paths, run in this order")
    args = ap.parse_args()
    every = {
        "seeds": lambda: seeds_path.epochs(args.raw, 1)[0][0],
        "litpipe": lambda: litpipe_epoch(args.processed),
        "lightning": lambda: lightning_loop.epochs(args.processed, 1)[0],
        "minimal": lambda: lightning_loop.minimal_epochs(args.processed, 1)[0],
        "raw": lambda: raw_loop.epochs(args.processed, 1)[0][0],
    }
    paths = {name: every[name] for name in args.paths.split(",")}
    epoch_s: dict[str, list[float]] = {k: [] for k in paths}
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "fit stopped" lines
    for r in range(args.rounds):
        for name, run in paths.items():
            # The train stage turns deterministic algorithms on for the whole process; the
            # other paths run as they would on their own (PyTorch's default: off).
            torch.use_deterministic_algorithms(False)
            with contextlib.redirect_stdout(io.StringIO()):  # the tutorials' progress bar
                epoch_s[name].append(run())
            print(f"  round {r + 1}: {name:9s} {epoch_s[name][-1]:.3f} s", file=sys.stderr,
                  flush=True)
    print(json.dumps({"epoch_s": epoch_s}))


if __name__ == "__main__":
    main()
