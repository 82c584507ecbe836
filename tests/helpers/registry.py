"""A real trained model, exported and registered in a real SQLite MLflow store, in seconds.

:func:`tests.helpers.models.train_checkpoint` trains on scikit-learn's digits; here the
train stage's part that matters to the registry is done by hand (a run created in the store
and named in ``models/run.json``), then the real export stage runs unchanged: it logs the
served pyfunc model, registers it and sets the ``candidate`` alias. Everything (database,
artifacts) stays under the given directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litpipe.schema import Params
from tests.helpers.models import train_checkpoint

MODEL_NAME = "litpipe-classifier"


def sqlite_uri(base: Path) -> str:
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def new_run(base: Path, name: str = "tests") -> str:
    """Create a run in ``base``'s store and name it in ``base/models/run.json``; its id."""
    from litpipe.tracking.run import TrackedRun
    from litpipe.tracking.store import check_store

    uri = sqlite_uri(base)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_ROOT", str(base))  # the experiment's artifacts go to base/mlartifacts
        check_store(uri)
        run = TrackedRun.start(uri, "litpipe-tests", name, tags={})
    (base / "models").mkdir(parents=True, exist_ok=True)
    (base / "models/run.json").write_text(json.dumps({"run_id": run.run_id,
                                                      "tracking_uri": uri}))
    return run.run_id


def export_registered(base: Path, params: Params) -> str:
    """The real export stage for ``base/models/best.ckpt`` into the run of
    ``base/models/run.json``; returns the registered version."""
    from litpipe.exporting.export import export

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)  # export logs ./dvc.lock when there is one: not this repo's
        mp.setenv("DVC_ROOT", str(base))
        report = export(params, base / "processed", base / "models", base / "reports")
    return str(report["registered_version"])


def build_registered(base: Path, epochs: int = 2) -> tuple[Params, str, str]:
    """Train, create a run, export and register: (params, run id, version)."""
    params = train_checkpoint(base, epochs)
    run_id = new_run(base)
    return params, run_id, export_registered(base, params)
