"""The evaluate stage: test metrics, confusion matrix, sample grid; all into the train run.

``reports/metrics.json`` is rounded and key-sorted so that the same model and data give the
same bytes, which is what makes ``dvc metrics diff`` and the CI gate meaningful.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from litpipe.atomic import write_json, write_text
from litpipe.config import Params
from litpipe.datamodule import ArrayDataModule
from litpipe.plots import (
    confusion_matrix_plot,
    curves_plot,
    not_applicable_plot,
    reconstruction_grid,
    sample_grid,
)
from litpipe.preprocess import load_split
from litpipe.tracking import client as mlflow_client
from litpipe.training import load_checkpoint_module, progress_bar

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


def evaluate_stage(params: Params, processed_dir: Path, models_dir: Path, reports_dir: Path
                   ) -> dict[str, Any]:
    """Test the best checkpoint; write metrics/confusion/samples; log them to the run."""
    L.seed_everything(params.seed, workers=True)
    run = json.loads((models_dir / "run.json").read_text())
    module = load_checkpoint_module(models_dir / "best.ckpt")
    dm = ArrayDataModule(processed_dir, batch_size=params.evaluate.batch_size,
                         eval_batch_size=params.evaluate.batch_size, seed=params.seed)
    trainer = L.Trainer(accelerator=params.train.accelerator, devices=1, logger=False,
                        deterministic=True, enable_progress_bar=params.train.progress_bar,
                        callbacks=[progress_bar()] if params.train.progress_bar else None,
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
        out = module(torch.from_numpy(images).float() / 255.0)
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

    client = mlflow_client(run["tracking_uri"])
    flat = {k: v for k, v in results.items() if k != "per_class_acc"}
    flat.update({f"test_acc.{c}": v for c, v in results.get("per_class_acc", {}).items()})
    for key, value in flat.items():
        client.log_metric(run["run_id"], key.replace("/", "-"), value)
    for name in ("metrics.json", "confusion.csv", "samples.png", "confusion.png", "curves.png",
                 "train_history.csv"):
        if (reports_dir / name).exists():
            client.log_artifact(run["run_id"], str(reports_dir / name), artifact_path="evaluate")
    return {**{k: v for k, v in metrics.items() if not isinstance(v, dict)},
            "run_id": run["run_id"]}
