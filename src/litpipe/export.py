"""The export stage: ONNX + TorchScript of the best checkpoint, parity-checked, registered.

Both exports take float32 images in [0, 1] shaped N×C×H×W (normalisation is inside the
network) and return logits. Each is compared with the PyTorch model on a real test batch;
an export whose outputs drift beyond ``export.tolerance`` fails the stage rather than being
shipped. The MLflow model is the ONNX one (no pickle involved in loading it), logged with a
signature and input example and registered as a new version of ``export.registered_model``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litpipe.atomic import atomic_dir, write_json
from litpipe.config import Params
from litpipe.preprocess import load_split
from litpipe.training import load_checkpoint_module


class ExportError(RuntimeError):
    """An exported model disagrees with the PyTorch model beyond the tolerance."""


def _onnx_export(net: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
                 output: str) -> None:
    # dynamo=False: the TorchScript-based exporter, which needs no onnxscript and handles
    # these small static graphs exactly; the batch axis is made dynamic explicitly.
    torch.onnx.export(
        net, (example,), str(path), dynamo=False, opset_version=opset,
        input_names=["images"], output_names=[output],
        dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}},
    )


def export_stage(params: Params, processed_dir: Path, models_dir: Path, reports_dir: Path
                 ) -> dict[str, Any]:
    """Write ``models/export/{model.onnx,model.ts}`` and ``reports/export.json``; register."""
    import onnxruntime as ort

    module = load_checkpoint_module(models_dir / "best.ckpt")
    net = module.net.eval()
    x, _ = load_split(processed_dir, "test")
    batch = torch.from_numpy(np.array(x[: params.export.parity_batch])).float() / 255.0
    with torch.no_grad():
        reference = net(batch).numpy()

    task = module.model_cfg.task
    output = "logits" if task == "classification" else "reconstruction"
    out_dir = models_dir / "export"
    with atomic_dir(out_dir) as tmp:
        _onnx_export(net, batch[:2], tmp / "model.onnx", params.export.opset, output)
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the
            warnings.simplefilter("ignore", FutureWarning)  # format C++/mobile users load
            scripted = torch.jit.trace(net, batch[:2])
            scripted.save(str(tmp / "model.ts"))
            ts_out = torch.jit.load(str(tmp / "model.ts")).eval()(batch).detach().numpy()

        session = ort.InferenceSession(str(tmp / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        onnx_out = session.run([output], {"images": batch.numpy()})[0]
        diffs = {
            "onnx_max_abs_diff": float(np.abs(onnx_out - reference).max()),
            "torchscript_max_abs_diff": float(np.abs(ts_out - reference).max()),
        }
        bad = {k: v for k, v in diffs.items() if not v <= params.export.tolerance}
        if bad:
            raise ExportError(
                f"exported model drifts from PyTorch beyond export.tolerance = "
                f"{params.export.tolerance}: {bad}; nothing was written to {out_dir}"
            )
        meta = {"task": task,
                "input": {"name": "images", "dtype": "float32",
                          "shape": ["batch", *module.hparams["in_shape"]],
                          "range": [0.0, 1.0]},
                "output": {"name": output, "classes": module.classes}}
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    report = {**{k: float(f"{v:.3e}") for k, v in diffs.items()},
              "tolerance": params.export.tolerance, "parity_batch": int(len(batch)),
              "opset": params.export.opset}
    write_json(reports_dir / "export.json", report)
    version = _log_to_mlflow(params, models_dir, out_dir, batch[:4].numpy(), reference[:4],
                             diffs)
    report["registered_version"] = version
    return report


def _log_to_mlflow(params: Params, models_dir: Path, out_dir: Path, example: np.ndarray,
                   example_out: np.ndarray, diffs: dict[str, float]) -> str | None:
    """Log the ONNX model with signature + example to the train run and register it."""
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    run = json.loads((models_dir / "run.json").read_text())
    mlflow.set_tracking_uri(run["tracking_uri"])
    signature = infer_signature(example, example_out)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics(diffs)
        mlflow.log_artifact(str(out_dir / "model.ts"), artifact_path="export")
        mlflow.log_artifact(str(out_dir / "model.json"), artifact_path="export")
        mlflow.log_artifact(str(out_dir / "model.onnx"), artifact_path="export")
        if Path("dvc.lock").exists():  # the lineage of this run's upstream stages
            mlflow.log_artifact("dvc.lock", artifact_path="config")
        info = mlflow.onnx.log_model(
            onnx.load(str(out_dir / "model.onnx")), name="model", signature=signature,
            input_example=example, registered_model_name=params.export.registered_model,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None
