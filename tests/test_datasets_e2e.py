"""`dvc exp run -S data.dataset=mnist|cifar10` end to end against a loopback HTTP mirror.

Each experiment points `data.mirrors.<dataset>` and `data.digests` at the test server with
`-S` overrides on the command line, exactly as the README documents for a private mirror.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import edit_params, run
from tests.test_download import cifar_members, cifar_tarball, md5_digests, mnist_like, server

pytestmark = pytest.mark.e2e
__all__ = ["server"]  # the module-scoped HTTP server fixture


def test_mnist_and_cifar10_experiments(server, repo_copy: Path) -> None:  # noqa: F811
    url, routes = server
    mnist = mnist_like(n=120, seed=11)
    cifar = {"cifar-10-python.tar.gz": cifar_tarball(cifar_members(n=24))}
    routes.set("e2e-mnist", mnist)
    routes.set("e2e-cifar", cifar)

    repo = repo_copy
    edit_params(repo / "params.yaml", {
        "data.val_size": 20, "data.batch_size": 16, "trainer.max_epochs": 1,
        "trainer.enable_progress_bar": False, "callbacks.val_image_samples": 4,
        "evaluate.samples": 4, "export.parity_batch": 8})
    run(["git", "commit", "-qam", "tiny config"], repo)
    digests = {**md5_digests(mnist), **md5_digests(cifar)}
    digests_arg = "{" + ", ".join(f'{k}: "{v}"' for k, v in digests.items()) + "}"

    for dataset, shape in (("mnist", [1, 28, 28]), ("cifar10", [3, 32, 32])):
        mirror = f"{url}/e2e-{'mnist' if dataset == 'mnist' else 'cifar'}/"
        run(["dvc", "exp", "run", "-S", f"data.dataset={dataset}",
             "-S", f'data.mirrors.{dataset}=["{mirror}"]', "-S", f"++data.digests={digests_arg}"],
            repo)
        used = yaml.safe_load((repo / "params.yaml").read_text())["data"]
        assert used["mirrors"][dataset] == [mirror] and used["digests"] == digests
        stats = json.loads((repo / "data/processed/stats.json").read_text())
        assert stats["dataset"] == dataset and stats["shape"] == shape
        model = json.loads((repo / "models/export/model.json").read_text())
        assert model["input"]["shape"] == ["batch", *shape]
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        assert 0.0 <= metrics["test_acc"] <= 1.0
        assert (repo / f"data/raw/{dataset}/MANIFEST.json").exists()
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
