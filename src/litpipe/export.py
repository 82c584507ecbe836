"""The export stage: ONNX + TorchScript of the best checkpoint, parity-checked, registered.

Both exports take float32 images in [0, 1] shaped N×C×H×W (normalisation is inside the
network) and return logits. Each is compared with the PyTorch model on a real test batch;
an export whose outputs drift beyond ``export.tolerance`` fails the stage rather than being
shipped. The MLflow model is the ONNX one (no pickle involved in loading it), logged with a
signature and input example and registered as a new version of ``export.registered_model``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litpipe.atomic import atomic_dir, write_json
from litpipe.config import Params
from litpipe.data.pixels import to_unit_range
from litpipe.data.processed import load_split
from litpipe.errors import LitpipeError
from litpipe.model.checkpoint import load_module
from litpipe.repo import MODELS, PROCESSED, REPORTS
from litpipe.tracking.run import TrackedRun


class ExportError(LitpipeError):
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


def export(params: Params, processed_dir: Path = PROCESSED, models_dir: Path = MODELS,
           reports_dir: Path = REPORTS) -> dict[str, Any]:
    """Write ``models/export/{model.onnx,model.ts}`` and ``reports/export.json``; register."""
    import onnxruntime as ort

    module = load_module(models_dir / "best.ckpt")
    net = module.net.eval()
    x, _ = load_split(processed_dir, "test")
    batch = to_unit_range(torch.from_numpy(np.array(x[: params.export.parity_batch])))
    with torch.no_grad():
        reference = net(batch).numpy()

    task = module.task
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
        write_json(tmp / "model.json", meta)

    # A DVC metric: only what was measured. The settings it was measured with (opset,
    # tolerance, parity batch) are params in params.yaml already; here they would show as
    # metric columns in `dvc exp show` and `dvc metrics diff`.
    report: dict[str, Any] = {k: float(f"{v:.3e}") for k, v in diffs.items()}
    write_json(reports_dir / "export.json", report)
    run = TrackedRun.attach(models_dir / "run.json")
    run.log_metrics(diffs)
    for name in ("model.ts", "model.json", "model.onnx"):
        run.log_artifact(out_dir / name, "export")
    if Path("dvc.lock").exists():  # the lineage of this run's upstream stages
        run.log_artifact(Path("dvc.lock"), "config")
    report["registered_version"] = run.log_onnx_model(
        out_dir / "model.onnx", batch[:4].numpy(), reference[:4],
        registered_model=params.export.registered_model)
    return report
