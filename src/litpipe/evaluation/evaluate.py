"""The evaluate stage: test metrics, confusion matrix, sample grid; all into the train run.

``reports/metrics.json`` is rounded and key-sorted so that the same model and data give the
same bytes, which is what makes ``dvc metrics diff`` and the CI gate meaningful.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from litpipe.atomic import write_json, write_text
from litpipe.data.datamodule import ArrayDataModule
from litpipe.data.pixels import to_unit_range
from litpipe.data.processed import load_split
from litpipe.model.checkpoint import load_module
from litpipe.pictures.figures import (
    confusion_matrix_plot,
    curves_plot,
    not_applicable_plot,
    reconstruction_grid,
    sample_grid,
)
from litpipe.progress import progress_bar
from litpipe.repo import MODELS, PROCESSED, REPORTS
from litpipe.schema import Params
from litpipe.tracking.resources import log_stage_seconds
from litpipe.tracking.run import TrackedRun

DIGITS = 6  # decimals kept in metrics.json: stable across platforms, plenty for comparing


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, DIGITS)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


def confusion_csv(matrix: list[list[int]], classes: list[str]) -> str:
    """One row per test sample (actual, predicted): the layout DVC's confusion template wants.

    Expanding counts to rows keeps the file small enough (10k rows for a full test set) and
    lets ``dvc plots show`` render it without custom templates.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["actual", "predicted"])
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            for _ in range(int(count)):
                w.writerow([classes[i], classes[j]])
    return buf.getvalue()


def evaluate(params: Params, processed_dir: Path = PROCESSED, models_dir: Path = MODELS,
             reports_dir: Path = REPORTS, started: float | None = None) -> dict[str, Any]:
    """Test the best checkpoint; write metrics/confusion/samples; log them to the run.

    ``started``: the stage's start (``time.perf_counter()``; the stage runner's), from which
    its wall time is counted; by default, this call's.
    """
    started = time.perf_counter() if started is None else started
    L.seed_everything(params.seed, workers=True)
    run = TrackedRun.attach(models_dir / "run.json")
    module = load_module(models_dir / "best.ckpt")
    dm = ArrayDataModule(processed_dir, batch_size=params.evaluate.batch_size,
                         eval_batch_size=params.evaluate.batch_size, seed=params.seed)
    bar = params.trainer.enable_progress_bar
    trainer = L.Trainer(accelerator=params.trainer.accelerator, devices=1, logger=False,
                        deterministic=True, enable_progress_bar=bar,
                        callbacks=[progress_bar()] if bar else None,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.test(module, datamodule=dm, verbose=False)
    results = module.test_results()
    confusion = results.pop("confusion", None)
    metrics = _round(results)
    write_json(reports_dir / "metrics.json", metrics)

    # A fixed, seeded choice of test images for the picture.
    x, y = load_split(processed_dir, "test")
    rng = np.random.default_rng(params.seed)
    idx = np.sort(rng.choice(len(y), size=min(params.evaluate.samples, len(y)), replace=False))
    images = np.array(x[idx])
    with torch.no_grad():
        out = module(to_unit_range(torch.from_numpy(images)))
    if confusion is None:  # reconstruction: no classes to confuse
        reconstruction_grid(images, out.numpy(), reports_dir / "samples.png",
                            title="Test inputs (top) vs reconstructions (bottom)")
        # dvc.yaml declares these for every model; an empty table says "not applicable".
        write_text(reports_dir / "confusion.csv", "actual,predicted\n")
        not_applicable_plot("No confusion matrix: reconstruction model",
                            reports_dir / "confusion.png")
    else:
        conf, pred = torch.softmax(out, dim=1).max(dim=1)
        sample_grid(images, y[idx].tolist(), pred.tolist(), module.classes,
                    reports_dir / "samples.png", probs=conf.tolist())
        write_text(reports_dir / "confusion.csv", confusion_csv(confusion, module.classes))
        confusion_matrix_plot(confusion, module.classes, reports_dir / "confusion.png")
    history = reports_dir / "train_history.csv"
    if history.exists():
        curves_plot(history, reports_dir / "curves.png")

    # In MLflow, per-class accuracy is test_acc.<class> ("/" is not allowed in a name).
    scores = {k: v for k, v in results.items() if k != "per_class_acc"}
    scores.update({f"test_acc.{c}".replace("/", "-"): v
                   for c, v in results.get("per_class_acc", {}).items()})
    run.log_metrics(scores)
    for name in ("metrics.json", "confusion.csv", "samples.png", "confusion.png", "curves.png",
                 "train_history.csv"):
        if (reports_dir / name).exists():
            run.log_artifact(reports_dir / name, "evaluate")
    log_stage_seconds(run, "evaluate", started)  # MLflow only: metrics.json is DVC's
    return {**{k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "run_id": run.run_id}
