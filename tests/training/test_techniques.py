"""Every Lightning technique reachable from params.yaml, each checked for its effect.

Runs the real stage functions on scikit-learn's digits (offline) over whole epochs, the
training path the default recipe takes; each test compares against a baseline so that a
knob which silently does nothing fails here.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from litpipe.data.processed import load_split
from litpipe.errors import InputFileError
from litpipe.evaluation.evaluate import evaluate as evaluate_stage
from litpipe.exporting.export import export as export_stage
from litpipe.params import ParamsError, load_params
from litpipe.predict import predict
from litpipe.training.train import train as train_stage
from tests.helpers.repo import ROOT, pipeline_env

BASE = {
    "data.dataset": "digits", "data.val_size": 200, "trainer.max_epochs": 2,
    "data.batch_size": 32, "trainer.limit_train_batches": 1.0,
    "trainer.enable_progress_bar": False,
    "callbacks.val_image_samples": 0, "scheduler.name": "none", "evaluate.samples": 4,
    "export.parity_batch": 8,
}


def train(work: Path, processed: Path, name: str = "run", **overrides: object) -> dict:
    params = load_params(ROOT / "params.yaml", overrides={
        **BASE, "tracking.uri": f"sqlite:///{work / 'mlflow.db'}", **overrides})
    out = work / name
    summary = train_stage(params, processed, out / "models", out / "reports")
    summary["dir"] = out
    summary["params"] = params
    return summary


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def client(work: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")


def history(summary: dict) -> list[dict[str, str]]:
    import csv

    with (summary["dir"] / "reports/train_history.csv").open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------ models

@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_classifiers_train_evaluate_export(work: Path, processed: Path, model: str) -> None:
    s = train(work, processed, **{"model.name": model, "model.hidden": [64, 32]})
    evaluate_stage(s["params"], processed, s["dir"] / "models", s["dir"] / "reports")
    metrics = json.loads((s["dir"] / "reports/metrics.json").read_text())
    assert metrics["test_acc"] > 0.3
    report = export_stage(s["params"], processed, s["dir"] / "models", s["dir"] / "reports")
    assert report["onnx_max_abs_diff"] <= 1e-4


def test_cifar_cnn_takes_colour_input() -> None:
    from litpipe.model.networks import build_network

    net = build_network("cifar_cnn", (3, 32, 32), 10, [0.5] * 3, [0.5] * 3, channels=[],
                        convs_per_block=1, hidden=[512, 128], dropout=0.0, latent_dim=1,
                        test_time_flip=False)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert net.features[1].in_channels == 3
    with pytest.raises(ParamsError, match="cifar_cnn.*8×8"):
        load_params(ROOT / "params.yaml", overrides={**BASE, "model.name": "cifar_cnn"})


def test_autoencoder_reconstruction_task(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"model.name": "autoencoder", "model.hidden": [32],
                                  "model.latent_dim": 8, "callbacks.val_image_samples": 4,
                                  "trainer.max_epochs": 3, "trainer.limit_train_batches": 1.0})
    models, reports = s["dir"] / "models", s["dir"] / "reports"
    evaluate_stage(s["params"], processed, models, reports)
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == {"test_mse", "test_mae"}
    assert 0 < metrics["test_mse"] < 0.1  # far below the variance of the pixels
    assert (reports / "confusion.csv").read_text() == "actual,predicted\n"
    report = export_stage(s["params"], processed, models, reports)
    assert report["onnx_max_abs_diff"] <= 1e-4
    c = client(work)
    run = c.get_run(s["run_id"])
    assert "test_mse" in run.data.metrics and "test_acc" not in run.data.metrics
    evaluated = {f.path for f in c.list_artifacts(s["run_id"], "evaluate")}
    assert "evaluate/samples.png" in evaluated
    grids = [f.path for f in c.list_artifacts(s["run_id"], "val_predictions")]
    assert grids == [f"val_predictions/epoch_{i:03d}.png" for i in range(3)]


def test_autoencoder_rejects_classification_monitor() -> None:
    with pytest.raises(ParamsError, match="reconstruction model with no accuracy"):
        load_params(ROOT / "params.yaml", overrides={
            "model.name": "autoencoder", "callbacks.checkpoint.monitor": "val_acc"})


def test_autoencoder_with_only_a_classification_gate_is_refused(tmp_path: Path) -> None:
    """The gate could not judge the model: say so before training, through the real stage."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["name"] = "autoencoder"
    raw["gates"]["rules"].pop("reconstruction")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=tmp_path,
                          env=pipeline_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "'autoencoder' is a reconstruction model, but gates.rules has rules only for " \
        "classification; add gates.rules.reconstruction" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "models").exists()


# ------------------------------------------------------------------------- optimisers

@pytest.mark.parametrize("scheduler", ["step", "cosine", "onecycle"])
def test_schedulers_change_the_learning_rate(work: Path, processed: Path,
                                             scheduler: str) -> None:
    s = train(work, processed, **{"scheduler.name": scheduler, "optimizer.name": "sgd",
                                  "scheduler.step_size": 1, "optimizer.lr": 0.05})
    lrs = [float(r["lr"]) for r in history(s)]
    assert lrs[-1] < 0.05, (scheduler, lrs)


# ----------------------------------------------------------------- trainer techniques

def test_early_stopping_ends_training_before_max_epochs(work: Path, processed: Path) -> None:
    """min_delta larger than any loss change: no epoch after the first counts as improving,
    so with patience 1 training stops after epoch 2 of 6; disabled, it runs all 6."""
    es = {"trainer.max_epochs": 6, "trainer.limit_train_batches": 2,
          "callbacks.early_stopping.patience": 1, "callbacks.early_stopping.min_delta": 10.0}
    stopped = train(work, processed, "stopped", **es)
    full = train(work, processed, "full", **{**es, "callbacks.early_stopping.enabled": False})
    assert stopped["epochs_run"] == len(history(stopped)) == 2
    assert full["epochs_run"] == len(history(full)) == 6


@pytest.mark.parametrize(("monitor", "mode"), [("val_loss", "min"), ("val_acc", "max")])
def test_best_checkpoint_is_the_best_epoch_by_the_monitor(work: Path, processed: Path,
                                                          monitor: str, mode: str) -> None:
    """models/best.ckpt is the epoch the monitored metric liked best, last.ckpt the last."""
    s = train(work, processed, **{"trainer.max_epochs": 4, "optimizer.lr": 0.05,
                                  "optimizer.name": "sgd",
                                  "callbacks.early_stopping.enabled": False,
                                  "callbacks.checkpoint.monitor": monitor,
                                  "callbacks.checkpoint.mode": mode})
    values = [float(r[monitor]) for r in history(s)]
    pick = min if mode == "min" else max
    best_epoch = values.index(pick(values))
    best = torch.load(s["dir"] / "models/best.ckpt", weights_only=True)
    last = torch.load(s["dir"] / "models/last.ckpt", weights_only=True)
    assert best["epoch"] == best_epoch, (values, best["epoch"])
    assert last["epoch"] == 4  # saved after fit: the number of epochs completed
    assert s["best_score"] == pytest.approx(pick(values), rel=1e-5)


def test_gradient_clipping_bounds_the_logged_norm(work: Path, processed: Path) -> None:
    free = train(work, processed, "free", **{"optimizer.lr": 0.05})
    clipped = train(work, processed, "clipped",
                    **{"optimizer.lr": 0.05, "trainer.gradient_clip_val": 0.05})
    free_max = max(float(r["grad_norm_max"]) for r in history(free))
    clipped_max = max(float(r["grad_norm_max"]) for r in history(clipped))
    assert free_max > 0.1
    assert clipped_max <= 0.05 * 1.001


def test_gradient_clipping_by_value(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"trainer.gradient_clip_val": 1e-4,
                                  "trainer.gradient_clip_algorithm": "value"})
    n_params = sum(p.numel() for p in weights(s["dir"] / "models/last.ckpt").values())
    # Every component is within ±1e-4, so the norm is at most 1e-4·sqrt(#params).
    assert max(float(r["grad_norm_max"]) for r in history(s)) <= 1e-4 * n_params ** 0.5


def test_accumulation_halves_optimizer_steps(work: Path, processed: Path) -> None:
    plain = train(work, processed, "plain")
    acc = train(work, processed, "acc", **{"trainer.accumulate_grad_batches": 2})
    batches = math.ceil(len(load_split(processed, "train")[1]) / BASE["data.batch_size"])
    assert plain["optimizer_steps"] == 2 * batches  # 2 epochs of every batch
    # Every second batch steps, and so does each epoch's last one when the count is odd.
    assert acc["optimizer_steps"] == 2 * math.ceil(batches / 2)
    steps = client(work).get_run(acc["run_id"]).data.metrics["optimizer_steps"]
    assert steps == acc["optimizer_steps"]


def test_swa_changes_the_weights(work: Path, processed: Path) -> None:
    plain = train(work, processed, "plain", **{"trainer.max_epochs": 3})
    swa = train(work, processed, "swa", **{"trainer.max_epochs": 3, "callbacks.swa.enabled": True,
                                           "callbacks.swa.epoch_start": 1})
    assert swa["best_from"] == "swa"
    a, b = weights(plain["dir"] / "models/best.ckpt"), weights(swa["dir"] / "models/best.ckpt")
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("net."))


def test_bf16_precision_changes_the_numbers(work: Path, processed: Path) -> None:
    fp32 = train(work, processed, "fp32", **{"trainer.precision": "32-true"})
    bf16 = train(work, processed, "bf16", **{"trainer.precision": "bf16-mixed"})
    assert history(fp32)[-1]["train_loss"] != history(bf16)[-1]["train_loss"]


def test_16_mixed_needs_a_gpu() -> None:
    with pytest.raises(ParamsError, match="16-mixed' needs a CUDA GPU"):
        load_params(ROOT / "params.yaml", overrides={"trainer.precision": "16-mixed"})


def test_fast_dev_run_runs_one_batch_and_still_writes_outputs(work: Path,
                                                              processed: Path) -> None:
    s = train(work, processed, **{"trainer.fast_dev_run": True})
    assert s["optimizer_steps"] == 1
    assert (s["dir"] / "models/best.ckpt").exists() and (s["dir"] / "models/run.json").exists()


def test_limit_batches(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"trainer.limit_train_batches": 3, "trainer.max_epochs": 1})
    assert s["optimizer_steps"] == 3


@pytest.mark.parametrize("kind", ["simple", "advanced"])
def test_profiler_report_is_an_mlflow_artifact(work: Path, processed: Path, kind: str) -> None:
    s = train(work, processed, **{"trainer.profiler": kind, "trainer.max_epochs": 1})
    c = client(work)
    [report] = [f.path for f in c.list_artifacts(s["run_id"], "train")
                if "profile" in f.path]
    text = Path(c.download_artifacts(s["run_id"], report, str(work))).read_text()
    assert ("Action" in text) if kind == "simple" else ("cumulative" in text or "ncalls" in text)


def test_lr_auto_runs_the_finder(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"optimizer.lr": "auto", "tuner.num_training": 30,
                                  "tuner.max_lr": 0.3, "trainer.max_epochs": 1,
                                  "trainer.limit_train_batches": 1.0})
    tuning = json.loads((s["dir"] / "models/tuning.json").read_text())
    assert tuning["lr_tuned"] is True and 1e-6 <= tuning["lr"] <= 1.0
    assert tuning["lr"] != 1e-3  # the placeholder value before tuning
    run = client(work).get_run(s["run_id"])
    assert float(run.data.params["tuned.lr"]) == pytest.approx(tuning["lr"])
    assert "train/lr_finder.png" in {f.path for f in client(work).list_artifacts(
        s["run_id"], "train")}
    ckpt = torch.load(s["dir"] / "models/last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(tuning["lr"])


def test_batch_size_auto_runs_the_finder(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"data.batch_size": "auto", "tuner.max_batch_size": 256,
                                  "trainer.max_epochs": 1})
    tuning = json.loads((s["dir"] / "models/tuning.json").read_text())
    assert tuning["batch_size_tuned"] is True
    assert 16 < tuning["batch_size"] <= 256
    assert client(work).get_run(s["run_id"]).data.params["tuned.batch_size"] == \
        str(tuning["batch_size"])


def test_validation_image_logger(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"callbacks.val_image_samples": 9})
    grids = [f.path for f in client(work).list_artifacts(s["run_id"], "val_predictions")]
    assert grids == ["val_predictions/epoch_000.png", "val_predictions/epoch_001.png"]


def test_ddp_on_cpu_one_run_rank_zero_outputs(work: Path, processed: Path) -> None:
    """devices: 2 + strategy: ddp on CPU (gloo): two processes, one MLflow run, one output."""
    shutil.copytree(processed, work / "data/processed")
    (work / "stages").mkdir()
    shutil.copy2(ROOT / "stages/train.py", work / "stages/train.py")
    params = load_params(ROOT / "params.yaml", overrides={
        **BASE, "trainer.devices": 2, "trainer.strategy": "ddp",
        "trainer.limit_train_batches": 8, "tracking.uri": f"sqlite:///{work / 'mlflow.db'}"})
    import yaml

    (work / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    proc = subprocess.run([sys.executable, "stages/train.py"], cwd=work, env=pipeline_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = client(work).search_runs([client(work).get_experiment_by_name("litpipe")
                                     .experiment_id])
    assert len(runs) == 1
    summary = json.loads((work / "models/run.json").read_text())
    assert summary["run_id"] == runs[0].info.run_id
    # limit_train_batches counts each process's batches: 8 a rank and epoch, in step.
    assert summary["world_size"] == 2
    assert summary["optimizer_steps"] == 16
    assert sorted(p.name for p in (work / "models").iterdir()) == \
        ["best.ckpt", "last.ckpt", "run.json", "tuning.json"]


# ---------------------------------------------------------------------------- predict

def test_predict_agrees_with_evaluate(work: Path, processed: Path) -> None:
    s = train(work, processed, **{"trainer.max_epochs": 3, "trainer.limit_train_batches": 1.0})
    models = s["dir"] / "models"
    export_stage(s["params"], processed, models, s["dir"] / "reports")
    x, y = load_split(processed, "test")
    files = []
    for i in range(6):
        path = work / f"img{i}.png"
        Image.fromarray(np.asarray(x[i][0])).save(path)
        files.append(path)
    from litpipe.model.checkpoint import load_module

    module = load_module(models / "best.ckpt")
    with torch.no_grad():
        expected = module(torch.from_numpy(np.array(x[:6])).float() / 255).argmax(1).tolist()
    by_ckpt = predict(files, checkpoint=models / "best.ckpt")
    by_onnx = predict(files, onnx=models / "export/model.onnx")
    assert [r["class_index"] for r in by_ckpt] == expected
    assert [r["class_index"] for r in by_onnx] == expected
    for a, b in zip(by_ckpt, by_onnx, strict=True):
        assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)

    cli = subprocess.run([sys.executable, "-m", "litpipe.cli", "predict", str(files[0]),
                          "--onnx", str(models / "export/model.onnx")],
                         capture_output=True, text=True, env=pipeline_env(), timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["class_index"] == expected[0]


def test_predict_errors(work: Path) -> None:
    (work / "not.png").write_text("hello")
    with pytest.raises(InputFileError, match="no such model file"):
        predict([work / "not.png"], checkpoint=work / "missing.ckpt")
    from litpipe.images import load_images

    with pytest.raises(InputFileError, match="not a readable image"):
        load_images([work / "not.png"], (1, 8, 8))
    with pytest.raises(InputFileError, match="no such file"):
        load_images([work / "missing.png"], (1, 8, 8))


def test_cifar_cnn_through_train_evaluate_export(work: Path) -> None:
    """The CIFAR-10 seed's net on colour 32×32 data written in the split stage's format."""
    processed = work / "processed"
    processed.mkdir()
    rng = np.random.default_rng(0)
    counts = {"train": 64, "val": 16, "test": 16}
    for split, n in counts.items():
        np.save(processed / f"{split}_x.npy", rng.integers(0, 256, (n, 3, 32, 32), np.uint8))
        np.save(processed / f"{split}_y.npy", rng.integers(0, 10, n).astype(np.int64))
    stats = {"dataset": "cifar10", "shape": [3, 32, 32], "classes": [str(i) for i in range(10)],
             "num_classes": 10, "mean": [0.5] * 3, "std": [0.5] * 3, "counts": counts,
             "class_counts": {k: [0] * 10 for k in counts}, "hashes": {}, "data_hash": "x"}
    (processed / "stats.json").write_text(json.dumps(stats))
    s = train(work, processed, **{"data.dataset": "cifar10", "model.name": "cifar_cnn",
                                  "model.hidden": [64], "trainer.max_epochs": 1,
                                  "data.batch_size": 16, "trainer.limit_train_batches": 1.0})
    module = torch.load(s["dir"] / "models/best.ckpt", weights_only=True)
    # CIFAR-10's classes survive a mirror: the default test-time flip wraps the network.
    assert module["state_dict"]["net.net.features.1.weight"].shape == (32, 3, 3, 3)
    evaluate_stage(s["params"], processed, s["dir"] / "models", s["dir"] / "reports")
    report = export_stage(s["params"], processed, s["dir"] / "models", s["dir"] / "reports")
    assert report["onnx_max_abs_diff"] <= 1e-4
    model = json.loads((s["dir"] / "models/export/model.json").read_text())
    assert model["input"]["shape"] == ["batch", 3, 32, 32]


def test_history_keeps_training_and_validation_apart(work: Path, processed: Path) -> None:
    """train_* are means over the training batches, val_* over the validation set; a mix-up
    (val_loss logged as train_loss) would make them equal."""
    s = train(work, processed, **{"trainer.max_epochs": 3, "model.dropout": 0.5})
    rows = history(s)
    assert len(rows) == 3
    for r in rows:
        assert r["train_loss"] != r["val_loss"] and r["train_acc"] != r["val_acc"], r
    logged = [m.value for m in client(work).get_metric_history(s["run_id"], "train_loss")]
    assert logged == pytest.approx([float(r["train_loss"]) for r in rows], rel=1e-5)
    # Dropout is on while training and off while validating: training loss is the higher.
    assert float(rows[-1]["train_loss"]) > float(rows[-1]["val_loss"])


def test_channels_last_trains_the_same_network(work: Path, processed: Path) -> None:
    plain = train(work, processed, "plain", **{"model.name": "cnn", "trainer.max_epochs": 1})
    nhwc = train(work, processed, "nhwc", **{"model.name": "cnn", "trainer.max_epochs": 1,
                                             "model.channels_last": True})
    a, b = weights(plain["dir"] / "models/best.ckpt"), weights(nhwc["dir"] / "models/best.ckpt")
    assert a.keys() == b.keys()
    # Same data, same seeds: only the memory layout (and float summation order) differ.
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-3), k


def test_a_lightning_logger_gets_every_epoch_metric(work: Path, processed: Path) -> None:
    """trainer.logger: csv adds Lightning's CSVLogger: the module's metrics reach it."""
    import csv

    s = train(work, processed, **{"trainer.max_epochs": 2, "trainer.logger": "csv"})
    [path] = (work / "lightning_logs" / s["run_id"]).glob("version_*/metrics.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"} <= logged, logged
    assert sorted({r["epoch"] for r in rows if r.get("val_loss")}) == ["0", "1"]
    # Each epoch's values are the ones the history holds: one train_loss per epoch, the
    # training mean (not validation's, logged under the wrong name).
    hist = history(s)
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        got = [float(r[key]) for r in rows if r.get(key)]
        assert got == pytest.approx([float(h[key]) for h in hist], rel=1e-5), key
