"""Sweep workers side by side: the wall time of one `litpipe sweep` worker against two
sharing the machine, for the same number of trials on the digits (3 epochs, no pruning).

    python bench/sweep_workers.py 6      # from the repository root; trials per study

Alternates one worker and two workers for two rounds and prints the ratio of medians. Each
study runs in a fresh repository copy under /tmp/sweepbench (the tests' helpers make it).
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.repo import (  # noqa: E402
    configure_tiny_digits,
    edit_params,
    make_repo_copy,
    pipeline_env,
    run,
)

SWEEP = """
study: bench
storage: null
params: params.yaml
trials: {n}
objective: {{metric: val_acc, direction: maximize}}
sampler: {{name: random, seed: 0}}
pruner: {{name: none, monitor: val_acc, startup_trials: 0, warmup_epochs: 0}}
heartbeat: {{interval: 5, grace: 60, max_retry: 0}}
space:
  optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
"""
N = int(sys.argv[1]) if len(sys.argv) > 1 else 6

def repo(dest: Path) -> Path:
    """A committed digits repository copy with the sweep file, split already run."""
    shutil.rmtree(dest, ignore_errors=True)
    r = make_repo_copy(dest)
    configure_tiny_digits(r)
    edit_params(r / "params.yaml", {"trainer.max_epochs": 3,
                                    "callbacks.early_stopping.enabled": False,
                                    "callbacks.val_image_samples": 0})
    (r / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.litpipe/\n")
    (r / "sweep.yaml").write_text(SWEEP.format(n=N))
    run(["git", "add", "-A"], r)
    run(["git", "commit", "-qm", "bench"], r)
    run(["dvc", "repro", "split"], r)  # data ready in both
    return r

results: dict[int, list[float]] = {}
for rnd in range(2):
    for workers in (1, 2):
        r = repo(Path(f"/tmp/sweepbench/{rnd}-{workers}"))
        t0 = time.monotonic()
        procs = [subprocess.Popen(["litpipe", "sweep"], cwd=r, env=pipeline_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
        codes = [p.wait() for p in procs]
        dt = time.monotonic() - t0
        results.setdefault(workers, []).append(dt)
        print(f"round {rnd}: {workers} worker(s), {N} trials: {dt:.1f} s, exit {codes}",
              flush=True)
for w, ts in results.items():
    print(w, "workers:", [round(t, 1) for t in ts])


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


print(f"two workers / one: {median(results[2]) / median(results[1]):.3f} (ratio of medians)")
