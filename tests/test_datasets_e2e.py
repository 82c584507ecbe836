"""`dvc exp run -S data.dataset=mnist|cifar10` end to end against a loopback HTTP mirror.

The repo copy's params.yaml points `data.mirrors` and `data.digests` at the test server
(the documented way to use a private mirror); the experiment then only switches the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run
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
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["data"]["mirrors"]["mnist"] = [f"{url}/e2e-mnist/"]
    raw["data"]["mirrors"]["cifar10"] = [f"{url}/e2e-cifar/"]
    raw["data"]["digests"] = {**md5_digests(mnist), **md5_digests(cifar)}
    raw["data"]["val_size"] = 20
    raw["train"].update({"epochs": 1, "batch_size": 16, "progress_bar": False,
                         "val_image_samples": 4})
    raw["evaluate"]["samples"] = 4
    raw["export"]["parity_batch"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(["git", "commit", "-qam", "private mirrors"], repo)

    for dataset, shape in (("mnist", [1, 28, 28]), ("cifar10", [3, 32, 32])):
        run(["dvc", "exp", "run", "-S", f"data.dataset={dataset}"], repo)
        stats = json.loads((repo / "data/processed/stats.json").read_text())
        assert stats["dataset"] == dataset and stats["shape"] == shape
        model = json.loads((repo / "models/export/model.json").read_text())
        assert model["input"]["shape"] == ["batch", *shape]
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        assert 0.0 <= metrics["test_acc"] <= 1.0
        assert (repo / f"data/raw/{dataset}/MANIFEST.json").exists()
    assert any(h.startswith("/e2e-cifar/") for h in routes.hits)
