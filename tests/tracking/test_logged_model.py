"""litpipe/tracking/served.py: the registered version's logged model carries the run's final
numbers (the last epoch's curves, the test metrics) and the run's dataset, under a name that
says what it is; the stages' wall times are on the run, not on the model, nor in DVC's files.

A real model (digits, tests/helpers/models.py) goes through the real evaluate and export
stages into a run in a SQLite store, whose curves are logged as the train stage logs them
(``step = epoch``, training/callbacks.py). Issue 22, part 1: the model page showed epoch 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litpipe.schema import Params
from tests.helpers.models import train_checkpoint
from tests.helpers.registry import MODEL_NAME, export_registered, new_run, sqlite_uri

# Three epochs of curves, as the train stage logs them: epoch 0 first, the final one last.
CURVES = {"train_loss": [2.01, 0.9, 0.31], "val_acc": [0.825, 0.91, 0.98],
          "val_loss": [1.5, 0.6, 0.2]}
LAST = len(CURVES["val_acc"]) - 1


def _evaluate(base: Path, params: Params) -> dict:
    from litpipe.evaluation.evaluate import evaluate

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        evaluate(params, base / "processed", base / "models", base / "reports")
    return json.loads((base / "reports/metrics.json").read_text())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Params, str, str]:
    """(directory with the store, params, run id, registered version): a trained run with
    its dataset, params and three epochs of curves (and machine metrics at the last epoch's
    step), evaluated and exported by the real stages."""
    from litpipe.data.processed import load_stats
    from litpipe.tracking.run import TrackedRun

    base = tmp_path_factory.mktemp("logged-model")
    params = train_checkpoint(base)
    run_id = new_run(base)
    run = TrackedRun(sqlite_uri(base), run_id)
    run.log_params(params)
    run.log_dataset(load_stats(base / "processed"), source=str(base / "processed"))
    for epoch in range(LAST + 1):
        run.log_metrics({**{k: v[epoch] for k, v in CURVES.items()}, "epoch_time_s": 1.5},
                        step=epoch)
    # MLflow's system metrics count their own steps: one lands on the last epoch's.
    run.log_metrics({"system/cpu_utilization_percentage": 50.0}, step=LAST)
    _evaluate(base, params)
    return base, params, run_id, export_registered(base, params)


def _client(base: Path):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(sqlite_uri(base), registry_uri=sqlite_uri(base))


def _model(base: Path, version: str):  # noqa: ANN202
    """(the registered version, its logged model), through MLflow's client.

    The SQL registry answers ``model_id`` None and names the logged model in the version's
    source, ``models:/<model id>``; litpipe's ``resolve`` reads it from either.
    """
    from litpipe.tracking.models import resolve

    client = _client(base)
    mv = client.get_model_version(MODEL_NAME, version)
    model_id = resolve(f"models:/{MODEL_NAME}/{version}", sqlite_uri(base)).model_id
    assert model_id and model_id in (mv.model_id, mv.source.removeprefix("models:/"))
    return mv, client.get_logged_model(model_id)


def test_the_version_s_model_shows_the_last_epoch_and_the_test_metrics(
        exported: tuple[Path, Params, str, str]) -> None:
    """Acceptance: the final val_acc (not epoch 0's) and the test metrics, each at its own
    step, read through the client from the registered version's logged model."""
    base, _, _, version = exported
    _, model = _model(base, version)
    metrics = {}
    for m in model.metrics:
        assert m.key not in metrics, f"{m.key} linked twice"
        metrics[m.key] = m
    for key, values in CURVES.items():
        assert (metrics[key].value, metrics[key].step) == (values[-1], LAST), key
    tested = json.loads((base / "reports/metrics.json").read_text())
    assert metrics["test_acc"].value == pytest.approx(tested["test_acc"], abs=1e-6)
    assert metrics["test_loss"].value == pytest.approx(tested["test_loss"], abs=1e-6)
    assert metrics["test_acc"].step == 0
    assert "onnx_max_abs_diff" in metrics  # the export's parity, measured on this model


def test_the_model_is_named_for_what_it_is_and_its_dataset_is_the_run_s(
        exported: tuple[Path, Params, str, str]) -> None:
    base, params, run_id, version = exported
    mv, model = _model(base, version)
    run = _client(base).get_run(run_id)
    assert model.name == f"{params.model.name}-{params.data.dataset}" == "cnn-digits"
    assert model.model_type == "classification"
    assert model.source_run_id == mv.run_id == run_id
    assert model.params["optimizer.lr"] == run.data.params["optimizer.lr"]
    [dataset] = [d.dataset for d in run.inputs.dataset_inputs]
    # "Datasets used" on the model's page lists the datasets its metrics name.
    assert {(m.dataset_name, m.dataset_digest) for m in model.metrics} == {
        (dataset.name, dataset.digest)}
    assert dataset.name == "digits"
    # The run's page lists the model as its output, at the last epoch's step.
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [
        (model.model_id, LAST)]


def test_the_version_s_page_and_the_run_s_page_agree(
        exported: tuple[Path, Params, str, str]) -> None:
    base, _, run_id, version = exported
    _, model = _model(base, version)
    on_run = _client(base).get_run(run_id).data.metrics
    assert {m.key: m.value for m in model.metrics} == {
        k: v for k, v in on_run.items()
        if not k.startswith(("system/", "stage_seconds_", "epoch_time_s"))}


def test_wall_times_are_on_the_run_only(exported: tuple[Path, Params, str, str]) -> None:
    """Each stage's wall time is a run metric; the model's page, metrics.json and export.json
    (DVC's, the same bytes for the same inputs) hold no timing."""
    base, _, run_id, version = exported
    _, model = _model(base, version)
    on_run = _client(base).get_run(run_id).data.metrics
    assert {"stage_seconds_evaluate", "stage_seconds_export"} <= set(on_run)
    linked = {m.key for m in model.metrics}
    assert not {k for k in linked if k.startswith(("system/", "stage_seconds_"))}
    assert "epoch_time_s" not in linked
    for report in ("metrics.json", "export.json"):
        assert "seconds" not in (base / "reports" / report).read_text()


def test_a_rerun_links_only_what_is_new(exported: tuple[Path, Params, str, str]) -> None:
    """The export rerun (same run, same ONNX bytes) finds its version; the model gains a
    metric the run logged since, and holds nothing twice."""
    from litpipe.tracking.run import TrackedRun

    base, params, run_id, version = exported
    TrackedRun(sqlite_uri(base), run_id).log_metrics({"test_extra": 0.5})
    assert export_registered(base, params) == version
    _, model = _model(base, version)
    keys = [m.key for m in model.metrics]
    assert len(keys) == len(set(keys))
    assert "test_extra" in keys


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
