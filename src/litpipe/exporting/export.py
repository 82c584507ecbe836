"""The export stage: ONNX + TorchScript of the best checkpoint, parity-checked, registered.

Both exports take float32 images in [0, 1] shaped N×C×H×W (normalisation is inside the
network) and return logits. Each is compared with the PyTorch model on a real test batch;
an export whose outputs drift beyond ``export.tolerance`` fails the stage rather than being
shipped. ``models/export/`` keeps the plain files (``litpipe predict`` and C++/mobile users
read them). The MLflow model is a pyfunc around the same ONNX file that answers with class
names and probabilities (:mod:`litpipe.tracking.pyfunc`; stored as code, no pickle), logged
with a tensor signature, input example and the input contract as metadata, named
``<network>-<dataset>`` and carrying the run's final metrics and dataset, registered as a
new version of ``export.registered_model`` and given the alias ``candidate``.
"""

from __future__ import annotations

import io
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litpipe.atomic import atomic_dir, write_json
from litpipe.data.pixels import to_unit_range
from litpipe.data.processed import load_split
from litpipe.errors import LitpipeError
from litpipe.model.checkpoint import load_module
from litpipe.repo import MODELS, PROCESSED, REPORTS
from litpipe.schema import Params
from litpipe.tracking.resources import log_stage_seconds
from litpipe.tracking.run import TrackedRun
from litpipe.tracking.served import log_served_model


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


def model_json(task: str, in_shape: list[int], output: str, classes: list[str]
               ) -> dict[str, Any]:
    """``model.json``: what a caller must feed the model and what it answers.

    The input contract is spelled out for people and for other languages' clients: N×C×H×W
    float32, pixels scaled to [0, 1] as the uint8 value / 255 (0 black, 1 white), grey
    (C = 1) or RGB (C = 3). The same dict is the served model's MLflow metadata.
    """
    channels = {1: "grey", 3: "RGB"}.get(in_shape[0], f"{in_shape[0]} channels")
    return {"task": task,
            "input": {"name": "images", "dtype": "float32", "shape": ["batch", *in_shape],
                      "layout": "NCHW", "range": [0.0, 1.0], "scale": "uint8 / 255",
                      "channels": channels},
            "output": {"name": output, "classes": classes}}


def _save_torchscript(module: torch.jit.ScriptModule, path: Path) -> None:
    """``torch.jit.save``, without the archive's debug records.

    Each ``*.debug_pkl`` record maps the TorchScript code back to the Python source it was
    traced from, by absolute path (this clone's checkout and virtual environment); the
    archive's ``serialization_id`` is a checksum over every record. The same model exported
    in two clones therefore differed in bytes, and ``models/export/model.ts`` is a DVC
    output. Without them the model loads and runs the same; only a TorchScript error message
    would lose the Python line it came from. The records are rewritten with PyTorch's own
    archive writer, which aligns them as ``torch.jit.load`` expects and computes a new
    ``serialization_id``.
    """
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    writer = torch._C.PyTorchFileWriter(str(path))
    with zipfile.ZipFile(buffer) as archive:
        records = {i.filename.split("/", 1)[1]: i for i in archive.infolist()}  # below the
        # archive's top-level folder; the writer adds the version and the id itself, and
        # the version must stay the original's: older ones load with operator upgraders.
        writer.set_min_version(int(archive.read(records.pop("version"))))
        for name, info in records.items():
            if name.endswith(".debug_pkl") or name == ".data/serialization_id":
                continue
            data = archive.read(info)
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def export(params: Params, processed_dir: Path = PROCESSED, models_dir: Path = MODELS,
           reports_dir: Path = REPORTS, started: float | None = None) -> dict[str, Any]:
    """Write ``models/export/{model.onnx,model.ts}`` and ``reports/export.json``; register.

    ``started``: the stage's start (``time.perf_counter()``; the stage runner's), from which
    its wall time is counted; by default, this call's.
    """
    import onnxruntime as ort

    started = time.perf_counter() if started is None else started
    # The checkpoint first (a local file, checked in a second), then the run and the right
    # to register the model, both before the export's work: a login that may not register
    # would otherwise be refused only at the end.
    module = load_module(models_dir / "best.ckpt")
    run = TrackedRun.attach(models_dir / "run.json")
    run.check_can_register(params.export.registered_model)
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
            _save_torchscript(scripted, tmp / "model.ts")
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
        meta = model_json(task, list(module.hparams["in_shape"]), output, module.classes)
        write_json(tmp / "model.json", meta)

    # A DVC metric: only what was measured. The settings it was measured with (opset,
    # tolerance, parity batch) are params in params.yaml already; here they would show as
    # metric columns in `dvc exp show` and `dvc metrics diff`.
    report: dict[str, Any] = {k: float(f"{v:.3e}") for k, v in diffs.items()}
    write_json(reports_dir / "export.json", report)
    run.log_metrics(diffs)
    for name in ("model.ts", "model.json", "model.onnx"):
        run.log_artifact(out_dir / name, "export")
    if Path("dvc.lock").exists():  # the lineage of this run's upstream stages
        run.log_artifact(Path("dvc.lock"), "config")
    # The logged model is named for what it is, the network and the data it learnt (the
    # train run's name without its suffix): every version of the registered model has the
    # same registered name, so that name would tell the versions' models apart no better
    # than "model" did.
    report["registered_version"] = log_served_model(
        run, out_dir, batch[:4].numpy(), metadata={"litpipe": meta},
        registered_model=params.export.registered_model,
        name=f"{params.model.name}-{params.data.dataset}", model_type=task)
    log_stage_seconds(run, "export", started)  # MLflow only: reports/export.json is DVC's
    return report
