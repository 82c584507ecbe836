"""The five stages as functions of the validated params; paths match ``dvc.yaml``.

Heavy modules are imported inside each function so a stage only pays for what it uses (the
download stage never imports torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litpipe.config import Params

RAW = Path("data/raw")
PROCESSED = Path("data/processed")
MODELS = Path("models")
REPORTS = Path("reports")


def download(params: Params) -> str:
    """Fetch and verify the dataset's raw files into ``data/raw/<dataset>/``."""
    from litpipe.download import download_dataset

    return str(download_dataset(params.data, RAW))


def split(params: Params) -> dict[str, Any]:
    """Seeded train/val/test arrays and stats.json into ``data/processed/``."""
    from litpipe.preprocess import split_stage

    return split_stage(params, RAW, PROCESSED)["counts"]


def train(params: Params) -> dict[str, Any]:
    """Fit the model; checkpoints into ``models/``, history into ``reports/``."""
    from litpipe.tracking import check_reachable, resolve_tracking_uri

    check_reachable(resolve_tracking_uri(params.tracking))
    from litpipe.training import train_stage

    return train_stage(params, PROCESSED, MODELS, REPORTS)


def evaluate(params: Params) -> dict[str, Any]:
    """Test metrics, confusion matrix and sample grid into ``reports/``."""
    from litpipe.evaluation import evaluate_stage

    return evaluate_stage(params, PROCESSED, MODELS, REPORTS)


def export(params: Params) -> dict[str, Any]:
    """ONNX + TorchScript into ``models/export/``, parity into ``reports/export.json``."""
    from litpipe.export import export_stage

    return export_stage(params, PROCESSED, MODELS, REPORTS)
