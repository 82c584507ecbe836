"""litpipe/training/train.py: the train stage builds its objects once and flows one way; and
the stage functions in-process on scikit-learn's digits: fast, offline, no DVC.

The in-process runs cover what the e2e tests cannot see cheaply: checkpoint contents, the
MLflow run's details, the model registry, and determinism of the metrics file.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from litpipe.cores import CoreShare, cpu_cores
from litpipe.data.processed import load_stats
from litpipe.data.split import split as split_stage
from litpipe.evaluation.evaluate import evaluate as evaluate_stage
from litpipe.exporting.export import export as export_stage
from litpipe.model.checkpoint import load_module
from litpipe.model.module import build_module
from litpipe.params import load_params
from litpipe.training.callbacks import EpochSeeding
from litpipe.training.device import resolve_precision
from litpipe.training.flops import training_flops_per_sample
from litpipe.training.train import datamodule
from litpipe.training.train import train as train_stage
from tests.helpers.repo import ROOT

SRC = ROOT / "src" / "litpipe"

# Attributes litpipe may set on objects it did not build, each the owner's way of being
# configured; none is a LightningModule's or a DataModule's.
ALLOWED = {
    ("training/callbacks.py", "trainer.should_stop"),  # Lightning's way to end a fit
    ("sweep/trial.py", "trainer.should_stop"),  # the same, for a pruned sweep trial
    ("atomic.py", "exc.filename"),  # an OSError re-raised naming the output file
    ("images.py", "Image.MAX_IMAGE_PIXELS"),  # Pillow's documented decompression limit
    ("onnx_model.py", "options.log_severity_level"),  # onnxruntime's SessionOptions
    ("predict.py", "args.checkpoint"),  # an argparse namespace
    ("tracking/served.py", "registry_utils._registry_uri"),  # MLflow's global, restored
    ("tracking/server_auth.py", "refusal.status_code"),  # a Flask response being built
}


def _foreign_assignments(path: Path) -> list[str]:
    """``x.attr = ...`` (or ``+=``) where ``x`` is not ``self``/``cls``: one object setting
    another's attribute after it was built."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                if (isinstance(el, ast.Attribute) and isinstance(el.value, ast.Name)
                        and el.value.id not in ("self", "cls")):
                    found.append(f"{el.value.id}.{el.attr}")
    return found


def test_no_object_is_changed_after_it_is_built() -> None:
    offenders = [f"{path.relative_to(SRC)}: {name} (line of code assigning it)"
                 for path in sorted(SRC.rglob("*.py"))
                 for name in _foreign_assignments(path)
                 if (str(path.relative_to(SRC)), name) not in ALLOWED]
    assert not offenders, offenders


def test_the_check_sees_an_assignment_to_another_object(tmp_path: Path) -> None:
    code = tmp_path / "x.py"
    code.write_text("def f(module, dm):\n    module.lr, dm.batch_size = 1, 2\n    self.ok = 1\n")
    assert _foreign_assignments(code) == ["module.lr", "dm.batch_size"]


@pytest.mark.parametrize("overrides", [{}, {"data.max_shift": 1, "model.dropout": 0.2}],
                         ids=["default", "shifts-dropout"])
def test_the_module_trains_the_same_in_a_plain_trainer(
        processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest, overrides: dict[str, object]) -> None:
    """The LightningModule and DataModule need nothing from the stage: the same objects in
    a plain ``lightning.Trainer`` (with the per-epoch seeding that makes runs resumable)
    end with the stage's weights, bit for bit. The default recipe's settings (bf16 where
    the CPU has it, channels-last, one-cycle, augmentation), on the digits."""
    monkeypatch.chdir(tmp_path)
    # One thread for both: the thread count changes a convolution's last bits, and the
    # stage shares the cores with any other training running on the machine (cores.py).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    params = load_params(ROOT / "params.yaml", overrides={
        "data.dataset": "digits", "data.val_size": 200, "data.batch_size": 64,
        "trainer.max_epochs": 2, "trainer.enable_progress_bar": False,
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}", **overrides})
    train_stage(params, processed, tmp_path / "models", tmp_path / "reports")
    staged = torch.load(tmp_path / "models/last.ckpt", map_location="cpu",
                        weights_only=True)["state_dict"]

    L.seed_everything(params.seed, workers=True)
    dm = datamodule(params, processed, int(params.data.batch_size))
    module = build_module(params, load_stats(processed), float(params.optimizer.lr))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, deterministic=True,
                        precision=resolve_precision(params.trainer.precision, "cpu"),
                        callbacks=[EpochSeeding(params.seed)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    plain = module.state_dict()
    assert staged.keys() == plain.keys()
    for key, value in plain.items():
        assert torch.equal(value, staged[key]), key


# --- the stages in-process on the digits (formerly tests/test_stages_digits.py) ------------

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
    from litpipe.exporting.export import ExportError

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


def _diverging(monkeypatch: pytest.MonkeyPatch, at_step: int) -> None:
    """From optimiser step ``at_step`` on, the training loss is NaN: what a diverging run
    reaches, without depending on how many steps a given recipe takes to get there."""
    from litpipe.model.module import LitClassifier

    step_loss = LitClassifier._step_loss

    def nan_later(self: LitClassifier, batch: object) -> torch.Tensor:
        loss = step_loss(self, batch)
        return loss * float("nan") if self.global_step >= at_step else loss

    monkeypatch.setattr(LitClassifier, "_step_loss", nan_later)


def test_divergence_stops_at_once_fails_the_run_and_writes_no_model(
        processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20, case 4: a NaN loss used to end training as a success at the epoch's end
    (EarlyStopping), the run FINISHED, and the export then blamed ONNX parity."""
    from mlflow.tracking import MlflowClient

    from litpipe.training.callbacks import NonFiniteError

    monkeypatch.chdir(tmp_path)
    _diverging(monkeypatch, at_step=30)  # in epoch 2 (23 batches of 64 an epoch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = load_params(ROOT / "params.ci.yaml", overrides={
        "data.batch_size": 64, "trainer.max_epochs": 4, "tracking.uri": uri})
    with pytest.raises(NonFiniteError) as info:
        train_stage(params, processed, tmp_path / "models", tmp_path / "reports")
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("training diverged at epoch 2, step 31: the training loss is "
                              "nan."), message
    assert not (tmp_path / "models").exists()
    client = MlflowClient(uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name(params.tracking.experiment).experiment_id])
    assert run.info.status == "FAILED"


def test_training_on_past_non_finite_steps_when_asked(
        processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _diverging(monkeypatch, at_step=30)
    params = load_params(ROOT / "params.ci.yaml", overrides={
        "data.batch_size": 64, "trainer.max_epochs": 2,
        "callbacks.stop_on_non_finite": False,
        "callbacks.early_stopping.enabled": False,
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    train_stage(params, processed, tmp_path / "models", tmp_path / "reports")
    assert (tmp_path / "models/best.ckpt").is_file()


def test_a_signal_while_the_outputs_are_written_keeps_the_trained_model(
        processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20, case 8: a stop that lands after training, while the stage writes its
    outputs, is a stop (the run KILLED, resumable); the rerun writes the outputs without
    training again, into the same run."""
    from mlflow.tracking import MlflowClient

    import litpipe.training.train as train_module

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = load_params(ROOT / "params.ci.yaml", overrides={
        "trainer.max_epochs": 2, "tracking.uri": uri})
    export = train_module.export_checkpoint

    def signal_arrives(src: Path, dst: Path) -> None:
        raise KeyboardInterrupt  # what the stage's SIGINT/SIGTERM handler raises

    monkeypatch.setattr(train_module, "export_checkpoint", signal_arrives)
    with pytest.raises(KeyboardInterrupt):
        train_stage(params, processed, tmp_path / "models", tmp_path / "reports")
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name(
        params.tracking.experiment).experiment_id])
    assert run.info.status == "KILLED"
    monkeypatch.setattr(train_module, "export_checkpoint", export)
    capsys.readouterr()
    summary = train_stage(params, processed, tmp_path / "models", tmp_path / "reports")
    assert "training had finished" in capsys.readouterr().out
    assert summary["run_id"] == run.info.run_id and summary["epochs_run"] == 2
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert (tmp_path / "models/best.ckpt").is_file()
