"""`dvc exp run -S data.dataset=X` end to end: one knob switches the dataset.

The repository's params.yaml is committed with only run-length knobs made tiny (epochs,
batch, pictures); `data.val_size` and the gates stay as they are, so each experiment shows
that switching the dataset needs no size or gate override. mnist and cifar10 come from a
loopback HTTP mirror: `data.mirrors.<dataset>` and `data.digests` point at the test server
with `-S` overrides, exactly as the README documents for a private mirror. digits is
bundled with scikit-learn: `-S data.dataset=digits` alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.datasets import cifar_members, cifar_tarball, md5_digests, mnist_like
from tests.helpers.repo import edit_params, run

pytestmark = pytest.mark.e2e


def test_one_knob_switches_the_dataset(server, repo_copy: Path) -> None:
    url, routes = server
    mnist = mnist_like(n=120, seed=11)
    cifar = {"cifar-10-python.tar.gz": cifar_tarball(cifar_members(n=24))}
    routes.set("e2e-mnist", mnist)
    routes.set("e2e-cifar", cifar)

    repo = repo_copy
    edit_params(repo / "params.yaml", {
        "data.batch_size": 16, "trainer.max_epochs": 1,
        "trainer.enable_progress_bar": False, "callbacks.val_image_samples": 4,
        "evaluate.samples": 4, "export.parity_batch": 8})
    run(["git", "commit", "-qam", "tiny config"], repo)
    digests = {**md5_digests(mnist), **md5_digests(cifar)}
    digests_arg = "{" + ", ".join(f'{k}: "{v}"' for k, v in digests.items()) + "}"

    # (dataset, image shape, training images, validation share of them: the default
    # fraction 0.0833333, rounded half up; the gate rules it gets).
    for dataset, shape, n_train, n_val, rules in (
            ("mnist", [1, 28, 28], 120, 10, "gates.rules.classification"),
            ("cifar10", [3, 32, 32], 120, 10, "gates.dataset_rules.cifar10.classification"),
            ("digits", [1, 8, 8], 1437, 120, "gates.rules.classification")):
        overrides = ["-S", f"data.dataset={dataset}"]
        if dataset != "digits":
            mirror = f"{url}/e2e-{'mnist' if dataset == 'mnist' else 'cifar'}/"
            overrides += ["-S", f'data.mirrors.{dataset}=["{mirror}"]',
                          "-S", f"++data.digests={digests_arg}"]
        run(["dvc", "exp", "run", *overrides], repo)
        used = yaml.safe_load((repo / "params.yaml").read_text())["data"]
        assert used["val_size"] == 0.0833333  # params.yaml's, not overridden
        if dataset != "digits":
            assert used["mirrors"][dataset] == [mirror] and used["digests"] == digests
        stats = json.loads((repo / "data/processed/stats.json").read_text())
        assert stats["dataset"] == dataset and stats["shape"] == shape
        assert (stats["counts"]["train"], stats["counts"]["val"]) == (n_train - n_val, n_val)
        model = json.loads((repo / "models/export/model.json").read_text())
        assert model["input"]["shape"] == ["batch", *shape]
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        assert 0.0 <= metrics["test_acc"] <= 1.0
        assert (repo / f"data/raw/{dataset}/MANIFEST.json").exists()
        # The gate can judge it (0 or 1: the synthetic images carry no signal) with the
        # dataset's own rules where params.yaml has them.
        gate = run(["litpipe", "gate", "--no-baseline"], repo, check=False)
        assert gate.returncode in (0, 1), gate.stdout + gate.stderr
        assert f"data {dataset}, rules {rules};" in gate.stdout
    assert any(h.startswith("/e2e-cifar/") for h in routes.hits)


def test_autoencoder_experiment_and_its_gate(repo_copy: Path) -> None:
    """`dvc exp run -S model.name=autoencoder`: reconstruction metrics, grids, its own gate."""
    import sqlite3

    repo = repo_copy
    edit_params(repo / "params.yaml", {
        "data.dataset": "digits", "data.val_size": 200, "data.batch_size": 32,
        "model.hidden": [64], "model.latent_dim": 16, "trainer.max_epochs": 4,
        "trainer.enable_progress_bar": False, "callbacks.val_image_samples": 4,
        "gates.baseline": None, "gates.rules.reconstruction": {"test_mse": {"max": 0.1}}})
    run(["git", "commit", "-qam", "tiny digits"], repo)

    run(["dvc", "exp", "run", "-S", "model.name=autoencoder"], repo)
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics) == {"test_mse", "test_mae"} and metrics["test_mse"] < 0.1
    model = json.loads((repo / "models/export/model.json").read_text())
    assert model["task"] == "reconstruction" and model["output"]["name"] == "reconstruction"

    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    db = sqlite3.connect(repo / "mlflow.db")
    keys = {k for (k,) in db.execute("select key from metrics where run_uuid=?", (run_id,))}
    db.close()
    assert "test_mse" in keys and "test_acc" not in keys
    grids = list((repo / "mlartifacts").rglob("val_predictions/epoch_*.png"))
    assert len(grids) == 4 and list((repo / "mlartifacts").rglob("evaluate/samples.png"))

    # The gate applies the reconstruction rules (test_mse <= 0.1) to this model.
    gate = run(["litpipe", "gate"], repo, check=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "reconstruction" in gate.stdout and "test_mse" in gate.stdout
