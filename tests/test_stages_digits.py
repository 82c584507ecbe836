"""The stage functions in-process on scikit-learn's digits: fast, offline, no DVC.

Covers what the e2e test cannot see cheaply: checkpoint contents, the MLflow run's details,
the model registry, and determinism of the metrics file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from litpipe.cores import CoreShare, cpu_cores
from litpipe.data.split import split as split_stage
from litpipe.evaluate import evaluate as evaluate_stage
from litpipe.export import export as export_stage
from litpipe.model.checkpoint import load_module
from litpipe.params import load_params
from litpipe.training.flops import training_flops_per_sample
from litpipe.training.train import train as train_stage

ROOT = Path(__file__).resolve().parents[1]


def digits_params(tmp: Path, **extra: object):
    return load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 200, "trainer.max_epochs": 2,
        "data.batch_size": 64, "trainer.enable_progress_bar": False, "evaluate.samples": 9,
        "export.parity_batch": 8, "tracking.uri": f"sqlite:///{tmp / 'mlflow.db'}",
        **extra})


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "data/raw/digits").mkdir(parents=True)
    return tmp_path


def run_all(params, base: Path) -> dict:
    processed, models, reports = base / "data/processed", base / "models", base / "reports"
    split_stage(params, base / "data/raw", processed)
    summary = train_stage(params, processed, models, reports)
    evaluate_stage(params, processed, models, reports)
    export = export_stage(params, processed, models, reports)
    return {"train": summary, "export": export}


def test_train_evaluate_export_on_digits(workdir: Path) -> None:
    params = digits_params(workdir)
    out = run_all(params, workdir)

    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    assert metrics["test_acc"] > 0.8, metrics  # 2 epochs on digits
    assert set(metrics["per_class_acc"]) == {str(i) for i in range(10)}
    history = (workdir / "reports/train_history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc,lr")
    assert len(history) == 3  # header + 2 epochs

    # Checkpoints load without unpickling arbitrary objects and hold resumable state.
    ckpt = torch.load(workdir / "models/last.ckpt", weights_only=True)
    # Saved after fit: "epoch" counts the epochs completed, so a resume starts at the next.
    assert ckpt["epoch"] == 2 and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    module = load_module(workdir / "models/best.ckpt")
    assert module.classes == [str(i) for i in range(10)]

    export = json.loads((workdir / "reports/export.json").read_text())
    assert export["onnx_max_abs_diff"] <= 1e-4
    assert out["export"]["registered_version"] == "1"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=params.tracking.uri)
    run = client.get_run(out["train"]["run_id"])
    assert run.data.params["trainer.max_epochs"] == "2"
    assert run.data.metrics["test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    assert run.data.tags["dataset"] == "digits"
    assert run.info.run_name.startswith("cnn-digits-")
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits"
    artifacts = {f.path for d in ("evaluate", "checkpoint", "config", "export")
                 for f in client.list_artifacts(run.info.run_id, d)}
    assert {"evaluate/samples.png", "evaluate/confusion.png", "checkpoint/best.ckpt",
            "config/params.yaml", "export/model.onnx"} <= artifacts
    [version] = client.search_model_versions("name='litpipe-classifier'")
    assert version.run_id == run.info.run_id

    # The recipe's cost, counted in FLOPs: every trained image's forward and backward.
    stats = json.loads((workdir / "data/processed/stats.json").read_text())
    per_image = training_flops_per_sample(module.net, tuple(stats["shape"]), 10)
    expected = per_image * stats["counts"]["train"] * 2 / 1e12
    assert out["train"]["train_tflop"] == round(expected, 3)
    assert run.data.metrics["train_tflop"] == pytest.approx(expected, rel=1e-9)
    # What this machine made of its cores: recorded with the run.
    assert run.data.tags["litpipe.cpu_cores"] == str(cpu_cores())
    assert [m.step for m in client.get_metric_history(run.info.run_id, "cpu_threads")] == [0, 1]

    # Same params, fresh outputs: the metrics file is byte-identical.
    first = (workdir / "reports/metrics.json").read_bytes()
    again = workdir / "again"
    (again / "data/raw/digits").mkdir(parents=True)
    run_all(params, again)
    assert (again / "reports/metrics.json").read_bytes() == first


def test_export_refuses_drift(workdir: Path) -> None:
    """A tolerance no real export can meet fails the stage and writes no export."""
    from litpipe.export import ExportError

    params = digits_params(workdir, **{"trainer.max_epochs": 1})
    processed, models, reports = (workdir / "data/processed", workdir / "models",
                                  workdir / "reports")
    split_stage(params, workdir / "data/raw", processed)
    train_stage(params, processed, models, reports)
    strict = digits_params(workdir, **{"trainer.max_epochs": 1, "export.tolerance": 1e-30})
    with pytest.raises(ExportError, match="export.tolerance"):
        export_stage(strict, processed, models, reports)
    assert not (models / "export").exists()
    assert not (reports / "export.json").exists()


def test_a_training_beside_another_takes_half_the_cores(workdir: Path) -> None:
    """Two trainings at once (a queue with -j 2) never run more threads than cores: this one
    starts beside another registered training and trains with its share, recorded in the
    run; the thread count it had before comes back afterwards."""
    from mlflow.tracking import MlflowClient

    params = digits_params(workdir, **{"trainer.max_epochs": 1})
    split_stage(params, workdir / "data/raw", workdir / "data/processed")
    before = torch.get_num_threads()
    with CoreShare():  # the other training
        summary = train_stage(params, workdir / "data/processed", workdir / "models",
                              workdir / "reports")
    assert torch.get_num_threads() == before
    run = MlflowClient(tracking_uri=params.tracking.uri).get_run(summary["run_id"])
    assert run.data.tags["litpipe.threads"] == str(max(1, cpu_cores() // 2))
    assert run.data.metrics["cpu_threads"] == max(1, cpu_cores() // 2)
