"""litpipe's speed, measured side by side in one run: ``python bench/harness.py``.

What it measures (on Fashion-MNIST; run ``dvc repro`` first, it uses the pipeline's data,
checkpoint and exported model):

* **The training loop.** The same MLP (784-256-128-10, Adam 1e-3, batch 64) through five
  paths, one epoch each in turn, ``--rounds`` × ``--epochs`` times, all in one process
  (bench/loop_alternation.py: why one process): the tutorials' path (bench/seeds_path.py),
  litpipe's train stage with logging as shipped, litpipe's module under a bare Lightning
  Trainer (bench/lightning_loop.py: what the framework alone costs), the least any module
  under Lightning's automatic optimisation costs (``--minimal`` there), and a hand-written
  PyTorch loop (bench/raw_loop.py). Each reports its epochs' wall times, validation
  included; the table shows medians, per-round ratios and the fastest epochs' ratios.
* **The default recipe** (``--parts recipe``): its epoch through the train stage, its
  training FLOPs (from the run's ``train_tflop``) and GFLOP/s.
* **CPU profiles** (``--profiles native,avx2``): the loop and recipe parts run once as the
  CPU is and once with PyTorch, oneDNN and MKL restricted to AVX2 (the path CPUs without
  AVX-512 take).
* **Start-up**: importing each stage's code; ``dvc repro`` with nothing to do vs
  ``dvc status``.
* **Inference**: ``litpipe predict`` on 1,000 images with the ONNX export and with the
  checkpoint; batch-1 latency of onnxruntime vs PyTorch.
* **Peak memory** (max RSS) of each stage, run on the full dataset (train for one epoch).

Results go to ``reports/bench.json`` (not a DVC output, never run by the tests). Timings on
a shared machine are noisy: compare the ratios, which come from runs made side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STAGES = ("download", "split", "train", "evaluate", "export")
STAGE_MODULES = {"download": "litpipe.data.download", "split": "litpipe.data.split",
                 "train": "litpipe.training.train", "evaluate": "litpipe.evaluation.evaluate",
                 "export": "litpipe.exporting.export", "gate": "litpipe.gate.cli"}
MLP = {"model.name": "mlp", "model.hidden": [256, 128], "model.dropout": 0.0,
       "optimizer.name": "adam", "optimizer.lr": 0.001, "optimizer.weight_decay": 0.0,
       "scheduler.name": "none", "data.batch_size": 64,
       # The raw loop has neither: plain cross-entropy, one view when validating.
       "model.label_smoothing": 0.0, "model.test_time_flip": False,
       "callbacks.early_stopping.enabled": False,
       # The raw loop computes in fp32: so does litpipe here, whatever the default recipe's
       # precision, so the ratio measures the framework's overhead and nothing else.
       "trainer.precision": "32-true", "data.augment": False}


def _set(raw: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        raw = raw[key]
    raw[leaf] = value


def _params(edits: dict[str, object]) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for k, v in edits.items():
        _set(raw, k, v)
    return raw


def tracking_uri(tmp: Path) -> str:
    """The MLflow store of a scratch stage directory: a SQLite file inside it."""
    return f"sqlite:///{tmp / 'mlflow.db'}"


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "DVC_EXP_NAME")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri(tmp)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _json_line(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


# ------------------------------------------------------------------------ training loop

@contextlib.contextmanager
def scratch_stage(edits: dict[str, object], processed: Path = ROOT / "data/processed"
                  ) -> Iterator[Path]:
    """A temporary directory a train stage can run in: ``params.yaml`` with ``edits``, and
    ``data/processed`` linked to ``processed`` (the split data is only read)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "data").mkdir()
        (tmp / "data/processed").symlink_to(processed.resolve())
        (tmp / "params.yaml").write_text(yaml.safe_dump(_params(edits)))
        yield tmp


def stage_metrics(tmp: Path) -> tuple[list[float], float]:
    """What the train stage that ran in ``tmp`` logged to its MLflow run: each epoch's
    ``epoch_time_s`` (validation included) and the training TFLOP."""
    with sqlite3.connect(tmp / "mlflow.db") as db:
        rows = db.execute("select value from metrics where key='epoch_time_s' "
                          "order by step").fetchall()
        (tflop,), = db.execute("select value from metrics where key='train_tflop'")
    return [v for (v,) in rows], tflop


def train_stage(edits: dict[str, object], extra_env: dict[str, str] | None = None,
                root: Path = ROOT) -> tuple[list[float], float]:
    """litpipe's train stage with ``edits`` to params.yaml, in a process of its own: its
    epoch times and training TFLOP (:func:`stage_metrics`). ``root``: the checkout whose
    stage runs (another version's, for bench/stage_versions.py)."""
    with scratch_stage(edits) as tmp:
        subprocess.run([PY, str(root / "stages/train.py")], cwd=tmp,
                       env={**_env(tmp), **(extra_env or {})}, check=True,
                       capture_output=True)
        return stage_metrics(tmp)


# What restricts PyTorch's kernels, oneDNN and MKL to AVX2 on a CPU that has more: the path
# CPUs without AVX-512 take (a newer core is still faster per cycle, so a lower bound).
PROFILES = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                   "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def default_recipe(rounds: int, epochs: int, profiles: list[str]) -> dict:
    """The default recipe's epoch, FLOPs and GFLOP/s per CPU profile, through the train
    stage (the profiles in turn, ``rounds`` times)."""
    times: dict[str, list[float]] = {p: [] for p in profiles}
    tflop_epoch = 0.0
    for r in range(rounds):
        for profile in profiles:
            t, tflop = train_stage({"trainer.max_epochs": epochs,
                                    "callbacks.early_stopping.enabled": False},
                                   PROFILES[profile])
            times[profile] += t
            tflop_epoch = tflop / len(t)
            print(f"  round {r + 1}: {profile:6s} epochs {', '.join(f'{x:.1f}' for x in t)} s",
                  flush=True)
    out: dict = {}
    for profile, t in times.items():
        med = statistics.median(t)
        out[profile] = {"epoch_s": t, "median_epoch_s": med, "tflop_per_epoch": tflop_epoch,
                        "gflops": tflop_epoch * 1e3 / med}
    return out


def script_epochs(script: str, epochs: int, env: dict[str, str], *extra: str) -> list[float]:
    out = subprocess.run([PY, str(ROOT / "bench" / script), "--epochs", str(epochs), *extra],
                         cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, **env}).stdout
    return _json_line(out)["epoch_s"]


def training_loop(rounds: int, env: dict[str, str]) -> dict:
    """The five paths' epochs, alternating in one process (bench/loop_alternation.py says
    why), ``rounds`` epochs each, under the CPU profile ``env``."""
    proc = subprocess.run([PY, str(ROOT / "bench/loop_alternation.py"), "--rounds",
                           str(rounds)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(f"bench/loop_alternation.py failed:\n{proc.stderr[-2000:]}")
    epochs_s: dict[str, list[float]] = _json_line(proc.stdout)["epoch_s"]
    for r in range(rounds):
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[r]:.2f} s" for k, v in epochs_s.items()),
              flush=True)
    rounds_med = [{k: v[r] for k, v in epochs_s.items()} for r in range(rounds)]
    med = {k: statistics.median(v) for k, v in epochs_s.items()}
    # This machine's speed drifts by up to 2x between minutes: a ratio within one round
    # compares runs made a few seconds apart, and their median shrugs off a slow round.
    per_round = {"litpipe_over_raw": [m["litpipe"] / m["raw"] for m in rounds_med],
                 "seeds_over_litpipe": [m["seeds"] / m["litpipe"] for m in rounds_med]}
    # Noise on a shared machine only ever adds time: the fastest epoch of each path is the
    # estimate a slow minute cannot move (timeit's reasoning), the third way to read the run.
    fastest = {k: min(v) for k, v in epochs_s.items()}
    return {"epoch_s": epochs_s, "median_epoch_s": med, "per_round": per_round,
            "per_round_median": {k: statistics.median(v) for k, v in per_round.items()},
            "fastest_epoch_s": fastest,
            "fastest": {"litpipe_over_raw": fastest["litpipe"] / fastest["raw"],
                        "seeds_over_litpipe": fastest["seeds"] / fastest["litpipe"]},
            "litpipe_over_raw": med["litpipe"] / med["raw"],
            "litpipe_over_lightning": med["litpipe"] / med["lightning"],
            "lightning_over_raw": med["lightning"] / med["raw"],
            "minimal_over_raw": med["minimal"] / med["raw"],
            "seeds_over_litpipe": med["seeds"] / med["litpipe"],
            # litpipe is 5x faster than the tutorials' path only within this of the raw loop
            "within_raw_for_5x": med["seeds"] / med["raw"] / 5}


# ----------------------------------------------------------------------------- start-up

def _timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def startup(rounds: int) -> dict:
    imports = {name: statistics.median(_timed([PY, "-c", f"import litpipe.stage, {mod}"],
                                              ROOT) for _ in range(rounds))
               for name, mod in STAGE_MODULES.items()}
    imports["python"] = statistics.median(_timed([PY, "-c", "pass"], ROOT)
                                          for _ in range(rounds))
    dvc = str(Path(PY).with_name("dvc"))
    noop = statistics.median(_timed([dvc, "repro"], ROOT) for _ in range(rounds))
    status = statistics.median(_timed([dvc, "status"], ROOT) for _ in range(rounds))
    return {"import_s": imports, "dvc_repro_noop_s": noop, "dvc_status_s": status}


# ---------------------------------------------------------------------------- inference

def inference(rounds: int, n_images: int = 1000) -> dict:
    import onnxruntime as ort
    import torch
    from PIL import Image

    from litpipe.model.checkpoint import load_module

    x = np.load(ROOT / "data/processed/test_x.npy", mmap_mode="r")[:n_images]
    litpipe = str(Path(PY).with_name("litpipe"))
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, img in enumerate(x):
            path = Path(d) / f"{i:04d}.png"
            Image.fromarray(np.asarray(img[0])).save(path)
            files.append(str(path))
        onnx_s = statistics.median(_timed([litpipe, "predict", *files, "--onnx",
                                           "models/export/model.onnx"], ROOT)
                                   for _ in range(rounds))
        ckpt_s = statistics.median(_timed([litpipe, "predict", *files, "--checkpoint",
                                           "models/best.ckpt"], ROOT)
                                   for _ in range(rounds))
    one = x[:1].astype(np.float32) / 255.0
    session = ort.InferenceSession(str(ROOT / "models/export/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    module = load_module(ROOT / "models/best.ckpt")
    t = torch.from_numpy(one)

    def latency(fn, n: int = 300) -> float:  # noqa: ANN001
        for _ in range(20):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    with torch.no_grad():
        torch_us = latency(lambda: module(t))
    onnx_us = latency(lambda: session.run(None, {"images": one}))
    return {"predict_1000_onnx_s": onnx_s, "predict_1000_checkpoint_s": ckpt_s,
            "predict_checkpoint_over_onnx": ckpt_s / onnx_s,
            "batch1_latency_us": {"onnxruntime": onnx_us, "pytorch": torch_us}}


# --------------------------------------------------------------------------- peak memory

def peak_memory() -> dict:
    """Max RSS of each stage, each run in a child of its own (the kernel's accounting)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
             ".ru_maxrss)")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "params.yaml").write_text(yaml.safe_dump(_params({"trainer.max_epochs": 1})))
        shutil.copy2(ROOT / "dvc.yaml", tmp / "dvc.yaml")
        for stage in STAGES:
            proc = subprocess.run([PY, "-c", probe, PY, str(ROOT / f"stages/{stage}.py")],
                                  cwd=tmp, env=_env(tmp), capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-2000:]}")
            out[stage] = int(proc.stdout.split()[-1]) / 1024  # KiB → MiB
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench.json")
    ap.add_argument("--parts", default="loop,recipe,startup,inference,memory",
                    help="comma-separated subset to measure (the others are left out)")
    ap.add_argument("--profiles", default="native,avx2",
                    help="CPU profiles for the loop and recipe parts: native, avx2 (kernels "
                    "restricted to AVX2, as on a CPU without AVX-512)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    needs = ["data/processed/stats.json"]
    if parts & {"startup", "inference", "memory"}:
        needs += ["models/best.ckpt", "models/export/model.onnx"]
    for needed in needs:
        if not (ROOT / needed).exists():
            sys.exit(f"bench: {needed} is missing; run `dvc repro` first")
    import torch

    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                                "cores": os.cpu_count(),
                                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                "torch": torch.__version__, "python": platform.python_version()}}
    if "startup" in parts:  # `dvc repro` must have nothing to do, or it would train here
        status = subprocess.run([str(Path(PY).with_name("dvc")), "status"], cwd=ROOT,
                                capture_output=True, text=True).stdout
        if "up to date" not in status:
            sys.exit("bench: `dvc status` is not clean; run `dvc repro` first")
    if "loop" in parts:
        result["training_loop"] = {}
        for profile in args.profiles.split(","):
            print(f"training loop (MLP 784-256-128-10, batch 64), {profile}:", flush=True)
            result["training_loop"][profile] = t = training_loop(
                args.rounds * args.epochs, PROFILES[profile])
            med = t["median_epoch_s"]
            print(f"{profile} epoch (median): seeds {med['seeds']:.2f} s, litpipe "
                  f"{med['litpipe']:.2f} s, bare Lightning {med['lightning']:.2f} s, minimal "
                  f"Lightning {med['minimal']:.2f} s, raw {med['raw']:.2f} s; litpipe/raw "
                  f"{t['litpipe_over_raw']:.2f}x (Lightning/raw {t['lightning_over_raw']:.2f}x, "
                  f"minimal/raw {t['minimal_over_raw']:.2f}x, litpipe/Lightning "
                  f"{t['litpipe_over_lightning']:.2f}x; 5x the tutorials needs "
                  f"{t['within_raw_for_5x']:.2f}x), seeds/litpipe "
                  f"{t['seeds_over_litpipe']:.2f}x; per round: litpipe/raw "
                  f"{t['per_round_median']['litpipe_over_raw']:.2f}x, seeds/litpipe "
                  f"{t['per_round_median']['seeds_over_litpipe']:.2f}x (medians of "
                  f"{args.rounds * args.epochs}); fastest epochs: litpipe/raw "
                  f"{t['fastest']['litpipe_over_raw']:.2f}x, seeds/litpipe "
                  f"{t['fastest']['seeds_over_litpipe']:.2f}x", flush=True)
    if "recipe" in parts:
        print("default recipe (train stage):", flush=True)
        result["default_recipe"] = rec = default_recipe(args.rounds, args.epochs,
                                                        args.profiles.split(","))
        for profile, r in rec.items():
            print(f"{profile}: epoch {r['median_epoch_s']:.1f} s (median), "
                  f"{r['tflop_per_epoch']:.2f} TFLOP an epoch, {r['gflops']:.0f} GFLOP/s",
                  flush=True)
    if "startup" in parts:
        result["startup"] = s = startup(args.rounds + 1)
        print(f"dvc repro (nothing to do) {s['dvc_repro_noop_s']:.1f} s vs dvc status "
              f"{s['dvc_status_s']:.1f} s; imports: " + ", ".join(
                  f"{k} {v:.1f} s" for k, v in s["import_s"].items()), flush=True)
    if "inference" in parts:
        result["inference"] = i = inference(args.rounds)
        print(f"predict 1,000 images: ONNX {i['predict_1000_onnx_s']:.1f} s, checkpoint "
              f"{i['predict_1000_checkpoint_s']:.1f} s; batch-1 latency onnxruntime "
              f"{i['batch1_latency_us']['onnxruntime']:.0f} us, PyTorch "
              f"{i['batch1_latency_us']['pytorch']:.0f} us", flush=True)
    if "memory" in parts:
        result["peak_memory_mib"] = m = peak_memory()
        print("peak memory (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in m.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
